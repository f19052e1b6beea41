"""Trained weights back to the run directory: a small actor on the driver's node.

Kept apart from the trial's module so that the actor's process imports only what writing a
file needs (it holds no CPU and should start fast).
"""

from __future__ import annotations

from pathlib import Path

from hwnas_base.io import write_atomic
from nas.run import Run


class RunWriter:
    """Writes a trial's files into the run directory; lives on the driver's node."""

    def __init__(self, root: str) -> None:
        self.run = Run(Path(root))

    def save(self, number: int, files: dict[str, bytes]) -> None:
        folder = self.run.weights_path(number).parent
        for name, data in files.items():
            write_atomic(folder / name, data)
