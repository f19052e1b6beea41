"""Name -> search space. Spaces are registered explicitly in `search_spaces/__init__.py`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hwnas_base.errors import UnknownSpaceError
from search_spaces.base import SearchSpace

SpaceFactory = Callable[[Any], SearchSpace]

_REGISTRY: dict[str, SpaceFactory] = {}


def register_space(name: str, factory: SpaceFactory) -> None:
    """Make `factory(config)` available as `get_space(name, config)`."""
    if name in _REGISTRY:
        raise ValueError(f"search space {name!r} is already registered")
    _REGISTRY[name] = factory


def list_spaces() -> list[str]:
    return sorted(_REGISTRY)


def get_space(name: str, config: Any = None) -> SearchSpace:
    """The registered space `name`, configured by `config` (its own config model, or None)."""
    if name not in _REGISTRY:
        raise UnknownSpaceError(
            f"unknown search space {name!r}; registered: {', '.join(list_spaces())}"
        )
    return _REGISTRY[name](config)
