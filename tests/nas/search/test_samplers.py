"""The sampler contract: every registered sampler runs on every backend, reaches its exact trial
count, and resumes. Here the in-process loop and shared-storage workers; the Ray backend's half
is `tests/nas/cluster/test_samplers_on_ray.py`. Parametrised over the registry, so a sampler is
covered by registering it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import get_args

import pytest

from nas import api
from nas.config import SamplerName, parse_config
from nas.errors import ConfigError
from nas.search.samplers import get_sampler, list_samplers, make_sampler
from tests.conftest import REPO, SMALL_CONFIG, deep_update
from tests.searches import check_clean_finish, check_sampler_run, cli, env, write_sampler_config

SAMPLERS = list_samplers()


def test_the_config_accepts_exactly_the_registered_samplers() -> None:
    assert set(get_args(SamplerName)) == set(SAMPLERS)
    for name in SAMPLERS:
        config = parse_config(
            deep_update(SMALL_CONFIG, {"search": {"sampler": name}}), source="test"
        )
        assert make_sampler(config.search, seed=0) is not None
    with pytest.raises(ConfigError, match="search.sampler 'cmaes' unknown; choose one of nsga2"):
        get_sampler("cmaes")


def search(config: Path, runs: Path, trials: int) -> None:
    """The local loop, in this process (as `nas search CONFIG --trials N` runs it)."""
    result = api.search(api.SearchOptions(config=config, runs_dir=runs, n_trials=trials))
    assert (result.finished, result.target) == (trials, trials)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampler_in_process_reaches_its_count_and_resumes(tmp_path: Path, sampler: str) -> None:
    config, runs = write_sampler_config(tmp_path, sampler, "local"), tmp_path / "runs"
    search(config, runs, 2)
    check_sampler_run(runs / "local", sampler, 2)
    search(config, runs, 3)
    check_sampler_run(runs / "local", sampler, 3)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampler_on_shared_storage_workers(tmp_path: Path, sampler: str) -> None:
    """A search starts the run; two `nas worker` processes on its study take it to 3 trials
    together."""
    config, runs = write_sampler_config(tmp_path, sampler, "workers"), tmp_path / "runs"
    search(config, runs, 1)
    run = runs / "workers"
    command = cli("worker", run, "--trials", 3)
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    workers = [subprocess.Popen(command, cwd=REPO, env=env(), **pipes) for _ in range(2)]
    for w in workers:
        out, err = w.communicate(timeout=600)
        check_clean_finish(subprocess.CompletedProcess(command, w.returncode, out, err))
    check_sampler_run(run, sampler, 3)
