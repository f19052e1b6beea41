"""A bounded load generator for a deployment: a fixed number of requests from a fixed number of
concurrent clients, each request a real image, optionally followed by its ground-truth label as
feedback. Every request is accounted for: answered, refused (4xx), rejected (503) or failed.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LoadResult:
    sent: int = 0
    codes: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0  # no HTTP answer at all (connection refused, timeout)
    latencies_ms: list[float] = field(default_factory=list)  # answered requests, client side
    batch_sizes: list[int] = field(default_factory=list)
    variants: Counter[str] = field(default_factory=Counter)
    feedback_posted: int = 0
    seconds: float = 0.0

    @property
    def answered(self) -> int:
        return self.codes.get(200, 0)

    @property
    def rejected(self) -> int:
        return sum(n for c, n in self.codes.items() if c != 200)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def throughput(self) -> float:
        return self.answered / self.seconds if self.seconds else float("nan")


def simulated_feedback(
    p_correct: dict[str, float], seed: int = 0
) -> Callable[[int, dict[str, Any], int], int]:
    """A `label_of` for `run_load` simulating variants of known quality: each variant's answer
    is labelled right with probability `p_correct[variant]`, else wrong (the next class)."""
    rng = np.random.default_rng(seed)

    def label_of(_: int, body: dict[str, Any], truth: int) -> int:
        right = rng.random() < p_correct[body["variant"]]
        return int(body["class"]) if right else (int(body["class"]) + 1) % 10

    return label_of


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


async def run_load(
    url: str,
    images: list[bytes],
    labels: np.ndarray | None,
    *,
    requests: int,
    concurrency: int,
    unit_ids: int = 0,
    variant: str | None = None,
    label_of: Callable[[int, dict[str, Any], int], int] | None = None,
    timeout_s: float = 30.0,
    seed: int = 0,
) -> LoadResult:
    """Send `requests` PNG images to ``url/predict`` from `concurrency` clients.

    Args:
        images: PNG bodies, sent in turn.
        labels: their true classes; when given, each answer is followed by feedback.
        unit_ids: number of distinct unit ids to draw from (0: none, random assignment).
        variant: send every request to this variant (the X-Variant header).
        label_of: (request index, the answer's JSON, true label) -> the label to post (a
            simulation of variants that differ on feedback); default the true label.
    """
    import httpx

    result = LoadResult()
    rng = np.random.default_rng(seed)
    units = rng.integers(0, max(unit_ids, 1), size=requests)
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client(http: httpx.AsyncClient) -> None:
        for i in counter:
            k = i % len(images)
            headers = {"content-type": "image/png"}
            if unit_ids:
                headers["x-unit-id"] = f"unit-{units[i]}"
            if variant is not None:
                headers["x-variant"] = variant
            result.sent += 1
            t0 = time.perf_counter()
            try:
                r = await http.post(f"{url}/predict", content=images[k], headers=headers)
            except httpx.HTTPError:
                result.transport_errors += 1
                continue
            result.codes[r.status_code] += 1
            if r.status_code != 200:
                continue
            result.latencies_ms.append(1000 * (time.perf_counter() - t0))
            body = r.json()
            result.batch_sizes.append(int(body["batch_size"]))
            result.variants[body["variant"]] += 1
            if labels is not None:
                truth = int(labels[k])
                label = label_of(i, body, truth) if label_of else truth
                fb = await http.post(
                    f"{url}/feedback", json={"request_id": body["request_id"], "label": label}
                )
                result.feedback_posted += int(fb.status_code == 200)

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result
