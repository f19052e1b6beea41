"""The shipped quickstart config at full size on Fashion-MNIST (slow: several minutes)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, run_cli


@pytest.mark.slow
def test_quickstart_config_runs_on_fashion_mnist(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = run_cli(
        "search",
        REPO / "configs" / "quickstart.yaml",
        "--trials",
        "3",
        "--runs-dir",
        runs,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    trials = pd.read_csv(runs / "quickstart" / "trials.csv")
    assert (trials["state"] == "COMPLETE").all() and len(trials) == 3
    assert (trials["accuracy"] > 0.5).all()  # 10 classes: chance is 0.1
    export = run_cli("export", runs / "quickstart", "--trial", "0", "--out", tmp_path / "e")
    assert export.returncode == 0, export.stderr
    assert (tmp_path / "e" / "model.onnx").stat().st_size > 0
