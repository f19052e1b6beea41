"""`measure` and `measure_many` for backends that time with the measurement protocol."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from latency_predictors.backends.base import LatencyResult
from latency_predictors.device import Device
from latency_predictors.protocol import REFERENCE_SHAPE, Call, Meter


class MeteredBackend:
    """`measure` and `measure_many` for a backend that can prepare a model for timing.

    A subclass sets `_device` and `meter` and implements `_prepare(onnx_path, shape, tmp)`,
    which returns a call running the loaded model once on fixed data (`tmp` is a scratch
    folder that lives until the model is loaded).
    """

    _device: Device
    meter: Meter

    def _prepare(self, onnx_path: Path, input_shape: tuple[int, ...], tmp: Path) -> Call:
        raise NotImplementedError

    def prepare(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Call:
        """The model loaded for timing: a call that runs it once on fixed data."""
        with tempfile.TemporaryDirectory(prefix="nas-time-") as tmp:
            return self._prepare(Path(onnx_path), input_shape, Path(tmp))

    def _prepare_reference(self, onnx_path: Path) -> Call:
        return self.prepare(onnx_path, REFERENCE_SHAPE)

    def measure(self, onnx_path: Path, input_shape: tuple[int, ...]) -> LatencyResult:
        return self.measure_many([(onnx_path, input_shape)])[0]

    def measure_many(self, models: Sequence[tuple[Path, tuple[int, ...]]]) -> list[LatencyResult]:
        """Each model's latency, all timed in the same interleaved rounds; a model that fails
        to load gets a failed result and the others are still timed."""
        warmup = self.meter.settings.warmup
        out: list[LatencyResult | None] = [None] * len(models)
        calls: dict[int, Call] = {}
        for i, (path, shape) in enumerate(models):
            try:
                calls[i] = self.prepare(path, shape)
            except Exception as e:  # runtimes raise their own exception types
                out[i] = LatencyResult.failed(self._device, f"{type(e).__name__}: {e}", warmup)
        if calls:
            try:
                results = self.meter.measure_many(list(calls.values()))
            except Exception as e:  # a model may fail only when run
                results = [
                    LatencyResult.failed(self._device, f"{type(e).__name__}: {e}", warmup)
                ] * len(calls)
            for i, result in zip(calls, results, strict=True):
                out[i] = result
        return [r for r in out if r is not None]
