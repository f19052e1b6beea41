"""Search progress: trials done/total, elapsed and remaining time, front size, current phase."""

from __future__ import annotations

from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class SearchReporter(Protocol):
    def start(self, done: int, total: int) -> None: ...

    def trial_started(self, number: int, candidate: str) -> None: ...

    def phase(self, text: str, done: int, total: int) -> None: ...

    def trial_finished(self, number: int, line: str, done: int, front_size: int) -> None: ...

    def stop(self) -> None: ...


class NullReporter:
    """Reports nothing (library use, tests)."""

    def start(self, done: int, total: int) -> None:
        return None

    def trial_started(self, number: int, candidate: str) -> None:
        return None

    def phase(self, text: str, done: int, total: int) -> None:
        return None

    def trial_finished(self, number: int, line: str, done: int, front_size: int) -> None:
        return None

    def stop(self) -> None:
        return None


class RichReporter:
    """Two bars on the terminal (the search and the current trial) and a line per trial."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        )
        self._search: TaskID | None = None
        self._trial: TaskID | None = None

    def start(self, done: int, total: int) -> None:
        self._progress.start()
        self._search = self._progress.add_task(
            "trials", total=total, completed=done, info="front: 0"
        )
        self._trial = self._progress.add_task("trial", total=1, info="", visible=False)

    def trial_started(self, number: int, candidate: str) -> None:
        if self._trial is not None:
            self._progress.reset(
                self._trial, total=1, visible=True, description=f"trial {number}", info="starting"
            )

    def phase(self, text: str, done: int, total: int) -> None:
        if self._trial is not None:
            self._progress.update(self._trial, completed=done, total=max(total, 1), info=text)

    def trial_finished(self, number: int, line: str, done: int, front_size: int) -> None:
        self._progress.console.print(line, highlight=False)
        if self._search is not None:
            self._progress.update(self._search, completed=done, info=f"front: {front_size}")

    def stop(self) -> None:
        if self._trial is not None:
            self._progress.update(self._trial, visible=False)
        self._progress.stop()
