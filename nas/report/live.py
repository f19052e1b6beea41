"""A run read again and again while it grows (the service's pages and events).

Its study stays open, so Optuna's storage cache fetches only the trials that changed since the
last read (the first read of a large study takes seconds, the next ones milliseconds); the
trials table is rebuilt only when the study's file changed (a study in a shared database, with
no file to look at, at most once a second).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pandas as pd

from nas.report.choice import knee
from nas.report.progress import Progress, progress
from nas.report.tables import front_frame, trial_record, trials_frame
from nas.run import Run
from nas.storage import is_finished, load_study

SHARED_STORAGE_TTL_S = 1.0


class LiveRun:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.study = load_study(run)
        self.target = run.config().search.n_trials
        self._lock = threading.Lock()
        self._stamp: Any = object()
        self._read_at = 0.0
        self._frame = pd.DataFrame()
        self._front = pd.DataFrame()
        self._knee: int | None = None
        self._finished = 0

    def _stamp_now(self) -> Any:
        try:
            stat = self.run.study_path.stat()
        except OSError:
            return None  # the study lives in a shared database
        # A search writes to the write-ahead log beside the file until it checkpoints.
        log = self.run.study_path.with_name(self.run.study_path.name + "-wal")
        try:
            logged = log.stat()
        except OSError:
            return stat.st_mtime_ns, stat.st_size
        return stat.st_mtime_ns, stat.st_size, logged.st_mtime_ns, logged.st_size

    def trials(self) -> pd.DataFrame:
        """The trials table (`nas.report.tables.trials_frame`), as of now."""
        with self._lock:
            stamp = self._stamp_now()
            stale = stamp is None and time.monotonic() - self._read_at > SHARED_STORAGE_TTL_S
            if stamp != self._stamp or stale:
                # One read for both, or a trial that ends in between would be counted as
                # running and as finished at once.
                trials = self.study.get_trials(deepcopy=False)
                self._frame = trials_frame(self.study, trials)
                self._front = front_frame(self._frame)
                knee_row = knee(self._frame)
                self._knee = None if knee_row is None else int(knee_row["number"])
                self._finished = sum(is_finished(t) for t in trials)
                self._stamp, self._read_at = stamp, time.monotonic()
            return self._frame

    def front(self) -> tuple[pd.DataFrame, int | None]:
        """The Pareto front (fastest first) and its knee's trial number (see
        `nas.report.choice.knee`)."""
        self.trials()
        with self._lock:
            return self._front, self._knee

    def trial(self, number: int) -> dict[str, Any]:
        """Everything trial `number` recorded (see `nas.report.tables.trial_record`)."""
        frame = self.trials()
        with self._lock:
            return trial_record(self.study, number, frame)

    def progress(self, started: float | None, ended: float | None = None) -> Progress:
        """How far the search is toward its target number of trials."""
        trials = self.trials()
        return progress(trials, self.target, started, ended=ended, finished=self._finished)
