"""How repeatable are latency measurements on this host right now? `nas latency check`.

A fixed set of candidates (the same for every host: seed 0 of the config's space) is timed
twice with the measurement protocol, each pass in interleaved rounds; the two passes' agreement
(share within +-5 % and +-10 %, Spearman), the per-candidate spread and the drift the reference
network saw say how far a latency measured here can be trusted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwnas_base.progress import PhaseProgress, quiet
from latency_predictors.measure import measure_together
from latency_predictors.predictors import accuracy_report
from latency_predictors.sources import attach_anchors, latency_cache
from nas.devices.profiling import latency_config
from nas.errors import RunError
from nas.evaluate.latency import config_backend
from nas.run import DEFAULT_RUNS_DIR
from search_spaces import get_space

CHECK_SEED = 0


@dataclass(frozen=True)
class CheckOptions:
    """What `nas latency check` asks for.

    Attributes:
        device: The device to measure (see `nas devices`).
        config: A run config whose space, deployment shape and protocol to use, or
        space: a registered space with its default settings.
        candidates: How many fixed candidates to time twice.
        runs_dir: Where the latency cache (and the reference anchor) is kept.
    """

    device: str
    config: Path | None = None
    space: str | None = None
    candidates: int = 30
    runs_dir: Path = DEFAULT_RUNS_DIR


def fixed_candidates(space: Any, n: int, seed: int = CHECK_SEED) -> list[Any]:
    """`n` distinct random candidates of `space`, the same on every host."""
    rng = np.random.default_rng(seed)
    out: list[Any] = []
    for _ in range(100 * n):
        cand = space.sample(rng)
        if cand not in out:
            out.append(cand)
            if len(out) == n:
                return out
    raise RunError(f"the space holds only {len(out)} distinct candidates; ask for fewer")


def repeatability(first: np.ndarray, second: np.ndarray) -> dict[str, float]:
    """Agreement of two measurements of the same models, as a predictor's figures."""
    return accuracy_report(np.asarray(second), np.asarray(first))


def check_device(options: CheckOptions, progress: PhaseProgress = quiet) -> dict[str, Any]:
    """Time the fixed candidates twice; the report (see the module docstring).

    Raises:
        RunError: fewer than 5 candidates asked.
        LatencyError: the device cannot be measured here.
    """
    if options.candidates < 5:
        raise RunError(f"--candidates must be at least 5, got {options.candidates}")
    config = latency_config(options.config, options.space, options.device)
    space = get_space(config.space.name, config.space)
    backend: Any = config_backend(config)
    attach_anchors(backend, latency_cache(options.runs_dir))
    candidates = fixed_candidates(space, options.candidates)
    start = time.perf_counter()
    passes = [
        measure_together(
            space,
            candidates,
            backend,
            config.deployment.target(),
            progress=progress,
            what=f"pass {p + 1} of 2",
        )
        for p in range(2)
    ]
    first, second = (np.array([r.p50_ms for r in results]) for results in passes)
    drift = [r.drift for results in passes for r in results if r.drift is not None]
    spread = [r.spread for results in passes for r in results if r.spread is not None]
    meter = getattr(backend, "meter", None)
    return {
        "device": backend.device.to_dict(),
        "candidates": len(candidates),
        "estimator": getattr(meter, "estimator", None),
        "anchor_ms": getattr(meter, "anchor_ms", None),
        "repeatability": repeatability(first, second),
        "spread_median": float(np.median(spread)) if spread else None,
        "drift_median": float(np.median(drift)) if drift else None,
        "drift_max": float(np.max(drift)) if drift else None,
        "seconds": time.perf_counter() - start,
        "latency_ms": [[float(a), float(b)] for a, b in zip(first, second, strict=True)],
    }
