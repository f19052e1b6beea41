"""The early-stopping replay: curves recorded by a real search, replayed under no stopping, our
rule and Syne Tune's MOASHA, through the benchmark's command line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import yaml

from nas.search.early_stopping import Checkpoint, ParetoSuccessiveHalving
from tests.conftest import REPO, SMALL_CONFIG, deep_update, run_cli

SCRIPT = REPO / "benchmarks" / "early_stopping_replay.py"


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("early_stopping_replay", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def replay_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def curves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six digits candidates trained 3 epochs each by `nas search`, written as replay curves."""
    root = tmp_path_factory.mktemp("curves")
    config = root / "curves.yaml"
    changes = {"name": "curves", "training": {"epochs": 3}, "search": {"n_trials": 6}}
    config.write_text(yaml.safe_dump(deep_update(SMALL_CONFIG, changes)))
    proc = run_cli("search", config, "--runs-dir", root / "runs")
    assert proc.returncode == 0, proc.stderr
    out = root / "curves.csv"
    proc = replay_cli("--from-run", root / "runs" / "curves", "--curves", out, "--seeds", "3",
                      "--plain-trials", "3", "--reduction-factors", "2",
                      "--plot", root / "replay.html")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (root / "report.txt").write_text(proc.stdout)
    return out


def test_a_run_becomes_curves_and_every_rule_is_replayed(curves: Path) -> None:
    frame = pd.read_csv(curves)
    assert len(frame) == 6
    assert list(frame.columns) == ["candidate", "latency_ms", "acc_1", "acc_2", "acc_3"]
    accuracy = frame[["acc_1", "acc_2", "acc_3"]].to_numpy()
    assert ((accuracy >= 0) & (accuracy <= 1)).all()
    assert (frame["latency_ms"] > 0).all()
    report = (curves.parent / "report.txt").read_text()
    for rule in ("none", "ours (r=2)", "moasha (r=2)"):
        assert f"\n{rule} " in report
    assert "epochs to target" in report and "the plain search trains 9 epochs" in report
    assert (curves.parent / "replay.html").stat().st_size > 100_000  # plotly.js inlined


def test_no_stopping_trains_everything_and_the_rules_never_train_more(curves: Path) -> None:
    """On the recorded curves, which rule stops what depends on the measured latencies."""
    es = bench()
    recorded = es.read_curves(curves)
    ref = es.reference_point(recorded)
    order = list(range(len(recorded)))
    plain = es.replay(recorded, order, es.NoStopping(), ref)
    assert len(plain.hypervolume) == 6 * 3
    for rule in (es.Ours(2, min_trials=2), es.Moasha(2, 3, seed=0)):
        assert len(es.replay(recorded, order, rule, ref).hypervolume) <= len(plain.hypervolume)


def test_the_rules_stop_trials_dominated_at_every_epoch_and_lose_nothing() -> None:
    es = bench()
    # The first trial is the best at every epoch; each later one is slower and less accurate.
    curves = [
        es.Curve(f"c{k}", 1.0 + k, tuple(0.5 + 0.1 * epoch - 0.05 * k for epoch in range(3)))
        for k in range(6)
    ]
    ref = es.reference_point(curves)
    order = list(range(len(curves)))
    plain = es.replay(curves, order, es.NoStopping(), ref)
    ours = es.replay(curves, order, es.Ours(2, min_trials=2), ref)
    moasha = es.replay(curves, order, es.Moasha(2, 3, seed=0), ref)
    assert len(plain.hypervolume) == 6 * 3
    assert len(ours.hypervolume) == 3 + 5  # each later trial stopped after its first epoch
    assert len(moasha.hypervolume) < len(plain.hypervolume)
    assert ours.hypervolume[-1] == moasha.hypervolume[-1] == plain.hypervolume[-1]


def test_our_rule_is_asked_exactly_as_the_search_asks_it() -> None:
    es = bench()
    rule = es.Ours(2, min_trials=2)
    assert not rule.stop(0, 1, 0.8, 1.0)  # alone at the rung
    assert rule.stop(1, 1, 0.5, 2.0)  # dominated by trial 0 at epoch 1
    direct = ParetoSuccessiveHalving(min_epochs=1, reduction_factor=2, min_trials=2)
    assert direct.should_stop(Checkpoint(1, 1, 0.5, 2.0), [Checkpoint(0, 1, 0.8, 1.0)])


def test_moasha_is_syne_tunes_scheduler_deciding() -> None:
    es = bench()
    rule = es.Moasha(2, 4, seed=0)
    assert type(rule.scheduler).__module__.startswith("syne_tune.")
    rule.start(0)
    assert not rule.stop(0, 1, 0.8, 1.0)
    rule.start(1)
    assert not rule.stop(1, 1, 0.9, 0.5)  # better in both: first of two
    rule.start(2)
    assert rule.stop(2, 1, 0.5, 2.0)  # dominated by both: last of three at the first rung


def test_bad_curves_are_refused_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("candidate,acc_1\na,0.5\n")
    proc = replay_cli("--curves", bad)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"{bad}: needs columns candidate, latency_ms, acc_1 .. acc_E; lacks latency_ms"
    ]
    proc = replay_cli("--curves", tmp_path / "none.csv")
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def last_verdicts(es: ModuleType, arrivals: Sequence[Sequence[float]]) -> dict[bool, bool]:
    """Whether MOASHA, shipped (False) and ranked (True), stops the last of `arrivals`
    ((error, latency) pairs, each a new trial at the first rung)."""
    verdicts = {}
    for ranked in (False, True):
        rule = es.Moasha(2, 4, seed=0, ranked=ranked)
        for trial, (error, latency) in enumerate(arrivals):
            rule.start(trial)
            verdicts[ranked] = rule.stop(trial, 1, 1.0 - error, latency)
    return verdicts


def test_moasha_ranked_judges_each_result_by_its_own_place_in_the_sort() -> None:
    es = bench()
    priority = es.ranked_priority()
    chain = np.array([[0.1, 1.0], [0.5, 5.0], [0.2, 2.0], [0.3, 3.0], [0.4, 4.0]])
    assert priority(chain).tolist() == [0, 4, 1, 2, 3]  # a chain: every point its own front
    front = np.array([[0.3, 1.0], [0.1, 3.0], [0.2, 2.0], [0.9, 9.0]])
    # one front of three, seeded at the lowest error, then the farthest from it; last the
    # dominated point
    assert priority(front).tolist() == [1, 0, 2, 3]
    # the worst of five arrives second; the fifth places fourth of five, outside the top half,
    # yet the shipped priority judges it by the second's index (1 of 5)
    assert last_verdicts(es, chain.tolist()) == {False: False, True: True}


def test_grace_periods_move_the_first_rung(curves: Path) -> None:
    es = bench()
    recorded = es.read_curves(curves)
    frame, _, plain_epochs = es.run(recorded, 2, 3, [2], graces=[1, 2])
    assert plain_epochs == 9
    assert {"ours (r=2)", "ours (r=2, g=2)", "moasha-ranked (r=2, g=2)"} <= set(frame["rule"])
    ref = es.reference_point(recorded)
    order = list(range(len(recorded)))
    late = es.replay(recorded, order, es.Ours(2, min_trials=2, grace=2), ref)
    # nothing stops before its second epoch: every trial trains at least two
    assert len(late.hypervolume) >= 2 * len(recorded)
    proc = replay_cli("--curves", curves, "--plain-trials", "3", "--grace-periods", "3")
    assert proc.returncode == 2 and "--grace-periods must be in 1..2" in proc.stderr


def test_shipped_moasha_stops_the_best_result_when_the_worst_arrived_late() -> None:
    # four results, each worse than the one before, then the best in both objectives
    arrivals = [(0.2, 2.0), (0.3, 3.0), (0.4, 4.0), (0.5, 5.0), (0.1, 1.0)]
    assert last_verdicts(bench(), arrivals) == {False: True, True: False}
