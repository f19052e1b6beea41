"""Which variant answers a request: sticky by unit id, random without one.

A unit id (a user or a device) is hashed with the deployment's salt to a point in [0, 1); the
variants' traffic weights cut [0, 1) into consecutive ranges, and the range holding the point
answers. The ramp candidate's range comes first, so when its share grows from 1 % to 5 % every
unit that saw it at 1 % still sees it (experimentation platforms bucket the same way). Without a
unit id the point is drawn at random for each request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

_SCALE = float(2**64)


def unit_point(unit_id: str, salt: str) -> float:
    """A deterministic point in [0, 1) for a unit: the first 8 bytes of SHA-256(salt:unit)."""
    digest = hashlib.sha256(f"{salt}:{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def bucket_order(variants: Sequence[str], first: str | None) -> tuple[str, ...]:
    """Variants in the order their ranges are laid out: `first` (the ramp candidate) leads."""
    if first is None or first not in variants:
        return tuple(variants)
    return (first, *(v for v in variants if v != first))


def pick(point: float, weights: Mapping[str, float], order: Sequence[str]) -> str:
    """The variant whose range of [0, 1) holds `point`, ranges laid out in `order`.

    Raises:
        ValueError: every weight is 0.
    """
    total = sum(max(0.0, weights.get(v, 0.0)) for v in order)
    if total <= 0:
        raise ValueError(f"no variant has traffic: {dict(weights)}")
    edge = 0.0
    last = None
    for v in order:
        w = max(0.0, weights.get(v, 0.0))
        if w <= 0:
            continue
        edge += w / total
        last = v
        if point < edge:
            return v
    assert last is not None
    return last  # point within rounding of 1.0


def assign(
    weights: Mapping[str, float],
    order: Sequence[str],
    *,
    unit_id: str | None,
    salt: str,
    rng: np.random.Generator,
) -> str:
    """The variant for one request: sticky per unit id, random per request without one."""
    point = unit_point(unit_id, salt) if unit_id is not None else float(rng.random())
    return pick(point, weights, order)
