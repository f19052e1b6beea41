"""ONNX Runtime on the CPU: fp32, and int8 (static QDQ models, ONNX Runtime's quantization)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

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

PRECISIONS = ("fp32", "int8")


class OnnxRuntimeBackend(MeteredBackend):
    """Times an ONNX model in an ONNX Runtime CPU session with a fixed thread count.

    At int8, a model that is not quantized yet is quantized for timing first (see
    `quantize_for_timing`). Sessions run sequentially with ``threads`` intra-op threads and one
    inter-op thread, all graph optimisations on; the input is fixed random data.
    """

    def __init__(
        self,
        *,
        name: str = "cpu-ort-fp32",
        threads: int = 1,
        warmup: int = 10,
        repeats: int = 50,
        batch_size: int = 1,
        precision: str = "fp32",
        protocol: ProtocolSettings | None = None,
        anchors: AnchorStore | None = None,
    ) -> None:
        import onnxruntime as ort

        if precision not in PRECISIONS:
            raise ValueError(f"onnxruntime precision {precision!r} unknown; allowed: {PRECISIONS}")
        check_settings(threads=threads, warmup=warmup, repeats=repeats, batch_size=batch_size)
        self._ort = ort
        self.threads, self.warmup, self.repeats = threads, warmup, repeats
        self.precision = precision
        self._device = Device(
            name=name,
            hardware=cpu_description(),
            runtime="onnxruntime",
            runtime_version=ort.__version__,
            precision=precision,
            batch_size=batch_size,
            threads=threads,
        )
        settings = replace(protocol or ProtocolSettings(), warmup=warmup, repeats=repeats)
        self.meter = Meter(self._device, settings, self._prepare_reference, anchors)

    @property
    def device(self) -> Device:
        return self._device

    def session(self, onnx_path: Path) -> object:
        """An inference session with this backend's settings."""
        opts = self._ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        return self._ort.InferenceSession(
            str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def runner(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Runner:
        sess = self.session(onnx_path)
        name = sess.get_inputs()[0].name  # type: ignore[attr-defined]
        return lambda x: sess.run(None, {name: x})[0]  # type: ignore[attr-defined]

    def _prepare(self, onnx_path: Path, input_shape: tuple[int, ...], tmp: Path) -> Call:
        path = onnx_path
        if self.precision == "int8" and not is_quantized(onnx_path):
            path = quantize_for_timing(onnx_path, input_shape, tmp / "int8.onnx")
        run = self.runner(path, input_shape)
        x = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
        return lambda: run(x)
