"""The Ray Tune driver: the local backend's evaluation function, run as Tune trials.

Ray Tune schedules one trial per candidate and asks Optuna's sampler for them through
`StudySearch`, whose study is the run's own study: a Ray run has the same storage, tables and
plot as a local one, and every other command reads it unchanged.

Placement: a trial reserves ``cluster.trial_cpus/trial_gpus/trial_memory_gb`` on any node; every
latency measurement goes to a `Meter` on a node that carries the device (`nas.cluster.meter`).
Trained weights come back to the run directory through a small actor on the driver's node.

Faults: Tune restarts a trial whose worker or node died (``cluster.max_retries``); its Optuna
trial stays the same, so nothing is counted twice. A driver that dies leaves its running trials
RUNNING in the study; the next `nas search` marks them interrupted and queues them again.
SIGTERM (`kill`, `timeout`, a scheduler) stops a search as Ctrl-C does: Tune ends its trials,
they are queued again, and the command exits with the one that resumes.
Importing this module imports Ray.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hwnas_base.io import write_atomic
from nas.cluster.connect import check_device, connect, needs_device
from nas.cluster.meter import measuring_on, start_meters
from nas.cluster.searcher import StudySearch
from nas.cluster.trial import SHIPPED_SUPERNET, Payload, run_trial
from nas.cluster.writer import RunWriter
from nas.compress.space import compression_space
from nas.config import RunConfig
from nas.errors import SearchError
from nas.evaluate.latency import predicted
from nas.evaluate.pool import foresight
from nas.evaluate.supernet import search_supernet, supernet_path
from nas.progress import NullReporter, SearchReporter
from nas.report.plots import write_plot
from nas.report.tables import front_frame, trials_frame, write_tables
from nas.run import Run
from nas.search.loop import stops_cleanly
from nas.search.session import (
    SearchOptions,
    SearchResult,
    Session,
    check_seeds,
    describe_study,
    logging_to,
    make_teacher,
    prepare,
    remeasure_front,
    say_latency_notes,
)
from nas.search.study import (
    check_any_completed,
    distributions,
    enqueue_seeds,
    open_study,
    recover_interrupted,
)
from nas.storage import check_storage, close_storage, fail_stale, heartbeat, is_finished
from search_spaces import get_space

log = logging.getLogger("nas.ray")


def ray_search(
    options: SearchOptions, config: RunConfig, reporter: SearchReporter | None
) -> SearchResult:
    """Run (or resume) a search on Ray; see `nas search --help`."""
    runs_dir = Path(options.runs_dir)
    source = str(Path(options.config))
    space = get_space(config.space.name, config.space)
    check_seeds(config, space, compression_space(config.compression, space), source)
    run = Run.check(runs_dir, config)
    check_storage(config.cluster, run.root)
    connect(options.address, config)
    hint = options.resume_hint(config)
    # After `connect`: Ray's own SIGTERM handler, which it installs there, aborts with a
    # stack trace and leaves the study as a SIGKILL would.
    try:
        with stops_cleanly(hint):
            measure = check_device(config, options.address, space, runs_dir)
            used = config if measure else predicted(config)
            meters = start_meters(used) if measure and needs_device(used) else []
            session = prepare(used, runs_dir, backend=measuring_on(meters), source=source)
            with run.lock():
                write_atomic(run.config_path, config.to_yaml())
                with logging_to(run):
                    driver = _Driver(run, config, session, reporter or NullReporter())
                    try:
                        return driver.drive(meters, hint, runs_dir)
                    finally:
                        close_storage(driver.study)
    finally:
        ray.shutdown()


@dataclass
class _Driver:
    """One invocation of a Ray search on a run's study."""

    run: Run
    config: RunConfig
    session: Session
    reporter: SearchReporter

    def __post_init__(self) -> None:
        self.started = time.monotonic()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # With a shared storage, `nas worker`s may work on the study too: only trials whose
        # heartbeats stopped are recovered, and this driver beats for the trials it runs.
        shared = self.config.cluster.storage is not None
        session = self.session
        ahead = foresight(self.config, session.space, self.run.root.parent, session.latency)
        dists = distributions(session.space.dimensions() + session.compression.dimensions())
        self.study = open_study(
            self.run, self.config, shared=shared, foresight=ahead, search_space=dists
        )
        describe_study(self.study, self.session)
        say_latency_notes(self.session, self.reporter)
        recovered = fail_stale(self.study) if shared else recover_interrupted(self.study)
        if recovered:
            log.warning("%d interrupted trial(s) marked failed and queued again", recovered)
        enqueue_seeds(self.study, self.config, self.session.space, self.session.compression)

    def finished(self) -> int:
        return sum(is_finished(t) for t in self.study.get_trials(deepcopy=False))

    def drive(self, meters: list[Any], hint: str, runs_dir: Path) -> SearchResult:
        target = self.config.search.n_trials
        trials = self.study.get_trials(deepcopy=False)
        remaining = target - self.finished() - sum(t.state.name == "RUNNING" for t in trials)
        self.reporter.start(self.finished(), target)
        searcher: StudySearch | None = None
        try:
            if remaining > 0:
                payload = self._payload(meters, runs_dir)  # trains the teacher, if any
                searcher = self._searcher()  # knows the trials completed until now
                with heartbeat(self.study._storage, searcher.running):
                    _fit(
                        self.run,
                        self.config,
                        searcher,
                        self._progress(searcher),
                        payload,
                        remaining,
                    )
        finally:
            self.reporter.stop()
        # Trials Tune stopped (time budget, Ctrl-C) before they reported: queued again.
        left = searcher.abandon() if searcher is not None else 0
        trials_table = trials_frame(self.study)
        write_tables(self.run, trials_table)
        write_plot(self.run, trials_table)
        done = self.finished()
        timed_out = self.config.search.timeout is not None and done < target
        if left and done < target and not timed_out:
            raise SearchError(f"search interrupted; resume with: {hint}")
        check_any_completed(self.study, self.run)
        remeasure_front(self.study, self.session, self.run, self.reporter)
        front = front_frame(trials_frame(self.study))
        seconds = time.monotonic() - self.started
        return SearchResult(self.run, done, target, front, timed_out, seconds)

    def _searcher(self) -> StudySearch:
        space, compression = self.session.space, self.session.compression
        return StudySearch(
            study=self.study,
            dists=distributions(space.dimensions() + compression.dimensions()),
            space=space,
            compression=compression,
            config=self.config,
        )

    def _payload(self, meters: list[Any], runs_dir: Path) -> Payload:
        writer = (
            ray.remote(num_cpus=0)(RunWriter)
            .options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(
                    ray.get_runtime_context().get_node_id(), soft=False
                )
            )
            .remote(str(self.run.root.resolve()))
        )
        return Payload(
            config_json=self.session.config.model_dump_json(),
            meters=meters,
            runs_dir=str(Path(runs_dir).resolve()),
            writer=writer,
            files={**self._teacher_files(), **self._supernet_files()},
        )

    def _supernet_files(self) -> dict[str, bytes]:
        """Train (or load) the supernet here once; every worker gets its weights with the
        payload (once per worker process, not per trial)."""
        if self.config.evaluation != "supernet":
            return {}
        if self.session.supernet is None:  # not given: trained into the run, here
            splits = self.session.proxy[1]
            search_supernet(self.config, splits, self.run.root, self.reporter.phase)
        path = self.config.supernet.path or supernet_path(self.run.root)
        return {SHIPPED_SUPERNET: Path(path).read_bytes()}

    def _teacher_files(self) -> dict[str, bytes]:
        """Train (or load) the distillation teacher here once; workers get its files."""
        teacher = make_teacher(self.session, self.run.root)
        if teacher is None:
            return {}
        teacher.model()
        return {p.name: p.read_bytes() for p in (teacher.weights_path, teacher.card_path)}

    def _progress(self, searcher: StudySearch) -> Progress:
        return Progress(
            study=self.study,
            run=self.run,
            searcher=searcher,
            reporter=self.reporter,
            finished=self.finished,
        )


def _fit(
    run: Run,
    config: RunConfig,
    searcher: StudySearch,
    progress: Progress,
    payload: Payload,
    remaining: int,
) -> None:
    # Tune's own console output would interleave with this search's progress and stdout.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    c = config.cluster
    resources: dict[str, float] = {"cpu": c.trial_cpus, "gpu": c.trial_gpus}
    if c.trial_memory_gb is not None:
        resources["memory"] = c.trial_memory_gb * 2**30
    trainable = tune.with_resources(tune.with_parameters(run_trial, payload=payload), resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=remaining,
            max_concurrent_trials=c.max_concurrent_trials,
            reuse_actors=True,
            time_budget_s=config.search.timeout,
        ),
        run_config=tune.RunConfig(
            name=time.strftime("tune-%Y%m%d-%H%M%S"),
            storage_path=str((run.root / "ray").resolve()),
            failure_config=tune.FailureConfig(max_failures=c.max_retries),
            callbacks=[progress],
            verbose=0,
        ),
    )
    with _tune_notes(progress.reporter):
        tuner.fit()


class _TuneNotes(logging.Filter):
    """Tune's lines about a stop it was asked for speak of its own experiment (resume with
    `Tuner.restore`, metrics of trials that never reported): the search says instead what
    happens to its study, and the one command that resumes it."""

    DROPPED = ("Experiment has been interrupted", "Failed to fetch metrics")

    def __init__(self, note: Callable[[str], None]) -> None:
        super().__init__()
        self.note = note

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if text.startswith("Stop signal received"):
            line = (
                "stopping: trials still running are marked interrupted and queued again (a "
                "second Ctrl-C or SIGTERM stops at once; the next `nas search` retries them too)"
            )
            log.warning(line)
            self.note(line)
            return False
        return not text.startswith(self.DROPPED)


@contextmanager
def _tune_notes(reporter: SearchReporter) -> Iterator[None]:
    notes = _TuneNotes(reporter.note)
    loggers = [
        logging.getLogger(n) for n in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis")
    ]
    for logger in loggers:
        logger.addFilter(notes)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(notes)


class Progress(tune.Callback):
    """Tune callback: progress lines, the log, and the run's tables after every trial."""

    def __init__(
        self,
        *,
        study: optuna.Study,
        run: Run,
        searcher: StudySearch,
        reporter: SearchReporter,
        finished: Callable[[], int],
    ) -> None:
        self.study, self.run, self.searcher = study, run, searcher
        self.reporter, self.finished = reporter, finished

    def __getstate__(self) -> dict[str, Any]:
        return {}  # as StudySearch: kept in Tune's experiment state, never restored from it

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.reporter.trial_started(trial.config["number"], trial.config["key"])

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        line = (
            f"trial {trial.config['number']}: its Ray worker or node died; Tune runs it again "
            f"({trial.run_metadata.num_failures} of {trial.max_failures} retries)"
        )
        log.warning(line)
        self.reporter.note(line)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trial)

    def _finished(self, trial: Any) -> None:
        number, summary = self.searcher.lines.pop(trial.trial_id, (trial.config["number"], "ended"))
        seconds = (trial.last_result or {}).get("time_total_s", math.nan)
        line = f"trial {number} {summary} ({seconds:.1f} s on Ray)"
        log.info(line)
        front = write_tables(self.run, trials_frame(self.study))
        self.reporter.trial_finished(number, line, self.finished(), len(front))
