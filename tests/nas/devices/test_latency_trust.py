"""`nas latency check`, `calibrate` and `adapt` through the CLI, on real measurements."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from latency_predictors.calibration import calibration_path
from latency_predictors.device import host_identity
from latency_predictors.predictors import LookupTablePredictor
from latency_predictors.sources import table_predictor
from latency_predictors.table import load_table
from nas.config import parse_config
from nas.devices.check import fixed_candidates
from search_spaces import get_space
from tests.conftest import SMALL_CONFIG, run_cli


def _one_error_line(proc) -> str:  # type: ignore[no-untyped-def]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_check_reports_repeatability_and_keeps_the_anchor(write_config, tmp_path: Path) -> None:
    config = write_config()
    runs = tmp_path / "runs"
    reports = []
    for _ in range(2):
        proc = run_cli(
            "latency", "check", "--device", "cpu-ort-fp32", "--config", config,
            "--candidates", "5", "--runs-dir", runs, "--json",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        reports.append(json.loads(proc.stdout))
    first, second = reports
    assert first["candidates"] == 5 and first["estimator"] == "cpu"
    assert 0 <= first["repeatability"]["within_10"] <= 1
    assert first["drift_max"] >= first["drift_median"] >= 0
    assert first["anchor_ms"] == second["anchor_ms"]  # kept in the cache, shared by sessions
    pairs = np.array(first["latency_ms"])
    assert pairs.shape == (5, 2) and (pairs > 0).all()


def _space_and_deployment():  # type: ignore[no-untyped-def]
    config = parse_config(SMALL_CONFIG, source="test")
    return get_space(config.space.name, config.space), config.deployment.target()


def _moved(small_table: Path, tmp_path: Path) -> Path:
    """A copy of the table that says it was profiled on another host."""
    table = tmp_path / "table.csv"
    shutil.copy(small_table, table)
    meta = json.loads(small_table.with_suffix(".json").read_text())
    meta["host"] = {"id": "elsewhere00", "hostname": "elsewhere", "cpu": "same kind"}
    table.with_suffix(".json").write_text(json.dumps(meta))
    return table


def test_calibrate_a_table_from_another_host(
    small_table: Path, tmp_path: Path, write_config
) -> None:
    space, deployment = _space_and_deployment()
    table = _moved(small_table, tmp_path)
    predictor, _ = table_predictor(table, space, deployment, device="cpu-ort-fp32", threads=1)
    assert predictor.host_note is not None and "not calibrated for this host" in predictor.host_note

    config = write_config()
    wrong = run_cli(
        "latency", "calibrate", "--device", "cpu-ov-fp32", "--table", table, "--config", config
    )
    assert "is for device 'cpu-ort-fp32', not 'cpu-ov-fp32'" in _one_error_line(wrong)
    assert not calibration_path(table, host_identity()["id"]).exists()

    proc = run_cli(
        "latency", "calibrate", "--device", "cpu-ort-fp32", "--table", table,
        "--config", config, "--samples", "4", "--runs-dir", tmp_path / "runs",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "within +-10 %" in proc.stdout
    path = calibration_path(table, host_identity()["id"])
    predictor, _ = table_predictor(table, space, deployment, device="cpu-ort-fp32", threads=1)
    assert predictor.calibrated_here == path and predictor.host_note is None
    assert predictor.n_fit_ == 4

    record = json.loads(path.read_text())
    record["device"]["name"] = "cpu-ov-fp32"
    path.write_text(json.dumps(record))
    with pytest.raises(Exception, match="measured on device cpu-ov-fp32"):
        table_predictor(table, space, deployment, device="cpu-ort-fp32", threads=1)


def _measurements(small_table: Path, path: Path, n: int = 6) -> Path:
    """A new device 1.7x the table's device, with a little noise."""
    space, deployment = _space_and_deployment()
    lut = LookupTablePredictor(load_table(small_table), space, deployment).fit_calibration()
    cands = fixed_candidates(space, n, seed=3)
    ms = np.asarray(lut.predict(cands)) * 1.7 * np.random.default_rng(0).uniform(0.97, 1.03, n)
    rows = [f"{space.encode(c)},{m:.5f}" for c, m in zip(cands, ms, strict=True)]
    lines = ["candidate,latency_ms", *rows]
    path.write_text("\n".join(lines) + "\n")
    return path


BAD_ROWS = [
    (lambda rows: rows[:3], "2 rows; a few-shot fit needs at least 3"),
    (lambda rows: [*rows[:2], "not-a-candidate,1.0", *rows[3:]], "row 3: 'not-a-candidate'"),
    (lambda rows: [*rows[:2], rows[2].split(",")[0] + ",-1", *rows[3:]], "row 3: latency_ms"),
    (lambda rows: [*rows[:2], rows[2].split(",")[0] + ",nan", *rows[3:]], "must be a positive"),
    (lambda rows: [*rows[:4], rows[2]], "row 5 repeats the candidate of row 3"),
    (lambda rows: ["candidate,ms", *rows[1:]], "missing columns ['latency_ms']"),
]


def test_adapt_refuses_bad_measurements(small_table: Path, tmp_path: Path, write_config) -> None:
    from latency_predictors.adapt import read_measurements
    from nas.errors import PredictorError

    space, _ = _space_and_deployment()
    rows = _measurements(small_table, tmp_path / "m.csv").read_text().splitlines()
    bad = tmp_path / "bad.csv"
    for edit, message in BAD_ROWS:
        bad.write_text("\n".join(edit(rows)) + "\n")
        with pytest.raises(PredictorError, match=re.escape(message)):
            read_measurements(bad, space)
    # and through the CLI: one line, exit code 2, no predictor written
    bad.write_text("\n".join(BAD_ROWS[1][0](rows)) + "\n")
    runs = tmp_path / "runs"
    proc = run_cli(
        "latency", "adapt", "--device", "board-x", "--measurements", bad,
        "--reference", small_table, "--config", write_config(), "--runs-dir", runs,
    )  # fmt: skip
    assert "row 3: 'not-a-candidate'" in _one_error_line(proc)
    assert not (runs / "predictors").exists()


def test_adapt_then_search_on_the_new_device(
    small_table: Path, tmp_path: Path, write_config
) -> None:
    measured = _measurements(small_table, tmp_path / "m.csv")
    runs = tmp_path / "runs"
    config = write_config({"latency": {"device": "board-x", "mode": "predicted",
                                       "predictor": "fewshot"}})  # fmt: skip
    proc = run_cli(
        "latency", "adapt", "--device", "board-x", "--measurements", measured,
        "--reference", small_table, "--config", config, "--runs-dir", runs,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "expected error (leave-one-out on the 6)" in proc.stdout
    files = list((runs / "predictors" / "board-x").glob("*-fewshot.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["kind"] == "fewshot"

    search = run_cli("search", config, "--runs-dir", runs)
    assert search.returncode == 0, search.stderr
    assert "few-shot predictor of board-x from 6 measured candidates" in search.stderr
    trials = __import__("pandas").read_csv(runs / "small" / "trials.csv")
    done = trials[trials["state"] == "COMPLETE"]
    assert (done["latency_source"] == "predicted").all() and (done["latency_p50_ms"] > 0).all()


NB201 = Path(__file__).resolve().parents[4] / "shared" / "bench" / "nb201" / "nb201.csv.gz"


@pytest.mark.skipif(not NB201.is_file(), reason=f"NAS-Bench-201 table not found at {NB201}")
def test_adapt_a_held_out_nb201_device(tmp_path: Path) -> None:
    import pandas as pd

    from latency_predictors.adapt import load_adapted
    from latency_predictors.deployment import Deployment

    table = pd.read_csv(NB201, nrows=1900)
    picked = table.iloc[np.random.default_rng(0).choice(900, 10, replace=False)]
    measured = tmp_path / "s7.csv"
    picked[["arch_str", "samsung_s7"]].set_axis(["candidate", "latency_ms"], axis=1).to_csv(
        measured, index=False
    )
    runs = tmp_path / "runs"
    args = ["latency", "adapt", "--device", "samsung_s7", "--space", "nb201"]
    missing = run_cli(*args, "--measurements", measured, "--runs-dir", runs)
    assert "benchmark table as --reference" in _one_error_line(missing)
    proc = run_cli(*args, "--measurements", measured, "--reference", NB201, "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    assert "samsung_s7" not in proc.stdout.split("inputs")[1].split("expected")[0]
    (path,) = (runs / "predictors" / "samsung_s7").glob("*-fewshot.json")
    space = get_space("nb201")
    predictor = load_adapted(path, space, Deployment(1, 3, 10))
    held_out = table.iloc[900:1900]
    pred = predictor.predict([space.decode(a) for a in held_out["arch_str"]])
    flops = [space.flops(space.decode(a)) for a in held_out["arch_str"]]
    from scipy.stats import spearmanr

    truth = held_out["samsung_s7"].to_numpy()
    assert spearmanr(pred, truth).statistic > spearmanr(flops, truth).statistic
