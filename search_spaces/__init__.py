"""Search spaces: what a candidate is and how it becomes a torch module."""

from search_spaces.base import Dimension, SearchSpace
from search_spaces.efficientnet import EfficientNetSpace
from search_spaces.registry import UnknownSpaceError, get_space, list_spaces, register_space

register_space("efficientnet", EfficientNetSpace)

__all__ = [
    "Dimension",
    "SearchSpace",
    "UnknownSpaceError",
    "get_space",
    "list_spaces",
    "register_space",
]
