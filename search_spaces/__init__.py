"""Search spaces: what a candidate is and how it becomes a torch module."""

from search_spaces.base import Dimension, SearchSpace
from search_spaces.efficientnet import EfficientNetSpace
from search_spaces.nb201 import NB201Space
from search_spaces.registry import UnknownSpaceError, get_space, list_spaces, register_space

register_space("efficientnet", EfficientNetSpace)
register_space("nb201", NB201Space)

__all__ = [
    "Dimension",
    "SearchSpace",
    "UnknownSpaceError",
    "get_space",
    "list_spaces",
    "register_space",
]
