"""The in-process search: an Optuna ask/tell loop around `Evaluator`.

The study lives in the run's storage, so running the same command again resumes it: finished
trials are kept, a trial that was cut off (the process died while it ran) is marked failed and
its candidate is queued to run again, and the loop stops when the number of finished trials
reaches the target.

One process owns a run by default. In shared mode (`nas worker`, or a run whose config names a
shared storage) several processes work on one study: each records heartbeats for its trial, a
trial whose heartbeats stop is failed and queued again by whoever looks next, and a worker only
starts a trial while finished plus running trials are short of the target, so the final count
is exact however many workers there are.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.compress.space import compression_space
from nas.config import RunConfig
from nas.errors import NASError, SearchError
from nas.evaluate.evaluator import CandidateEvaluator, StopCheck, StoppedEarly
from nas.evaluate.pool import Foresight
from nas.progress import NullReporter, SearchReporter
from nas.record import (
    CANDIDATE,
    COMPRESSION,
    FAILURE_REASON,
    INTERRUPTED,
    RETRY_OF,
    SURPLUS,
    trial_key,
)
from nas.report.plots import write_plot
from nas.report.tables import trials_frame, write_tables
from nas.run import Run
from nas.search.early_stopping import Checkpoint
from nas.search.study import (
    check_any_completed,
    checkpoints,
    describe_outcome,
    distributions,
    enqueue_seeds,
    open_study,
    recover_interrupted,
    reusable_attrs,
    stop_check,
    tell_outcome,
)
from nas.storage import fail_stale, heartbeat, is_active, is_finished

log = logging.getLogger("nas.search")


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM does what Ctrl-C does at that moment: whatever SIGINT's handler is then (Ray
    Tune's, which ends its trials and returns; `interrupt_requested`'s), or KeyboardInterrupt.
    Nothing changes outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        ctrl_c = signal.getsignal(signal.SIGINT)
        if not callable(ctrl_c):  # SIGINT ignored (a background job) or not Python's
            raise KeyboardInterrupt
        ctrl_c(signal.SIGINT, frame)

    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        # A handler that is not Python's (Ray's, None here) cannot be put back: the default
        # ends the process on SIGTERM.
        signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)


@contextmanager
def stops_cleanly(resume_hint: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM anywhere in a search, not only between its trials (reading data,
    training its supernet or distillation teacher, re-measuring its front), ends it as
    `SearchError` with the command that resumes it: every step before the trials is
    checkpointed or done again, so the rerun goes on from where it stopped."""
    try:
        with sigterm_as_ctrl_c():
            yield
    except KeyboardInterrupt:
        raise SearchError(f"search interrupted; resume with: {resume_hint}") from None


@contextmanager
def fails_in_one_line(run: Run, resume_hint: str) -> Iterator[None]:
    """A failure that is not the user's (a bug, a library's error, a cluster that went away)
    ends the search as `SearchError`: one line with its cause, where its traceback went, and the
    command that resumes (finished trials are in the study). The traceback goes to the run's
    search.log, or, while the run has no config yet (a folder holding only a log would be refused
    as not a run), to a file in the temporary directory."""
    try:
        yield
    except NASError:
        raise
    except Exception as e:
        where = _write_traceback(run, e)
        cause = f"{type(e).__name__}: {e}".strip().splitlines()[0]
        if len(cause) > 300:
            cause = cause[:297] + "..."
        raise SearchError(
            f"search failed: {cause} (traceback in {where}); resume with: {resume_hint}"
        ) from e


def _write_traceback(run: Run, error: Exception) -> Path:
    text = "".join(traceback.format_exception(error))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    entry = f"{stamp} ERROR nas.search: the search failed\n{text}"
    if run.config_path.is_file():
        with run.log_path.open("a", encoding="utf-8") as f:
            f.write(entry)
        return run.log_path
    fd, name = tempfile.mkstemp(prefix=f"nas-search-{run.name}-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(entry)
    return Path(name)


@contextmanager
def interrupt_requested() -> Iterator[threading.Event]:
    """An event that Ctrl-C (SIGINT, also how the service cancels a search) or SIGTERM (`kill`,
    `timeout`, a container or job scheduler stopping the process) sets, besides raising
    KeyboardInterrupt: either one stops the search the same way, its trial marked interrupted
    and queued again, and the study closed whole.

    Python drops an exception raised while a weakref callback or ``__del__`` runs ("Exception
    ignored in ..."), and SQLAlchemy and torch run many of those, so a signal can land where its
    KeyboardInterrupt is lost. The loop looks at the event at every progress report of a trial
    (raising it there, so the trial is marked interrupted) and between trials, so the request
    is never lost. Outside the main thread nothing changes, nor for a signal that is ignored.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum: int, frame: Any) -> None:
        requested.set()
        raise KeyboardInterrupt

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        before = signal.getsignal(sig)
        if before is not signal.SIG_IGN and before is not None:
            previous[sig] = before
            signal.signal(sig, handler)
    try:
        yield requested
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


@dataclass
class SearchSummary:
    finished: int
    target: int
    front_size: int
    stopped_by_timeout: bool
    seconds: float


class SearchLoop:
    """Runs trials of one run until `n_trials` have finished or the timeout passes.

    Args:
        run: Where the study and outputs live.
        config: The run's config.
        evaluator: Scores one candidate.
        reporter: Receives progress.
        resume_hint: Command that resumes this run, for messages.
        shared: Work beside other processes on one study (heartbeats, no exclusive recovery).
        foresight: What the ehvi sampler may know of untried candidates (`nas.evaluate.pool`).
    """

    def __init__(
        self,
        *,
        run: Run,
        config: RunConfig,
        evaluator: CandidateEvaluator,
        reporter: SearchReporter | None = None,
        resume_hint: str = "",
        shared: bool = False,
        foresight: Foresight | None = None,
    ) -> None:
        self.run = run
        self.shared = shared
        self.config = config
        self.evaluator = evaluator
        self.space = evaluator.space
        self.reporter = reporter or NullReporter()
        self.resume_hint = resume_hint
        self._interrupted = threading.Event()
        self.compression = compression_space(config.compression, self.space)
        self.dists = distributions(self.space.dimensions() + self.compression.dimensions())
        self.study = open_study(
            run, config, shared=shared, foresight=foresight, search_space=self.dists
        )

    def _known(self) -> dict[str, FrozenTrial]:
        """Completed trials by candidate and compression (the cache of accuracy and latency)."""
        out: dict[str, FrozenTrial] = {}
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            out.setdefault(trial_key(t.user_attrs), t)
        return out

    def _enqueue_seeds(self) -> None:
        enqueue_seeds(self.study, self.config, self.space, self.compression)

    def _fail(self, trial: optuna.Trial, reason: str, *, interrupted: bool = False) -> None:
        trial.set_user_attr(FAILURE_REASON, reason)
        if interrupted:
            trial.set_user_attr(INTERRUPTED, True)
        self.study.tell(trial, state=TrialState.FAIL)

    def _tell(self, trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
        tell_outcome(self.study, trial, attrs, self.config.search)

    def _evaluate(self, trial: optuna.Trial, known: dict[str, FrozenTrial]) -> str:
        candidate = self.space.from_params(trial.params)
        compression = self.compression.from_params(trial.params)
        text = self.space.encode(candidate)
        trial.set_user_attr(CANDIDATE, text)
        if self.compression.enabled:
            trial.set_user_attr(COMPRESSION, compression.encode())
        key = trial_key(trial.user_attrs)
        self.reporter.trial_started(trial.number, key)
        if key in known:
            original = known[key]
            self._tell(trial, reusable_attrs(original))
            return f"same candidate as trial {original.number}; reused its results"
        try:
            outcome = self.evaluator(
                candidate,
                compression=compression,
                weights_path=self.run.weights_path(trial.number),
                progress=self._phase,
                stop=self._stop_check(trial.number),
            )
        except StoppedEarly as stopped:
            for key, value in stopped.attrs.items():
                trial.set_user_attr(key, value)
            self.study.tell(trial, state=TrialState.PRUNED)
            return stopped.reason
        attrs = outcome.attrs()
        self._tell(trial, attrs)
        return describe_outcome(attrs)

    def _phase(self, text: str, done: int, total: int) -> None:
        """Report a trial's progress; raise the Ctrl-C that Python dropped mid-trial, so the
        trial stops within a step and is marked interrupted rather than run to its end."""
        if self._interrupted.is_set():
            raise KeyboardInterrupt
        self.reporter.phase(text, done, total)

    def checkpoints(self) -> list[Checkpoint]:
        return checkpoints(self.study)

    def _stop_check(self, number: int) -> StopCheck | None:
        cfg = self.config.search.early_stopping
        return stop_check(cfg, number, self.checkpoints()) if cfg.enabled else None

    def _write_outputs(self, plot: bool) -> int:
        trials = trials_frame(self.study)
        front = write_tables(self.run, trials)
        if plot:
            write_plot(self.run, trials)
        return len(front)

    def finished(self) -> int:
        return sum(is_finished(t) for t in self.study.get_trials(deepcopy=False))

    def run_trials(self, n_trials: int, timeout: float | None = None) -> SearchSummary:
        """Evaluate trials until `n_trials` have finished (counting earlier invocations).

        Raises:
            SearchError: interrupted (with the command that resumes), or every trial failed.
        """
        start = time.monotonic()
        if self.shared:
            fail_stale(self.study)
        else:
            recovered = recover_interrupted(self.study)
            if recovered:
                log.warning("%d interrupted trial(s) marked failed and queued again", recovered)
        self._enqueue_seeds()
        known = self._known()
        self.reporter.start(self.finished(), n_trials)
        with interrupt_requested() as interrupted:
            self._interrupted = interrupted
            done, timed_out = self._loop(n_trials, timeout, start, known, interrupted)
        front_size = self._write_outputs(plot=True)
        self._check_any_completed()
        return SearchSummary(done, n_trials, front_size, timed_out, time.monotonic() - start)

    def _loop(
        self,
        n_trials: int,
        timeout: float | None,
        start: float,
        known: dict[str, FrozenTrial],
        interrupted: threading.Event,
    ) -> tuple[int, bool]:
        """Ask, evaluate and tell until the target; (finished trials, whether timed out)."""
        timed_out = False
        try:
            while True:
                if interrupted.is_set():  # a KeyboardInterrupt that Python dropped
                    raise KeyboardInterrupt
                done, waiting = self._places(n_trials)
                if done >= n_trials:
                    break
                if timeout is not None and time.monotonic() - start >= timeout:
                    timed_out = True
                    break
                if waiting:
                    # Peers run the last trials; stay in case one dies and its trial returns.
                    time.sleep(min(2.0, self.config.cluster.heartbeat_seconds))
                    continue
                trial = self.study.ask(self.dists)
                if self.shared and self._surplus(trial, n_trials):
                    continue
                if self.shared:
                    known = self._known()  # peers' results count as known too
                t0 = time.monotonic()
                with heartbeat(self.study._storage, [trial._trial_id]):
                    status, summary = self._run_one(trial, known)
                done = self.finished()
                front_size = self._write_outputs(plot=False)
                line = f"trial {trial.number} {status} in {time.monotonic() - t0:.1f} s: {summary}"
                log.info(line)
                self.reporter.trial_finished(trial.number, line, done, front_size)
        except KeyboardInterrupt:
            self._write_outputs(plot=True)
            raise SearchError(f"search interrupted; resume with: {self.resume_hint}") from None
        finally:
            self.reporter.stop()
        return done, timed_out

    def _places(self, n_trials: int) -> tuple[int, bool]:
        """(finished trials, whether the rest of the target is held by running peers)."""
        if self.shared:
            fail_stale(self.study)
        trials = self.study.get_trials(deepcopy=False)
        done = sum(is_finished(t) for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        return done, done < n_trials <= done + running

    def _surplus(self, trial: optuna.Trial, n_trials: int) -> bool:
        """Whether workers asked for more trials than the target has places; if so, give back.

        Trial numbers are handed out in order by the storage, so every worker agrees which
        trials hold the target's places: the first `n_trials` active ones.
        """
        ahead = sum(
            is_active(t) for t in self.study.get_trials(deepcopy=False) if t.number < trial.number
        )
        if ahead < n_trials:
            return False
        trial.set_user_attr(SURPLUS, True)
        trial.set_user_attr(INTERRUPTED, True)
        trial.set_user_attr(FAILURE_REASON, "not run: other workers took the last places")
        self.study.tell(trial, state=TrialState.FAIL)
        if RETRY_OF in trial.user_attrs:
            self.study.enqueue_trial(
                trial.params, user_attrs={RETRY_OF: trial.user_attrs[RETRY_OF]}
            )
        return True

    def _run_one(self, trial: optuna.Trial, known: dict[str, FrozenTrial]) -> tuple[str, str]:
        """Evaluate one asked trial and tell the study; (status, one-line summary)."""
        try:
            summary = self._evaluate(trial, known)
        except KeyboardInterrupt:
            # A Ctrl-C that lands as the trial is told finds it finished: it counts as it is.
            state = self.study._storage.get_trial(trial._trial_id).state
            if state == TrialState.RUNNING:
                self._fail(trial, "interrupted by the user; retried on resume", interrupted=True)
                self.study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
            raise
        except Exception as e:
            reason = str(e) if isinstance(e, NASError) else f"{type(e).__name__}: {e}"
            log.error("trial %d failed: %s", trial.number, reason, exc_info=True)
            self._fail(trial, reason)
            return "failed", f"failed: {reason}"
        frozen = self.study.get_trials(deepcopy=False)[trial.number]
        if frozen.state == TrialState.PRUNED:
            return "stopped early", summary
        known.setdefault(trial_key(frozen.user_attrs), frozen)
        return "done", summary

    def _check_any_completed(self) -> None:
        check_any_completed(self.study, self.run)
