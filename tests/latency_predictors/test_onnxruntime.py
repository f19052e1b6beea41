"""Latency measurement in a real ONNX Runtime session, and the persistent cache."""

from __future__ import annotations

import math
from pathlib import Path

import onnxruntime
import pytest
import torch

from latency_predictors import LatencyCache, make_backend
from latency_predictors.backends.onnxruntime import OnnxRuntimeBackend
from latency_predictors.onnx_export import export_onnx


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(10)
    )
    model(torch.zeros(1, 3, 16, 16))
    return export_onnx(model, (1, 3, 16, 16), tmp_path_factory.mktemp("m") / "m.onnx")


def test_measures_and_records_identity(small_onnx: Path) -> None:
    backend = make_backend("onnxruntime", name="cpu-test", threads=1, warmup=2, repeats=7)
    result = backend.measure(small_onnx, (1, 3, 16, 16))
    assert result.ok and result.n_runs == 7 and result.warmup == 2
    assert 0 < result.min_ms <= result.p50_ms <= result.p90_ms
    assert result.std_ms >= 0 and math.isfinite(result.mean_ms)
    dev = result.device
    assert (dev.name, dev.runtime, dev.runtime_version, dev.threads, dev.batch_size) == (
        "cpu-test",
        "onnxruntime",
        onnxruntime.__version__,
        1,
        1,
    )
    assert "cores" in dev.hardware


def test_failure_is_a_field_not_an_exception(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    result = OnnxRuntimeBackend(repeats=3).measure(bad, (1, 3, 16, 16))
    assert not result.ok and result.error and math.isnan(result.p50_ms)


def test_rejects_bad_settings_and_unknown_backend() -> None:
    with pytest.raises(ValueError, match="repeats >= 3"):
        OnnxRuntimeBackend(repeats=1)
    with pytest.raises(KeyError, match="available: onnxruntime"):
        make_backend("tflite")


def test_cache_round_trip_keyed_by_device(tmp_path: Path, small_onnx: Path) -> None:
    one = OnnxRuntimeBackend(threads=1, repeats=3)
    two = OnnxRuntimeBackend(threads=2, repeats=3)
    result = one.measure(small_onnx, (1, 3, 16, 16))
    cache = LatencyCache(tmp_path / "c.sqlite")
    cache.put("m@1x3x16x16", result)
    reopened = LatencyCache(tmp_path / "c.sqlite")
    assert reopened.get(one.device, "m@1x3x16x16") == result
    assert reopened.get(two.device, "m@1x3x16x16") is None  # other thread count, other device
    assert reopened.get(one.device, "other") is None
    failed = OnnxRuntimeBackend(repeats=3).measure(tmp_path / "missing.onnx", (1, 3, 16, 16))
    reopened.put("missing", failed)
    assert len(reopened) == 1  # failures are not cached
