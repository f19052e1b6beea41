"""A latency table carried to another host, recalibrated there from a few whole models.

A table holds per-operator latencies of one host. Another host of the same device kind runs the
same operators at a different speed, and not uniformly (cache sizes, memory bandwidth, turbo),
so its predictions are off by far more than the table's own error. Timing K whole candidates on
the new host and fitting the lookup-table correction (`LookupTablePredictor.fit`) on them
fixes most of that: the per-operator sum still ranks the candidates, the correction maps it to
this host's milliseconds.

A calibration is a JSON file beside the table, one per host::

    TABLE.calibration-HOSTID.json
    {"format": "hwnas-latency-calibration", "version": 1, "table": "TABLE.csv",
     "table_sha256": ..., "device": {...}, "host": {...}, "created": ...,
     "samples": [{"candidate": ..., "p50_ms": ..., "spread": ...}, ...]}

`find_calibration` returns the one for this host, if any; it is refused (with a one-line
`TableError`) when it names another device or a different table file.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwnas_base.errors import TableError
from hwnas_base.io import write_atomic
from latency_predictors.device import Device, host_identity
from latency_predictors.table import LatencyTable

FORMAT = "hwnas-latency-calibration"
VERSION = 1


def calibration_path(table: Path, host_id: str) -> Path:
    table = Path(table)
    return table.with_name(f"{table.stem}.calibration-{host_id}.json")


def table_digest(table: Path) -> str:
    return hashlib.sha256(Path(table).read_bytes()).hexdigest()


@dataclass(frozen=True)
class HostCalibration:
    """Whole-model measurements of a table's device on one host."""

    path: Path
    device: Device
    host: dict[str, Any]
    samples: list[tuple[str, float]]


def write_calibration(table: LatencyTable, device: Device, samples: list[dict[str, Any]]) -> Path:
    """Store `samples` (candidate, p50_ms, spread) measured here as the table's calibration
    for this host; atomically, replacing an earlier one for this host."""
    host = host_identity()
    record = {
        "format": FORMAT,
        "version": VERSION,
        "table": Path(table.path).name,
        "table_sha256": table_digest(table.path),
        "device": device.to_dict(),
        "host": host,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "samples": samples,
    }
    path = calibration_path(table.path, host["id"])
    write_atomic(path, json.dumps(record, indent=1) + "\n")
    return path


def read_calibration(path: Path, table: LatencyTable) -> HostCalibration:
    """A calibration file, checked against `table`; `TableError` naming what does not fit."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        if record.get("format") != FORMAT or record.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} file of version {VERSION}")
        device = Device.from_dict(record["device"])
        samples = [(str(s["candidate"]), float(s["p50_ms"])) for s in record["samples"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TableError(f"calibration {path}: unreadable ({e})") from None
    if device.name != table.device.name or device.precision != table.device.precision:
        raise TableError(
            f"calibration {path}: measured on device {device.name} ({device.precision}); the "
            f"table is for {table.device.name} ({table.device.precision})"
        )
    if record.get("table_sha256") != table_digest(table.path):
        raise TableError(
            f"calibration {path}: made for another version of {Path(table.path).name}; "
            "calibrate again with `nas latency calibrate`"
        )
    return HostCalibration(Path(path), device, dict(record.get("host") or {}), samples)


def find_calibration(table: LatencyTable) -> HostCalibration | None:
    """This host's calibration of `table`, if one was made."""
    path = calibration_path(table.path, host_identity()["id"])
    return read_calibration(path, table) if path.is_file() else None


def profiled_here(table: LatencyTable) -> bool:
    """Whether `table` was profiled on this very host."""
    return bool(table.host) and table.host.get("id") == host_identity()["id"]


def describe_host(host: dict[str, Any]) -> str:
    if not host:
        return "an unknown host (the table predates host records)"
    return f"host {host.get('hostname', '?')} [{host.get('id', '?')}], {host.get('cpu', '?')}"
