"""A variant's replica on Ray Serve: its exported file in its runtime, behind a dynamic batcher.

Requests wait at most `max_wait_ms` for a batch of up to `max_batch_size` rows (Ray Serve's
`@serve.batch`, counting rows rather than requests); the runtime runs in a worker thread so the
replica keeps accepting requests into the next batch meanwhile. A file exported without a
dynamic batch axis runs its batch row by row. Each answer carries the batch size it ran in and
its queueing and inference times.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.serving.metrics import ReplicaMetrics, labels
from nas.serving.runtime import VariantSpec, load_runner


@dataclass
class Item:
    x: np.ndarray
    enqueued: float


def rows_in(items: list[Item]) -> int:
    """A batch's size in rows (a request may carry several)."""
    return sum(len(i.x) for i in items)


class VariantReplica:
    """The body of a variant's Ray Serve deployment (`nas.serving.app` wraps it)."""

    def __init__(self, deployment: str, spec: VariantSpec) -> None:
        self.spec = spec
        self.run = load_runner(spec)
        self.run(np.zeros((1, *spec.shape), np.float32))  # warm up before taking traffic
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=f"run-{spec.name}")
        self.tags = labels(deployment, spec.name)
        self.metrics = ReplicaMetrics()
        self.waiting = 0  # requests in this replica not yet in a running batch
        threading.Thread(target=self._watch_process, daemon=True).start()

    async def run_batch(self, items: list[Item]) -> list[dict[str, Any]]:
        """Run the items as one batch; one answer per item, in order."""
        start = time.time()
        self.waiting -= len(items)
        xs = np.concatenate([i.x for i in items])
        loop = asyncio.get_running_loop()
        logits = await loop.run_in_executor(self.pool, self._run, xs)
        run_s = time.time() - start
        queue_s = [max(0.0, start - i.enqueued) for i in items]
        self.metrics.batch(self.tags, len(xs), queue_s, run_s)
        out, at = [], 0
        for item, q in zip(items, queue_s, strict=False):
            n = len(item.x)
            out.append(
                {
                    "logits": logits[at : at + n],
                    "batch_size": len(xs),
                    "queue_ms": 1000 * q,
                    "inference_ms": 1000 * run_s,
                }
            )
            at += n
        return out

    def _run(self, xs: np.ndarray) -> np.ndarray:
        if self.spec.dynamic_batch or len(xs) == 1:
            return np.asarray(self.run(xs))
        return np.concatenate([np.asarray(self.run(xs[i : i + 1])) for i in range(len(xs))])

    def _watch_process(self) -> None:
        import psutil

        proc = psutil.Process(os.getpid())
        replica = {**self.tags, "replica": str(os.getpid())}
        last_cpu, last = sum(proc.cpu_times()[:2]), time.monotonic()
        while True:
            time.sleep(1.0)
            cpu, now = sum(proc.cpu_times()[:2]), time.monotonic()
            ratio = (cpu - last_cpu) / max(now - last, 1e-6)
            last_cpu, last = cpu, now
            self.metrics.process(replica, ratio, proc.memory_info().rss, self.waiting)
