"""OpenVINO backend: fp32, bf16 and int8 timing of a real ONNX model on this CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from latency_predictors.devices import measurement_backend
from latency_predictors.onnx_export import export_onnx

openvino = pytest.importorskip("openvino", reason="the openvino extra is not installed")


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 8, 1)
    )
    return export_onnx(model, (1, 3, 32, 32), tmp_path_factory.mktemp("ov") / "m.onnx")


@pytest.mark.parametrize("device", ["cpu-ov-fp32", "cpu-ov-bf16", "cpu-ov-int8"])
def test_measures_and_records_runtime(small_onnx: Path, device: str) -> None:
    core = openvino.Core()
    if device.endswith("bf16") and "BF16" not in core.get_property(
        "CPU", "OPTIMIZATION_CAPABILITIES"
    ):
        pytest.skip("this CPU has no bf16 support in OpenVINO")
    backend = measurement_backend(device, threads=1, warmup=2, repeats=5, batch_size=1)
    result = backend.measure(small_onnx, (1, 3, 32, 32))
    assert result.ok, result.error
    assert result.device.runtime == "openvino"
    assert result.device.runtime_version == openvino.get_version().split("-")[0]
    assert result.device.precision == device.rsplit("-", 1)[1]
    assert 0 < result.min_ms <= result.p50_ms <= result.p90_ms
    assert result.n_runs == 5


def test_unreadable_model_is_a_failed_result(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    backend = measurement_backend("cpu-ov-fp32", threads=1, warmup=0, repeats=3, batch_size=1)
    result = backend.measure(bad, (1, 3, 8, 8))
    assert not result.ok and result.error
