"""The measurement protocol: interleaved rounds against a reference model, drift detected and
corrected, every latency with its repeatability.

A shared or throttling host changes speed by 20-40 % within seconds, so a model timed in one
window of 50 calls gets the host's mood of that moment. The protocol instead splits a model's
calls into `rounds` chunks and, before every chunk, times a fixed reference network for a few
calls. The reference against its quiet-host latency (the *anchor*: a low quantile of many
reference chunks, kept per device identity so later sessions share it) says how fast the host
is right now, and each round's figure is scaled by ``anchor / reference now``. "Now" is the
median of the reference chunks nearest in time (up to two each side), so one chunk's noise
does not become the round's; a round where the host is off by more than `drift_threshold` is
timed again first, up to twice. With several models (`Meter.measure_many`) every round visits
all of them in a rotated order, so they all see the same host states. The reported latency is
the median of the corrected round figures; `spread` is their relative standard deviation (how
far to trust it) and `drift` the largest departure of the host from its anchor meanwhile.

The per-round figure is the `estimator` of that chunk's calls: ``median``, ``p10``, ``min``,
``mean`` of wall-clock times, or ``cpu``, the median of the calling thread's CPU time, which
leaves out the time the thread waited for a core. `benchmarks/latency_repeatability.py`
compares them on one set of raw rounds: on a quiet host all agree; with neighbours competing
for the cores, wall-clock figures lose most of their repeatability and CPU time keeps it. So
``auto`` (the default) takes ``cpu`` where the runtime computes on the calling thread (checked
on the first model timed: ONNX Runtime and OpenVINO at one thread) and ``median`` elsewhere
(several threads, a GPU). The reference is timed with the same estimator.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from latency_predictors.backends.base import LatencyResult, summarize
from latency_predictors.device import Device

ESTIMATORS = ("auto", "median", "p10", "min", "mean", "cpu")
REFERENCE_NAME = "reference-v1"
REFERENCE_SHAPE = (1, 3, 128, 128)
_ANCHOR_CHUNKS = 24
_MAX_RETRIES = 2
_WINDOW = 2


@dataclass(frozen=True, slots=True)
class ProtocolSettings:
    """How a backend times a model.

    Attributes:
        warmup: Untimed calls per model before its first round.
        repeats: Timed calls per model, spread over the rounds.
        rounds: Chunks the calls are split into, each after a reference chunk.
        estimator: The per-round statistic, one of `ESTIMATORS`.
        reference: Time the reference model between chunks and correct for drift.
        reference_calls: Reference calls per chunk.
        drift_threshold: A round whose host speed is off the anchor by more than this
            (relative) is timed again, up to twice.
    """

    warmup: int = 10
    repeats: int = 50
    rounds: int = 5
    estimator: str = "auto"
    reference: bool = True
    reference_calls: int = 5
    drift_threshold: float = 0.15

    def check(self) -> None:
        """`ValueError` naming a setting out of range."""
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator {self.estimator!r} unknown; allowed: {ESTIMATORS}")
        if self.rounds < 1 or self.reference_calls < 1 or not self.drift_threshold > 0:
            raise ValueError(
                f"need rounds >= 1, reference_calls >= 1 and drift_threshold > 0; got "
                f"{self.rounds}, {self.reference_calls}, {self.drift_threshold}"
            )

    def split(self) -> list[int]:
        """Timed calls in each round: `repeats` in all, as evenly as they go."""
        rounds = max(1, min(self.rounds, self.repeats))
        base, extra = divmod(self.repeats, rounds)
        return [base + (r < extra) for r in range(rounds)]


class AnchorStore(Protocol):
    """Where a device's reference anchor is kept between sessions (the latency cache)."""

    def get_anchor(self, device: Device, reference: str) -> float | None: ...

    def put_anchor(self, device: Device, reference: str, anchor_ms: float) -> None: ...


# A prepared model: one call runs it once on a fixed input.
Call = Callable[[], Any]


def reference_module() -> Any:
    """The reference network: a small fixed MobileNet-style stack (about 1 ms on one core at
    `REFERENCE_SHAPE`).

    Its weights come from a fixed seed, so every host times the same network.
    """
    import torch
    from torch import nn

    def block(cin: int, cout: int, stride: int) -> nn.Module:
        mid = cin * 4
        return nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.SiLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.SiLU(),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1),
            nn.SiLU(),
            block(16, 24, 2),
            block(24, 40, 2),
            block(40, 80, 2),
            block(80, 80, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(80, 10),
        )
    return net.eval()


def time_chunk(call: Call, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Milliseconds of `n` calls: wall clock, and the calling thread's CPU time."""
    wall = np.empty(n, dtype=np.float64)
    cpu = np.empty(n, dtype=np.float64)
    for i in range(n):
        start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        call()
        cpu[i] = (time.thread_time_ns() - start_cpu) / 1e6
        wall[i] = (time.perf_counter_ns() - start) / 1e6
    return wall, cpu


def statistic(wall: np.ndarray, cpu: np.ndarray, estimator: str) -> float:
    """One round's figure from its calls' wall-clock and CPU times (ms)."""
    if estimator == "p10":
        return float(np.percentile(wall, 10))
    if estimator == "min":
        return float(wall.min())
    if estimator == "mean":
        return float(wall.mean())
    return float(np.median(cpu if estimator == "cpu" else wall))


@dataclass
class Round:
    """One chunk of a model's calls: wall and CPU times (ms, uncorrected) and the drift
    correction factor (anchor / reference now; 1 without a reference)."""

    wall: np.ndarray
    cpu: np.ndarray
    factor: float
    reference_at: int = -1


@dataclass
class _Tally:
    """One model's rounds so far."""

    rounds: list[Round] = field(default_factory=list)
    drift: float = 0.0


def combine(rounds: Sequence[Round], estimator: str, correct: bool = True) -> tuple[float, float]:
    """(latency, spread) of a model's rounds: the median of the per-round figures (scaled by
    their drift factors when `correct`) and their relative standard deviation."""
    figures = np.array(
        [statistic(r.wall, r.cpu, estimator) * (r.factor if correct else 1.0) for r in rounds]
    )
    value = float(np.median(figures))
    spread = float(figures.std(ddof=1) / value) if len(figures) > 1 else math.nan
    return value, spread


class Meter:
    """Times prepared models with the protocol on one device.

    Args:
        device: The device identity results carry.
        settings: The protocol's settings.
        prepare_reference: Builds the reference model's call on this device; None times
            without a reference (no drift correction).
        store: Keeps the reference anchor between sessions, or None.
    """

    def __init__(
        self,
        device: Device,
        settings: ProtocolSettings,
        prepare_reference: Callable[[Path], Call] | None,
        store: AnchorStore | None = None,
    ) -> None:
        settings.check()
        self.device, self.settings = device, settings
        self._prepare_reference = prepare_reference if settings.reference else None
        self.store = store
        self._reference: Call | None = None
        self.anchor_ms: float | None = None
        self.estimator: str | None = None if settings.estimator == "auto" else settings.estimator
        self.last_rounds: list[list[Round]] = []
        self._series: list[float] = []  # reference chunk figures of a measure_many, in order

    def reference(self) -> tuple[Call, float] | None:
        """The reference call and its anchor (ms), prepared on first use; None without one."""
        if self._prepare_reference is None:
            return None
        if self._reference is None:
            from latency_predictors.onnx_export import export_onnx

            with tempfile.TemporaryDirectory(prefix="nas-reference-") as tmp:
                path = export_onnx(reference_module(), REFERENCE_SHAPE, Path(tmp) / "ref.onnx")
                self._reference = self._prepare_reference(path)
        estimator = self.resolve(self._reference)
        if self.anchor_ms is None:
            name = f"{REFERENCE_NAME}:{estimator}"
            store = self.store
            stored = store.get_anchor(self.device, name) if store is not None else None
            self.anchor_ms = stored or self.measure_anchor()
            if stored is None and self.store is not None:
                self.store.put_anchor(self.device, name, self.anchor_ms)
        return self._reference, self.anchor_ms

    def resolve(self, call: Call) -> str:
        """The estimator, ``auto`` decided on `call`: ``cpu`` when the runtime computes on the
        calling thread (its fastest call's CPU time is at least 80 % of its fastest wall
        time: ONNX Runtime and OpenVINO at one thread), else ``median``."""
        if self.estimator is None:
            wall, cpu = time_chunk(call, 10)
            self.estimator = "cpu" if cpu.min() >= 0.8 * wall.min() else "median"
        return self.estimator

    def measure_anchor(self) -> float:
        """The reference's quiet-host latency: the 25th percentile of many chunk medians."""
        assert self._reference is not None
        n = self.settings.reference_calls
        estimator = self.resolve(self._reference)
        time_chunk(self._reference, 3 * n)
        chunks = [
            statistic(*time_chunk(self._reference, n), estimator) for _ in range(_ANCHOR_CHUNKS)
        ]
        return float(np.percentile(chunks, 25))

    def measure(self, call: Call) -> LatencyResult:
        """One model's `LatencyResult`."""
        return self.measure_many([call])[0]

    def measure_many(self, calls: Sequence[Call]) -> list[LatencyResult]:
        """`LatencyResult` of each model, all timed in the same interleaved rounds. The raw
        rounds stay in `last_rounds` (one list per model) for whoever compares estimators."""
        s = self.settings
        per_round = s.split()
        ref = self.reference()
        if calls:
            self.resolve(calls[0])
        for call in calls:
            time_chunk(call, s.warmup)
        tallies = [_Tally() for _ in calls]
        self._series = []
        for r, n in enumerate(per_round):
            order = list(range(len(calls)))
            order = order[r % len(order) :] + order[: r % len(order)]
            for i in order:
                self._round(calls[i], tallies[i], ref, n)
        if ref is not None:
            self._smooth(tallies, ref[1])
        self.last_rounds = [t.rounds for t in tallies]
        return [self._result(t) for t in tallies]

    def _round(self, call: Call, tally: _Tally, ref: tuple[Call, float] | None, n: int) -> None:
        """Time one chunk of `call` after a reference chunk; again while the host drifts."""
        s = self.settings
        for attempt in range(_MAX_RETRIES + 1):
            at = -1
            if ref is not None:
                now = statistic(*time_chunk(ref[0], s.reference_calls), self.resolve(ref[0]))
                off = abs(now / ref[1] - 1)
                tally.drift = max(tally.drift, off)
                if off > s.drift_threshold and attempt < _MAX_RETRIES:
                    continue
                at = len(self._series)
                self._series.append(now)
            wall, cpu = time_chunk(call, n)
            tally.rounds.append(Round(wall, cpu, 1.0, at))
            return

    def _smooth(self, tallies: list[_Tally], anchor: float) -> None:
        """Each round's factor: the anchor over the median of the reference chunks timed
        nearest it (up to `_WINDOW` on each side), which tracks drift over seconds while
        averaging out one chunk's noise."""
        series = np.asarray(self._series)
        for tally in tallies:
            for r in tally.rounds:
                near = series[max(0, r.reference_at - _WINDOW) : r.reference_at + _WINDOW + 1]
                r.factor = anchor / float(np.median(near))

    def _result(self, tally: _Tally) -> LatencyResult:
        estimator = self.estimator or "median"
        value, spread = combine(tally.rounds, estimator)
        cpu = estimator == "cpu"
        times = np.concatenate([(r.cpu if cpu else r.wall) * r.factor for r in tally.rounds])
        base = summarize(times, self.device, self.settings.warmup)
        return replace(
            base,
            p50_ms=value,
            spread=spread,
            drift=tally.drift if self._prepare_reference is not None else None,
        )


def within(a: np.ndarray, b: np.ndarray, tolerance: float) -> float:
    """Share of pairs whose relative difference |a - b| / b is at most `tolerance`."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.mean(np.abs(a - b) / b <= tolerance))
