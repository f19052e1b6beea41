"""Prometheus metrics of the service (prometheus-client), served on ``/metrics``.

Searches and exports by state, trials by state, trial durations and measured latencies are
read from the jobs and the runs' studies when Prometheus scrapes (each study read is cached
while it is unchanged); HTTP requests are counted as they are served, by route template, so
the number of series stays bounded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from nas.errors import NASError
from nas.record import LATENCY
from nas.service.jobs import EXPORT, SEARCH, STATES
from nas.service.state import Service

DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5)
TRIAL_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")


def _histogram(
    name: str, doc: str, values: list[float], buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    counts = [sum(v <= b for v in values) for b in buckets]
    return HistogramMetricFamily(
        name,
        doc,
        buckets=[(str(b), c) for b, c in zip(buckets, counts, strict=True)]
        + [("+Inf", len(values))],
        sum_value=float(sum(values)),
    )


class SearchCollector(Collector):
    """Jobs and trials, read at scrape time."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        counts = self.svc.store.counts()
        for kind, name in ((SEARCH, "nas_searches"), (EXPORT, "nas_exports")):
            family = GaugeMetricFamily(
                name, f"{kind} jobs of the service by state", labels=["state"]
            )
            for state in STATES:
                family.add_metric([state], counts.get((kind, state), 0))
            yield family
        trials = GaugeMetricFamily(
            "nas_trials", "trials of every run in the runs folder, by state", labels=["state"]
        )
        totals = dict.fromkeys(TRIAL_STATES, 0)
        durations: list[float] = []
        latencies: list[float] = []
        for name in self.svc.reader.names():
            try:
                frame = self.svc.reader.trials(name)
            except NASError:
                continue
            for label, n in frame["state"].value_counts().items():
                totals[str(label)] = totals.get(str(label), 0) + int(n)
            done = frame[frame["state"] == "COMPLETE"]
            durations += [float(d) for d in done["duration_s"] if not math.isnan(d)]
            latencies += [float(v) / 1000 for v in done[LATENCY] if not math.isnan(v)]
        for state, n in totals.items():
            trials.add_metric([state.lower()], n)
        yield trials
        yield _histogram(
            "nas_trial_duration_seconds",
            "wall time of completed trials",
            durations,
            DURATION_BUCKETS,
        )
        yield _histogram(
            "nas_trial_latency_seconds",
            "latency (p50) of completed trials' candidates on their device",
            latencies,
            LATENCY_BUCKETS,
        )


class HttpMetrics:
    """Requests by method, route template and status, and their durations."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "nas_http_requests",
            "HTTP requests served",
            ["method", "route", "status"],
            registry=registry,
        )
        self.seconds = Histogram(
            "nas_http_request_duration_seconds",
            "time to the response's headers",
            ["route"],
            registry=registry,
        )

    async def __call__(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        began = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        self.requests.labels(request.method, route, str(response.status_code)).inc()
        self.seconds.labels(route).observe(time.perf_counter() - began)
        return response


def registry_for(svc: Service) -> tuple[CollectorRegistry, HttpMetrics]:
    registry = CollectorRegistry()
    registry.register(SearchCollector(svc))
    return registry, HttpMetrics(registry)


def exposition(registry: CollectorRegistry) -> tuple[bytes, dict[str, Any]]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), {"media_type": CONTENT_TYPE_LATEST}
