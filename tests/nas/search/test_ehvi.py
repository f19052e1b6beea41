"""The ehvi sampler: its closed form against Monte Carlo, and the contract every Optuna sampler
keeps (seeded reproducibility, resume from storage, constraints, extra dimensions)."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from nas.compress.space import CompressionSpace
from nas.config import CompressionConfig
from nas.pareto import hypervolume_2d
from nas.search.ehvi import EHVISampler, ehvi_known_latency, log_error_scale, staircase
from nas.search.study import DIRECTIONS, distributions
from search_spaces.nb201 import NB201Space

REPO = Path(__file__).resolve().parents[3]
NB201_TABLE = REPO.parent / "shared" / "bench" / "nb201" / "nb201.csv.gz"
BENCHMARK = REPO / "benchmarks" / "search_strategies.py"
SPACE = NB201Space()
DISTS = distributions(SPACE.dimensions())
OPS_COST = {
    "none": 0.0,
    "skip_connect": 0.1,
    "avg_pool_3x3": 0.4,
    "nor_conv_1x1": 0.7,
    "nor_conv_3x3": 1.5,
}
OPS_GAIN = {
    "none": 0.0,
    "skip_connect": 0.02,
    "avg_pool_3x3": 0.03,
    "nor_conv_1x1": 0.05,
    "nor_conv_3x3": 0.08,
}


def edges(params: dict) -> list[str]:
    return [params[d.name] for d in SPACE.dimensions()]


def latency(params: dict) -> float:
    """A smooth synthetic device: each operation costs time by its kind and its edge."""
    return 1.0 + sum(OPS_COST[v] * (1 + i / 10) for i, v in enumerate(edges(params)))


def accuracy(params: dict) -> float:
    ops = edges(params)
    return 0.5 + sum(OPS_GAIN[v] for v in ops) - 0.04 * (ops[-1] == "none")


def latency_of(assignments: list[dict]) -> list[float]:
    return [latency(p) for p in assignments]


def run(study: optuna.Study, n: int) -> list[dict]:
    asked = []
    for _ in range(n):
        trial = study.ask(DISTS)
        study.tell(trial, [accuracy(trial.params), latency(trial.params)])
        asked.append(trial.params)
    return asked


def sampler(**kwargs) -> EHVISampler:
    return EHVISampler(latency_of=latency_of, n_startup_trials=5, **{"seed": 3, **kwargs})


@pytest.fixture(autouse=True)
def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)


def test_the_closed_form_is_the_expected_improvement_monte_carlo_finds() -> None:
    rng = np.random.default_rng(0)
    front_acc, front_lat = np.array([0.6, 0.7, 0.8]), np.array([2.0, 3.0, 5.0])
    ref = (0.0, 8.0)
    points = np.column_stack([front_acc, front_lat])
    base = hypervolume_2d(points, (True, False), ref)
    steps = staircase(front_acc, front_lat, *ref)
    for mu, sigma, lat in [(0.75, 0.05, 2.5), (0.5, 0.2, 1.0), (0.9, 0.01, 6.0), (0.3, 0.1, 4)]:
        draws = rng.normal(mu, sigma, 20_000)
        gains = [
            hypervolume_2d(np.vstack([points, [a, lat]]), (True, False), ref) - base for a in draws
        ]
        exact = ehvi_known_latency(np.array([mu]), np.array([sigma]), np.array([lat]), steps, *ref)[
            0
        ]
        assert exact == pytest.approx(np.mean(gains), rel=0.03, abs=1e-4)


def test_same_seed_same_candidates_and_none_asked_twice() -> None:
    first = run(optuna.create_study(directions=DIRECTIONS, sampler=sampler()), 20)
    second = run(optuna.create_study(directions=DIRECTIONS, sampler=sampler()), 20)
    assert first == second
    assert len({tuple(p.values()) for p in first}) == 20
    other = run(optuna.create_study(directions=DIRECTIONS, sampler=sampler(seed=4)), 20)
    assert other != first


def test_on_a_real_device_it_leaves_less_of_the_front_than_random_search() -> None:
    """NAS-Bench-201 on pixel3, 40 distinct evaluations each, through the benchmark's own loop:
    the surrogate must earn its keep on real data (same seeds, deterministic)."""
    spec = importlib.util.spec_from_file_location("search_strategies", BENCHMARK)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, bench)  # its dataclasses look themselves up there
    spec.loader.exec_module(bench)
    frame = pd.read_csv(NB201_TABLE)
    problem = bench.problem(frame, "pixel3")
    gaps = {}
    for name in ("random", "ehvi"):
        found, _ = bench.search(frame, NB201_TABLE, "pixel3", name, 0, 40)
        assert len(set(found)) == 40
        gaps[name] = bench.scores(problem, found)[0]
    assert gaps["ehvi"] < 0.6 * gaps["random"], gaps


def test_resumes_from_storage_and_never_repeats_a_stored_candidate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(
        directions=DIRECTIONS, storage=url, study_name="s", sampler=sampler()
    )
    before = run(study, 12)
    resumed = optuna.load_study(study_name="s", storage=url, sampler=sampler(seed=9))
    after = run(resumed, 8)
    keys = [tuple(p.values()) for p in before + after]
    assert len(set(keys)) == 20


def test_a_latency_limit_is_never_broken_after_the_random_start() -> None:
    limit = 5.0
    study = optuna.create_study(directions=DIRECTIONS, sampler=sampler(max_latency_ms=limit))
    asked = run(study, 20)
    assert all(latency(p) <= limit for p in asked[5:])


def test_unknown_latency_is_modelled_and_extra_dimensions_are_searched() -> None:
    compression = CompressionSpace(
        CompressionConfig.model_validate({"pruning": {"ratios": [0.25, 0.5]}}), n_stages=1
    )
    dists = distributions(SPACE.dimensions() + compression.dimensions())
    study = optuna.create_study(
        directions=DIRECTIONS, sampler=EHVISampler(seed=1, n_startup_trials=5)
    )
    seen = set()
    for _ in range(12):
        trial = study.ask(dists)
        kept = 1.0 - float(trial.params["prune_ratio"])
        study.tell(trial, [accuracy(trial.params), latency(trial.params) * kept])
        seen.add(tuple(trial.params.items()))
    assert len(seen) == 12
    assert {dict(k)["prune_ratio"] for k in seen} > {0.0}


def test_bad_settings_say_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="n_startup_trials must be >= 1, got 0"):
        EHVISampler(n_startup_trials=0)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler())
    with pytest.raises(ValueError, match="needs two objectives: accuracy"):
        study.ask(DISTS)


def test_the_surrogate_works_on_log_error_for_fractions_only() -> None:
    acc = np.array([0.1, 0.5, 0.51, 0.94, 0.95, 1.0])
    scaled = log_error_scale(acc)
    assert np.all(np.diff(scaled) > 0) and np.isfinite(scaled).all()  # same order, same front
    assert scaled[4] - scaled[3] > 5 * (scaled[2] - scaled[1])  # a point near the top weighs more
    percent = acc * 100
    assert np.array_equal(log_error_scale(percent), percent)  # not fractions: untouched


def test_budget_steps_alternate_with_hypervolume_steps_and_keep_their_budget() -> None:
    """With budget_sweep 0.5, every other suggestion chases the best accuracy under a budget
    from the current front's latencies, the budgets rising through its range; the suggestion
    keeps that budget. With 0, no step has a budget."""
    sweeper = sampler(budget_sweep=0.5)
    study = optuna.create_study(directions=DIRECTIONS, sampler=sweeper)
    run(study, 5)
    budgets = []
    for _ in range(10):
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        acc = np.array([t.values[0] for t in done])
        lat = np.array([t.values[1] for t in done])
        budget = sweeper._budget(len(done), acc, lat, np.ones(len(done), dtype=bool))
        params = run(study, 1)[0]
        budgets.append(budget)
        if budget is not None:
            assert latency(params) <= budget
    assert [b is None for b in budgets] == [True, False] * 5
    assert np.all(np.diff([b for b in budgets if b is not None][:5]) > 0)
    plain = sampler(budget_sweep=0.0)
    assert all(plain._budget(n, acc, lat, np.ones(len(acc), dtype=bool)) is None for n in range(30))
    with pytest.raises(ValueError, match=r"budget_sweep must be in \[0, 1\], got 1.5"):
        EHVISampler(budget_sweep=1.5)
