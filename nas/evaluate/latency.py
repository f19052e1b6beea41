"""A run config's ``latency`` section, turned into the latency source the evaluator asks.

`latency_source(config, space, runs_dir)` returns a measured, predicted or hybrid source after
checking everything it can before any training: that the device exists and runs here, that a
table fits the device and covers the space, that a learned predictor has been fitted. The
sources themselves are `latency_predictors`'s and take plain values; this module only reads
the config.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from latency_predictors.adapt import load_adapted
from latency_predictors.backends import LatencyBackend
from latency_predictors.device import Device
from latency_predictors.devices import BUILTIN_DEVICES, measurement_backend, precision_device
from latency_predictors.predictors import LookupTablePredictor, load_predictor
from latency_predictors.sources import (
    HybridLatency,
    LatencySource,
    MeasuredLatency,
    PredictedLatency,
    find_device_table,
    latency_cache,
    predictor_path,
    table_folders,
    table_predictor,
)
from latency_predictors.table import LatencyTable
from nas.config import RunConfig
from nas.errors import PredictorError, TableError

# (run config, device name or None for the config's) -> a measurement backend. Measuring on
# another machine (a Ray node that carries the device) is a different factory.
BackendFactory = Callable[[RunConfig, str | None], LatencyBackend]


def config_backend(config: RunConfig, device: str | None = None) -> LatencyBackend:
    """The backend for a run config's device (or `device`), with the config's settings."""
    lat = config.latency
    return measurement_backend(
        device or lat.device,
        threads=lat.threads,
        warmup=lat.warmup,
        repeats=lat.repeats,
        batch_size=config.deployment.batch_size,
        protocol=lat.protocol(),
    )


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


def predicted(config: RunConfig) -> RunConfig:
    """`config` with latency predicted instead of measured."""
    return config.model_copy(
        update={"latency": config.latency.model_copy(update={"mode": "predicted"})}
    )


def lookup_predictor(
    config: RunConfig, space: Any, runs_dir: Path
) -> tuple[LookupTablePredictor, LatencyTable]:
    """The config's table (or the device's table under `runs_dir/tables/` or shipped with the
    package), checked against the device and space, with its correction fitted.

    Raises:
        TableError: no table for the device and space, or one that does not fit them.
    """
    lat = config.latency
    folders = table_folders(runs_dir)
    path = lat.table or find_device_table(
        lat.device, space.name, config.space.model_dump(mode="json"), folders
    )
    if path is None:
        raise TableError(
            f"no latency table for device {lat.device!r} and space {space.name!r} in "
            f"{' or '.join(map(str, folders))}; profile one with `nas latency profile --device "
            f"{lat.device} --config CONFIG` or set latency.table to a table's path"
        )
    return table_predictor(
        path, space, config.deployment.target(), device=lat.device, threads=lat.threads
    )


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
        measured = MeasuredLatency(
            space, backend(config, parent), config.deployment.target(), latency_cache(runs_dir)
        )
        if lat.mode == "measured":
            return measured
    guess = _predicted_latency(config, space, runs_dir, measured)
    if measured is None:
        return guess
    return HybridLatency(guess, measured, lat.hybrid_max_uncertainty)


def _predicted_latency(
    config: RunConfig, space: Any, runs_dir: Path, measured: MeasuredLatency | None
) -> PredictedLatency:
    lat = config.latency
    predictor: Any
    notes: list[str] = []
    if lat.predictor == "lut":
        predictor, table = lookup_predictor(config, space, runs_dir)
        device = table.device
        if measured is not None and table.device.hardware != measured.device.hardware:
            raise TableError(
                f"latency table {table.path}: profiled on {table.device.hardware}, but hybrid "
                f"mode measures on {measured.device.hardware}; profile this machine"
            )
        where = (
            f"this host's calibration {predictor.calibrated_here.name}"
            if predictor.calibrated_here is not None
            else "the table's"
        )
        description = (
            f"predicted by the lookup table {table.path.name} ({len(table)} operators, "
            f"correction fitted on {predictor.n_fit_} whole models of {where})"
        )
        if predictor.host_note is not None:
            notes.append(predictor.host_note)
    else:
        space_config = config.space.model_dump(mode="json")
        kind = lat.predictor
        path = predictor_path(runs_dir, lat.device, space.name, space_config, kind)
        if not path.is_file():
            how = (
                f"evaluate --device {lat.device} --predictor gbm"
                if kind == "gbm"
                else f"adapt --device {lat.device} --measurements CSV"
            )
            raise PredictorError(
                f"no fitted {kind} predictor for {lat.device} and this space at {path}; fit "
                f"one with `nas latency {how} --config CONFIG`"
            )
        load = load_adapted if kind == "fewshot" else load_predictor
        predictor = load(path, space, config.deployment.target())
        # The identity the predictor was fitted for, saved by `nas latency evaluate`/`adapt`.
        device = predictor.device_ or _unknown_device(lat.device, config)
        description = f"predicted by the {kind} predictor {path}"
        loo = getattr(predictor, "loo_", None)
        if loo:
            notes.append(
                f"few-shot predictor of {lat.device} from {len(predictor.samples_)} measured "
                f"candidates: expected error (leave-one-out) MAPE {loo['mape']:.1%}, "
                f"{loo['within_10']:.0%} within +-10 %, Spearman {loo['spearman']:.3f}"
            )
    if measured is None and lat.device in BUILTIN_DEVICES:
        description += "; not measured (latency.mode: predicted)"
    elif measured is None:
        description += f"; {lat.device} has no backend on this machine, so nothing was measured"
    return PredictedLatency(predictor, device, description, notes)


def _unknown_device(name: str, config: RunConfig) -> Device:
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
