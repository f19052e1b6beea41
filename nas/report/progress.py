"""How far a search is, read from its study: trials finished of the target, running, failed,
front size, time so far and an estimate of the time left."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from nas.report.tables import front_frame


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    running: int
    failed: int
    front_size: int
    elapsed_s: float
    remaining_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def progress(
    trials: pd.DataFrame,
    target: int,
    started: float | None,
    *,
    ended: float | None = None,
    finished: int | None = None,
) -> Progress:
    """Progress of a search toward `target` finished trials.

    Args:
        trials: The run's trials table (`nas.report.tables.trials_frame`).
        target: Finished trials the search runs to.
        started: When the search started (epoch seconds), or None if it has not.
        ended: When it ended, or None while it runs.
        finished: Trials that count toward the target, when known from the study itself
            (interrupted trials do not count; the table alone cannot tell them apart).
    """
    states = trials["state"] if len(trials) else pd.Series(dtype=str)
    done = finished if finished is not None else int(states.isin(["COMPLETE", "PRUNED"]).sum())
    durations = trials.loc[states.isin(["COMPLETE", "PRUNED"]), "duration_s"].dropna()
    left = max(0, target - done)
    remaining = float(durations.mean()) * left if len(durations) else None
    return Progress(
        done=done,
        total=target,
        running=int((states == "RUNNING").sum()),
        failed=int((states == "FAIL").sum()),
        front_size=len(front_frame(trials)) if len(trials) else 0,
        elapsed_s=0.0 if started is None else max(0.0, (ended or time.time()) - started),
        remaining_s=0.0 if left == 0 else remaining,
    )
