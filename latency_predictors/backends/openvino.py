"""OpenVINO on the CPU: fp32, bf16 and int8.

bf16 is OpenVINO's inference-precision hint (the CPU plugin runs bf16 kernels where the CPU has
AVX512-BF16 or AMX, and refuses the hint elsewhere). int8 needs a quantized graph: a QDQ model
from ONNX Runtime's quantization tools (a search's calibrated artifact, or for timing alone an
fp32 model quantized on random inputs), whose QDQ pairs OpenVINO's CPU plugin runs as int8
kernels.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from latency_predictors.backends.base import (
    Runner,
    check_settings,
    is_quantized,
)
from latency_predictors.backends.metered import MeteredBackend
from latency_predictors.device import Device, cpu_description
from latency_predictors.protocol import AnchorStore, Call, Meter, ProtocolSettings
from latency_predictors.quantize import quantize_for_timing

PRECISIONS = ("fp32", "bf16", "int8")


def bf16_unavailable_reason() -> str | None:
    """Why OpenVINO cannot run bf16 on this CPU (or is not installed), or None when it can."""
    try:
        import openvino as ov
    except ImportError:
        return "the openvino backend needs the 'openvino' package: pip install -e '.[openvino]'"
    try:
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as e:  # openvino raises its own exception types
        return f"OpenVINO cannot list this CPU's capabilities: {type(e).__name__}: {e}"
    if "BF16" in caps:
        return None
    return (
        f"this CPU has no bf16 support in OpenVINO (capabilities: {', '.join(caps)}); bf16 "
        "needs AVX512-BF16 or AMX"
    )


class OpenVinoBackend(MeteredBackend):
    """Times an ONNX model with OpenVINO's CPU plugin, latency hint, a fixed thread count."""

    def __init__(
        self,
        *,
        name: str = "cpu-ov-fp32",
        threads: int = 1,
        warmup: int = 10,
        repeats: int = 50,
        batch_size: int = 1,
        precision: str = "fp32",
        protocol: ProtocolSettings | None = None,
        anchors: AnchorStore | None = None,
    ) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise RuntimeError(
                "the openvino backend needs the 'openvino' package: pip install -e '.[openvino]'"
            ) from None
        if precision not in PRECISIONS:
            raise ValueError(f"openvino precision {precision!r} unknown; allowed: {PRECISIONS}")
        check_settings(threads=threads, warmup=warmup, repeats=repeats, batch_size=batch_size)
        self._ov = ov
        self._core = ov.Core()
        if precision == "bf16":
            reason = bf16_unavailable_reason()
            if reason is not None:
                raise RuntimeError(reason)
        self.threads, self.warmup, self.repeats = threads, warmup, repeats
        self.precision = precision
        self._device = Device(
            name=name,
            hardware=cpu_description(),
            runtime="openvino",
            runtime_version=ov.get_version().split("-")[0],
            precision=precision,
            batch_size=batch_size,
            threads=threads,
        )
        settings = replace(protocol or ProtocolSettings(), warmup=warmup, repeats=repeats)
        self.meter = Meter(self._device, settings, self._prepare_reference, anchors)

    @property
    def device(self) -> Device:
        return self._device

    def compile(self, onnx_path: Path) -> Any:
        """A compiled model with this backend's settings."""
        hints = self._ov.properties.hint
        config = {
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            self._ov.properties.inference_num_threads: self.threads,
            hints.inference_precision: self._ov.Type.bf16
            if self.precision == "bf16"
            else self._ov.Type.f32,
        }
        return self._core.compile_model(str(onnx_path), "CPU", config)

    def runner(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Runner:
        request = self.compile(onnx_path).create_infer_request()

        def run(x: np.ndarray) -> np.ndarray:
            return np.asarray(request.infer({0: x})[0])

        return run

    def _prepare(self, onnx_path: Path, input_shape: tuple[int, ...], tmp: Path) -> Call:
        path = onnx_path
        if self.precision == "int8" and not is_quantized(onnx_path):
            path = quantize_for_timing(onnx_path, input_shape, tmp / "int8.onnx")
        request = self.compile(path).create_infer_request()
        x = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
        return lambda: request.infer({0: x})
