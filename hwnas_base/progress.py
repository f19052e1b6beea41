"""How long work reports how far it is: a (phase, done, total) callback."""

from __future__ import annotations

from collections.abc import Callable

# (phase description, done, total): how far the current piece of work is.
PhaseProgress = Callable[[str, int, int], None]


def quiet(_: str, __: int, ___: int) -> None:
    """A `PhaseProgress` that reports nothing."""
    return None
