"""Reads the runs of the runs folder for the API: each run kept open as a `LiveRun`, so a read
after the first fetches only what changed."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from nas import api
from nas.config import RUN_NAME_PATTERN
from nas.errors import NASError
from nas.run import Run

RUN_NAME = re.compile(RUN_NAME_PATTERN)


class UnknownRun(NASError, KeyError):
    """No run of that name in the runs folder."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown run"


class RunReader:
    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = Path(runs_dir)
        self._live: dict[str, api.LiveRun] = {}
        self._lock = threading.Lock()

    def run_dir(self, name: str) -> Path:
        """The folder of run `name`; `UnknownRun` unless it holds a run."""
        if not RUN_NAME.match(name):
            raise UnknownRun(f"no search {name!r}: names are letters, digits, '.', '_', '-'")
        folder = self.runs_dir / name
        if not (folder / "config.yaml").is_file():
            raise UnknownRun(f"no search {name!r} in {self.runs_dir}")
        return folder

    def names(self) -> list[str]:
        """The runs in the runs folder, by name."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(
            p.name
            for p in self.runs_dir.iterdir()
            if RUN_NAME.match(p.name) and (p / "config.yaml").is_file()
        )

    def live(self, name: str) -> api.LiveRun:
        folder = self.run_dir(name)
        with self._lock:
            found = self._live.get(name)
        if found is None:
            found = api.live(folder)  # raises while the run has no study yet
            with self._lock:
                found = self._live.setdefault(name, found)
        return found

    def trials(self, name: str) -> pd.DataFrame:
        return self.live(name).trials()

    def front(self, name: str) -> tuple[pd.DataFrame, int | None]:
        return self.live(name).front()

    def trial(self, name: str, number: int) -> dict[str, Any]:
        return self.live(name).trial(number)

    def progress(self, name: str, started: float | None, ended: float | None) -> api.Progress:
        return self.live(name).progress(started, ended)

    def config(self, name: str) -> dict[str, Any]:
        return Run.open(self.run_dir(name)).config().model_dump(mode="json")

    def warm(self) -> None:
        """Read every run once (the first read of a large study takes seconds)."""
        for name in self.names():
            try:
                self.trials(name)
            except NASError:
                continue
