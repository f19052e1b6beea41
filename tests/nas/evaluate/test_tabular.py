"""Tabular mode: a search scored from a benchmark table, through the real CLI, and the table's
bad input refused in one line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, run_cli

NB201_TABLE = REPO.parent / "shared" / "bench" / "nb201" / "nb201.csv.gz"
CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"


def tabular_config(tmp_path: Path, table: Path, **changes) -> Path:
    config = {
        "name": "tab",
        "space": {"name": "nb201"},
        "benchmark": {"table": str(table), "latency": "pixel3"},
        "search": {"sampler": "ehvi", "n_trials": 14, "ehvi": {"n_startup_trials": 6}},
    }
    for key, value in changes.items():
        config[key] = {**config.get(key, {}), **value}
    path = tmp_path / "tab.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def small_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The NB201 table's first 400 rows, as a user's own table would be."""
    path = tmp_path_factory.mktemp("table") / "nb201-400.csv"
    pd.read_csv(NB201_TABLE, nrows=400).to_csv(path, index=False)
    return path


def test_a_tabular_search_writes_the_run_and_resumes_to_the_exact_count(tmp_path: Path) -> None:
    config = tabular_config(tmp_path, NB201_TABLE)
    runs = tmp_path / "runs"
    first = run_cli("search", config, "--runs-dir", runs)
    assert first.returncode == 0, first.stderr
    run = runs / "tab"
    trials = pd.read_csv(run / "trials.csv")
    assert len(trials) == 14 and (trials["state"] == "COMPLETE").all()
    table = pd.read_csv(NB201_TABLE, usecols=["arch_str", "CIFAR10_test_acc", "pixel3"])
    truth = table.set_index("arch_str")
    for row in trials.itertuples():
        assert row.accuracy == pytest.approx(truth.loc[row.candidate, "CIFAR10_test_acc"] / 100)
        assert row.latency_p50_ms == pytest.approx(truth.loc[row.candidate, "pixel3"])
    assert (trials["latency_source"] == "table").all()
    assert trials["candidate"].nunique() == 14  # ehvi never asks for a candidate twice
    assert (run / "pareto.csv").is_file() and (run / "pareto.html").is_file()
    again = run_cli("search", config, "--runs-dir", runs, "--trials", "18")
    assert again.returncode == 0, again.stderr
    assert len(pd.read_csv(run / "trials.csv")) == 18
    export = run_cli("export", run, "--trial", "0", "--out", tmp_path / "x")
    assert export.returncode == 2
    assert "was scored from the benchmark table" in export.stderr and "no weights" in export.stderr
    assert not (tmp_path / "x").exists()


def test_a_latency_limit_holds_in_tabular_mode(tmp_path: Path, small_table: Path) -> None:
    config = tabular_config(
        tmp_path, small_table, search={"constraints": {"max_latency_ms": 2.0}, "n_trials": 12}
    )
    result = run_cli("search", config, "--runs-dir", tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    trials = pd.read_csv(tmp_path / "runs" / "tab" / "trials.csv")
    assert (trials["latency_p50_ms"].iloc[6:] <= 2.0).all()  # after the random start
    front = pd.read_csv(tmp_path / "runs" / "tab" / "pareto.csv")
    assert (front["latency_p50_ms"] <= 2.0).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"benchmark": {"latency": "pixel9"}}, "benchmark.latency: no column 'pixel9' in"),
        ({"benchmark": {"candidate": "index"}}, "line 2: not a nb201 candidate"),
        ({"benchmark": {"accuracy": "pixel3", "accuracy_unit": "fraction"}}, "accuracies are"),
        ({"benchmark": {"table": "missing.csv"}}, "benchmark.table: missing.csv does not exist"),
        (
            {"search": {"seed_candidates": [CELL.replace("skip_connect~0", "none~0")]}},
            "is not in the benchmark table",
        ),
        ({"search": {"early_stopping": {"enabled": True}}}, "nothing to stop early"),
        ({"space": {"name": "nb202"}}, "'efficientnet', 'nb201'"),
    ],
)
def test_bad_tables_and_configs_are_one_line_and_write_nothing(
    tmp_path: Path, small_table: Path, change: dict, message: str
) -> None:
    config = tabular_config(tmp_path, small_table, **change)
    result = run_cli("search", config, "--runs-dir", tmp_path / "runs")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "runs" / "tab").exists()


def test_the_strategy_benchmark_runs_and_prints_its_tables(tmp_path: Path) -> None:
    """`benchmarks/search_strategies.py` at toy size: two devices, two samplers, one seed."""
    import subprocess
    import sys

    command = [
        sys.executable, str(REPO / "benchmarks" / "search_strategies.py"), "--devices",
        "pixel3", "gold_6240", "--samplers", "random", "ehvi", "--budgets", "12", "16",
        "--seeds", "1", "--jobs", "1", "--cache", str(tmp_path / "runs.csv"),
    ]  # fmt: skip
    proc = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "gap@12" in out and "regret@16" in out and "s/suggestion" in out
    assert "per device at 16 evaluations" in out
    assert "ehvi beats every Optuna sampler on hypervolume gap on" in out
    cached = pd.read_csv(tmp_path / "runs.csv")
    assert len(cached) == 4 and (cached["found"].str.split().str.len() == 16).all()
    again = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert again.returncode == 0 and "running" not in again.stderr  # all from the cache
    assert again.stdout == out
