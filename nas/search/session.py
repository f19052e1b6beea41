"""A search session: everything a search needs before its first trial, checked, and the search
run in this process (alone, or as one of several workers on a shared study).

Everything that can be wrong with the user's input is checked before the first file is
written: the config, the dataset, the seed candidates, the latency source, the compression
runtimes and, for a resumed run, that the config matches the one the run was started with. The
Ray backend (`nas.cluster`) prepares its session with the same `prepare` and records the same
study description, logs and final re-measurement.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import torch

from hwnas_base.io import write_atomic
from hwnas_base.progress import PhaseProgress, quiet
from latency_predictors.sources import HybridLatency, LatencySource, latency_cache
from nas.compress.compressor import Compressor
from nas.compress.quantization import load_calibration
from nas.compress.space import CompressionSpace, compression_space
from nas.config import RunConfig, load_config
from nas.errors import ConfigError, RunError
from nas.evaluate.evaluator import CandidateEvaluator, Evaluator
from nas.evaluate.latency import BackendFactory, config_backend, latency_source, precision_backends
from nas.evaluate.pool import foresight
from nas.evaluate.supernet import SupernetEvaluator, given_supernet, search_supernet
from nas.evaluate.tabular import BenchmarkTable, TableLatency, TabularEvaluator, read_table
from nas.progress import SearchReporter
from nas.report.plots import write_plot
from nas.report.tables import front_frame, trials_frame, write_tables
from nas.run import DEFAULT_RUNS_DIR, Run
from nas.search.loop import SearchLoop, stops_cleanly
from nas.storage import check_storage, close_storage
from nas.train.data import ImageDataset, ProxySplits, load_dataset, make_splits
from nas.train.distillation import Teacher, check_teacher
from search_spaces import get_space
from search_spaces.efficientnet.supernet import EfficientNetSupernet

BACKENDS = ("local", "ray")


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOptions:
    """What `nas search` asks for.

    Attributes:
        config: The run config (YAML).
        name: Run name (default: the config's).
        n_trials: Finished trials to reach (overrides ``search.n_trials``).
        timeout: Seconds after which no new trial starts.
        runs_dir: Where runs are written.
        backend: ``local`` (trials in this process) or ``ray`` (on a Ray cluster).
        address: The Ray cluster to join (``ray`` only); default a local Ray instance.
        storage: Optuna storage shared with `nas worker`s (overrides ``cluster.storage``).
    """

    config: Path
    name: str | None = None
    n_trials: int | None = None
    timeout: float | None = None
    runs_dir: Path = DEFAULT_RUNS_DIR
    backend: str = "local"
    address: str | None = None
    storage: str | None = None

    def resolve(self) -> RunConfig:
        """The config file with these options applied, validated.

        Raises:
            RunError: an unknown backend, or an address without the ray backend.
            ConfigError: the config or an override is invalid.
        """
        if self.backend not in BACKENDS:
            raise RunError(f"backend {self.backend!r} unknown; choose {' or '.join(BACKENDS)}")
        if self.address is not None and self.backend != "ray":
            raise RunError("--address names a Ray cluster; add --backend ray")
        return load_config(self.config).with_overrides(
            name=self.name, n_trials=self.n_trials, timeout=self.timeout, storage=self.storage
        )

    def resume_hint(self, config: RunConfig) -> str:
        """The command that resumes this search."""
        command = ["nas", "search", str(self.config), "--name", config.name]
        if self.backend == "ray":
            command += ["--backend", "ray"] + (["--address", self.address] if self.address else [])
        if self.storage is not None:
            command += ["--storage", self.storage]
        return _hint(command, self.runs_dir, self.n_trials)


@dataclass(frozen=True)
class WorkerOptions:
    """What `nas worker` asks for: the run, and the trials (and time) to work toward."""

    run_dir: Path
    n_trials: int | None = None
    timeout: float | None = None

    def resume_hint(self) -> str:
        """The command that resumes this worker."""
        return _hint(["nas", "worker", str(self.run_dir)], DEFAULT_RUNS_DIR, self.n_trials)


def _hint(command: list[str], runs_dir: Path, n_trials: int | None) -> str:
    parts = list(command)
    if n_trials is not None:
        parts += ["--trials", str(n_trials)]
    if Path(runs_dir) != DEFAULT_RUNS_DIR:
        parts += ["--runs-dir", str(runs_dir)]
    return shlex.join(parts)


@dataclass
class SearchResult:
    run: Run
    finished: int
    target: int
    front: pd.DataFrame
    stopped_by_timeout: bool
    seconds: float


@dataclass
class Session:
    """Everything a search needs before the first trial, each part checked. A tabular search
    (`config.benchmark`) has its `table` and no dataset."""

    config: RunConfig
    space: Any
    dataset: ImageDataset | None
    splits: ProxySplits | None
    latency: LatencySource
    compressor: Compressor | None
    compression: CompressionSpace
    table: BenchmarkTable | None = None
    supernet: EfficientNetSupernet | None = None  # `supernet.path`'s, loaded once when checked

    @property
    def proxy(self) -> tuple[ImageDataset, ProxySplits]:
        """The proxy dataset and splits of a search that trains."""
        if self.dataset is None or self.splits is None:
            raise RunError("a tabular search has no dataset: its scores come from its table")
        return self.dataset, self.splits


def check_seeds(config: RunConfig, space: Any, compression: CompressionSpace, source: str) -> None:
    """`ConfigError` naming the first seed candidate outside the space (or its compression)."""
    for i, text in enumerate(config.search.seed_candidates):
        try:
            arch, _ = compression.split(text)
            space.to_params(space.decode(arch))
        except ValueError as e:
            raise ConfigError(
                f"{source}: invalid config: search.seed_candidates[{i}]: {e}"
            ) from None


def check_seeds_in_table(config: RunConfig, space: Any, table: BenchmarkTable, source: str) -> None:
    """`ConfigError` naming the first seed candidate that the benchmark table lacks."""
    for i, text in enumerate(config.search.seed_candidates):
        key = space.encode(space.decode(text))
        if key not in table.accuracy:
            raise ConfigError(
                f"{source}: invalid config: search.seed_candidates[{i}]: {key} is not in the "
                f"benchmark table {table.path}"
            )


def prepare(
    config: RunConfig,
    runs_dir: Path,
    *,
    backend: BackendFactory | None = None,
    source: str = "config",
) -> Session:
    """Check and load the space, seeds, dataset, latency source and compressor of `config`.

    Args:
        config: The run's config.
        runs_dir: Where runs (and the latency cache and fitted predictors) live.
        backend: Measurement backend factory instead of this machine's runtimes (the Ray
            backend measures on the nodes that carry the device).
        source: Where the config came from, for error messages.
    """
    space = get_space(config.space.name, config.space)
    compression = compression_space(config.compression, space)
    check_seeds(config, space, compression, source)
    if config.benchmark is not None:
        table = read_table(config.benchmark, space)
        check_seeds_in_table(config, space, table, source)
        return Session(
            config, space, None, None, TableLatency(space, table), None, compression, table
        )
    dataset = load_dataset(config.data)
    splits = make_splits(dataset, config.data, config.seed)
    backend = backend or config_backend
    latency = latency_source(config, space, runs_dir, backend)
    compressor = None
    if config.compression.enabled:
        compressor = Compressor(
            config=config.compression,
            space=space,
            deployment=config.deployment.target(),
            backends=precision_backends(config, backend),
            calibration=load_calibration(config.compression.quantization, splits),
            cache=latency_cache(runs_dir),
        )
    check_teacher(config.compression.distillation, space, splits)
    given = None
    if config.evaluation == "supernet" and config.supernet.path is not None:
        given = given_supernet(config, splits)
    return Session(config, space, dataset, splits, latency, compressor, compression, supernet=given)


def make_teacher(session: Session, root: Path) -> Teacher | None:
    """The distillation teacher cached in `root`, or None when the search does not distil."""
    config = session.config
    if not config.compression.distillation.enabled:
        return None
    return Teacher(
        config.compression.distillation,
        session.space,
        session.proxy[1],
        config.training,
        root,
        seed=config.seed,
    )


def make_evaluator(
    session: Session, root: Path, progress: PhaseProgress = quiet
) -> CandidateEvaluator:
    """The evaluation function of a search whose run (or teacher cache) is at `root`.

    With ``evaluation: supernet``, the run's supernet is trained first (`progress` shows it),
    unless it already is or ``supernet.path`` names one.
    """
    config = session.config
    if session.table is not None:
        return TabularEvaluator(session.space, session.table)
    common: dict[str, Any] = {
        "space": session.space,
        "data": session.proxy[1],
        "training": config.training,
        "deployment": config.deployment.target(),
        "latency": session.latency,
        "seed": config.seed,
        "compressor": session.compressor,
        "teacher": make_teacher(session, root),
        "finetune_lr_scale": config.compression.pruning.finetune_lr_scale,
    }
    if config.evaluation == "supernet":
        supernet = session.supernet or search_supernet(config, session.proxy[1], root, progress)
        scoring = config.supernet.scoring(config.training)
        return SupernetEvaluator(supernet=supernet, scoring=scoring, **common)
    return Evaluator(**common)


def describe_study(study: Any, session: Session) -> None:
    """Store what the run's trials were scored on, for export and reports."""
    study.set_user_attr("latency", session.latency.description)
    study.set_user_attr("latency_notes", list(session.latency.notes))
    config = session.config
    if config.benchmark is not None:
        study.set_user_attr("benchmark", config.benchmark.model_dump(mode="json"))
        return
    dataset, splits = session.proxy
    study.set_user_attr(
        "data",
        {
            "dataset": dataset.name,
            "classes": list(dataset.classes),
            "num_classes": dataset.num_classes,
            "channels": dataset.channels,
            "image_size": dataset.image_size,
            "train_size": config.data.train_size,
            "val_size": config.data.val_size,
            "mean": list(splits.mean),
            "std": list(splits.std),
        },
    )


def say_latency_notes(session: Session, reporter: SearchReporter | None) -> None:
    """Tell the user, before the first trial, what to know about the latency numbers (a table
    not calibrated for this host, a predictor's expected error); they are also in the log and
    the study. A table's host is a warning only where this host is what is measured."""
    measured_here = session.config.latency.mode != "predicted"
    for note in session.latency.notes:
        if measured_here:
            log.warning(note)
        else:
            log.info(note)
        if reporter is not None:
            reporter.note(("warning: " if measured_here else "") + note)


@contextmanager
def logging_to(run: Run) -> Iterator[None]:
    """The project's log lines go to the run's search.log while the block runs."""
    handler = logging.FileHandler(run.log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("nas")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def remeasure_front(
    study: Any, session: Session, run: Run, reporter: SearchReporter | None
) -> None:
    """Measure every front member whose latency was predicted; store it beside the prediction.

    Only hybrid searches have something to re-measure; for the others this does nothing.
    """
    latency = session.latency
    if not isinstance(latency, HybridLatency):
        return
    front = front_frame(trials_frame(study))
    todo = front[front["latency_source"] == "predicted"]
    done = dict(study.user_attrs.get("front_measured", {}))
    for i, r in enumerate(todo.itertuples()):
        if str(r.number) in done:
            continue
        result, _ = latency.measured(session.space.decode(r.candidate))
        if reporter is not None:
            reporter.note(
                f"front member {i + 1}/{len(todo)}, trial {r.number}: predicted "
                f"{r.latency_p50_ms:.3f} ms, measured {result.p50_ms:.3f} ms"
            )
        done[str(r.number)] = {
            "p50_ms": result.p50_ms,
            "p90_ms": result.p90_ms,
            "std_ms": result.std_ms,
            "predicted_ms": r.latency_p50_ms,
            "device": result.device.to_dict(),
        }
        study.set_user_attr("front_measured", done)
    trials = trials_frame(study)
    write_tables(run, trials)
    write_plot(run, trials)


def check(config: RunConfig, runs_dir: Path, *, source: str, here: bool = True) -> Run:
    """Everything a search checks before it writes a file, without running it: the run it
    would write to.

    Args:
        config: The search's config, overrides applied.
        runs_dir: Where its run goes.
        source: Where the config came from, for messages.
        here: The search will run on this machine, so its dataset, device and runtimes are
            checked too; False for one that runs elsewhere (a Ray cluster), where only the
            config, the seeds and the run folder can be checked from here.
    """
    if here:
        prepare(config, runs_dir, source=source)
    else:
        space = get_space(config.space.name, config.space)
        check_seeds(config, space, compression_space(config.compression, space), source)
    run = Run.check(runs_dir, config)
    check_storage(config.cluster, run.root)
    return run


def search_here(
    options: SearchOptions, config: RunConfig, reporter: SearchReporter | None
) -> SearchResult:
    """Run (or resume) the search in this process; see `nas search --help`."""
    runs_dir = Path(options.runs_dir)
    session = prepare(config, runs_dir, source=str(Path(options.config)))
    run = Run.check(runs_dir, config)
    check_storage(config.cluster, run.root)
    shared = config.cluster.storage is not None
    return _run(run, session, options.resume_hint(config), reporter, shared=shared)


def work(options: WorkerOptions, reporter: SearchReporter | None) -> SearchResult:
    """Work on an existing run's study beside other workers; see `nas worker --help`."""
    run = Run.open(options.run_dir)
    config = run.config().with_overrides(n_trials=options.n_trials, timeout=options.timeout)
    session = prepare(config, run.root.parent, source=str(run.config_path))
    return _run(run, session, options.resume_hint(), reporter, shared=True, write_config=False)


def _run(
    run: Run,
    session: Session,
    hint: str,
    reporter: SearchReporter | None,
    *,
    shared: bool,
    write_config: bool = True,
) -> SearchResult:
    config = session.config
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if config.training.threads is not None:
        torch.set_num_threads(config.training.threads)
    with stops_cleanly(hint), run.lock(shared=shared):
        if write_config:
            write_atomic(run.config_path, config.to_yaml())
        with logging_to(run):
            progress = quiet if reporter is None else reporter.phase
            loop = SearchLoop(
                run=run,
                config=config,
                evaluator=make_evaluator(session, run.root, progress),
                reporter=reporter,
                resume_hint=hint,
                shared=shared,
                foresight=foresight(config, session.space, run.root.parent, session.latency),
            )
            try:
                describe_study(loop.study, session)
                say_latency_notes(session, reporter)
                summary = loop.run_trials(config.search.n_trials, config.search.timeout)
                remeasure_front(loop.study, session, run, reporter)
                front = front_frame(trials_frame(loop.study))
            finally:
                close_storage(loop.study)
    return SearchResult(
        run, summary.finished, summary.target, front, summary.stopped_by_timeout, summary.seconds
    )
