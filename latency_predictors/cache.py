"""A persistent latency cache: (device identity, model key) -> measurement, in SQLite.

SQLite makes concurrent readers and writers on one machine safe, so parallel workers can share
one cache file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager
from pathlib import Path

from hwnas_base.io import sqlite_transaction
from latency_predictors.backends.base import LatencyResult
from latency_predictors.device import Device, host_identity

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latency (
    device_key TEXT NOT NULL,
    model_key  TEXT NOT NULL,
    result     TEXT NOT NULL,
    created_s  REAL NOT NULL,
    PRIMARY KEY (device_key, model_key)
);
CREATE TABLE IF NOT EXISTS anchor (
    device_key TEXT NOT NULL,
    reference  TEXT NOT NULL,
    anchor_ms  REAL NOT NULL,
    created_s  REAL NOT NULL,
    PRIMARY KEY (device_key, reference)
)
"""


def latency_key(
    space: str, candidate: str, shape: tuple[int, ...], num_classes: int, variant: str = ""
) -> str:
    """The cache key of one model: its space and candidate string, what was done to it
    (`variant`, e.g. a compression and the pruned channels' signature), its input shape, and
    its classes when not 1000.

    The device is not part of the key; the cache keeps one entry per (device, key).
    """
    key = f"{space}:{candidate}{variant}@{'x'.join(map(str, shape))}"
    return key if num_classes == 1000 else f"{key}/{num_classes}"


def _anchor_key(device: Device) -> str:
    """An anchor belongs to a device on one host: a cache folder carried to another host of
    the same kind must not make that host's measurements the first one's speed."""
    return f"{device.key()}@{host_identity()['id']}"


class LatencyCache:
    """Successful measurements only; a failure is measured again next time."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlite_transaction(self.path)

    def get(self, device: Device, model_key: str) -> LatencyResult | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT result FROM latency WHERE device_key = ? AND model_key = ?",
                (device.key(), model_key),
            ).fetchone()
        return None if row is None else LatencyResult.from_dict(json.loads(row[0]))

    def put(self, model_key: str, result: LatencyResult) -> None:
        if not result.ok:
            return
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO latency VALUES (?, ?, ?, ?)",
                (result.device.key(), model_key, json.dumps(result.to_dict()), time.time()),
            )

    def get_anchor(self, device: Device, reference: str) -> float | None:
        """The reference network's quiet-host latency on `device`, kept by an earlier session
        (see `latency_predictors.protocol`)."""
        with self._connect() as db:
            row = db.execute(
                "SELECT anchor_ms FROM anchor WHERE device_key = ? AND reference = ?",
                (_anchor_key(device), reference),
            ).fetchone()
        return None if row is None else float(row[0])

    def put_anchor(self, device: Device, reference: str, anchor_ms: float) -> None:
        """Keep the first anchor measured for `device` on this host; a later one never
        replaces it, so every session here corrects to the same speed."""
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO anchor VALUES (?, ?, ?, ?)",
                (_anchor_key(device), reference, anchor_ms, time.time()),
            )

    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM latency").fetchone()[0])
