"""Named devices: which backend measures each, or which latency table describes it.

A built-in device is a runtime and precision on this machine (``cpu-ort-fp32``,
``cpu-ov-int8``, ``gpu-trt-fp16`` ...). Any other device name is known only through a latency
table: a file dropped into ``latency_predictors/tables/`` or named by path in a config. Searches
on such a device run on predicted latency alone.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from hwnas_base.errors import LatencyError
from latency_predictors.backends import LatencyBackend, make_backend
from latency_predictors.protocol import ProtocolSettings

TABLES_DIR = Path(__file__).parent / "tables"


@dataclass(frozen=True, slots=True)
class BuiltinDevice:
    """A device this project can measure on, given its runtime and hardware."""

    name: str
    backend: str
    precision: str
    description: str

    def unavailable_reason(self) -> str | None:
        """Why this device cannot be measured on this machine, or None when it can."""
        if self.backend == "openvino" and importlib.util.find_spec("openvino") is None:
            return "needs the 'openvino' package: pip install -e '.[openvino]'"
        if self.backend == "openvino" and self.precision == "bf16":
            from latency_predictors.backends.openvino import bf16_unavailable_reason

            return bf16_unavailable_reason()
        if self.backend == "tensorrt":
            from latency_predictors.backends.tensorrt import gpu_unavailable_reason

            return gpu_unavailable_reason()
        return None


BUILTIN_DEVICES: dict[str, BuiltinDevice] = {
    d.name: d
    for d in (
        BuiltinDevice("cpu-ort-fp32", "onnxruntime", "fp32", "ONNX Runtime, CPU provider, fp32"),
        BuiltinDevice("cpu-ort-int8", "onnxruntime", "int8", "ONNX Runtime, CPU, int8 QDQ model"),
        BuiltinDevice("cpu-ov-fp32", "openvino", "fp32", "OpenVINO CPU plugin, fp32"),
        BuiltinDevice("cpu-ov-bf16", "openvino", "bf16", "OpenVINO CPU plugin, bf16 hint"),
        BuiltinDevice("cpu-ov-int8", "openvino", "int8", "OpenVINO CPU plugin, int8 QDQ model"),
        BuiltinDevice("gpu-trt-fp32", "tensorrt", "fp32", "TensorRT engine on an NVIDIA GPU"),
        BuiltinDevice("gpu-trt-fp16", "tensorrt", "fp16", "TensorRT fp16 engine, NVIDIA GPU"),
        BuiltinDevice("gpu-trt-int8", "tensorrt", "int8", "TensorRT int8 engine, NVIDIA GPU"),
    )
}


def precision_device(device: str, precision: str) -> str:
    """The built-in device that runs `device`'s runtime at `precision`.

    Raises:
        LatencyError: `device` is not built in, or its runtime has no such precision.
    """
    spec = BUILTIN_DEVICES.get(device)
    if spec is None:
        raise LatencyError(
            f"device {device!r} is not built in; compressed candidates are measured on one of "
            f"{', '.join(BUILTIN_DEVICES)}"
        )
    siblings = {d.precision: d.name for d in BUILTIN_DEVICES.values() if d.backend == spec.backend}
    if precision not in siblings:
        raise LatencyError(
            f"precision {precision} cannot run on {spec.backend} (device {device}); "
            f"{spec.backend} runs: {', '.join(siblings)}"
        )
    return siblings[precision]


def measurement_backend(
    device: str,
    *,
    threads: int,
    warmup: int,
    repeats: int,
    batch_size: int,
    protocol: ProtocolSettings | None = None,
) -> LatencyBackend:
    """The backend that measures `device` here with `protocol` (the default protocol when None);
    `LatencyError` if none can."""
    spec = BUILTIN_DEVICES.get(device)
    if spec is None:
        raise LatencyError(
            f"device {device!r} has no measurement backend on this machine; measurable "
            f"devices: {', '.join(BUILTIN_DEVICES)} (use latency.mode: predicted with a table "
            "for other hardware)"
        )
    reason = spec.unavailable_reason()
    if reason is not None:
        raise LatencyError(f"device {device!r} cannot be measured here: {reason}")
    try:
        return make_backend(
            spec.backend,
            name=spec.name,
            threads=threads,
            warmup=warmup,
            repeats=repeats,
            batch_size=batch_size,
            precision=spec.precision,
            protocol=protocol,
        )
    except (RuntimeError, ValueError) as e:
        raise LatencyError(f"device {device!r}: {e}") from None
