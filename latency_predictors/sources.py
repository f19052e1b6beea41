"""Where a search gets each candidate's latency: measured, predicted, or both (hybrid).

`latency_source(config, space, runs_dir)` turns a run config's ``latency`` section into one of
the three, after checking everything it can before any training: that the device exists, that
a table fits the device and covers the space, that a learned predictor has been fitted.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from latency_predictors.backends import LatencyBackend, LatencyResult
from latency_predictors.cache import LatencyCache
from latency_predictors.device import Device
from latency_predictors.devices import (
    BUILTIN_DEVICES,
    TABLES_DIR,
    config_backend,
    precision_device,
)
from latency_predictors.measure import measure_candidate
from latency_predictors.predictors import LookupTablePredictor, load_predictor
from latency_predictors.table import LatencyTable, find_tables, load_table
from nas.config import DeploymentConfig, RunConfig
from nas.errors import PredictorError, TableError

LATENCY_CACHE = Path(".cache") / "latency.sqlite"
PREDICTORS_DIR = "predictors"


class LatencySource(Protocol):
    device: Device
    description: str

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
        deployment: DeploymentConfig,
        cache: LatencyCache | None,
    ) -> None:
        self.space, self.backend, self.deployment, self.cache = space, backend, deployment, cache
        self.device = backend.device
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


class PredictedLatency:
    def __init__(self, predictor: Any, device: Device, description: str) -> None:
        self.predictor, self.device = predictor, device
        self.description = description

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
        / f"{space_id(space_name, space_config)}-{kind}.pkl"
    )


def find_device_table(
    device: str, space_name: str, space_config: Any = None, folder: Path = TABLES_DIR
) -> Path | None:
    """The table in `folder` for `device` and `space_name`, if there is one.

    A table profiled for exactly `space_config` wins over one for another configuration of the
    same space (which may still cover it).
    """
    matches = []
    for path in find_tables(folder):
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


def check_table_device(table: LatencyTable, config: RunConfig) -> None:
    """`TableError` when the table's device identity contradicts the run config."""
    lat, dev = config.latency, table.device
    problems = []
    if dev.name != lat.device:
        problems.append(f"device {dev.name!r}, the config asks for {lat.device!r}")
    if dev.batch_size != config.deployment.batch_size:
        problems.append(
            f"batch size {dev.batch_size}, the config deploys at {config.deployment.batch_size}"
        )
    builtin = BUILTIN_DEVICES.get(lat.device)
    if builtin is not None:
        if dev.precision != builtin.precision or dev.runtime != builtin.backend:
            problems.append(
                f"{dev.runtime} {dev.precision}; {lat.device} is {builtin.backend} "
                f"{builtin.precision}"
            )
        if dev.threads != lat.threads:
            problems.append(f"{dev.threads} threads, the config asks for {lat.threads}")
    dep = table.deployment
    if dep and (dep.get("channels"), dep.get("num_classes")) != (
        config.deployment.channels,
        config.deployment.num_classes,
    ):
        problems.append(
            f"deployment {dep.get('channels')} channels / {dep.get('num_classes')} classes, the "
            f"config has {config.deployment.channels} / {config.deployment.num_classes}"
        )
    if problems:
        raise TableError(f"latency table {table.path}: measured for " + "; ".join(problems))


def lookup_predictor(config: RunConfig, space: Any) -> tuple[LookupTablePredictor, LatencyTable]:
    """The config's table, checked against the device and space, with its correction fitted."""
    lat = config.latency
    path = lat.table or find_device_table(
        lat.device, space.name, config.space.model_dump(mode="json")
    )
    if path is None:
        raise TableError(
            f"no latency table for device {lat.device!r} and space {space.name!r} in "
            f"{TABLES_DIR}; profile one with `nas latency profile --device {lat.device} "
            "--config CONFIG` or set latency.table to a table's path"
        )
    table = load_table(path)
    check_table_device(table, config)
    predictor = LookupTablePredictor(table, space, config.deployment)
    predictor.check_space(list(space.covering_candidates()))
    return predictor.fit_calibration(), table


# (run config, device name or None for the config's) -> a measurement backend. Measuring on
# another machine (a Ray node that carries the device) is a different factory.
BackendFactory = Callable[[RunConfig, str | None], LatencyBackend]


def latency_source(
    config: RunConfig, space: Any, runs_dir: Path, backend: BackendFactory = config_backend
) -> LatencySource:
    """The latency source a run config describes; errors before any work if it cannot be had."""
    lat = config.latency
    measured: MeasuredLatency | None = None
    if lat.mode != "predicted":
        # With compression the device names the runtime; the search's reference (and early
        # stopping's latency) is the fp32 parent on it.
        parent = precision_device(lat.device, "fp32") if config.compression.enabled else None
        cache = latency_cache(runs_dir)
        measured = MeasuredLatency(space, backend(config, parent), config.deployment, cache)
        if lat.mode == "measured":
            return measured
    if lat.predictor == "lut":
        predictor, table = lookup_predictor(config, space)
        device = table.device
        if measured is not None and table.device.hardware != measured.device.hardware:
            raise TableError(
                f"latency table {table.path}: profiled on {table.device.hardware}, but hybrid "
                f"mode measures on {measured.device.hardware}; profile this machine"
            )
        description = (
            f"predicted by the lookup table {table.path.name} ({len(table)} operators, "
            f"correction fitted on {predictor.n_fit_} whole models)"
        )
    else:
        path = predictor_path(
            runs_dir, lat.device, space.name, config.space.model_dump(mode="json"), "gbm"
        )
        if not path.is_file():
            raise PredictorError(
                f"no fitted gbm predictor for {lat.device} and this space at {path}; fit one "
                f"with `nas latency evaluate --device {lat.device} --predictor gbm --config "
                "CONFIG`"
            )
        predictor = load_predictor(path)
        # The identity the predictor was fitted for, saved by `nas latency evaluate`.
        device = getattr(predictor, "device_", None) or _device_of(lat.device, config)
        description = f"predicted by the gbm predictor {path}"
    if measured is None and lat.device in BUILTIN_DEVICES:
        description += "; not measured (latency.mode: predicted)"
    elif measured is None:
        description += f"; {lat.device} has no backend on this machine, so nothing was measured"
    predicted = PredictedLatency(predictor, device, description)
    if measured is None:
        return predicted
    return HybridLatency(predicted, measured, lat.hybrid_max_uncertainty)


def precision_backends(
    config: RunConfig, backend: BackendFactory = config_backend
) -> dict[str, LatencyBackend]:
    """One measurement backend per precision of a compression search, on the device's runtime.

    Raises:
        LatencyError: a precision the runtime cannot run (or this machine cannot measure).
    """
    return {
        p: backend(config, precision_device(config.latency.device, p))
        for p in config.compression.quantization.precisions
    }


def latency_cache(runs_dir: Path) -> LatencyCache:
    return LatencyCache(Path(runs_dir) / LATENCY_CACHE)


def _device_of(name: str, config: RunConfig) -> Device:
    spec = BUILTIN_DEVICES.get(name)
    return Device(
        name=name,
        hardware="unknown",
        runtime=spec.backend if spec else "unknown",
        runtime_version="unknown",
        precision=spec.precision if spec else "unknown",
        batch_size=config.deployment.batch_size,
        threads=config.latency.threads,
    )
