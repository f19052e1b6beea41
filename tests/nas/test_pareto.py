"""Pareto dominance against a brute-force definition."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nas.pareto import front_indices, non_dominated_mask


def brute_force(points: np.ndarray, maximize: tuple[bool, ...]) -> list[bool]:
    sign = np.where(maximize, -1.0, 1.0)
    pts = points * sign
    out = []
    for i in range(len(pts)):
        dominated = any(
            all(pts[j] <= pts[i]) and any(pts[j] < pts[i]) for j in range(len(pts)) if j != i
        )
        out.append(not dominated)
    return out


values = st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.0])  # few values: many ties


@given(
    arrays(np.float64, st.tuples(st.integers(0, 30), st.just(2)), elements=values),
    st.tuples(st.booleans(), st.booleans()),
)
def test_matches_brute_force_2d(points: np.ndarray, maximize: tuple[bool, bool]) -> None:
    assert non_dominated_mask(points, maximize).tolist() == brute_force(points, maximize)


@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 20), st.just(3)),
        elements=st.floats(-5, 5, allow_nan=False),
    )
)
def test_matches_brute_force_3d(points: np.ndarray) -> None:
    maximize = (True, False, False)
    assert non_dominated_mask(points, maximize).tolist() == brute_force(points, maximize)


def test_front_is_sorted_and_keeps_ties() -> None:
    pts = np.array([[0.9, 10.0], [0.8, 5.0], [0.7, 5.0], [0.8, 5.0], [0.95, 30.0], [0.5, 40.0]])
    idx = front_indices(pts, (True, False), sort_by=1)
    assert idx.tolist() == [1, 3, 0, 4]


def test_rejects_nan_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="finite"):
        non_dominated_mask(np.array([[np.nan, 1.0]]), (True, False))
    with pytest.raises(ValueError, match="must be"):
        non_dominated_mask(np.zeros((3, 3)), (True, False))
    assert non_dominated_mask(np.zeros((0, 2)), (True, False)).tolist() == []


def test_hypervolume_2d_by_hand_and_by_grid() -> None:
    from nas.pareto import hypervolume_2d

    # Accuracy up, latency down; reference (0, 10). Front (0.5, 2), (0.8, 6): boxes 0.5*8 + 0.3*4.
    pts = np.array([[0.5, 2.0], [0.8, 6.0], [0.4, 7.0]])
    assert hypervolume_2d(pts, (True, False), (0.0, 10.0)) == pytest.approx(0.5 * 8 + 0.3 * 4)
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 1, size=(12, 2))
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 401), np.linspace(0, 1, 401)), -1).reshape(-1, 2)
    covered = ((pts[None, :, 0] >= grid[:, None, 0]) & (pts[None, :, 1] <= grid[:, None, 1])).any(1)
    assert hypervolume_2d(pts, (True, False), (0.0, 1.0)) == pytest.approx(covered.mean(), abs=0.01)
