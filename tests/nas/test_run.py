"""Run directories: config checks on resume, the exclusive lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwnas_base.io import write_atomic
from nas.config import parse_config
from nas.errors import RunError
from nas.run import Run


def test_check_accepts_new_and_matching_refuses_changed(tmp_path: Path) -> None:
    cfg = parse_config({"name": "r1"}, source="c")
    run = Run.check(tmp_path, cfg)
    assert run.root == tmp_path / "r1" and not run.root.exists()  # checking writes nothing
    write_atomic(run.config_path, cfg.to_yaml())
    assert Run.check(tmp_path, cfg.with_overrides(n_trials=50)).root == run.root
    changed = parse_config({"name": "r1", "seed": 3}, source="c")
    with pytest.raises(RunError, match=r"different config \(seed differ\)"):
        Run.check(tmp_path, changed)


def test_check_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not a run directory"):
        Run.check(tmp_path, parse_config({"name": "r1"}, source="c"))
    with pytest.raises(RunError, match="study.db missing"):
        Run.open(tmp_path / "r1")


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    run = Run(tmp_path / "r")
    with run.lock(), pytest.raises(RunError, match="in use by another"), run.lock():
        pass
    with run.lock():  # released after the first holder left
        pass
