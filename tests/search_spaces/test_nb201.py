"""The NAS-Bench-201 space: cell strings, networks and FLOPs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from search_spaces import get_space
from search_spaces.flops import count_flops
from search_spaces.nb201 import NB201_OPS, NB201Cell

space = get_space("nb201")
cells = st.tuples(*[st.sampled_from(NB201_OPS)] * 6).map(NB201Cell)


@given(cells)
def test_cell_string_round_trip(cell: NB201Cell) -> None:
    text = space.encode(cell)
    assert space.decode(text) == cell
    assert space.from_params(space.to_params(cell)) == cell


def test_benchmark_string_reads_as_published() -> None:
    text = (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
        "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    )
    cell = space.decode(text)
    assert cell.ops == (
        "nor_conv_3x3",
        "nor_conv_3x3",
        "avg_pool_3x3",
        "skip_connect",
        "nor_conv_3x3",
        "skip_connect",
    )
    assert space.encode(cell) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operation 'conv'"),
        ("|none~0|+|none~0|none~1|", "3 node groups"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2 inputs"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "should read none~0"),
    ],
)
def test_bad_cell_strings_say_what_is_wrong(text: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        space.decode(text)


def test_every_cell_is_distinct() -> None:
    assert len(set(space.all_cells())) == 5**6


def test_network_shape_and_flops_formula() -> None:
    rng = np.random.default_rng(0)
    for _ in range(4):
        cell = space.sample(rng)
        net = space.build(cell, 10, 3).eval()
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
        assert space.flops(cell) == count_flops(net, (1, 3, 32, 32))
    assert space.flops(NB201Cell(("none",) * 6)) < space.flops(NB201Cell(("nor_conv_3x3",) * 6))
