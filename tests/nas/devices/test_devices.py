"""The device commands: fit and evaluate a predictor, list devices with their reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from tests.conftest import run_cli


def _trials(runs: Path) -> pd.DataFrame:
    return pd.read_csv(runs / "small" / "trials.csv")


def test_evaluate_saves_a_report_that_devices_shows(tmp_path: Path, write_config) -> None:
    config = write_config()
    runs = tmp_path / "runs"
    proc = run_cli(
        "latency",
        "evaluate",
        "--device",
        "cpu-ort-fp32",
        "--predictor",
        "gbm",
        "--config",
        config,
        "--test",
        "6",
        "--fit",
        "12",
        "--runs-dir",
        runs,
    )
    assert proc.returncode == 0, proc.stderr
    assert "flops" in proc.stdout and "Spearman" in proc.stdout
    reports = list((runs / "predictors" / "cpu-ort-fp32").glob("*-gbm.report.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert report["n_test"] == 6 and report["n_fit"] == 12
    fit = {r["candidate"] for r in report["test"]}
    assert len(fit) == 6
    for name in ("gbm", "flops"):
        m = report["metrics"][name]
        assert 0 <= m["within_10"] <= 1 and math.isfinite(m["rmse_ms"])
    predictor = reports[0].with_suffix("").with_suffix(".json")
    assert json.loads(predictor.read_text())["format"] == "hwnas-latency-predictor"
    assert predictor.with_suffix(".skops").is_file()  # the gbm models, never a pickle
    assert reports[0].with_suffix("").with_suffix(".report.html").is_file()

    proc = run_cli("devices", "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    for name in ("cpu-ort-fp32", "cpu-ov-int8", "gpu-trt-fp16", "gbm"):
        assert name in proc.stdout

    # The fitted gbm predictor now drives a predicted search on the same space.
    search = write_config({"latency": {"mode": "predicted", "predictor": "gbm"}}, name="g.yaml")
    proc = run_cli("search", search, "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    assert (_trials(runs)["latency_source"] == "predicted").all()
