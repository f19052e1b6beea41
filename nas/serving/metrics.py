"""The deployment's Prometheus metrics, exported through Ray's metrics agent.

Ray's exporter puts ``ray_`` in front of every name, so Prometheus sees for example
``ray_nas_serving_requests_total``. Every metric has the labels ``deployment`` and ``variant``;
`grafana/serving.json` draws them.
"""

from __future__ import annotations

from typing import Any

# Buckets in seconds: 0.5 ms to 10 s; batch sizes 1 to 1024.
LATENCY_BUCKETS = [
    0.0005,
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.064,
    0.128,
    0.256,
    0.512,
    1.024,
    2.5,
    10.0,
]
BATCH_BUCKETS = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0]
TAGS = ("deployment", "variant")


class IngressMetrics:
    """What the endpoint sees: requests by status code, end-to-end latency, traffic weights."""

    def __init__(self) -> None:
        from ray.util import metrics

        self.requests = metrics.Counter(
            "nas_serving_requests",
            description="Requests answered or refused, by HTTP status code.",
            tag_keys=(*TAGS, "code"),
        )
        self.latency = metrics.Histogram(
            "nas_serving_request_duration_seconds",
            description="End-to-end time of a request inside the endpoint.",
            boundaries=LATENCY_BUCKETS,
            tag_keys=TAGS,
        )
        self.weight = metrics.Gauge(
            "nas_serving_traffic_percent",
            description="Share of traffic the variant is assigned, percent.",
            tag_keys=TAGS,
        )

    def request(self, tags: dict[str, str], code: int, seconds: float | None) -> None:
        self.requests.inc(1, {**tags, "code": str(code)})
        if seconds is not None:
            self.latency.observe(seconds, tags)


class ReplicaMetrics:
    """What a variant's replica sees: its queue, its batches, the runtime's time, its process."""

    def __init__(self) -> None:
        from ray.util import metrics

        self.queue_seconds = metrics.Histogram(
            "nas_serving_queue_seconds",
            description="Time a request waited before its batch started.",
            boundaries=LATENCY_BUCKETS,
            tag_keys=TAGS,
        )
        self.inference_seconds = metrics.Histogram(
            "nas_serving_inference_seconds",
            description="Time the runtime took for the batch that held the request.",
            boundaries=LATENCY_BUCKETS,
            tag_keys=TAGS,
        )
        self.batch_size = metrics.Histogram(
            "nas_serving_batch_size",
            description="Rows per batch the runtime ran.",
            boundaries=BATCH_BUCKETS,
            tag_keys=TAGS,
        )
        self.queue_depth = metrics.Gauge(
            "nas_serving_queue_depth",
            description="Requests waiting in the replica for a batch.",
            tag_keys=(*TAGS, "replica"),
        )
        self.cpu = metrics.Gauge(
            "nas_serving_replica_cpu_ratio",
            description="CPU time of the replica process per second of wall time (1 = a core).",
            tag_keys=(*TAGS, "replica"),
        )
        self.memory = metrics.Gauge(
            "nas_serving_replica_resident_memory_bytes",
            description="Resident memory of the replica process.",
            tag_keys=(*TAGS, "replica"),
        )

    def batch(self, tags: dict[str, str], rows: int, queue_s: list[float], run_s: float) -> None:
        self.batch_size.observe(rows, tags)
        for q in queue_s:
            self.queue_seconds.observe(q, tags)
            self.inference_seconds.observe(run_s, tags)

    def process(self, tags: dict[str, str], cpu: float, rss: float, depth: int) -> None:
        self.cpu.set(cpu, tags)
        self.memory.set(rss, tags)
        self.queue_depth.set(depth, tags)


def labels(deployment: str, variant: str) -> dict[str, Any]:
    return {"deployment": deployment, "variant": variant}
