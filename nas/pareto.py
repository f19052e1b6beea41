"""Pareto dominance, in plain numpy and separate from any drawing.

Points are rows of objective values; `maximize[j]` says whether column j is better when larger.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_minimization(points: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != len(maximize):
        raise ValueError(f"points must be (n, {len(maximize)}), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("points must be finite; drop failed or unmeasured trials first")
    return np.where(np.asarray(maximize, dtype=bool), -pts, pts)


def non_dominated_mask(points: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """True for each point that no other point dominates.

    A point dominates another when it is at least as good in every objective and better in one.
    Equal points do not dominate each other, so duplicates on the front all stay.
    """
    pts = _as_minimization(points, maximize)
    if len(pts) == 0:
        return np.zeros(0, dtype=bool)
    if pts.shape[1] == 2:
        return _non_dominated_2d(pts)
    no_worse = (pts[:, None, :] <= pts[None, :, :]).all(axis=2)
    better = (pts[:, None, :] < pts[None, :, :]).any(axis=2)
    dominated = (no_worse & better).any(axis=0)
    return np.asarray(~dominated, dtype=bool)


def _non_dominated_2d(pts: np.ndarray) -> np.ndarray:
    """The same mask for two minimised objectives in O(n log n), by a sweep along the first (a
    benchmark table's 15,625 rows would take the pairwise test minutes)."""
    order = np.lexsort((pts[:, 1], pts[:, 0]))
    x, y = pts[order, 0], pts[order, 1]
    _, starts, group = np.unique(x, return_index=True, return_inverse=True)
    group_best = y[starts]  # sorted by y within equal x: a group's first is its best
    before = np.concatenate([[np.inf], np.minimum.accumulate(group_best)[:-1]])
    dominated = (y > group_best[group]) | (before[group] <= y)
    mask = np.empty(len(pts), dtype=bool)
    mask[order] = ~dominated
    return mask


def front_indices(points: np.ndarray, maximize: Sequence[bool], sort_by: int = 0) -> np.ndarray:
    """Indices of the non-dominated points, ordered by objective `sort_by` from best to worst."""
    mask = non_dominated_mask(points, maximize)
    idx = np.flatnonzero(mask)
    key = np.asarray(points, dtype=np.float64)[idx, sort_by]
    order = np.argsort(-key if maximize[sort_by] else key, kind="stable")
    return idx[order]


def pareto_ranks(points: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Non-dominated sorting: 0 for the front, 1 for the front of what is left, and so on."""
    pts = np.asarray(points, dtype=np.float64)
    ranks = np.full(len(pts), -1, dtype=np.int64)
    left = np.arange(len(pts))
    rank = 0
    while len(left):
        mask = non_dominated_mask(pts[left], maximize)
        ranks[left[mask]] = rank
        left = left[~mask]
        rank += 1
    return ranks


def hypervolume_2d(
    points: np.ndarray, maximize: Sequence[bool], reference: Sequence[float]
) -> float:
    """Area dominated by `points` and bounded by `reference`, for two objectives.

    `reference` must be worse than every point in both objectives; points that are not are left
    out, as they dominate nothing inside the box.
    """
    pts = _as_minimization(points, maximize)
    ref = np.where(np.asarray(maximize, dtype=bool), -np.asarray(reference), reference)
    pts = pts[(pts < ref).all(axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = pts[non_dominated_mask(pts, (False, False))]
    pts = pts[np.argsort(pts[:, 0])]
    area, prev_y = 0.0, float(ref[1])
    for x, y in pts:
        area += (ref[0] - x) * (prev_y - y)
        prev_y = y
    return float(area)


def knee_index(points: np.ndarray, maximize: Sequence[bool]) -> int | None:
    """The knee of a two-objective front: the point farthest from the straight line between
    the front's two ends, both objectives scaled to [0, 1] (the Kneedle idea). It is where
    giving up one objective starts to buy little of the other.

    Returns:
        The knee's row in `points`, or None for fewer than three points.
    """
    pts = _as_minimization(points, maximize)
    if len(pts) < 3:
        return None
    span = pts.max(axis=0) - pts.min(axis=0)
    scaled = (pts - pts.min(axis=0)) / np.where(span > 0, span, 1.0)
    order = np.argsort(scaled[:, 0], kind="stable")
    first, last = scaled[order[0]], scaled[order[-1]]
    direction = last - first
    length = float(np.hypot(*direction))
    if length == 0:
        return None
    offsets = scaled - first
    distance = np.abs(offsets[:, 0] * direction[1] - offsets[:, 1] * direction[0]) / length
    return int(np.argmax(distance))
