"""Recalibrate a latency table for this host from a few whole models: `nas latency calibrate`.

The candidates timed are the table's own calibration candidates (measured on the table's host
too, so the report can show how far apart the hosts are), then the fixed check candidates if
more are asked. The report gives the table's error on them before (its own correction) and
after (this host's, leave-one-out: each candidate predicted by a correction fitted without it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwnas_base.progress import PhaseProgress, quiet
from latency_predictors.calibration import describe_host, write_calibration
from latency_predictors.device import host_identity
from latency_predictors.measure import measure_together
from latency_predictors.predictors import LookupTablePredictor, accuracy_report
from latency_predictors.sources import attach_anchors, check_table_device, latency_cache
from latency_predictors.table import load_table
from nas.devices.check import fixed_candidates
from nas.devices.profiling import latency_config
from nas.errors import PredictorError, TableError
from nas.evaluate.latency import config_backend
from nas.run import DEFAULT_RUNS_DIR
from search_spaces import get_space


@dataclass(frozen=True)
class CalibrateOptions:
    """What `nas latency calibrate` asks for.

    Attributes:
        device: The device the table describes, measured here.
        table: The table (.csv with its .json side file).
        samples: Whole candidates to time here.
        config: A run config whose space, shape and protocol to use, or
        space: a registered space with its default settings.
        runs_dir: Where the latency cache (and the reference anchor) is kept.
    """

    device: str
    table: Path
    samples: int = 10
    config: Path | None = None
    space: str | None = None
    runs_dir: Path = DEFAULT_RUNS_DIR


def calibrate_table(options: CalibrateOptions, progress: PhaseProgress = quiet) -> dict[str, Any]:
    """Time `samples` candidates here, store them beside the table; the report.

    Raises:
        TableError: the table is for another device, space or shape.
        PredictorError: fewer than 3 samples asked.
        LatencyError: the device cannot be measured here.
    """
    if options.samples < 3:
        raise PredictorError(f"--samples must be at least 3, got {options.samples}")
    table = load_table(options.table)
    if table.device.name != options.device:
        raise TableError(
            f"latency table {table.path} is for device {table.device.name!r}, not "
            f"{options.device!r}; calibrate it with --device {table.device.name}"
        )
    config = latency_config(options.config, options.space, options.device)
    space: Any = get_space(config.space.name, config.space)
    deployment = config.deployment.target()
    check_table_device(
        table, device=options.device, threads=config.latency.threads, deployment=deployment
    )
    if (table.space or {}).get("name") not in (None, space.name):
        raise TableError(
            f"latency table {table.path} is for space {table.space.get('name')!r}, not "
            f"{space.name!r}"
        )
    predictor = LookupTablePredictor(table, space, deployment)
    predictor.check_space(list(space.covering_candidates()))
    own = [space.decode(c.candidate) for c in table.calibration]
    candidates = list(dict.fromkeys(own + fixed_candidates(space, options.samples)))
    candidates = candidates[: options.samples]
    backend: Any = config_backend(config)
    attach_anchors(backend, latency_cache(options.runs_dir))
    results = measure_together(
        space, candidates, backend, deployment, progress=progress, what="timing whole models"
    )
    measured = np.array([r.p50_ms for r in results])
    before = np.asarray(predictor.fit_calibration().predict(candidates))
    after = _leave_one_out(predictor, candidates, measured)
    samples = [
        {"candidate": space.encode(c), "p50_ms": r.p50_ms, "spread": r.spread}
        for c, r in zip(candidates, results, strict=True)
    ]
    path = write_calibration(table, backend.device, samples)
    return {
        "table": str(table.path),
        "calibration": str(path),
        "table_host": describe_host(table.host),
        "this_host": describe_host(host_identity()),
        "samples": len(samples),
        "before": accuracy_report(before, measured),
        "after_leave_one_out": accuracy_report(after, measured),
        "scale": float(np.median(measured / before)),
    }


def _leave_one_out(
    predictor: LookupTablePredictor, candidates: list[Any], measured: np.ndarray
) -> np.ndarray:
    if len(candidates) < 4:  # too few to leave one out: the fit's own error
        return np.asarray(predictor.fit(candidates, measured).predict(candidates))
    out = np.empty(len(candidates))
    for i in range(len(candidates)):
        rest = [c for j, c in enumerate(candidates) if j != i]
        predictor.fit(rest, np.delete(measured, i))
        out[i] = float(np.asarray(predictor.predict([candidates[i]]))[0])
    return out
