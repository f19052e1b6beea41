"""Choosing a candidate from a search: the most accurate under a latency budget, the knee of the
front, and two trials side by side."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from nas.pareto import knee_index
from nas.record import ACCURACY, LATENCY, MAXIMIZE, OBJECTIVES
from nas.report.tables import front_frame


def _completed(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[(trials["state"] == "COMPLETE") & trials["feasible"].astype(bool)]


def best_under(trials: pd.DataFrame, max_latency_ms: float) -> pd.Series | None:
    """The most accurate feasible trial whose latency is at most `max_latency_ms` (the faster
    of equally accurate ones), or None when no trial is that fast."""
    fast = _completed(trials)
    fast = fast[fast[LATENCY] <= max_latency_ms]
    if fast.empty:
        return None
    ranked = fast.sort_values([ACCURACY, LATENCY], ascending=[False, True], kind="stable")
    return ranked.iloc[0]


def knee(trials: pd.DataFrame) -> pd.Series | None:
    """The front member where more latency stops buying much accuracy (see
    `nas.pareto.knee_index`), or None for a front of fewer than three members."""
    front = front_frame(trials)
    if front.empty:
        return None
    index = knee_index(front[list(OBJECTIVES)].to_numpy(dtype=float), MAXIMIZE)
    return None if index is None else front.iloc[index]


def side_by_side(a: pd.Series, b: pd.Series) -> dict[str, Any]:
    """How trial `b` differs from trial `a`: accuracy in points, latency and size as ratios."""

    def ratio(column: str) -> float | None:
        x, y = a.get(column), b.get(column)
        if x is None or y is None or pd.isna(x) or pd.isna(y) or float(x) == 0:
            return None
        return float(y) / float(x)

    accuracy = float(b[ACCURACY]) - float(a[ACCURACY])
    return {
        "accuracy_points": None if math.isnan(accuracy) else 100 * accuracy,
        "latency_ratio": ratio(LATENCY),
        "params_ratio": ratio("params"),
        "flops_ratio": ratio("flops"),
    }
