"""The measurement protocol on synthetic work whose speed the test controls: the reference sees
the host slow down, and the correction takes the slowdown out."""

from __future__ import annotations

from pathlib import Path

import pytest

from latency_predictors.device import Device
from latency_predictors.protocol import Meter, ProtocolSettings, combine

DEVICE = Device("cpu-test", "test", "python", "0", "fp32", 1, 1)


class Host:
    """Busy work whose cost is multiplied by `slow`, as a host that changes speed."""

    def __init__(self) -> None:
        self.slow = 1.0

    def work(self, units: int) -> None:
        total = 0
        for i in range(int(units * self.slow)):
            total += i * i


def test_drift_is_seen_and_corrected() -> None:
    host = Host()
    settings = ProtocolSettings(warmup=1, repeats=40, rounds=10, estimator="cpu")
    meter = Meter(DEVICE, settings, lambda path: lambda: host.work(20_000))
    meter.reference()  # the anchor is taken before the slowdown
    model = lambda: host.work(60_000)  # noqa: E731
    quiet = meter.measure(model)
    quiet_raw, _ = combine(meter.last_rounds[0], "cpu", correct=False)
    # A slowdown well beyond a shared host's own drift (20-40 %), so each check below holds
    # on a busy host too; raw is compared with raw, since the anchor itself may have been
    # taken while the host was busy.
    host.slow = 2.5
    slow = meter.measure(model)
    slow_raw, _ = combine(meter.last_rounds[0], "cpu", correct=False)
    assert slow_raw / quiet_raw > 1.4  # the host really was slower
    assert slow.p50_ms / quiet.p50_ms == pytest.approx(1.0, abs=0.2)  # and it was taken out
    assert slow.drift is not None and slow.drift > 0.6
    assert slow.spread is not None and slow.n_runs == 40


def test_rounds_split_the_repeats_exactly() -> None:
    assert ProtocolSettings(repeats=7, rounds=5).split() == [2, 2, 1, 1, 1]
    assert ProtocolSettings(repeats=3, rounds=5).split() == [1, 1, 1]
    with pytest.raises(ValueError, match="estimator"):
        ProtocolSettings(estimator="fastest").check()


def test_auto_picks_thread_cpu_time_for_onnxruntime(tmp_path: Path) -> None:
    from latency_predictors.devices import measurement_backend

    one = measurement_backend("cpu-ort-fp32", threads=1, warmup=1, repeats=5, batch_size=1)
    one.meter.reference()  # type: ignore[attr-defined]
    assert one.meter.estimator == "cpu"  # type: ignore[attr-defined]
