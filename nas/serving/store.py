"""The deployment's log, in a database that outlives the deployment: every response (the
exposure log), the labels posted as feedback, every change of traffic (events) and the current
traffic and ramp state. SQLite by default, a PostgreSQL URL for deployments spread over a
cluster (SQLAlchemy Core speaks both).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nas.errors import NASError

META = sa.MetaData()

EXPOSURES = sa.Table(
    "exposures",
    META,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("deployment", sa.String(64), nullable=False, index=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("unit_id", sa.String(256)),
    sa.Column("variant", sa.String(32), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("latency_ms", sa.Float),
    sa.Column("queue_ms", sa.Float),
    sa.Column("inference_ms", sa.Float),
    sa.Column("batch_size", sa.Integer),
    sa.Column("predicted", sa.Integer),
)
FEEDBACK = sa.Table(
    "feedback",
    META,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("deployment", sa.String(64), nullable=False, index=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("label", sa.Integer, nullable=False),
)
EVENTS = sa.Table(
    "events",
    META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("deployment", sa.String(64), nullable=False, index=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("traffic", sa.Text, nullable=False),
)
STATE = sa.Table(
    "state",
    META,
    sa.Column("deployment", sa.String(64), primary_key=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("traffic", sa.Text, nullable=False),
    sa.Column("ramp", sa.Text),
)


class StoreError(NASError, RuntimeError):
    """The deployment's database cannot be reached or does not hold what was asked."""


@dataclass(frozen=True)
class Exposure:
    """One answered (or refused) request."""

    request_id: str
    deployment: str
    ts: float
    unit_id: str | None
    variant: str
    status: int
    error: str | None = None
    latency_ms: float | None = None
    queue_ms: float | None = None
    inference_ms: float | None = None
    batch_size: int | None = None
    predicted: int | None = None


@dataclass(frozen=True)
class Event:
    ts: float
    kind: str
    reason: str
    traffic: dict[str, float]


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).absolute()}"


class Store:
    """One deployment's rows in the database at `url`."""

    def __init__(self, url: str, deployment: str) -> None:
        self.url, self.deployment = url, deployment
        try:
            self.engine: Engine = _engine(url)
            META.create_all(self.engine)
        except sa.exc.SQLAlchemyError as e:
            raise StoreError(f"cannot open the deployment store {_safe(url)}: {e}") from None

    def record(self, rows: Sequence[Exposure]) -> None:
        if rows:
            with self.engine.begin() as c:
                c.execute(EXPOSURES.insert(), [asdict(r) for r in rows])

    def add_feedback(self, request_id: str, label: int, ts: float | None = None) -> str:
        """Attach a label to an answered request: "added", "same" (already that label),
        "unknown" (no such request) or "conflict" (a different label is already there)."""
        with self.engine.begin() as c:
            known = c.execute(
                sa.select(EXPOSURES.c.request_id).where(
                    EXPOSURES.c.request_id == request_id,
                    EXPOSURES.c.deployment == self.deployment,
                )
            ).first()
            if known is None:
                return "unknown"
            old = c.execute(
                sa.select(FEEDBACK.c.label).where(FEEDBACK.c.request_id == request_id)
            ).first()
            if old is not None:
                return "same" if old[0] == label else "conflict"
            c.execute(
                FEEDBACK.insert(),
                {
                    "request_id": request_id,
                    "deployment": self.deployment,
                    "ts": ts or time.time(),
                    "label": label,
                },
            )
        return "added"

    def set_traffic(
        self,
        traffic: dict[str, float],
        kind: str,
        reason: str,
        ramp: dict[str, Any] | None,
        ts: float | None = None,
        *,
        expect: float | None = None,
    ) -> bool:
        """Record a change of traffic as an event and make it the current state, atomically.

        With `expect` (the time of the state the change was decided on), nothing is written and
        False is returned when the state has changed since (a hand-set split wins over a ramp
        check that read the state before it)."""
        now = ts or time.time()
        text = json.dumps(traffic, sort_keys=True)
        mine = STATE.c.deployment == self.deployment
        with self.engine.begin() as c:
            # The delete takes the write lock and tests the state in one statement.
            gone = c.execute(
                STATE.delete().where(mine, *([STATE.c.ts == expect] if expect is not None else []))
            )
            if expect is not None and gone.rowcount == 0:
                c.rollback()
                return False
            c.execute(
                EVENTS.insert(),
                {
                    "deployment": self.deployment,
                    "ts": now,
                    "kind": kind,
                    "reason": reason,
                    "traffic": text,
                },
            )
            c.execute(
                STATE.insert(),
                {
                    "deployment": self.deployment,
                    "ts": now,
                    "traffic": text,
                    "ramp": json.dumps(ramp) if ramp is not None else None,
                },
            )
        return True

    def state(self) -> tuple[dict[str, float], dict[str, Any] | None, float] | None:
        """(traffic, ramp state, when it was set), or None before the first deployment."""
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(STATE.c.traffic, STATE.c.ramp, STATE.c.ts).where(
                    STATE.c.deployment == self.deployment
                )
            ).first()
        if row is None:
            return None
        return json.loads(row[0]), (json.loads(row[1]) if row[1] else None), float(row[2])

    def events(self) -> list[Event]:
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(EVENTS.c.ts, EVENTS.c.kind, EVENTS.c.reason, EVENTS.c.traffic)
                .where(EVENTS.c.deployment == self.deployment)
                .order_by(EVENTS.c.id)
            ).all()
        return [Event(float(r[0]), r[1], r[2], json.loads(r[3])) for r in rows]

    def exposures(self, since: float = 0.0) -> pd.DataFrame:
        """Every request since `since`, oldest first, with its feedback label (NaN if none)."""
        query = (
            sa.select(EXPOSURES, FEEDBACK.c.label)
            .outerjoin(FEEDBACK, FEEDBACK.c.request_id == EXPOSURES.c.request_id)
            .where(EXPOSURES.c.deployment == self.deployment, EXPOSURES.c.ts >= since)
            .order_by(EXPOSURES.c.ts)
        )
        with self.engine.connect() as c:
            return pd.read_sql(query, c)

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as c:
            n = c.execute(
                sa.select(sa.func.count()).where(EXPOSURES.c.deployment == self.deployment)
            ).scalar_one()
            f = c.execute(
                sa.select(sa.func.count()).where(FEEDBACK.c.deployment == self.deployment)
            ).scalar_one()
        return {"requests": int(n), "feedback": int(f)}

    def close(self) -> None:
        self.engine.dispose()


def _engine(url: str) -> Engine:
    if url.startswith("sqlite:"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _wal(dbapi: Any, _: Any) -> None:
            cur = dbapi.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if url.startswith(("postgresql:", "postgresql+psycopg:")):
        return sa.create_engine(
            url.replace("postgresql:", "postgresql+psycopg:", 1)
            if url.startswith("postgresql:")
            else url,
            pool_pre_ping=True,
        )
    raise StoreError(f"store URL {_safe(url)} is neither sqlite:/// nor postgresql://")


def _safe(url: str) -> str:
    """A URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url
