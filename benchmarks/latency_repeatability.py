"""How repeatable is a latency measurement on this host? The old one-window protocol beside the
drift-robust one (`latency_predictors.protocol`), on the same models in one run.

Exports --models random candidates of a config's space at its deployment shape, then times all
of them twice with each protocol, the passes alternating (old A, new A, old B, new B) so both
see the same stretch of the host's life:

- old: each model in turn, 10 warm-up calls and one window of 50 timed calls, the median;
- new: 50 calls split in 5 interleaved rounds, each after a reference chunk, drift-corrected.

For the new protocol every estimator is computed from the same raw rounds (median, p10, min,
mean, thread CPU time), with and without the drift correction (whose factors come from the
reference timed with the estimator `auto` picks). Printed per protocol: the share
of models whose two passes agree within +-5 % and +-10 %, Spearman between passes, and the
median per-model spread; then the host's drift as the reference saw it. Target: the new
protocol >= 98 % within +-10 %.

    .venv/bin/python benchmarks/latency_repeatability.py [configs/quickstart.yaml]
        [--device cpu-ort-fp32] [--models 100]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from latency_predictors.devices import measurement_backend
from latency_predictors.onnx_export import export_onnx
from latency_predictors.protocol import ESTIMATORS, Round, combine, time_chunk, within
from nas.config import load_config
from search_spaces import get_space


def _burst(seed: int, stop: Any) -> None:
    """Spin for 0.3-3 s, rest for 0.3-3 s, until `stop` is set: a noisy neighbour."""
    rng = np.random.default_rng(seed)
    while not stop.is_set():
        end = time.perf_counter() + rng.uniform(0.3, 3)
        while time.perf_counter() < end and not stop.is_set():
            pass
        stop.wait(rng.uniform(0.3, 3))


@contextmanager
def neighbours(n: int) -> Iterator[None]:
    """`n` processes loading the CPU in random bursts while the block runs."""
    stop = multiprocessing.Event()
    procs = [multiprocessing.Process(target=_burst, args=(i, stop)) for i in range(n)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        stop.set()
        for p in procs:
            p.join()


def old_pass(calls: list[Any]) -> np.ndarray:
    """One window per model: 10 warm-up calls, then the median of 50."""
    out = []
    for call in calls:
        time_chunk(call, 10)
        out.append(float(np.median(time_chunk(call, 50)[0])))
    return np.array(out)


def row(name: str, a: np.ndarray, b: np.ndarray, spread: float | None) -> str:
    rho = spearmanr(a, b).statistic
    tail = f"{spread:>10.1%}" if spread is not None else f"{'':>10}"
    return f"{name:<34}{within(a, b, 0.05):>9.1%}{within(a, b, 0.10):>9.1%}{rho:>10.4f}{tail}"


def figures(rounds: list[list[Round]], estimator: str, correct: bool) -> tuple[np.ndarray, float]:
    pairs = [combine(r, estimator, correct) for r in rounds]
    return np.array([p[0] for p in pairs]), float(np.median([p[1] for p in pairs]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, nargs="?", default=Path("configs/quickstart.yaml"))
    parser.add_argument("--device", default="cpu-ort-fp32")
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--load",
        type=int,
        default=2,
        help="also measure with this many bursty background processes (0: quiet host only)",
    )
    args = parser.parse_args()

    config = load_config(args.config)
    space = get_space(config.space.name, config.space)
    dep = config.deployment.target()
    backend: Any = measurement_backend(
        args.device, threads=config.latency.threads, warmup=10, repeats=50, batch_size=1
    )
    rng = np.random.default_rng(args.seed)
    cands = list(dict.fromkeys(space.sample(rng) for _ in range(args.models)))
    with tempfile.TemporaryDirectory() as tmp:
        calls = []
        for i, cand in enumerate(cands):
            shape = dep.shape(space.resolution(cand))
            model = space.build(cand, dep.num_classes, dep.channels)
            path = export_onnx(model, shape, Path(tmp) / f"{i}.onnx")
            calls.append(backend.prepare(path, shape))
    meter = backend.meter
    meter.reference()
    print(
        f"{len(calls)} candidates of {config.space.name} on {args.device} "
        f"({backend.device.hardware}); reference anchor {meter.anchor_ms:.3f} ms"
    )
    compare(calls, meter, "quiet host")
    if args.load:
        with neighbours(args.load):
            compare(calls, meter, f"{args.load} bursty neighbour processes (0.3-3 s on/off)")


def compare(calls: list[Any], meter: Any, condition: str) -> None:
    """Two passes of each protocol, alternating; the agreement table."""
    print(f"\n== {condition}")
    old: list[np.ndarray] = []
    new: list[list[list[Round]]] = []
    drift: list[float] = []
    seconds = {"old": 0.0, "new": 0.0}
    for _ in range(2):
        start = time.perf_counter()
        old.append(old_pass(calls))
        seconds["old"] += time.perf_counter() - start
        start = time.perf_counter()
        results = meter.measure_many(calls)
        seconds["new"] += time.perf_counter() - start
        new.append(meter.last_rounds)
        drift += [r.drift for r in results]
    print(f"{'protocol':<34}{'+-5 %':>9}{'+-10 %':>9}{'Spearman':>10}{'spread':>10}")
    print(row("old: one window of 50, median", old[0], old[1], None))
    for estimator in (e for e in ESTIMATORS if e != "auto"):
        for correct in (True, False):
            a, sa = figures(new[0], estimator, correct)
            b, sb = figures(new[1], estimator, correct)
            name = f"new: 5 rounds, {estimator}{'' if correct else ', uncorrected'}"
            print(row(name, a, b, (sa + sb) / 2))
    print(
        f"\nhost drift seen by the reference: median {np.median(drift):.1%}, max "
        f"{np.max(drift):.1%} (per model, largest departure from the anchor)"
    )
    print(
        f"time per pass: old {seconds['old'] / 2:.1f} s, new {seconds['new'] / 2:.1f} s "
        f"(ratio {seconds['new'] / seconds['old']:.2f})"
    )
    a, _ = figures(new[0], "median", True)
    b, _ = figures(new[1], "median", True)
    print(
        f"new protocol (median, corrected) {within(a, b, 0.10):.1%} within +-10 % vs old "
        f"{within(old[0], old[1], 0.10):.1%} (target >= 98 %)"
    )


if __name__ == "__main__":
    main()
