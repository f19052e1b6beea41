"""Searches on predicted and hybrid latency, on devices with and without a backend here: the
latency source a run config describes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from nas.config import parse_config
from nas.errors import TableError
from nas.evaluate.latency import lookup_predictor
from search_spaces import get_space
from tests.conftest import SMALL_CONFIG, deep_update, run_cli


def _trials(runs: Path) -> pd.DataFrame:
    return pd.read_csv(runs / "small" / "trials.csv")


def test_predicted_search_measures_nothing(small_table: Path, tmp_path: Path, write_config) -> None:
    config = write_config({"latency": {"mode": "predicted", "table": str(small_table)}})
    runs = tmp_path / "runs"
    proc = run_cli("search", config, "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    trials = _trials(runs)
    done = trials[trials["state"] == "COMPLETE"]
    assert len(done) == 3
    assert (done["latency_source"] == "predicted").all()
    assert done["latency_measured_ms"].isna().all()
    assert (done["latency_p50_ms"] == done["latency_predicted_ms"]).all()
    assert not (runs / ".cache" / "latency.sqlite").exists()  # nothing was timed
    assert "predicted by the lookup table" in (runs / "small" / "pareto.html").read_text()


def test_hybrid_search_remeasures_the_front(
    small_table: Path, tmp_path: Path, write_config
) -> None:
    # A loose threshold: every trial runs on the prediction, then the front is measured.
    config = write_config(
        {
            "latency": {
                "mode": "hybrid",
                "table": str(small_table),
                "hybrid_max_uncertainty": 10.0,
            }
        }
    )
    runs = tmp_path / "runs"
    proc = run_cli("search", config, "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    trials = _trials(runs)
    front = trials[trials["on_front"]]
    assert len(front) >= 1
    assert (front["latency_source"] == "predicted").all()
    assert front["latency_measured_ms"].gt(0).all()
    assert trials[~trials["on_front"]]["latency_measured_ms"].isna().all()
    assert "measured" in proc.stderr and "predicted" in proc.stderr
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{runs / 'small' / 'study.db'}")
    assert set(study.user_attrs["front_measured"]) == {str(n) for n in front["number"]}


def test_hybrid_measures_when_unsure(small_table: Path, tmp_path: Path, write_config) -> None:
    config = write_config(
        {
            "latency": {
                "mode": "hybrid",
                "table": str(small_table),
                "hybrid_max_uncertainty": 1e-6,
            }
        }
    )
    runs = tmp_path / "runs"
    assert run_cli("search", config, "--runs-dir", runs).returncode == 0
    done = _trials(runs).query("state == 'COMPLETE'")
    assert (done["latency_source"] == "measured").all()
    assert done["latency_predicted_ms"].gt(0).all()  # the prediction is kept beside
    assert (done["latency_measured_ms"] == done["latency_p50_ms"]).all()


def test_device_known_only_by_its_table(small_table: Path, tmp_path: Path, write_config) -> None:
    table = tmp_path / "phone.csv"
    shutil.copy(small_table, table)
    meta = json.loads(small_table.with_suffix(".json").read_text())
    meta["device"].update(name="phone-x", hardware="Snapdragon 8", runtime="tflite")
    table.with_suffix(".json").write_text(json.dumps(meta))
    runs = tmp_path / "runs"

    measured = write_config({"latency": {"device": "phone-x"}}, name="m.yaml")
    proc = run_cli("search", measured, "--runs-dir", runs)
    assert proc.returncode == 2
    assert "phone-x" in proc.stderr and "no measurement backend" in proc.stderr
    assert not (runs / "small").exists()

    predicted = write_config(
        {"latency": {"device": "phone-x", "mode": "predicted", "table": str(table)}}, name="p.yaml"
    )
    proc = run_cli("search", predicted, "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    trials = _trials(runs)
    assert set(trials["device"]) == {"phone-x"}
    html = (runs / "small" / "pareto.html").read_text()
    assert "phone-x has no backend on this machine" in html


def test_gbm_search_without_a_fitted_predictor_fails_first(tmp_path: Path, write_config) -> None:
    config = write_config({"latency": {"mode": "predicted", "predictor": "gbm"}})
    runs = tmp_path / "runs"
    proc = run_cli("search", config, "--runs-dir", runs)
    assert proc.returncode == 2
    assert "nas latency evaluate --device cpu-ort-fp32 --predictor gbm" in proc.stderr
    assert not (runs / "small").exists()


def test_lookup_predictor_reads_the_config_s_table(small_table: Path) -> None:
    raw = deep_update(SMALL_CONFIG, {"latency": {"table": str(small_table), "mode": "predicted"}})
    config = parse_config(raw, source="t")
    space = get_space("efficientnet", config.space)
    predictor, table = lookup_predictor(config, space, small_table.parent)
    assert predictor.n_fit_ == 8 and table.path == small_table
    threads = parse_config(deep_update(raw, {"latency": {"threads": 2}}), source="t")
    with pytest.raises(TableError, match="1 threads, the config asks for 2"):
        lookup_predictor(threads, space, small_table.parent)


def test_ehvi_prices_its_pool_with_the_lookup_table(
    small_table: Path, tmp_path: Path, write_config
) -> None:
    """On the EfficientNet space with predicted latency, ehvi knows every pool candidate's
    latency before training it: the latencies it is handed are the lookup table's, for
    thousands of candidates, and the search it drives completes."""
    from nas.evaluate.pool import foresight

    raw = deep_update(
        SMALL_CONFIG,
        {
            "latency": {"mode": "predicted", "table": str(small_table)},
            "search": {"sampler": "ehvi", "n_trials": 4, "ehvi": {"n_startup_trials": 2}},
        },
    )
    config = parse_config(raw, source="test")
    space = get_space("efficientnet", config.space)
    ahead = foresight(config, space, tmp_path, None)  # no latency source: the table's predictor
    assert ahead.latency_of is not None
    predictor, _ = lookup_predictor(config, space, tmp_path)
    rng = np.random.default_rng(0)
    params = [space.to_params(space.sample(rng)) for _ in range(2048)]
    priced = np.asarray(ahead.latency_of(params))
    expected = predictor.predict([space.from_params(p) for p in params[:20]])
    assert np.allclose(priced[:20], expected) and (priced > 0).all()

    runs = tmp_path / "runs"
    proc = run_cli("search", write_config(raw), "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    done = _trials(runs).query("state == 'COMPLETE'")
    assert len(done) == 4 and done["candidate"].nunique() == 4
