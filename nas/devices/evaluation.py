"""How good is a latency predictor? Fit it, measure held-out random candidates, compare with
the FLOPs baseline and with a second measurement of the same candidates (the host's own
repeatability: no predictor can be judged finer than that), and save the predictor with its
error report and a plot."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwnas_base.io import write_atomic
from hwnas_base.progress import PhaseProgress, quiet
from latency_predictors.backends import LatencyBackend
from latency_predictors.cache import LatencyCache
from latency_predictors.measure import measure_candidates, measure_together
from latency_predictors.predictors import (
    PREDICTOR_KINDS,
    FlopsPredictor,
    GradientBoostingPredictor,
    accuracy_report,
    save_predictor,
)
from latency_predictors.sources import attach_anchors, latency_cache, predictor_path
from nas.config import RunConfig
from nas.devices.check import repeatability
from nas.devices.profiling import latency_config
from nas.errors import PredictorError
from nas.evaluate.latency import config_backend, lookup_predictor
from nas.report.plots import predictor_figure
from nas.run import DEFAULT_RUNS_DIR
from search_spaces import get_space

# The row of a report that compares a second measurement with the first: how good a predictor
# could be on this host at all.
SECOND_MEASUREMENT = "second measurement"


@dataclass(frozen=True)
class PredictorEvaluation:
    """What `nas latency evaluate` asks for.

    Attributes:
        device: The device to measure on (see `nas devices`).
        kind: ``lut``, ``gbm`` or ``flops``.
        config: A run config whose space and deployment shape to use, or
        space: a registered space with its default settings.
        n_test: Held-out random candidates to measure.
        n_fit: gbm/flops: measured candidates to fit on (lut fits on its table's).
        seed: Seed of the random candidates.
        runs_dir: Where predictors, reports and the latency cache are kept.
    """

    device: str
    kind: str
    config: Path | None = None
    space: str | None = None
    n_test: int = 200
    n_fit: int = 100
    seed: int = 0
    runs_dir: Path = DEFAULT_RUNS_DIR


def evaluate_predictor(
    options: PredictorEvaluation, progress: PhaseProgress = quiet
) -> dict[str, Any]:
    """Fit a predictor, measure held-out candidates, compare with FLOPs; save both.

    Returns:
        The report (also written beside the predictor as ``.report.json`` and ``.html``).

    Raises:
        PredictorError: an unknown kind, too few candidates asked, or a space too small.
    """
    kind = options.kind
    if kind not in PREDICTOR_KINDS:
        raise PredictorError(f"predictor {kind!r} unknown; allowed: {', '.join(PREDICTOR_KINDS)}")
    if options.n_test < 5 or options.n_fit < 10:
        raise PredictorError(
            f"need --test >= 5 and --fit >= 10, got {options.n_test} and {options.n_fit}"
        )
    config = latency_config(options.config, options.space, options.device)
    space = get_space(config.space.name, config.space)
    backend = config_backend(config)
    cache = latency_cache(Path(options.runs_dir))
    attach_anchors(backend, cache)
    predictor, fit_set, fit_ms = _fit(options, config, space, backend, cache, progress)
    predictor.device_ = backend.device
    test_set = _held_out(space, set(fit_set), options.n_test, options.seed)
    deployment = config.deployment.target()
    results = measure_candidates(
        space,
        test_set,
        backend,
        deployment,
        cache=cache,
        progress=progress,
        what="measuring held-out candidates",
    )
    measured = np.array([r.p50_ms for r in results])
    again = measure_together(
        space, test_set, backend, deployment, progress=progress, what="measuring them again"
    )
    progress("predicting", 0, 1)
    predicted = np.asarray(predictor.predict(test_set))
    flops = predictor if kind == "flops" else FlopsPredictor(space, deployment).fit(fit_set, fit_ms)
    baseline = np.asarray(flops.predict(test_set))
    progress("predicting", 1, 1)
    space_config = config.space.model_dump(mode="json")
    path = predictor_path(Path(options.runs_dir), options.device, space.name, space_config, kind)
    report = {
        "device": backend.device.to_dict(),
        "predictor": kind,
        "space": space.name,
        "predictor_file": str(path),
        "n_fit": len(fit_set),
        "n_test": len(test_set),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "metrics": {
            kind: accuracy_report(predicted, measured),
            "flops": accuracy_report(baseline, measured),
            SECOND_MEASUREMENT: repeatability(measured, np.array([r.p50_ms for r in again])),
        },
        "test": [
            {"candidate": space.encode(c), "measured_ms": m, "predicted_ms": p, "flops_ms": b}
            for c, m, p, b in zip(test_set, measured, predicted, baseline, strict=True)
        ],
    }
    save_predictor(predictor, path)
    write_atomic(path.with_suffix(".report.json"), json.dumps(report, indent=1) + "\n")
    fig = predictor_figure(report)
    write_atomic(path.with_suffix(".report.html"), fig.to_html(include_plotlyjs=True))
    return report


def _fit(
    options: PredictorEvaluation,
    config: RunConfig,
    space: Any,
    backend: LatencyBackend,
    cache: LatencyCache,
    progress: PhaseProgress,
) -> tuple[Any, list[Any], np.ndarray]:
    """(the fitted predictor, the candidates it was fitted on, their measured latency)."""
    if options.kind == "lut":
        predictor, table = lookup_predictor(config, space, options.runs_dir)
        fit_set = [space.decode(c.candidate) for c in table.calibration]
        return predictor, fit_set, np.array([c.p50_ms for c in table.calibration])
    rng = np.random.default_rng(options.seed)
    fit_set = list(dict.fromkeys(space.sample(rng) for _ in range(options.n_fit)))
    results = measure_candidates(
        space,
        fit_set,
        backend,
        config.deployment.target(),
        cache=cache,
        progress=progress,
        what="measuring fitting candidates",
    )
    fit_ms = np.array([r.p50_ms for r in results])
    if options.kind == "gbm":
        return (
            GradientBoostingPredictor(space, seed=options.seed).fit(fit_set, fit_ms),
            fit_set,
            fit_ms,
        )
    flops = FlopsPredictor(space, config.deployment.target()).fit(fit_set, fit_ms)
    return flops, fit_set, fit_ms


def _held_out(space: Any, seen: set[Any], n_test: int, seed: int) -> list[Any]:
    """`n_test` random candidates, none of them in `seen`, from a stream of their own."""
    rng = np.random.default_rng(seed + 10_000)
    fitted = len(seen)
    test_set: list[Any] = []
    for _ in range(100 * n_test):
        cand = space.sample(rng)
        if cand not in seen:
            seen.add(cand)
            test_set.append(cand)
            if len(test_set) == n_test:
                return test_set
    raise PredictorError(
        f"found only {len(test_set)} held-out candidates besides the {fitted} fitted on; this "
        f"space is too small for --test {n_test}"
    )
