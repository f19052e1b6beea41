"""ONNX Runtime on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latency_predictors.backends.base import (
    LatencyResult,
    check_settings,
    summarize,
    time_calls,
)
from latency_predictors.device import Device, cpu_description


class OnnxRuntimeBackend:
    """Times an ONNX model in an ONNX Runtime CPU session with a fixed thread count.

    Sessions run sequentially with ``threads`` intra-op threads and one inter-op thread, all
    graph optimisations on; the input is fixed random data.
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
    ) -> None:
        import onnxruntime as ort

        check_settings(threads=threads, warmup=warmup, repeats=repeats, batch_size=batch_size)
        self._ort = ort
        self.threads, self.warmup, self.repeats = threads, warmup, repeats
        self._device = Device(
            name=name,
            hardware=cpu_description(),
            runtime="onnxruntime",
            runtime_version=ort.__version__,
            precision=precision,
            batch_size=batch_size,
            threads=threads,
        )

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

    def measure(self, onnx_path: Path, input_shape: tuple[int, ...]) -> LatencyResult:
        try:
            sess = self.session(onnx_path)
            name = sess.get_inputs()[0].name  # type: ignore[attr-defined]
            x = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
            times = time_calls(
                lambda: sess.run(None, {name: x}),  # type: ignore[attr-defined]
                warmup=self.warmup,
                repeats=self.repeats,
            )
        except Exception as e:  # onnxruntime raises its own exception types
            return LatencyResult.failed(self._device, f"{type(e).__name__}: {e}", self.warmup)
        return summarize(times, self._device, self.warmup)
