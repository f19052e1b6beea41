"""The NAS-Bench-201 cell space: a fixed macro skeleton, a searched 4-node cell."""

from search_spaces.nb201.config import NB201SpaceConfig
from search_spaces.nb201.space import NB201_OPS, NB201Cell, NB201Space

__all__ = ["NB201_OPS", "NB201Cell", "NB201Space", "NB201SpaceConfig"]
