"""A latency predictor for a new device from K measured candidates: `nas latency adapt`.

References are every latency table of the space under the runs folder's ``tables/`` and
shipped with the package (other devices than the new one; the first table found per device),
plus any named with ``--reference``; see `latency_predictors.adapt`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwnas_base.progress import PhaseProgress, quiet
from latency_predictors.adapt import (
    AdaptedPredictor,
    BenchmarkAdaptedPredictor,
    read_measurements,
)
from latency_predictors.device import Device
from latency_predictors.measure import measure_together
from latency_predictors.predictors import save_predictor
from latency_predictors.sources import (
    attach_anchors,
    latency_cache,
    predictor_path,
    table_folders,
)
from latency_predictors.table import find_tables
from nas.config import RunConfig
from nas.devices.check import fixed_candidates
from nas.devices.profiling import latency_config
from nas.errors import PredictorError, TableError
from nas.evaluate.latency import config_backend
from nas.run import DEFAULT_RUNS_DIR
from search_spaces import get_space


@dataclass(frozen=True)
class AdaptOptions:
    """What `nas latency adapt` asks for.

    Attributes:
        device: The new device's name.
        measurements: A CSV of ``candidate,latency_ms`` measured on it, or
        measure: measure `samples` fixed candidates here (a built-in device).
        samples: How many to measure with `measure`.
        references: More reference tables besides those found.
        config: A run config whose space and deployment shape to use, or
        space: a registered space with its default settings.
        runs_dir: Where predictors, tables and the latency cache are kept.
    """

    device: str
    measurements: Path | None = None
    measure: bool = False
    samples: int = 10
    references: list[Path] = field(default_factory=list)
    config: Path | None = None
    space: str | None = None
    runs_dir: Path = DEFAULT_RUNS_DIR


def reference_tables(options: AdaptOptions, space: Any, deployment: Any) -> list[Path]:
    """One table per other device that covers the space: named ones first (an error if one
    does not fit), then the folders' (skipped if one does not)."""
    space_name, space_obj = space.name, space
    found: dict[str, Path] = {}
    for path in [
        *options.references,
        *(p for f in table_folders(options.runs_dir) for p in find_tables(f)),
    ]:
        try:
            meta = json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if path in options.references:
                raise PredictorError(
                    f"reference table {path}: no readable .json side file"
                ) from None
            continue
        device = str((meta.get("device") or {}).get("name"))
        space = (meta.get("space") or {}).get("name")
        if path in options.references and space != space_name:
            raise PredictorError(
                f"reference table {path} is for space {space!r}, not {space_name!r}"
            )
        if space == space_name and device != options.device and device not in found:
            try:
                AdaptedPredictor(space_obj, deployment, [Path(path)])
            except (TableError, PredictorError):
                if path in options.references:
                    raise
                continue
            found[device] = Path(path)
    if not found:
        raise PredictorError(
            f"no latency table of another device for space {space_name!r} in "
            f"{' or '.join(map(str, table_folders(options.runs_dir)))}; profile one with "
            "`nas latency profile` or name one with --reference"
        )
    return list(found.values())


def adapt_device(options: AdaptOptions, progress: PhaseProgress = quiet) -> dict[str, Any]:
    """Fit and save the new device's few-shot predictor; the report.

    Raises:
        PredictorError: no measurements given, a bad measurements file, fewer than 3 samples,
            or no reference table.
        LatencyError: `measure` on a device this machine cannot measure.
    """
    if (options.measurements is None) == (not options.measure):
        raise PredictorError("give either --measurements CSV or --measure (not both)")
    if options.measure and options.samples < 3:
        raise PredictorError(f"--samples must be at least 3, got {options.samples}")
    if options.space == "nb201" and options.config is None:
        return _adapt_benchmark(options)
    config = latency_config(options.config, options.space, options.device)
    space: Any = get_space(config.space.name, config.space)
    deployment = config.deployment.target()
    tables = reference_tables(options, space, deployment)
    predictor = AdaptedPredictor(space, deployment, tables)
    if options.measurements is not None:
        candidates, ms = read_measurements(options.measurements, space)
        device = _named_device(options.device, config)
    else:
        backend: Any = config_backend(config)
        attach_anchors(backend, latency_cache(options.runs_dir))
        candidates = fixed_candidates(space, options.samples)
        results = measure_together(space, candidates, backend, deployment, progress=progress)
        ms = np.array([r.p50_ms for r in results])
        device = backend.device
    progress("fitting the few-shot predictor", 0, 1)
    predictor.fit(candidates, ms)
    predictor.device_ = device
    progress("fitting the few-shot predictor", 1, 1)
    return _save(options, predictor, config.space.model_dump(mode="json"))


def _adapt_benchmark(options: AdaptOptions) -> dict[str, Any]:
    """NAS-Bench-201: the references are the benchmark table's device columns."""
    if options.measurements is None or len(options.references) != 1:
        raise PredictorError(
            "for nb201, give --measurements CSV and the benchmark table as --reference "
            "(e.g. ../shared/bench/nb201/nb201.csv.gz)"
        )
    space: Any = get_space("nb201")
    predictor = BenchmarkAdaptedPredictor(space, options.references[0], options.device)
    candidates, ms = read_measurements(options.measurements, space)
    predictor.fit(candidates, ms)
    predictor.device_ = _named_device(options.device, RunConfig())
    return _save(options, predictor, {})


def _save(options: AdaptOptions, predictor: Any, space_config: dict[str, Any]) -> dict[str, Any]:
    """Save the fitted predictor where searches look for it; the command's report."""
    path = predictor_path(
        options.runs_dir, options.device, predictor.space.name, space_config, "fewshot"
    )
    save_predictor(predictor, path)
    return {
        "device": options.device,
        "predictor_file": str(path),
        "references": predictor.inputs,
        "samples": len(predictor.samples_),
        "expected_error": predictor.loo_,
    }


def _named_device(name: str, config: RunConfig) -> Device:
    """The identity of a device known only by name and the config's settings."""
    return Device(
        name=name,
        hardware="unknown",
        runtime="unknown",
        runtime_version="unknown",
        precision="unknown",
        batch_size=config.deployment.batch_size,
        threads=config.latency.threads,
    )
