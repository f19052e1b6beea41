"""Contract every registered search space must meet, run once per registered space."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nas.errors import UnknownSpaceError
from search_spaces import SearchSpace, get_space, list_spaces
from search_spaces.base import Dimension


@pytest.fixture(params=list_spaces())
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return get_space(request.param)


def test_registry_lists_spaces_and_rejects_unknown() -> None:
    assert "efficientnet" in list_spaces()
    with pytest.raises(UnknownSpaceError, match="registered: .*efficientnet"):
        get_space("no-such-space")
    with pytest.raises(KeyError):  # also a KeyError, for callers that catch builtins
        get_space("no-such-space")


def test_space_is_protocol(space: SearchSpace) -> None:
    assert isinstance(space, SearchSpace)
    dims = space.dimensions()
    assert dims and all(isinstance(d, Dimension) for d in dims)
    assert len({d.name for d in dims}) == len(dims)


def test_sampling_is_seeded(space: SearchSpace) -> None:
    a = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a == b
    many = {space.sample(np.random.default_rng(s)) for s in range(20)}
    assert len(many) > 1


def test_string_and_params_round_trip(space: SearchSpace) -> None:
    rng = np.random.default_rng(0)
    for _ in range(25):
        c = space.sample(rng)
        text = space.encode(c)
        assert space.decode(text) == c
        assert space.encode(space.decode(text)) == text
        assert space.from_params(space.to_params(c)) == c
        assert hash(c) == hash(space.decode(text))


def test_mutate_changes_one_dimension(space: SearchSpace) -> None:
    rng = np.random.default_rng(1)
    for _ in range(25):
        c = space.sample(rng)
        m = space.mutate(c, rng)
        assert m != c
        before, after = space.to_params(c), space.to_params(m)
        assert sum(before[k] != after[k] for k in before) == 1


def test_features_have_fixed_length(space: SearchSpace) -> None:
    rng = np.random.default_rng(2)
    feats = [space.features(space.sample(rng)) for _ in range(10)]
    assert len({f.shape for f in feats}) == 1
    assert all(np.isfinite(f).all() for f in feats)


def test_build_gives_fresh_working_modules(space: SearchSpace) -> None:
    c = space.sample(np.random.default_rng(3))
    a = space.build(c, num_classes=10, in_chans=1, input_size=28)
    b = space.build(c, num_classes=10, in_chans=1, input_size=28)
    assert isinstance(a, nn.Module)
    assert all(
        pa.data_ptr() != pb.data_ptr()
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True)
    )
    a.eval()
    with torch.no_grad():
        assert a(torch.randn(2, 1, 28, 28)).shape == (2, 10)
        side = space.resolution(c)
        deploy = space.build(c, num_classes=5, in_chans=3).eval()
        assert deploy(torch.randn(1, 3, side, side)).shape == (1, 5)
