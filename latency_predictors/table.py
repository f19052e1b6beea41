"""Latency tables: per-operator latencies of one device, as a CSV file with a JSON side file.

``NAME.csv`` has one row per operator configuration::

    op,input_size,cin,cout,kernel,stride,expansion,se,act,precision,mean_ms,p50_ms,p90_ms,std_ms,n_runs
    ir,56,8,16,5,2,6,0.25,silu,fp32,0.110122,0.105172,0.10988,0.0206778,50

``NAME.json`` holds the metadata: ``format`` (``hwnas-latency-table``), ``version``, ``unit``
(``ms``), ``device`` (the full identity: name, hardware, runtime, runtime_version, precision,
batch_size, threads), ``space`` (the search space's name and config the operators come from),
``deployment`` (batch size, channels, classes) and ``calibration``: whole-model measurements of
a few random candidates, from which a predictor fits what the per-operator sum misses;
``profile_seconds``, the measuring time the profile took; ``host``, the machine it was profiled
on (`latency_predictors.device.host_identity`), and ``reference_ms``, the reference network's
anchor there (`latency_predictors.protocol`). Tables from before these two were recorded load
as profiled on an unknown host.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hwnas_base.errors import TableError
from hwnas_base.io import write_atomic
from latency_predictors.device import Device
from search_spaces.efficientnet.operators import OperatorKey

FORMAT = "hwnas-latency-table"
VERSION = 1
UNIT = "ms"
KEY_COLUMNS = (*OperatorKey.columns(), "precision")
STAT_COLUMNS = ("mean_ms", "p50_ms", "p90_ms", "std_ms", "n_runs")
COLUMNS = KEY_COLUMNS + STAT_COLUMNS
_INT_COLUMNS = ("input_size", "cin", "cout", "kernel", "stride", "expansion", "n_runs")


def metadata_path(table: Path) -> Path:
    return Path(table).with_suffix(".json")


@dataclass(frozen=True)
class Calibration:
    """One whole-model measurement stored with a table."""

    candidate: str
    p50_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float


@dataclass
class LatencyTable:
    """A loaded, validated table: operator key -> latency statistics."""

    path: Path
    device: Device
    space: dict[str, Any]
    deployment: dict[str, Any]
    frame: pd.DataFrame
    calibration: list[Calibration]
    host: dict[str, Any] = field(default_factory=dict)
    reference_ms: float | None = None

    def __post_init__(self) -> None:
        keys = self.frame[list(OperatorKey.columns())].itertuples(index=False, name=None)
        self._index = {OperatorKey(*k): i for i, k in enumerate(keys)}
        self._p50 = self.frame["p50_ms"].to_numpy(dtype=np.float64)
        self._std = self.frame["std_ms"].to_numpy(dtype=np.float64)

    def __len__(self) -> int:
        return len(self.frame)

    def __contains__(self, key: OperatorKey) -> bool:
        return key in self._index

    def missing(self, keys: Iterable[OperatorKey]) -> list[OperatorKey]:
        return sorted({k for k in keys if k not in self._index})

    def lookup(self, keys: Sequence[OperatorKey]) -> tuple[np.ndarray, np.ndarray]:
        """Median latency and std (ms) of each key; `TableError` naming the first missing."""
        rows = []
        for key in keys:
            row = self._index.get(key)
            if row is None:
                raise TableError(
                    f"{self.path}: no entry for operator {describe(key)}; profile the space "
                    "again with `nas latency profile`"
                )
            rows.append(row)
        return self._p50[rows], self._std[rows]


def describe(key: OperatorKey) -> str:
    return ", ".join(
        f"{name}={value}" for name, value in zip(OperatorKey.columns(), key.as_tuple(), strict=True)
    )


def _fail(path: Path, problem: str) -> TableError:
    return TableError(f"latency table {path}: {problem}")


def _read_metadata(path: Path) -> dict[str, Any]:
    """The side file of `path`, its format, version and unit checked."""
    meta_path = metadata_path(path)
    if not meta_path.is_file():
        raise _fail(path, f"metadata side file {meta_path.name} not found")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path, f"metadata {meta_path.name} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _fail(path, f"metadata {meta_path.name} lacks format: {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise _fail(path, f"format version {meta.get('version')!r} unsupported; expected {VERSION}")
    if meta.get("unit") != UNIT:
        raise _fail(path, f"unit {meta.get('unit')!r} unsupported; latencies must be in {UNIT!r}")
    return meta


def _read_frame(path: Path, precision: str) -> pd.DataFrame:
    """The operator rows of `path`: every column present, typed, finite, positive, unique."""
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise _fail(path, f"not a readable CSV ({str(e).splitlines()[0]})") from None
    wrong_unit = [c for c in frame.columns if c.endswith(("_us", "_s", "_ns"))]
    if wrong_unit:
        raise _fail(path, f"columns {wrong_unit} are not in ms; expected {list(STAT_COLUMNS)}")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise _fail(path, f"missing columns {missing}; a table has {list(COLUMNS)}")
    if frame.empty:
        raise _fail(path, "no rows")
    frame = frame[list(COLUMNS)].copy()
    for col in (*_INT_COLUMNS, "se", *STAT_COLUMNS):
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = frame.index[values.isna() | ~np.isfinite(values.astype(float))]
        if len(bad):
            raise _fail(
                path,
                f"row {bad[0] + 2}: {col} = {frame[col].iloc[bad[0]]!r} is not a finite number",
            )
        frame[col] = values
    for col in _INT_COLUMNS:
        frame[col] = frame[col].astype(np.int64)
    for col in STAT_COLUMNS:
        low = frame[col] < (1 if col == "n_runs" else 0)
        if col in ("p50_ms", "mean_ms"):
            low |= frame[col] == 0
        if low.any():
            row = int(np.flatnonzero(low.to_numpy())[0])
            raise _fail(path, f"row {row + 2}: {col} = {frame[col].iloc[row]} must be positive")
    precisions = set(frame["precision"].astype(str))
    if precisions != {precision}:
        raise _fail(path, f"precision column holds {sorted(precisions)}; the device is {precision}")
    frame["act"] = frame["act"].astype(str)
    frame["op"] = frame["op"].astype(str)
    dupes = frame.duplicated(list(KEY_COLUMNS))
    if dupes.any():
        row = int(np.flatnonzero(dupes.to_numpy())[0])
        raise _fail(path, f"row {row + 2} repeats an operator configuration")
    return frame


def _read_calibration(path: Path, items: list[Any]) -> list[Calibration]:
    calibration = []
    for i, item in enumerate(items):
        try:
            cal = Calibration(**item)
        except TypeError as e:
            raise _fail(path, f"calibration[{i}] malformed ({e})") from None
        if not (math.isfinite(cal.p50_ms) and cal.p50_ms > 0):
            raise _fail(path, f"calibration[{i}] p50_ms = {cal.p50_ms} must be positive")
        calibration.append(cal)
    return calibration


def load_table(path: str | Path) -> LatencyTable:
    """Read and validate a table and its side file; `TableError` names the file and problem."""
    path = Path(path)
    if path.suffix != ".csv":
        raise _fail(path, "a latency table is a .csv file with a .json side file")
    if not path.is_file():
        raise _fail(path, "file not found")
    meta = _read_metadata(path)
    try:
        device = Device.from_dict(meta["device"])
    except (KeyError, TypeError) as e:
        raise _fail(path, f"metadata device identity is incomplete ({e})") from None
    return LatencyTable(
        path=path,
        device=device,
        space=dict(meta.get("space") or {}),
        deployment=dict(meta.get("deployment") or {}),
        frame=_read_frame(path, device.precision),
        calibration=_read_calibration(path, meta.get("calibration", [])),
        host=dict(meta.get("host") or {}),
        reference_ms=meta.get("reference_ms"),
    )


def write_table(
    path: Path,
    rows: list[dict[str, Any]],
    *,
    device: Device,
    space: dict[str, Any],
    deployment: dict[str, Any],
    calibration: list[Calibration],
    profile_seconds: float | None = None,
    host: dict[str, Any] | None = None,
    reference_ms: float | None = None,
) -> Path:
    """Write a table and its side file atomically (each appears whole or not at all)."""
    path = Path(path)
    frame = pd.DataFrame(rows, columns=list(COLUMNS)).sort_values(list(KEY_COLUMNS))
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "unit": UNIT,
        "device": device.to_dict(),
        "space": space,
        "deployment": deployment,
        "calibration": [c.__dict__ for c in calibration],
        "profile_seconds": profile_seconds,
        "host": host,
        "reference_ms": reference_ms,
    }
    write_atomic(path, frame.to_csv(index=False, float_format="%.6g"))
    write_atomic(metadata_path(path), json.dumps(meta, indent=1) + "\n")
    return path


def find_tables(folder: Path) -> list[Path]:
    """Table files (with a side file) in `folder`."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.csv") if metadata_path(p).is_file())
