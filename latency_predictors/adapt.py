"""A latency predictor for a new device from a few measured candidates: `nas latency adapt`.

The new device's latency is predicted from what is already known about the space on other
devices: every latency table of the space (each a lookup-table predictor, so it gives a latency
for any candidate) and the FLOPs. Their predictions for a candidate are the inputs of the
few-shot regressor (`latency_predictors.fewshot.FewShotRegressor`), fitted on the K candidates
measured on the new device. Its leave-one-out error on those K is the expected error printed
before a search starts.

A fitted predictor is saved as JSON only (``kind: fewshot``): the reference tables' paths and
the K measurements; loading refits the regressor from them, so the file holds no model and
cannot run code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hwnas_base.errors import PredictorError
from latency_predictors.deployment import Deployment
from latency_predictors.device import Device
from latency_predictors.fewshot import FewShotRegressor
from latency_predictors.predictors import (
    FlopsPredictor,
    LookupTablePredictor,
    accuracy_report,
    read_record,
)
from latency_predictors.table import load_table


class AdaptedPredictor:
    """Few-shot predictor of one device over a space, on reference tables and FLOPs.

    Args:
        space: The search space.
        deployment: The deployment shape.
        tables: Paths of the reference latency tables (other devices, the same space).
    """

    kind = "fewshot"

    def __init__(self, space: Any, deployment: Deployment, tables: Sequence[Path]) -> None:
        self.space, self.deployment = space, deployment
        self.tables = [Path(t) for t in tables]
        self.references: list[LookupTablePredictor] = []
        for path in self.tables:
            table = load_table(path)
            name = (table.space or {}).get("name")
            if name not in (None, space.name):
                raise PredictorError(
                    f"reference table {path} is for space {name!r}, not {space.name!r}"
                )
            ref = LookupTablePredictor(table, space, deployment)
            ref.check_space(list(space.covering_candidates()))
            self.references.append(ref.fit_calibration())
        self.flops = FlopsPredictor(space, deployment)
        self.device_: Device | None = None
        self.samples_: list[tuple[str, float]] = []
        self.loo_: dict[str, float] = {}
        self.regressor_: FewShotRegressor | None = None

    @property
    def inputs(self) -> list[str]:
        """What each input column is: the reference devices, then FLOPs."""
        return [r.table.device.name for r in self.references] + ["flops"]

    def features(self, candidates: Sequence[Any]) -> np.ndarray:
        """Per candidate: each reference's predicted latency (ms), then its FLOPs."""
        cols = [np.asarray(r.predict(candidates), dtype=np.float64) for r in self.references]
        cols.append(self.flops.flops(candidates))
        return np.column_stack(cols)

    def fit(
        self, candidates: Sequence[Any], latency_ms: Sequence[float] | np.ndarray
    ) -> AdaptedPredictor:
        y = np.asarray(latency_ms, dtype=np.float64)
        x = self.features(candidates)
        self.regressor_ = FewShotRegressor().fit(x, y)
        self.samples_ = [
            (self.space.encode(c), float(v)) for c, v in zip(candidates, y, strict=True)
        ]
        self.loo_ = leave_one_out(x, y)
        return self

    def predict(
        self, candidates: Sequence[Any], return_std: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        if self.regressor_ is None:
            raise PredictorError("the few-shot predictor is not fitted; run `nas latency adapt`")
        pred = np.asarray(self.regressor_.predict(self.features(candidates)))
        if not return_std:
            return pred
        rel = self.loo_.get("rel_rmse", math.nan)
        return pred, pred * (rel if math.isfinite(rel) else 0.1)

    def fitted(self) -> dict[str, Any]:
        """What `save_predictor` stores: enough to refit exactly."""
        return {
            "tables": [str(p.resolve()) for p in self.tables],
            "inputs": self.inputs,
            "samples": [list(s) for s in self.samples_],
            "leave_one_out": self.loo_,
        }

    @classmethod
    def from_fitted(cls, fitted: dict[str, Any], space: Any, deployment: Deployment) -> Any:
        """A saved few-shot predictor (either kind), refitted from its samples."""
        names, ms = zip(*fitted["samples"], strict=True)
        predictor: Any
        if "benchmark_table" in fitted:
            device = str(fitted.get("device", ""))
            predictor = BenchmarkAdaptedPredictor(space, Path(fitted["benchmark_table"]), device)
        else:
            predictor = cls(space, deployment, [Path(t) for t in fitted["tables"]])
        return predictor.fit([space.decode(str(n)) for n in names], [float(v) for v in ms])


def leave_one_out(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The expected error of a few-shot fit: each sample predicted by a regressor fitted on the
    others, the whole fit (its choice of ms or log ms included) repeated each time, so the
    figure is not flattered by the choices made on the sample it scores."""
    if len(y) < 4:
        return {}
    pred = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        pred[i] = float(FewShotRegressor().fit(x[keep], y[keep]).predict(x[i : i + 1])[0])
    report = accuracy_report(pred, y)
    report["rel_rmse"] = float(np.sqrt(np.mean(((pred - y) / y) ** 2)))
    return report


MEASUREMENT_COLUMNS = ("candidate", "latency_ms")


def read_measurements(path: Path, space: Any) -> tuple[list[Any], np.ndarray]:
    """Candidates and latencies (ms) from a CSV with the columns ``candidate,latency_ms``.

    Raises:
        PredictorError: one line naming the file, the row and what is wrong with it.
    """
    import pandas as pd

    path = Path(path)

    def fail(problem: str) -> PredictorError:
        return PredictorError(f"measurements {path}: {problem}")

    if not path.is_file():
        raise fail("file not found")
    try:
        frame = pd.read_csv(path, dtype={"candidate": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise fail(f"not a readable CSV ({str(e).splitlines()[0]})") from None
    missing = [c for c in MEASUREMENT_COLUMNS if c not in frame.columns]
    if missing:
        raise fail(f"missing columns {missing}; expected {list(MEASUREMENT_COLUMNS)}")
    if len(frame) < 3:
        raise fail(f"{len(frame)} rows; a few-shot fit needs at least 3 measured candidates")
    candidates = []
    for i, text in enumerate(frame["candidate"]):
        try:
            candidates.append(space.decode(str(text)))
        except Exception as e:  # each space raises its own parse errors
            raise fail(
                f"row {i + 2}: {text!r} is not a candidate of space {space.name} ({e})"
            ) from None
    ms = pd.to_numeric(frame["latency_ms"], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(ms) | (ms <= 0))
    if len(bad):
        row = int(bad[0])
        raise fail(
            f"row {row + 2}: latency_ms = {frame['latency_ms'].iloc[row]!r} must be a positive "
            "number of milliseconds"
        )
    seen: dict[str, int] = {}
    for i, cand in enumerate(candidates):
        key = space.encode(cand)
        if key in seen:
            raise fail(f"row {i + 2} repeats the candidate of row {seen[key] + 2}")
        seen[key] = i
    return candidates, ms


BENCHMARK_META_COLUMNS = ("index", "arch_str")


class BenchmarkAdaptedPredictor:
    """Few-shot predictor of one device over a tabular benchmark's space (NAS-Bench-201): the
    references are the benchmark table's device columns (all but the new device's own, if it
    has one), plus the space's FLOPs.

    Args:
        space: The benchmark's space (with `encode` and `flops`).
        table: The benchmark table: ``arch_str``, one latency column per device (ms), and
            accuracy columns (``*_acc``), which are ignored.
        device: The new device; a column of that name is left out of the references.
    """

    kind = "fewshot"

    def __init__(self, space: Any, table: Path, device: str) -> None:
        import pandas as pd

        from latency_predictors.fewshot import FewShotPredictor

        self.space, self.table, self.device = space, Path(table), device
        try:
            frame = pd.read_csv(self.table)
        except (OSError, ValueError) as e:
            raise PredictorError(f"benchmark table {table}: unreadable ({e})") from None
        if "arch_str" not in frame.columns:
            raise PredictorError(f"benchmark table {table}: no arch_str column")
        self.devices = [
            c
            for c in frame.columns
            if c not in BENCHMARK_META_COLUMNS and not c.endswith("_acc") and c != device
        ]
        if not self.devices:
            raise PredictorError(f"benchmark table {table}: no device columns besides {device}")
        reference = frame.set_index("arch_str")[self.devices]
        flops = [float(space.flops(space.decode(a))) for a in reference.index]
        self.model = FewShotPredictor(reference, flops)
        self.device_: Device | None = None
        self.samples_: list[tuple[str, float]] = []
        self.loo_: dict[str, float] = {}

    @property
    def inputs(self) -> list[str]:
        return [*self.devices, "flops"]

    def fit(self, candidates: Sequence[Any], latency_ms: Sequence[float] | np.ndarray) -> Any:
        names = [self.space.encode(c) for c in candidates]
        y = np.asarray(latency_ms, dtype=np.float64)
        self.model.fit(names, y)
        self.samples_ = [(n, float(v)) for n, v in zip(names, y, strict=True)]
        self.loo_ = leave_one_out(self.model.features(names), y)
        return self

    def predict(
        self, candidates: Sequence[Any], return_std: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        pred = np.asarray(self.model.predict([self.space.encode(c) for c in candidates]))
        if not return_std:
            return pred
        return pred, pred * self.loo_.get("rel_rmse", 0.1)

    def fitted(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "benchmark_table": str(self.table.resolve()),
            "inputs": self.inputs,
            "samples": [list(s) for s in self.samples_],
            "leave_one_out": self.loo_,
        }


def load_adapted(path: Path, space: Any, deployment: Deployment) -> Any:
    """A few-shot predictor saved by `nas latency adapt`, refitted from its samples; reads only
    JSON (`latency_predictors.predictors.read_record` checks the format and version).

    Raises:
        PredictorError: the file is missing, not a few-shot predictor file, or its reference
            tables are gone or no longer fit.
    """
    from hwnas_base.errors import TableError

    record = read_record(Path(path))
    if record["kind"] != "fewshot":
        raise PredictorError(f"{path}: a {record['kind']} predictor, not a few-shot one")
    try:
        predictor = AdaptedPredictor.from_fitted(record["fitted"], space, deployment)
        device = record.get("device")
        predictor.device_ = Device.from_dict(device) if device else None
    except (KeyError, TypeError, ValueError, TableError) as e:
        raise PredictorError(
            f"{path}: malformed few-shot predictor ({type(e).__name__}: {e})"
        ) from None
    return predictor
