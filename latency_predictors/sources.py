"""Where a search gets each candidate's latency: measured, predicted, or both (hybrid).

The three sources share one call: ``source(candidate, model=None) -> (result, cached)``. This
module builds them from plain values (a backend, a deployment shape, a table or a fitted
predictor) and finds the files they read: a device's latency table, a fitted predictor, the
latency cache. Turning a run config into a source is `nas`'s part.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from hwnas_base.errors import TableError
from latency_predictors.backends import LatencyBackend, LatencyResult
from latency_predictors.cache import LatencyCache
from latency_predictors.calibration import describe_host, find_calibration, profiled_here
from latency_predictors.deployment import Deployment
from latency_predictors.device import Device, host_identity
from latency_predictors.devices import BUILTIN_DEVICES, TABLES_DIR
from latency_predictors.measure import measure_candidate
from latency_predictors.predictors import PREDICTOR_SUFFIX, LookupTablePredictor
from latency_predictors.table import LatencyTable, find_tables, load_table

LATENCY_CACHE = Path(".cache") / "latency.sqlite"
PREDICTORS_DIR = "predictors"
USER_TABLES = "tables"


class LatencySource(Protocol):
    device: Device
    description: str
    notes: list[str]

    def __call__(
        self, candidate: Any, model: nn.Module | None = None
    ) -> tuple[LatencyResult, bool]:
        """The candidate's latency, and whether it came from a cache."""
        ...


class MeasuredLatency:
    def __init__(
        self,
        space: Any,
        backend: LatencyBackend,
        deployment: Deployment,
        cache: LatencyCache | None,
    ) -> None:
        self.space, self.backend, self.deployment, self.cache = space, backend, deployment, cache
        self.device = backend.device
        self.notes: list[str] = []
        attach_anchors(backend, cache)
        d = self.device
        self.description = (
            f"measured on {d.name} ({d.runtime} {d.runtime_version}, {d.precision}, "
            f"{d.threads} thread{'s' if d.threads > 1 else ''})"
        )

    def __call__(
        self, candidate: Any, model: nn.Module | None = None
    ) -> tuple[LatencyResult, bool]:
        return measure_candidate(
            self.space, candidate, self.backend, self.deployment, cache=self.cache, model=model
        )


def attach_anchors(backend: LatencyBackend, cache: LatencyCache | None) -> None:
    """Let `backend` keep its reference anchor in `cache`, so that every session on this host
    corrects drift to the same speed (`latency_predictors.protocol`)."""
    meter = getattr(backend, "meter", None)
    if meter is not None and cache is not None and meter.store is None:
        meter.store = cache


class PredictedLatency:
    def __init__(
        self, predictor: Any, device: Device, description: str, notes: Sequence[str] = ()
    ) -> None:
        self.predictor, self.device = predictor, device
        self.description = description
        self.notes = list(notes)

    def __call__(
        self, candidate: Any, model: nn.Module | None = None
    ) -> tuple[LatencyResult, bool]:
        pred, std = self.predictor.predict([candidate], return_std=True)
        ms, sd = float(pred[0]), float(std[0])
        result = LatencyResult(
            device=self.device,
            mean_ms=ms,
            std_ms=sd,
            p50_ms=ms,
            p90_ms=math.nan,
            min_ms=math.nan,
            n_runs=0,
            warmup=0,
            source="predicted",
            predicted_ms=ms,
            uncertainty=sd / ms,
        )
        return result, False


class HybridLatency:
    """Predict; measure instead when the predictor's relative std exceeds `max_uncertainty`."""

    def __init__(
        self, predicted: PredictedLatency, measured: MeasuredLatency, max_uncertainty: float
    ) -> None:
        self.predicted, self.measured = predicted, measured
        self.max_uncertainty = max_uncertainty
        self.device = measured.device
        self.notes = predicted.notes + measured.notes
        self.description = (
            f"{predicted.description}; measured on {measured.device.name} when the predicted "
            f"std exceeds {max_uncertainty:.0%} and for the final front"
        )

    def __call__(
        self, candidate: Any, model: nn.Module | None = None
    ) -> tuple[LatencyResult, bool]:
        guess, _ = self.predicted(candidate)
        if guess.uncertainty is not None and guess.uncertainty <= self.max_uncertainty:
            return guess, False
        result, cached = self.measured(candidate, model)
        return replace(result, predicted_ms=guess.p50_ms, uncertainty=guess.uncertainty), cached


def space_id(space_name: str, space_config: dict[str, Any]) -> str:
    """Short stable name of a configured space, for predictor file names."""
    digest = hashlib.sha256(json.dumps(space_config, sort_keys=True).encode()).hexdigest()
    return f"{space_name}-{digest[:8]}"


def predictor_path(
    runs_dir: Path, device: str, space_name: str, space_config: Any, kind: str
) -> Path:
    return (
        Path(runs_dir)
        / PREDICTORS_DIR
        / device
        / f"{space_id(space_name, space_config)}-{kind}{PREDICTOR_SUFFIX}"
    )


def table_folders(runs_dir: Path) -> tuple[Path, ...]:
    """Where device tables are looked for: the runs folder's own ``tables/`` (tables added by
    users), then the tables shipped with the package."""
    return Path(runs_dir) / USER_TABLES, TABLES_DIR


def find_device_table(
    device: str,
    space_name: str,
    space_config: Any = None,
    folders: Sequence[Path] = (TABLES_DIR,),
) -> Path | None:
    """The table in `folders` (searched in order) for `device` and `space_name`, if any.

    A table profiled for exactly `space_config` wins over one for another configuration of the
    same space (which may still cover it).
    """
    matches = []
    for path in (p for folder in folders for p in find_tables(folder)):
        try:
            meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        space = meta.get("space") or {}
        if (meta.get("device") or {}).get("name") == device and space.get("name") == space_name:
            if space_config is not None and space.get("config") == space_config:
                return path
            matches.append(path)
    return matches[0] if matches else None


def check_table_device(
    table: LatencyTable, *, device: str, threads: int, deployment: Deployment
) -> None:
    """`TableError` when the table's device identity contradicts what a search asks for.

    Args:
        table: The loaded table.
        device: The device the search targets.
        threads: The runtime threads the search measures with.
        deployment: The deployment shape the search times at.
    """
    dev = table.device
    problems = []
    if dev.name != device:
        problems.append(f"device {dev.name!r}, the config asks for {device!r}")
    if dev.batch_size != deployment.batch_size:
        problems.append(
            f"batch size {dev.batch_size}, the config deploys at {deployment.batch_size}"
        )
    builtin = BUILTIN_DEVICES.get(device)
    if builtin is not None:
        if dev.precision != builtin.precision or dev.runtime != builtin.backend:
            problems.append(
                f"{dev.runtime} {dev.precision}; {device} is {builtin.backend} {builtin.precision}"
            )
        if dev.threads != threads:
            problems.append(f"{dev.threads} threads, the config asks for {threads}")
    dep = table.deployment
    if dep and (dep.get("channels"), dep.get("num_classes")) != (
        deployment.channels,
        deployment.num_classes,
    ):
        problems.append(
            f"deployment {dep.get('channels')} channels / {dep.get('num_classes')} classes, the "
            f"config has {deployment.channels} / {deployment.num_classes}"
        )
    if problems:
        raise TableError(f"latency table {table.path}: measured for " + "; ".join(problems))


def table_predictor(
    path: Path, space: Any, deployment: Deployment, *, device: str, threads: int
) -> tuple[LookupTablePredictor, LatencyTable]:
    """The table at `path`, checked against the device and space, with its correction fitted.

    A table profiled on another host is corrected with this host's calibration when there is
    one (`latency_predictors.calibration`); otherwise with its own, and `host_note` on the
    predictor says so.

    Raises:
        TableError: the table is malformed, measured for another device or shape, or lacks an
            operator of `space`, or this host's calibration of it does not fit it.
        PredictorError: the table holds too few whole-model measurements to fit the correction.
    """
    table = load_table(path)
    check_table_device(table, device=device, threads=threads, deployment=deployment)
    predictor = LookupTablePredictor(table, space, deployment)
    predictor.check_space(list(space.covering_candidates()))
    if profiled_here(table):
        return predictor.fit_calibration(), table
    calibration = find_calibration(table)
    if calibration is None:
        predictor.fit_calibration()
        predictor.host_note = (
            f"latency table {Path(table.path).name} was profiled on {describe_host(table.host)} "
            f"and is not calibrated for this host ({host_identity()['id']}): its milliseconds "
            f"are that host's; calibrate it here in a minute with `nas latency calibrate "
            f"--device {device} --table {table.path}`"
        )
        return predictor, table
    names, ms = zip(*calibration.samples, strict=True)
    predictor.fit([space.decode(c) for c in names], list(ms))
    predictor.calibrated_here = calibration.path
    return predictor, table


def latency_cache(runs_dir: Path) -> LatencyCache:
    """The latency cache shared by every run under `runs_dir`."""
    return LatencyCache(Path(runs_dir) / LATENCY_CACHE)
