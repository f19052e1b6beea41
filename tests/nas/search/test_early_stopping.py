"""Multi-objective early stopping: Pareto ranks, the halving rule, and the rule in a real search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from nas.pareto import pareto_ranks
from nas.search.early_stopping import Checkpoint, ParetoSuccessiveHalving
from tests.conftest import run_cli


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """a dominates b, accuracy (column 0) up, latency (column 1) down."""
    return bool(a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1]))


@pytest.mark.parametrize("seed", range(5))
def test_pareto_ranks_match_the_definition(seed: int) -> None:
    pts = np.random.default_rng(seed).integers(0, 6, size=(30, 2)).astype(float)
    ranks = pareto_ranks(pts, (True, False))
    for i, p in enumerate(pts):
        # Nothing of the same or a later rank dominates p; something one rank earlier does.
        assert not any(dominates(q, p) for j, q in enumerate(pts) if ranks[j] >= ranks[i])
        if ranks[i] > 0:
            assert any(dominates(q, p) for j, q in enumerate(pts) if ranks[j] == ranks[i] - 1)


def test_rungs() -> None:
    halving = ParetoSuccessiveHalving(min_epochs=1, reduction_factor=2)
    assert [e for e in range(1, 10) if halving.is_rung(e)] == [1, 2, 4, 8]
    thirds = ParetoSuccessiveHalving(min_epochs=2, reduction_factor=3)
    assert [e for e in range(1, 20) if thirds.is_rung(e)] == [2, 6, 18]
    with pytest.raises(ValueError, match="reduction_factor >= 2"):
        ParetoSuccessiveHalving(reduction_factor=1)


def test_dominated_trial_stops_and_front_trial_goes_on() -> None:
    halving = ParetoSuccessiveHalving(min_epochs=1, reduction_factor=2, min_trials=4)
    history = [
        Checkpoint(0, 1, 0.80, 2.0),
        Checkpoint(1, 1, 0.70, 1.0),
        Checkpoint(2, 1, 0.60, 0.5),
        Checkpoint(2, 2, 0.65, 0.5),
    ]
    dominated = Checkpoint(3, 1, 0.55, 2.5)
    reason = halving.should_stop(dominated, history)
    assert reason is not None and "Pareto rank 2 of the 4 trials" in reason
    assert halving.should_stop(Checkpoint(3, 1, 0.90, 0.4), history) is None
    assert halving.should_stop(Checkpoint(3, 3, 0.10, 9.0), history) is None  # not a rung
    # Too few trials at epoch 2 to judge anything there.
    assert halving.should_stop(Checkpoint(3, 2, 0.10, 9.0), history) is None
    # On the front but with the lowest accuracy of a crowded front: outside the best half.
    crowded = [Checkpoint(i, 1, 0.9 - 0.1 * i, 3.0 - i) for i in range(3)]
    assert halving.should_stop(Checkpoint(9, 1, 0.5, 0.5), crowded) is not None


def test_search_stops_trials_exactly_as_the_rule_says(tmp_path: Path, write_config) -> None:
    epochs = 3
    config = write_config(
        {
            "training": {"epochs": epochs},
            "search": {
                "n_trials": 5,
                "early_stopping": {"enabled": True, "min_trials": 2, "reduction_factor": 2},
            },
        }
    )
    runs = tmp_path / "runs"
    proc = run_cli("search", config, "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{runs / 'small' / 'study.db'}")
    trials = study.get_trials()
    assert len(trials) == 5  # stopped trials count toward --trials
    halving = ParetoSuccessiveHalving(min_epochs=1, reduction_factor=2, min_trials=2)
    history: list[Checkpoint] = []
    for t in trials:
        a = t.user_attrs
        lat = a["latency_p50_ms"]
        expected_stop = None
        for epoch, acc in enumerate(a["epoch_accuracy"][: epochs - 1], start=1):
            if halving.should_stop(Checkpoint(t.number, epoch, acc, lat), history):
                expected_stop = epoch
                break
        if expected_stop is None:
            assert t.state == optuna.trial.TrialState.COMPLETE
            assert len(a["epoch_accuracy"]) == epochs
        else:
            assert t.state == optuna.trial.TrialState.PRUNED, t.number
            assert len(a["epoch_accuracy"]) == expected_stop
            assert a["stop_reason"].startswith(f"stopped after epoch {expected_stop}")
        history += [
            Checkpoint(t.number, e, acc, lat) for e, acc in enumerate(a["epoch_accuracy"], start=1)
        ]
    table = pd.read_csv(runs / "small" / "trials.csv")
    stopped = table[table["state"] == "PRUNED"]
    assert not stopped["on_front"].any()
    assert stopped["stop_reason"].str.startswith("stopped after epoch").all()
