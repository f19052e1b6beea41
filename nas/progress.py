"""Progress on the terminal: a bar per phase of long work, and the search's two bars (trials
done/total with the front size, and the current trial's phase) with a line per trial."""

from __future__ import annotations

from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from hwnas_base.progress import PhaseProgress


def progress_bar(console: Console, *extra: ProgressColumn) -> Progress:
    """Description, bar, done/total, elapsed and remaining time, then `extra` columns."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        *extra,
        console=console,
        transient=False,
    )


def phase_callback(bar: Progress) -> PhaseProgress:
    """A (phase, done, total) callback that keeps one bar per phase."""
    tasks: dict[str, TaskID] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total)
        bar.update(tasks[phase], completed=done, total=total)

    return update


class SearchReporter(Protocol):
    def start(self, done: int, total: int) -> None: ...

    def trial_started(self, number: int, candidate: str) -> None: ...

    def phase(self, text: str, done: int, total: int) -> None: ...

    def trial_finished(self, number: int, line: str, done: int, front_size: int) -> None: ...

    def stop(self) -> None: ...

    def note(self, text: str) -> None: ...


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

    def note(self, text: str) -> None:
        return None


class RichReporter:
    """Two bars on the terminal (the search and the current trial) and a line per trial."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress = progress_bar(self.console, TextColumn("{task.fields[info]}"))
        self._search: TaskID | None = None
        self._trial: TaskID | None = None

    def start(self, done: int, total: int) -> None:
        self._progress.start()
        self._search = self._progress.add_task(
            "trials", total=total, completed=done, info="front: 0"
        )
        if self._trial is None:
            self._trial = self._progress.add_task("trial", total=1, info="", visible=False)
        else:  # the bar of the work before the first trial (a supernet's training)
            self._progress.update(self._trial, visible=False)

    def trial_started(self, number: int, candidate: str) -> None:
        if self._trial is not None:
            self._progress.reset(
                self._trial, total=1, visible=True, description=f"trial {number}", info="starting"
            )

    def phase(self, text: str, done: int, total: int) -> None:
        if self._trial is None:  # work before the first trial: a bar of its own
            self._progress.start()
            self._trial = self._progress.add_task("preparing", total=1, info="")
        self._progress.update(
            self._trial, completed=done, total=max(total, 1), info=text, visible=True
        )

    def trial_finished(self, number: int, line: str, done: int, front_size: int) -> None:
        self._progress.console.print(line, highlight=False)
        if self._search is not None:
            self._progress.update(self._search, completed=done, info=f"front: {front_size}")

    def stop(self) -> None:
        if self._trial is not None:
            self._progress.update(self._trial, visible=False)
        self._progress.stop()

    def note(self, text: str) -> None:
        """A line of its own, outside the bars."""
        self.console.print(text, highlight=False)
