"""Jobs and their states, kept in a SQLite file so that they survive a restart of the service.

A job is a search (its id is the run's name: one search per run) or an export (an id of its
own). Its folder under ``RUNS/.service/jobs/ID/`` holds what its process needs (``job.json``,
a search's ``config.yaml``), its log, and the ``outcome.json`` the process writes when it ends.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas_base.io import sqlite_transaction

QUEUED, RUNNING, FINISHED, FAILED, CANCELLED = (
    "queued",
    "running",
    "finished",
    "failed",
    "cancelled",
)
STATES = (QUEUED, RUNNING, FINISHED, FAILED, CANCELLED)
ENDED = (FINISHED, FAILED, CANCELLED)
SEARCH, EXPORT = "search", "export"
SERVICE_DIR = ".service"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id       TEXT PRIMARY KEY,
    kind     TEXT NOT NULL,
    run      TEXT NOT NULL,
    state    TEXT NOT NULL,
    params   TEXT NOT NULL,
    created  REAL NOT NULL,
    started  REAL,
    ended    REAL,
    pid      INTEGER,
    ray_job  TEXT,
    cancel   INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    message  TEXT NOT NULL DEFAULT ''
)
"""


@dataclass
class Job:
    id: str
    kind: str
    run: str
    state: str
    params: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    pid: int | None = None
    ray_job: str | None = None
    cancel: bool = False
    attempts: int = 0
    message: str = ""

    @property
    def ended_state(self) -> bool:
        return self.state in ENDED

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "run": self.run,
            "state": self.state,
            "params": self.params,
            "created": self.created,
            "started": self.started,
            "ended": self.ended,
            "message": self.message,
        }


_COLUMNS = tuple(Job.__dataclass_fields__)


class JobStore:
    """The jobs of one runs folder (``RUNS/.service/jobs.db``), safe for threads."""

    def __init__(self, runs_dir: Path) -> None:
        self.root = Path(runs_dir) / SERVICE_DIR
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "jobs.db"
        with self._connect() as db:
            db.execute(_SCHEMA)

    def folder(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlite_transaction(self.path)

    @staticmethod
    def _job(row: tuple[Any, ...]) -> Job:
        values = dict(zip(_COLUMNS, row, strict=True))
        values["params"] = json.loads(values["params"])
        values["cancel"] = bool(values["cancel"])
        return Job(**values)

    def add(self, job: Job) -> Job:
        job.created = job.created or time.time()
        with self._connect() as db:
            db.execute(
                f"INSERT INTO jobs ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_COLUMNS))})",
                tuple(
                    json.dumps(v) if k == "params" else v
                    for k, v in zip(_COLUMNS, (getattr(job, c) for c in _COLUMNS), strict=True)
                ),
            )
        return job

    def get(self, job_id: str) -> Job | None:
        with self._connect() as db:
            row = db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return None if row is None else self._job(row)

    def list(self, *, kind: str | None = None, state: str | None = None) -> list[Job]:
        query, args = f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE 1=1", list[str]()
        if kind is not None:
            query, args = query + " AND kind = ?", [*args, kind]
        if state is not None:
            query, args = query + " AND state = ?", [*args, state]
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY created, id", args).fetchall()
        return [self._job(r) for r in rows]

    def update(self, job_id: str, **changes: Any) -> None:
        if not changes:
            return
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise KeyError(f"no job field {sorted(unknown)}")
        values = [json.dumps(v) if k == "params" else v for k, v in changes.items()]
        with self._connect() as db:
            db.execute(
                f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in changes)} WHERE id = ?",
                (*values, job_id),
            )

    def counts(self) -> dict[tuple[str, str], int]:
        """Jobs by (kind, state)."""
        with self._connect() as db:
            rows = db.execute("SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state")
            return {(k, s): int(n) for k, s, n in rows}
