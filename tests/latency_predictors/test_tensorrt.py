"""TensorRT backend: runs only where an NVIDIA GPU and the tensorrt package are present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from latency_predictors.backends.tensorrt import gpu_unavailable_reason
from latency_predictors.devices import measurement_backend
from latency_predictors.onnx_export import export_onnx

REASON = gpu_unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.mark.parametrize("device", ["gpu-trt-fp32", "gpu-trt-fp16", "gpu-trt-int8"])
def test_builds_an_engine_and_times_it(tmp_path: Path, device: str) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU())
    path = export_onnx(model, (1, 3, 64, 64), tmp_path / "m.onnx")
    backend = measurement_backend(device, threads=1, warmup=5, repeats=10, batch_size=1)
    result = backend.measure(path, (1, 3, 64, 64))
    assert result.ok, result.error
    assert result.device.runtime == "tensorrt" and result.device.precision == device[-4:]
    assert 0 < result.min_ms <= result.p50_ms
