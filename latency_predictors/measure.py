"""Whole-candidate latency: build at the deployment shape, export to ONNX, time, cache."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from hwnas_base.errors import LatencyError
from hwnas_base.progress import PhaseProgress, quiet
from latency_predictors.backends import LatencyBackend, LatencyResult
from latency_predictors.cache import LatencyCache, latency_key
from latency_predictors.deployment import Deployment
from latency_predictors.onnx_export import export_onnx


def deployment_shape(
    space: Any, candidate: Any, deployment: Deployment
) -> tuple[int, int, int, int]:
    """The input shape `candidate` is deployed and timed at."""
    return deployment.shape(space.resolution(candidate))


def measure_candidate(
    space: Any,
    candidate: Any,
    backend: LatencyBackend,
    deployment: Deployment,
    *,
    cache: LatencyCache | None = None,
    model: nn.Module | None = None,
) -> tuple[LatencyResult, bool]:
    """Latency of `candidate` at the deployment shape, and whether it came from `cache`.

    Args:
        space: The candidate's search space.
        candidate: What to measure.
        backend: The device's measurement backend.
        deployment: The deployment shape.
        cache: Persistent cache of earlier measurements, or None.
        model: The candidate's deployment-shape network, if the caller has built it.
    """
    shape = deployment_shape(space, candidate, deployment)
    key = latency_key(space.name, space.encode(candidate), shape, deployment.num_classes)
    if cache is not None:
        hit = cache.get(backend.device, key)
        if hit is not None:
            return hit, True
    if model is None:
        model = space.build(candidate, deployment.num_classes, deployment.channels)
    with tempfile.TemporaryDirectory(prefix="nas-latency-") as tmp:
        path = export_onnx(model, shape, Path(tmp) / "model.onnx")
        result = backend.measure(path, shape)
    if not result.ok:
        raise LatencyError(f"latency measurement failed on {result.device.name}: {result.error}")
    if cache is not None:
        cache.put(key, result)
    return result, False


def measure_candidates(
    space: Any,
    candidates: Sequence[Any],
    backend: LatencyBackend,
    deployment: Deployment,
    *,
    cache: LatencyCache | None = None,
    progress: PhaseProgress = quiet,
    what: str = "measuring candidates",
) -> list[LatencyResult]:
    """`measure_candidate` over many candidates, reporting progress."""
    results = []
    for i, cand in enumerate(candidates):
        progress(f"{what} on {backend.device.name}", i, len(candidates))
        results.append(measure_candidate(space, cand, backend, deployment, cache=cache)[0])
    progress(f"{what} on {backend.device.name}", len(candidates), len(candidates))
    return results


def measure_together(
    space: Any,
    candidates: Sequence[Any],
    backend: LatencyBackend,
    deployment: Deployment,
    *,
    group: int = 25,
    progress: PhaseProgress = quiet,
    what: str = "measuring candidates, interleaved",
) -> list[LatencyResult]:
    """Latency of many candidates timed together: `group` at a time in interleaved rounds
    (`LatencyBackend.measure_many`), so the candidates of a group see the same host states.
    Never cached: this is for checking measurements against each other.

    Raises:
        LatencyError: a candidate failed to export or run.
    """
    results: list[LatencyResult] = []
    for start in range(0, len(candidates), group):
        progress(f"{what} on {backend.device.name}", start, len(candidates))
        with tempfile.TemporaryDirectory(prefix="nas-latency-") as tmp:
            models = []
            for i, cand in enumerate(candidates[start : start + group]):
                shape = deployment_shape(space, cand, deployment)
                model = space.build(cand, deployment.num_classes, deployment.channels)
                models.append((export_onnx(model, shape, Path(tmp) / f"{i}.onnx"), shape))
            for result in backend.measure_many(models):
                if not result.ok:
                    raise LatencyError(
                        f"latency measurement failed on {result.device.name}: {result.error}"
                    )
                results.append(result)
    progress(f"{what} on {backend.device.name}", len(candidates), len(candidates))
    return results
