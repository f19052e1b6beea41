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

import itertools
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas.compression import CompressionSpace
from nas.config import EarlyStoppingConfig, RunConfig, SearchConfig
from nas.early_stopping import Checkpoint, ParetoSuccessiveHalving
from nas.errors import NASError, SearchError
from nas.evaluate import Evaluator, StopCheck, StoppedEarly
from nas.progress import NullReporter, SearchReporter
from nas.report import trials_frame, write_plot, write_tables
from nas.run import Run
from nas.storage import INTERRUPTED, fail_interrupted, fail_stale, heartbeat, open_storage
from search_spaces.base import Dimension

log = logging.getLogger("nas.search")

DIRECTIONS: list[StudyDirection] = [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
METRIC_NAMES = ("accuracy", "latency_p50_ms")
SURPLUS = "surplus"
# Trial attributes the loop itself sets; everything else on a completed trial is its outcome.
LOOP_ATTRS = frozenset({INTERRUPTED, SURPLUS, "retry_of", "duplicate_of", "failure_reason"})


def _evenly_spaced(values: tuple[Any, ...]) -> bool:
    if len(values) < 2 or not all(isinstance(v, int | float) for v in values):
        return False
    steps = [b - a for a, b in itertools.pairwise(values)]
    return steps[0] > 0 and all(abs(s - steps[0]) < 1e-9 for s in steps)


def to_distribution(dim: Dimension) -> BaseDistribution:
    """Ordered, evenly spaced numbers become a stepped numeric range; the rest categorical."""
    values = dim.values
    if dim.ordered and _evenly_spaced(values):
        step = values[1] - values[0]
        if all(isinstance(v, int) for v in values):
            return IntDistribution(int(values[0]), int(values[-1]), step=int(step))
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(step))
    return CategoricalDistribution(list(values))


def distributions(dims: tuple[Dimension, ...]) -> dict[str, BaseDistribution]:
    return {d.name: to_distribution(d) for d in dims}


def make_sampler(cfg: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The configured sampler. NSGA-II and TPE read constraints that trials set themselves."""
    if cfg.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=cfg.population_size, seed=seed)
    if cfg.sampler == "tpe":
        return optuna.samplers.TPESampler(
            n_startup_trials=cfg.n_startup_trials, seed=seed, multivariate=True
        )
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(run: Run, config: RunConfig, *, shared: bool = False) -> optuna.Study:
    """Create the run's study, or load it to resume.

    A resumed sampler is seeded with the seed plus the number of trials so far: reseeding with
    the bare seed would replay the first invocation's candidates. Shared workers add their
    process id, or two workers starting together would propose the same candidates.
    """
    storage = open_storage(run.storage_url, config.cluster if shared else None)
    study = optuna.create_study(
        study_name=config.name,
        storage=storage,
        directions=DIRECTIONS,
        load_if_exists=True,
    )
    seed = config.seed + len(study.get_trials(False)) + (os.getpid() if shared else 0)
    study.sampler = make_sampler(config.search, seed % 2**31)
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(METRIC_NAMES))
    return study


def constraint_values(config: SearchConfig, latency_ms: float, params: int) -> dict[str, float]:
    """Optuna constraint values by name; <= 0 means satisfied."""
    c = config.constraints
    values = {}
    if c.max_latency_ms is not None:
        values["max_latency_ms"] = latency_ms - c.max_latency_ms
    if c.max_params is not None:
        values["max_params"] = float(params - c.max_params)
    return values


def is_finished(trial: FrozenTrial) -> bool:
    """Counts toward the target: completed, stopped early, or failed other than by interruption."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and not trial.user_attrs.get(INTERRUPTED, False)


def recover_interrupted(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a dead process as failed and queue their candidates again.

    Only safe while holding the run's exclusive lock: then no live process owns a RUNNING trial.
    """
    return sum(
        fail_interrupted(study, t, "interrupted: the process ended during this trial; retried")
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    )


def is_active(trial: FrozenTrial) -> bool:
    """Finished, or running now: holds one of the target's places."""
    return is_finished(trial) or trial.state == TrialState.RUNNING


def tell_outcome(
    study: optuna.Study, trial: optuna.Trial, attrs: Mapping[str, Any], search: SearchConfig
) -> None:
    """Store a completed evaluation on its trial: attributes, constraints, objectives.

    Raises:
        SearchError: an objective is not a finite number.
    """
    values = [attrs["accuracy"], attrs["latency_p50_ms"]]
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        raise SearchError(f"non-finite objectives {values}")
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    for key, value in constraint_values(search, attrs["latency_p50_ms"], attrs["params"]).items():
        trial.set_constraint(key, value)
    study.tell(trial, values)


def enqueue_seeds(
    study: optuna.Study, config: RunConfig, space: Any, compression: CompressionSpace
) -> None:
    """Queue the config's seed candidates once (a resumed run does not queue them again)."""
    for text in config.search.seed_candidates:
        arch, fixed = compression.split(text)
        params = {**space.to_params(space.decode(arch)), **fixed}
        study.enqueue_trial(params, skip_if_exists=True)


def trial_key(attrs: Mapping[str, Any]) -> str:
    """Architecture and compression: what makes two trials the same evaluation."""
    text, compression = str(attrs.get("candidate", "")), attrs.get("compression")
    return f"{text}|{compression}" if compression else text


def reusable_attrs(original: FrozenTrial) -> dict[str, Any]:
    """A completed trial's outcome, for a later trial of the same candidate."""
    attrs = {k: v for k, v in original.user_attrs.items() if k not in LOOP_ATTRS}
    attrs["duplicate_of"] = original.number
    return attrs


def describe_outcome(attrs: Mapping[str, Any]) -> str:
    """One line for the log and the progress display."""
    return (
        f"accuracy {attrs['accuracy']:.4f}, latency {attrs['latency_p50_ms']:.3f} ms"
        f"{' (SLOWER than its fp32 parent)' if attrs.get('slower_than_parent') else ''}"
        f"{' (cached)' if attrs.get('latency_cached') else ''}"
        f"{' (predicted)' if attrs.get('latency_source') == 'predicted' else ''}, "
        f"{attrs['params'] / 1e6:.2f} M params"
    )


def checkpoints(study: optuna.Study) -> list[Checkpoint]:
    """Per-epoch accuracy of every trial that trained (completed or stopped early)."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        a = t.user_attrs
        if "duplicate_of" in a or "latency_p50_ms" not in a:
            continue
        for epoch, acc in enumerate(a.get("epoch_accuracy", []), start=1):
            out.append(Checkpoint(t.number, epoch, acc, a["latency_p50_ms"]))
    return out


def stop_check(cfg: EarlyStoppingConfig, number: int, history: list[Checkpoint]) -> StopCheck:
    """Early stopping's question after each epoch of trial `number`, against `history`."""
    stopper = ParetoSuccessiveHalving(
        min_epochs=cfg.min_epochs,
        reduction_factor=cfg.reduction_factor,
        min_trials=cfg.min_trials,
    )

    def check(epoch: int, accuracy: float, latency_ms: float) -> str | None:
        return stopper.should_stop(Checkpoint(number, epoch, accuracy, latency_ms), history)

    return check


def check_any_completed(study: optuna.Study, run: Run) -> None:
    """Raise when trials failed and none completed: the search found nothing.

    Raises:
        SearchError: with the first failure's reason and where the tracebacks are.
    """
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get(SURPLUS)]
    if failed and not any(t.state == TrialState.COMPLETE for t in trials):
        reason = failed[0].user_attrs.get("failure_reason", "unknown")
        raise SearchError(
            f"all {len(failed)} trials failed; the first: {reason}; tracebacks in {run.log_path}"
        )


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
    """

    def __init__(
        self,
        *,
        run: Run,
        config: RunConfig,
        evaluator: Evaluator,
        reporter: SearchReporter | None = None,
        resume_hint: str = "",
        shared: bool = False,
    ) -> None:
        self.run = run
        self.shared = shared
        self.config = config
        self.evaluator = evaluator
        self.space = evaluator.space
        self.reporter = reporter or NullReporter()
        self.resume_hint = resume_hint
        self.study = open_study(run, config, shared=shared)
        self.compression = CompressionSpace(
            config.compression, n_stages=len(getattr(self.space, "base", ()))
        )
        self.dists = distributions(self.space.dimensions() + self.compression.dimensions())

    def _known(self) -> dict[str, FrozenTrial]:
        """Completed trials by candidate and compression (the cache of accuracy and latency)."""
        out: dict[str, FrozenTrial] = {}
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            out.setdefault(trial_key(t.user_attrs), t)
        return out

    def _enqueue_seeds(self) -> None:
        enqueue_seeds(self.study, self.config, self.space, self.compression)

    def _fail(self, trial: optuna.Trial, reason: str, *, interrupted: bool = False) -> None:
        trial.set_user_attr("failure_reason", reason)
        if interrupted:
            trial.set_user_attr(INTERRUPTED, True)
        self.study.tell(trial, state=TrialState.FAIL)

    def _tell(self, trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
        tell_outcome(self.study, trial, attrs, self.config.search)

    def _evaluate(self, trial: optuna.Trial, known: dict[str, FrozenTrial]) -> str:
        candidate = self.space.from_params(trial.params)
        compression = self.compression.from_params(trial.params)
        text = self.space.encode(candidate)
        trial.set_user_attr("candidate", text)
        if self.compression.enabled:
            trial.set_user_attr("compression", compression.encode())
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
                progress=self.reporter.phase,
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
        done = self.finished()
        timed_out = False
        self.reporter.start(done, n_trials)
        try:
            while True:
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
        front_size = self._write_outputs(plot=True)
        self._check_any_completed()
        return SearchSummary(done, n_trials, front_size, timed_out, time.monotonic() - start)

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
        trial.set_user_attr("failure_reason", "not run: other workers took the last places")
        self.study.tell(trial, state=TrialState.FAIL)
        if "retry_of" in trial.user_attrs:
            self.study.enqueue_trial(
                trial.params, user_attrs={"retry_of": trial.user_attrs["retry_of"]}
            )
        return True

    def _run_one(self, trial: optuna.Trial, known: dict[str, FrozenTrial]) -> tuple[str, str]:
        """Evaluate one asked trial and tell the study; (status, one-line summary)."""
        try:
            summary = self._evaluate(trial, known)
        except KeyboardInterrupt:
            self._fail(trial, "interrupted by the user; retried on resume", interrupted=True)
            self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
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
