"""The in-process search: an Optuna ask/tell loop around `Evaluator`.

The study lives in the run's SQLite file, so running the same command again resumes it: finished
trials are kept, a trial that was cut off (the process died while it ran) is marked failed and
its candidate is queued to run again, and the loop stops when the number of finished trials
reaches the target.
"""

from __future__ import annotations

import itertools
import logging
import math
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
from nas.config import RunConfig, SearchConfig
from nas.early_stopping import Checkpoint, ParetoSuccessiveHalving
from nas.errors import NASError, SearchError
from nas.evaluate import Evaluator, StopCheck, StoppedEarly
from nas.progress import NullReporter, SearchReporter
from nas.report import trials_frame, write_plot, write_tables
from nas.run import Run
from search_spaces.base import Dimension

log = logging.getLogger("nas.search")

DIRECTIONS: list[StudyDirection] = [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
METRIC_NAMES = ("accuracy", "latency_p50_ms")
INTERRUPTED = "interrupted"
# Trial attributes the loop itself sets; everything else on a completed trial is its outcome.
LOOP_ATTRS = frozenset({INTERRUPTED, "retry_of", "duplicate_of", "failure_reason"})


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


def open_study(run: Run, config: RunConfig) -> optuna.Study:
    """Create the run's study, or load it to resume.

    A resumed sampler is seeded with the seed plus the number of trials so far: reseeding with
    the bare seed would replay the first invocation's candidates.
    """
    study = optuna.create_study(
        study_name=config.name,
        storage=run.storage_url,
        directions=DIRECTIONS,
        load_if_exists=True,
    )
    study.sampler = make_sampler(config.search, config.seed + len(study.get_trials(False)))
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

    Only safe while holding the run's lock: then no live process owns a RUNNING trial. Optuna has
    no public call that sets attributes on a trial another process started, hence the storage.
    """
    storage = study._storage
    recovered = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(t._trial_id, INTERRUPTED, True)
        storage.set_trial_user_attr(
            t._trial_id,
            "failure_reason",
            "interrupted: the process ended during this trial; retried",
        )
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        recovered += 1
    return recovered


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
    """

    def __init__(
        self,
        *,
        run: Run,
        config: RunConfig,
        evaluator: Evaluator,
        reporter: SearchReporter | None = None,
        resume_hint: str = "",
    ) -> None:
        self.run = run
        self.config = config
        self.evaluator = evaluator
        self.space = evaluator.space
        self.reporter = reporter or NullReporter()
        self.resume_hint = resume_hint
        self.study = open_study(run, config)
        self.compression = CompressionSpace(
            config.compression, n_stages=len(getattr(self.space, "base", ()))
        )
        self.dists = distributions(self.space.dimensions() + self.compression.dimensions())

    @staticmethod
    def _key(attrs: Mapping[str, Any]) -> str:
        """Architecture and compression: what makes two trials the same evaluation."""
        text, compression = str(attrs.get("candidate", "")), attrs.get("compression")
        return f"{text}|{compression}" if compression else text

    def _known(self) -> dict[str, FrozenTrial]:
        """Completed trials by candidate and compression (the cache of accuracy and latency)."""
        out: dict[str, FrozenTrial] = {}
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            out.setdefault(self._key(t.user_attrs), t)
        return out

    def _enqueue_seeds(self) -> None:
        for text in self.config.search.seed_candidates:
            arch, compression = self.compression.split(text)
            params = {**self.space.to_params(self.space.decode(arch)), **compression}
            self.study.enqueue_trial(params, skip_if_exists=True)

    def _fail(self, trial: optuna.Trial, reason: str, *, interrupted: bool = False) -> None:
        trial.set_user_attr("failure_reason", reason)
        if interrupted:
            trial.set_user_attr(INTERRUPTED, True)
        self.study.tell(trial, state=TrialState.FAIL)

    def _tell(self, trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        for key, value in constraint_values(
            self.config.search, attrs["latency_p50_ms"], attrs["params"]
        ).items():
            trial.set_constraint(key, value)
        self.study.tell(trial, [attrs["accuracy"], attrs["latency_p50_ms"]])

    def _evaluate(self, trial: optuna.Trial, known: dict[str, FrozenTrial]) -> str:
        candidate = self.space.from_params(trial.params)
        compression = self.compression.from_params(trial.params)
        text = self.space.encode(candidate)
        trial.set_user_attr("candidate", text)
        if self.compression.enabled:
            trial.set_user_attr("compression", compression.encode())
        key = self._key(trial.user_attrs)
        self.reporter.trial_started(trial.number, key)
        if key in known:
            original = known[key]
            attrs = {k: v for k, v in original.user_attrs.items() if k not in LOOP_ATTRS}
            attrs["duplicate_of"] = original.number
            self._tell(trial, attrs)
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
        if not all(math.isfinite(v) for v in outcome.values):
            raise SearchError(f"non-finite objectives {outcome.values}")
        self._tell(trial, outcome.attrs())
        flag = outcome.compression.get("slower_than_parent")
        return (
            f"accuracy {outcome.accuracy:.4f}, latency {outcome.latency.p50_ms:.3f} ms"
            f"{' (SLOWER than its fp32 parent)' if flag else ''}"
            f"{' (cached)' if outcome.latency_cached else ''}"
            f"{' (predicted)' if outcome.latency.source == 'predicted' else ''}, "
            f"{outcome.params / 1e6:.2f} M params"
        )

    def checkpoints(self) -> list[Checkpoint]:
        """Per-epoch accuracy of every trial that trained (completed or stopped early)."""
        out = []
        for t in self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
        ):
            a = t.user_attrs
            if "duplicate_of" in a or "latency_p50_ms" not in a:
                continue
            for epoch, acc in enumerate(a.get("epoch_accuracy", []), start=1):
                out.append(Checkpoint(t.number, epoch, acc, a["latency_p50_ms"]))
        return out

    def _stop_check(self, number: int) -> StopCheck | None:
        cfg = self.config.search.early_stopping
        if not cfg.enabled:
            return None
        stopper = ParetoSuccessiveHalving(
            min_epochs=cfg.min_epochs,
            reduction_factor=cfg.reduction_factor,
            min_trials=cfg.min_trials,
        )
        history = self.checkpoints()

        def check(epoch: int, accuracy: float, latency_ms: float) -> str | None:
            return stopper.should_stop(Checkpoint(number, epoch, accuracy, latency_ms), history)

        return check

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
        recovered = recover_interrupted(self.study)
        if recovered:
            log.warning("%d interrupted trial(s) marked failed and queued again", recovered)
        self._enqueue_seeds()
        known = self._known()
        done = self.finished()
        timed_out = False
        self.reporter.start(done, n_trials)
        try:
            while done < n_trials:
                if timeout is not None and time.monotonic() - start >= timeout:
                    timed_out = True
                    break
                trial = self.study.ask(self.dists)
                t0 = time.monotonic()
                try:
                    summary = self._evaluate(trial, known)
                    status = "done"
                except KeyboardInterrupt:
                    self._fail(
                        trial, "interrupted by the user; retried on resume", interrupted=True
                    )
                    self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
                    raise
                except Exception as e:
                    reason = str(e) if isinstance(e, NASError) else f"{type(e).__name__}: {e}"
                    log.error("trial %d failed: %s", trial.number, reason, exc_info=True)
                    self._fail(trial, reason)
                    summary, status = f"failed: {reason}", "failed"
                else:
                    frozen = self.study.get_trials(deepcopy=False)[trial.number]
                    if frozen.state == TrialState.PRUNED:
                        status = "stopped early"
                    else:
                        known.setdefault(self._key(frozen.user_attrs), frozen)
                done += 1
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

    def _check_any_completed(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        failed = [t for t in trials if t.state == TrialState.FAIL]
        if failed and not any(t.state == TrialState.COMPLETE for t in trials):
            reason = failed[0].user_attrs.get("failure_reason", "unknown")
            raise SearchError(
                f"all {len(failed)} trials failed; the first: {reason}; tracebacks in "
                f"{self.run.log_path}"
            )
