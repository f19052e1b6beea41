"""The search session: what is checked before the first trial, and the options of a search."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas.compress.space import compression_space
from nas.config import parse_config
from nas.errors import ConfigError, RunError
from nas.search.session import SearchOptions, check_seeds
from search_spaces import get_space
from search_spaces.efficientnet import B0_STAGES
from tests.conftest import run_cli

B0 = "w1.0_d1.0_r224_st32_hd1280_nsw-" + "-".join(B0_STAGES)


def _check(raw: dict) -> None:
    config = parse_config(raw, source="c")
    space = get_space(config.space.name, config.space)
    check_seeds(config, space, compression_space(config.compression, space), "c")


def test_seed_candidates_must_lie_in_the_space() -> None:
    _check({"search": {"seed_candidates": [B0]}})
    narrow = {"space": {"choices": {"kernel": [7]}}, "search": {"seed_candidates": [B0]}}
    with pytest.raises(
        ConfigError,
        match=r"^c: invalid config: search.seed_candidates\[0\]: s0_kernel=3 is outside",
    ):
        _check(narrow)
    with pytest.raises(ConfigError, match=r"search.seed_candidates\[0\]: candidate"):
        _check({"search": {"seed_candidates": ["nonsense"]}})


def test_a_bad_seed_fails_the_search_before_anything_is_written(write_config, tmp_path) -> None:
    runs = tmp_path / "runs"
    proc = run_cli(
        "search", write_config({"search": {"seed_candidates": ["nonsense"]}}), "--runs-dir", runs
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "search.seed_candidates[0]: candidate" in lines[0]
    assert not runs.exists()


def test_search_options_check_the_backend_and_say_how_to_resume(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("name: x\n")
    with pytest.raises(RunError, match="backend 'slurm' unknown; choose local or ray"):
        SearchOptions(config=config, backend="slurm").resolve()
    with pytest.raises(RunError, match="add --backend ray"):
        SearchOptions(config=config, address="127.0.0.1:6379").resolve()
    options = SearchOptions(config=config, n_trials=5, runs_dir=tmp_path / "r")
    hint = options.resume_hint(options.resolve())
    assert hint == f"nas search {config} --name x --trials 5 --runs-dir {tmp_path / 'r'}"
