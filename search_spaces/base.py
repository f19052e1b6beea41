"""The search-space protocol and the description of a space's dimensions.

A search space says what a candidate is and how it becomes a torch module. Samplers never see
candidates directly: they see a flat mapping of named dimensions to discrete values, which
`from_params` turns into a candidate and `to_params` turns back.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from torch import nn


@dataclass(frozen=True, slots=True)
class Dimension:
    """One discrete search dimension.

    Attributes:
        name: Parameter name as the sampler sees it.
        values: Allowed values, in order.
        ordered: True when the values are numbers whose order means something (width,
            resolution), so a sampler may model them as a numeric range.
    """

    name: str
    values: tuple[Any, ...]
    ordered: bool = False

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError(f"dimension {self.name!r} has no values; give at least one")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"dimension {self.name!r} repeats a value: {list(self.values)}")

    def index(self, value: Any) -> int:
        """Position of `value`, matching numbers within a small tolerance."""
        for i, v in enumerate(self.values):
            if v == value or (
                isinstance(v, float) and isinstance(value, int | float) and abs(v - value) < 1e-9
            ):
                return i
        raise ValueError(
            f"{self.name}={value!r} is outside the space; allowed: {list(self.values)}"
        )


@runtime_checkable
class SearchSpace(Protocol):
    """What every registered search space provides."""

    name: str

    def dimensions(self) -> tuple[Dimension, ...]:
        """The discrete dimensions a sampler chooses from."""
        ...

    def from_params(self, params: Mapping[str, Any]) -> Hashable:
        """The candidate that a full assignment of dimensions describes."""
        ...

    def to_params(self, candidate: Any) -> dict[str, Any]:
        """The dimension assignment of a candidate; raises ValueError if it is not in the space."""
        ...

    def sample(self, rng: np.random.Generator) -> Hashable:
        """A uniformly random candidate."""
        ...

    def mutate(self, candidate: Any, rng: np.random.Generator) -> Hashable:
        """A candidate that differs from `candidate` in exactly one dimension."""
        ...

    def encode(self, candidate: Any) -> str:
        """The candidate's compact string form."""
        ...

    def decode(self, text: str) -> Hashable:
        """The candidate a string describes; raises ValueError naming the bad part."""
        ...

    def features(self, candidate: Any) -> np.ndarray:
        """A fixed-length numeric description, for predictors."""
        ...

    def resolution(self, candidate: Any) -> int:
        """Side of the square input the candidate is deployed at."""
        ...

    def proxy_input_size(self, candidate: Any, image_size: int) -> int:
        """Side of the proxy images that `candidate` trains on, given the data's image size."""
        ...

    def build(
        self, candidate: Any, num_classes: int, in_chans: int, *, input_size: int | None = None
    ) -> nn.Module:
        """A fresh torch module; `input_size` adapts strides to small proxy images."""
        ...


def sample_params(dims: tuple[Dimension, ...], rng: np.random.Generator) -> dict[str, Any]:
    """A uniformly random assignment of every dimension."""
    return {d.name: d.values[int(rng.integers(len(d.values)))] for d in dims}


def mutate_params(
    dims: tuple[Dimension, ...], params: Mapping[str, Any], rng: np.random.Generator
) -> dict[str, Any]:
    """Copy of `params` with one dimension that has a choice moved to another value."""
    movable = [d for d in dims if len(d.values) > 1]
    if not movable:
        raise ValueError("every dimension of this space has a single value; nothing to mutate")
    dim = movable[int(rng.integers(len(movable)))]
    current = dim.index(params[dim.name])
    step = int(rng.integers(1, len(dim.values)))
    out = dict(params)
    out[dim.name] = dim.values[(current + step) % len(dim.values)]
    return out
