"""The measurement-backend interface and the result every backend returns."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from latency_predictors.device import Device


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """One model's latency on one device, in milliseconds.

    A failed measurement carries `error` and NaN figures instead of raising, so a sweep over
    many models goes on (timm's ``benchmark.py`` does the same). `source` says whether the
    figures were ``measured`` or ``predicted``; `predicted_ms` and `uncertainty` (the predictor's
    std over its prediction) are set whenever a predictor was asked. A measurement by the
    protocol (`latency_predictors.protocol`) carries `spread`, the relative std of its per-round
    figures, and `drift`, the largest departure of the host's speed from its anchor meanwhile.
    """

    device: Device
    mean_ms: float
    std_ms: float
    p50_ms: float
    p90_ms: float
    min_ms: float
    n_runs: int
    warmup: int
    error: str | None = None
    source: str = "measured"
    predicted_ms: float | None = None
    uncertainty: float | None = None
    spread: float | None = None
    drift: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["device"] = self.device.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LatencyResult:
        return cls(**{**raw, "device": Device.from_dict(raw["device"])})

    @classmethod
    def failed(cls, device: Device, error: str, warmup: int) -> LatencyResult:
        nan = float("nan")
        return cls(device, nan, nan, nan, nan, nan, 0, warmup, error)


def check_settings(*, threads: int, warmup: int, repeats: int, batch_size: int) -> None:
    """`ValueError` naming every measurement setting out of range."""
    if threads < 1 or warmup < 0 or repeats < 3 or batch_size < 1:
        raise ValueError(
            f"need threads >= 1, warmup >= 0, repeats >= 3 and batch_size >= 1; got "
            f"threads={threads}, warmup={warmup}, repeats={repeats}, batch_size={batch_size}"
        )


def time_calls(fn: Callable[[], Any], *, warmup: int, repeats: int) -> np.ndarray:
    """Wall-clock milliseconds of `repeats` calls of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = np.empty(repeats, dtype=np.float64)
    for i in range(repeats):
        start = time.perf_counter_ns()
        fn()
        times[i] = (time.perf_counter_ns() - start) / 1e6
    return times


def summarize(times_ms: np.ndarray, device: Device, warmup: int) -> LatencyResult:
    """Median, 90th percentile, mean, std and minimum of raw timings."""
    return LatencyResult(
        device=device,
        mean_ms=float(times_ms.mean()),
        std_ms=float(times_ms.std(ddof=1)) if len(times_ms) > 1 else 0.0,
        p50_ms=float(np.percentile(times_ms, 50)),
        p90_ms=float(np.percentile(times_ms, 90)),
        min_ms=float(times_ms.min()),
        n_runs=len(times_ms),
        warmup=warmup,
    )


def is_quantized(path: Path) -> bool:
    """Whether a model already holds int8 quantization (ONNX QDQ pairs, OpenVINO FakeQuantize)."""
    text = Path(path)
    if text.suffix == ".xml":
        return "FakeQuantize" in text.read_text(encoding="utf-8", errors="replace")
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in graph.node)


# A loaded model: a batch in, the first output out.
Runner = Callable[[np.ndarray], np.ndarray]


class LatencyBackend(Protocol):
    """Times an ONNX model on one device."""

    @property
    def device(self) -> Device:
        """Identity of what this backend measures on."""
        ...

    def measure(self, onnx_path: Path, input_shape: tuple[int, ...]) -> LatencyResult:
        """Latency of the model in `onnx_path` on an input of `input_shape`.

        An int8 device times an already quantized model as it is, and an fp32 one after
        quantizing it for timing (random calibration data: right speed, meaningless accuracy).
        """
        ...

    def measure_many(self, models: Sequence[tuple[Path, tuple[int, ...]]]) -> list[LatencyResult]:
        """`measure` of several (onnx path, input shape) at once, in interleaved rounds."""
        ...

    def runner(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Runner:
        """The model loaded with this device's settings, for running real inputs."""
        ...
