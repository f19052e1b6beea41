"""Searches run as a user runs them (the CLI, on a Ray cluster), and checks of their runs: the
study, the exact trial count, the files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml

from nas.storage import is_finished
from tests.conftest import REPO, SMALL_CONFIG, deep_update
from tests.services import RayCluster

# Upper bounds only, far above the usual (a search here takes 1-3 min): beside the other test
# process and a busy host, trials on the 1-CPU nodes have run 6x slower than alone.
SEARCH_TIMEOUT = 1200


def cli(*args: Any) -> list[str]:
    return [sys.executable, "-m", "nas.cli", *map(str, args)]


def env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "PYTHONWARNINGS": "ignore"}


def in_cluster(
    cluster: RayCluster, *args: Any, timeout: float = SEARCH_TIMEOUT
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*cluster.prefix(), *cli(*args)],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ray_search(cluster: RayCluster, config: Path, runs: Path) -> list[str]:
    """`nas search` of `config` on the cluster, as arguments of the CLI."""
    return ["search", config, "--backend", "ray", "--address", cluster.address, "--runs-dir", runs]


def study_of(run_dir: Path, storage: str | None = None) -> optuna.Study:
    return optuna.load_study(
        study_name=None, storage=storage or f"sqlite:///{run_dir / 'study.db'}"
    )


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count toward the target (as the search counts them)."""
    return [t for t in study.get_trials() if is_finished(t)]


def check_exact(run_dir: Path, study: optuna.Study, target: int) -> None:
    """Exactly `target` finished trials, none left running, each with its weights and row."""
    done = finished(study)
    assert len(done) == target
    assert not [t for t in study.get_trials() if t.state.name == "RUNNING"]
    numbers = [t.number for t in done]
    assert len(set(numbers)) == len(numbers)
    for t in done:
        if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs:
            assert (run_dir / "trials" / f"{t.number:05d}" / "weights.pt").is_file()
    rows = pd.read_csv(run_dir / "trials.csv")
    assert sorted(rows[rows["state"] == "COMPLETE"]["number"]) == sorted(
        t.number for t in done if t.state.name == "COMPLETE"
    )


def write_sampler_config(folder: Path, sampler: str, name: str) -> Path:
    """FOLDER/NAME.yaml, run NAME: SMALL_CONFIG as the smallest search in which `sampler`
    proposes candidates of its own: its startup (random) phase, or NSGA-II's first generation,
    ends after one or two trials, so a search of 3 trials reaches every sampler's model."""
    changes = {
        "name": name,
        "data": {"train_size": 200, "val_size": 100},
        "latency": {"warmup": 1, "repeats": 3},
        "search": {
            "sampler": sampler,
            "n_trials": 2,
            "population_size": 2,
            "n_startup_trials": 1,
            "ehvi": {"n_startup_trials": 1, "pool_size": 16, "refit_every": 1},
        },
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(deep_update(SMALL_CONFIG, changes)))
    return path


def check_clean_finish(proc: subprocess.CompletedProcess[str]) -> None:
    """A search that ended well: exit code 0 and no traceback on either stream."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]


def check_sampler_run(run_dir: Path, sampler: str, target: int) -> None:
    """The run searched with `sampler` and holds exactly `target` completed trials."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["search"]["sampler"] == sampler
    study = study_of(run_dir)
    check_exact(run_dir, study, target)
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"] * target
