"""Predictors: error figures, the FLOPs baseline, lookup-table and learned predictors on real
measurements, and few-shot prediction on the external NAS-Bench-201 table."""

from __future__ import annotations

import importlib.util
import json
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from hwnas_base.errors import PredictorError
from latency_predictors.devices import measurement_backend
from latency_predictors.fewshot import FewShotPredictor, FewShotRegressor
from latency_predictors.measure import measure_candidates
from latency_predictors.predictors import (
    FlopsPredictor,
    GradientBoostingPredictor,
    LookupTablePredictor,
    accuracy_report,
    load_predictor,
    save_predictor,
)
from latency_predictors.table import load_table
from tests.conftest import REPO, SMALL_DEPLOYMENT, small_space

NB201_TABLE = REPO.parent / "shared" / "bench" / "nb201" / "nb201.csv.gz"


def test_accuracy_report_by_hand() -> None:
    measured = np.array([1.0, 2.0, 4.0, 8.0])
    predicted = np.array([1.04, 2.18, 3.0, 8.0])  # errors 4 %, 9 %, 25 %, 0 %
    r = accuracy_report(predicted, measured)
    assert r["within_5"] == 0.5 and r["within_10"] == 0.75 and r["within_15"] == 0.75
    assert r["mape"] == pytest.approx((0.04 + 0.09 + 0.25 + 0) / 4)
    assert r["rmse_ms"] == pytest.approx(np.sqrt((0.04**2 + 0.18**2 + 1.0**2) / 4))
    assert r["spearman"] == pytest.approx(1.0) and r["kendall"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def measured_small() -> tuple[list, np.ndarray]:
    """40 random candidates of the small space, timed for real in ONNX Runtime."""
    space = small_space()
    rng = np.random.default_rng(11)
    cands = list(dict.fromkeys(space.sample(rng) for _ in range(40)))
    backend = measurement_backend("cpu-ort-fp32", threads=1, warmup=3, repeats=15, batch_size=1)
    results = measure_candidates(space, cands, backend, SMALL_DEPLOYMENT)
    return cands, np.array([r.p50_ms for r in results])


def test_flops_baseline_minimises_relative_error(measured_small) -> None:
    cands, ms = measured_small
    space = small_space()
    model = FlopsPredictor(space, SMALL_DEPLOYMENT).fit(cands, ms)
    flops = model.flops(cands)

    def loss(k: float) -> float:
        return float(np.sum((k * flops / ms - 1) ** 2))

    assert loss(model.k_) < loss(model.k_ * 1.01) and loss(model.k_) < loss(model.k_ * 0.99)
    pred, std = model.predict(cands[:3], return_std=True)
    assert np.allclose(pred, model.k_ * flops[:3]) and np.all(std > 0)


def test_lookup_table_correction_fits_its_calibration(small_table: Path, measured_small) -> None:
    cands, _ = measured_small
    space = small_space()
    table = load_table(small_table)
    lut = LookupTablePredictor(table, space, SMALL_DEPLOYMENT)
    cal = [space.decode(c.candidate) for c in table.calibration]
    cal_ms = np.array([c.p50_ms for c in table.calibration])

    def rel_error(pred: np.ndarray) -> float:
        return float(np.sum(((pred - cal_ms) / cal_ms) ** 2))

    raw_sum = lut.predict(cal)
    assert np.allclose(raw_sum, lut.table_sums(cal)[:, 0])  # unfitted: the plain sum
    lut.fit_calibration()
    # The plain sum is one of the corrections the fit could choose, so it can only do better.
    assert rel_error(lut.predict(cal)) <= rel_error(raw_sum) + 1e-12
    assert lut.coef_.min() >= 0 and lut.n_fit_ == len(cal)
    pred, std = lut.predict(cands, return_std=True)
    assert np.all(pred > 0) and np.all(std > 0)


def test_gbm_predictor_fits_and_reports_uncertainty(measured_small) -> None:
    cands, ms = measured_small
    space = small_space()
    with pytest.raises(PredictorError, match="not fitted"):
        GradientBoostingPredictor(space).predict(cands[:1])
    model = GradientBoostingPredictor(space, n_estimators=100).fit(cands[:30], ms[:30])
    pred, std = model.predict(cands[30:], return_std=True)
    assert pred.shape == std.shape == (len(cands) - 30,)
    assert np.all(pred > 0) and np.all(std >= 0)
    with pytest.raises(PredictorError, match="at least 10"):
        GradientBoostingPredictor(space).fit(cands[:5], ms[:5])
    with pytest.raises(PredictorError, match="positive"):
        GradientBoostingPredictor(space).fit(cands[:12], np.r_[ms[:11], -1.0])


def test_fewshot_recovers_an_exact_relation() -> None:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame(
        np.exp(rng.normal(size=(200, 3))), index=[f"a{i}" for i in range(200)], columns=list("xyz")
    )
    target = 2.0 * ref["x"] ** 0.8 * ref["z"] ** 0.3  # log-linear in the references
    picked = list(ref.index[:10])
    model = FewShotPredictor(ref).fit(picked, target[picked].to_numpy())
    pred = model.predict(list(ref.index))
    assert spearmanr(pred, target).statistic > 0.99
    assert model.model_ is not None and model.model_.space_ == "log"
    with pytest.raises(PredictorError, match="no reference latencies"):
        model.predict(["unknown"])


def test_fewshot_regressor_fits_an_offset_relation_in_ms() -> None:
    """A device that skips a fixed part of another's time: linear in ms, not in log ms."""
    rng = np.random.default_rng(1)
    x = rng.uniform(5.0, 30.0, size=(300, 4))
    y = 1.5 * x[:, 1] + 0.5 * x[:, 3] - 9.0  # near zero for the fastest rows
    y = np.maximum(y, 0.01)
    model = FewShotRegressor().fit(x[:10], y[:10])
    pred = model.predict(x)
    assert model.space_ == "linear"
    assert np.all(pred > 0) and np.all(model.coef_ >= 0) and model.n_features_in_ == 4
    assert spearmanr(pred, y).statistic > 0.99
    assert model.loo_predictions_.shape == (10,)
    assert 0 <= model.loo_mape_ < 0.2 and model.loo_spearman_ > 0.9


def test_fewshot_regressor_rejects_bad_input() -> None:
    x = np.exp(np.random.default_rng(2).normal(size=(10, 3)))
    y = x[:, 0] * 2.0
    bad = {
        "at least 3": (x[:2], y[:2]),
        "NaN or infinite": (x, np.r_[y[:9], np.nan]),
        "X must be positive": (np.r_[x[:9], [[1.0, -1.0, 1.0]]], y),
        "y must be positive": (x, np.r_[y[:9], 0.0]),
        "rows but y has": (x, y[:8]),
        "2 dimension": (x[:, 0], y),
        "1 dimension": (x, x),
        "numeric": ([["a", "b", "c"]] * 10, y),
    }
    for pattern, (bx, by) in bad.items():
        with pytest.raises(PredictorError, match=pattern) as err:
            FewShotRegressor().fit(bx, by)
        assert "\n" not in str(err.value)
    with pytest.raises(PredictorError, match="not fitted"):
        FewShotRegressor().predict(x)
    model = FewShotRegressor().fit(x, y)
    with pytest.raises(PredictorError, match="2 columns but the regressor was fitted on 3") as err:
        model.predict(x[:, :2])
    assert "\n" not in str(err.value)
    with pytest.raises(PredictorError, match="space"):
        FewShotRegressor(space="ranks")  # type: ignore[arg-type]


def _fewshot_benchmark() -> ModuleType:
    """benchmarks/fewshot_nb201.py as a module: the protocol is tested where it is defined."""
    path = REPO / "benchmarks" / "fewshot_nb201.py"
    spec = importlib.util.spec_from_file_location("benchmark_fewshot_nb201", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    not NB201_TABLE.is_file(),
    reason=f"NAS-Bench-201 table {NB201_TABLE} not present (external data, not in the repo)",
)
def test_fewshot_beats_flops_on_a_held_out_nb201_device() -> None:
    """HELP's protocol on one phone, three draws: 10 samples from 0-899, middle 80 % of 900-1899."""
    bench = _fewshot_benchmark()
    data = bench.load_benchmark(NB201_TABLE)
    assert len(data.devices) == 21 and len(data.train) == 900 and len(data.scored_pool) == 1000
    rhos = bench.evaluate_device(data, "samsung_s7", samples=10, draws=3)
    strict = bench.evaluate_device(data, "samsung_s7", samples=10, draws=3, strict=True)
    flops = bench.flops_spearman(data, "samsung_s7")
    assert len(rhos) == 3 and min(rhos) > flops and min(strict) > flops
    assert np.mean(rhos) > flops + 0.03


def test_fitted_predictors_save_as_data_and_load_without_pickle(
    small_table: Path, measured_small, tmp_path: Path, monkeypatch
) -> None:
    import pickle

    cands, ms = measured_small
    space = small_space()
    lut = LookupTablePredictor(load_table(small_table), space, SMALL_DEPLOYMENT).fit_calibration()
    fitted = {
        "lut": lut,
        "flops": FlopsPredictor(space, SMALL_DEPLOYMENT).fit(cands, ms),
        "gbm": GradientBoostingPredictor(space, n_estimators=50).fit(cands[:30], ms[:30]),
    }

    def no_unpickling(*args: object, **kwargs: object) -> None:
        raise AssertionError("a predictor file was unpickled")

    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    for kind, predictor in fitted.items():
        predictor.device_ = lut.device_
        path = save_predictor(predictor, tmp_path / f"p-{kind}.json")
        record = json.loads(path.read_text())
        assert record["format"] == "hwnas-latency-predictor" and record["kind"] == kind
        loaded = load_predictor(path, space, SMALL_DEPLOYMENT)
        assert loaded.device_ == lut.device_
        assert np.allclose(loaded.predict(cands[30:]), predictor.predict(cands[30:]))
    assert (tmp_path / "p-gbm.skops").is_file()


def test_a_predictor_file_that_is_not_data_is_refused(tmp_path: Path) -> None:
    import pickle

    import skops.io

    space = small_space()
    smuggled = tmp_path / "p.json"
    smuggled.write_bytes(pickle.dumps({"kind": "gbm"}))
    with pytest.raises(PredictorError, match="not a predictor file"):
        load_predictor(smuggled, space, SMALL_DEPLOYMENT)
    record = {"format": "hwnas-latency-predictor", "version": 1, "kind": "gbm", "device": None}
    record["fitted"] = {"n_estimators": 1, "seed": 0, "models_file": "p.skops"}
    smuggled.write_text(json.dumps(record))
    (tmp_path / "p.skops").write_bytes(
        skops.io.dumps({"mean": Fraction(1, 3), "low": 0, "high": 0})
    )
    with pytest.raises(PredictorError, match=r"types this project does not load: \['fractions"):
        load_predictor(smuggled, space, SMALL_DEPLOYMENT)
    (tmp_path / "p.skops").unlink()
    with pytest.raises(PredictorError, match="models file .* is missing"):
        load_predictor(smuggled, space, SMALL_DEPLOYMENT)
    with pytest.raises(PredictorError, match="no fitted predictor"):
        load_predictor(tmp_path / "absent.json", space, SMALL_DEPLOYMENT)
