"""The library facade: one small function per user action, each taking the options object of
its command. The CLI (and the HTTP service) build the options and call these; nothing else.

Every action checks what the user gave before it writes a file, and raises a `NASError` (see
`nas.errors`) naming what is wrong and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from hwnas_base.progress import PhaseProgress, quiet
from nas.cluster.connect import ray_environment
from nas.config import RunConfig, config_from_text, load_config
from nas.devices.adapt import AdaptOptions
from nas.devices.adapt import adapt_device as _adapt_device
from nas.devices.calibrate import CalibrateOptions
from nas.devices.calibrate import calibrate_table as _calibrate_table
from nas.devices.check import CheckOptions
from nas.devices.check import check_device as _check_device
from nas.devices.evaluation import PredictorEvaluation
from nas.devices.evaluation import evaluate_predictor as _evaluate_predictor
from nas.devices.listing import list_devices as _list_devices
from nas.devices.profiling import ProfileOptions
from nas.devices.profiling import profile_device as _profile_device
from nas.devices.tables import add_table as _add_table
from nas.errors import RunError
from nas.evaluate.supernet import evaluate_candidates, train_run_supernet
from nas.export.compare import CompareOptions
from nas.export.compare import compare as _compare
from nas.export.exporter import ExportOptions, export_trial
from nas.export.exporter import check_export as _check_export
from nas.export.layer_profile import profile_model
from nas.progress import SearchReporter
from nas.report.choice import best_under, knee, side_by_side
from nas.report.live import LiveRun
from nas.report.plots import pareto_figure, write_plot
from nas.report.progress import Progress
from nas.report.tables import front_frame, trial_record, trials_frame, write_tables
from nas.run import DEFAULT_RUNS_DIR, Run
from nas.search.loop import fails_in_one_line
from nas.search.session import (
    SearchOptions,
    SearchResult,
    WorkerOptions,
    check,
    search_here,
    work,
)
from nas.serving import deploy as _deploy
from nas.serving.deploy import DeployOptions
from nas.serving.report import variant_rows
from nas.storage import load_study
from nas.train.full import TrainOptions, train_trial

__all__ = [
    "AdaptOptions",
    "CalibrateOptions",
    "CheckOptions",
    "CompareOptions",
    "DeployOptions",
    "ExportOptions",
    "LiveRun",
    "PredictorEvaluation",
    "ProfileOptions",
    "Progress",
    "SearchOptions",
    "SearchResult",
    "TrainOptions",
    "WorkerOptions",
    "adapt_device",
    "add_table",
    "best_under",
    "calibrate_table",
    "check_device",
    "check_export",
    "check_search",
    "compare",
    "deploy",
    "deployment_report",
    "deployment_status",
    "evaluate_predictor",
    "evaluate_supernet",
    "export",
    "front_frame",
    "knee",
    "list_devices",
    "live",
    "pareto",
    "pareto_figure",
    "profile_device",
    "profile_layers",
    "progress",
    "search",
    "search_config",
    "set_traffic",
    "side_by_side",
    "stop_deployment",
    "train",
    "train_supernet",
    "trial",
    "trials",
    "worker",
]


def search(options: SearchOptions, reporter: SearchReporter | None = None) -> SearchResult:
    """Run (or resume) the search `options` describe, here or on a Ray cluster."""
    config = options.resolve()
    with fails_in_one_line(Run(Path(options.runs_dir) / config.name), options.resume_hint(config)):
        if options.backend == "ray":
            ray_environment(options.address)
            # Ray is an optional extra, imported only here and only after its environment is set.
            from nas.cluster.driver import ray_search

            return ray_search(options, config, reporter)
        return search_here(options, config, reporter)


def search_config(
    text: str,
    *,
    name: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    source: str = "submitted config",
) -> RunConfig:
    """A run config given as YAML or JSON text, with overrides applied, validated as a file
    given to `nas search` is."""
    return config_from_text(text, source=source).with_overrides(
        name=name, n_trials=n_trials, timeout=timeout
    )


def check_search(config: RunConfig, runs_dir: Path, *, source: str, here: bool = True) -> Run:
    """Everything `nas search` checks before it writes a file (see `nas.search.session.check`);
    the run the search would write to."""
    return check(config, runs_dir, source=source, here=here)


def worker(options: WorkerOptions, reporter: SearchReporter | None = None) -> SearchResult:
    """Work on an existing run's study beside other workers until it has its trials."""
    with fails_in_one_line(Run(Path(options.run_dir)), options.resume_hint()):
        return work(options, reporter)


def pareto(run_dir: Path, *, plot: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(front, all trials) of a run, read from its storage; rewrites the csv files and plot."""
    run = Run.open(run_dir)
    trials = trials_frame(load_study(run))
    if trials.empty:
        raise RunError(f"run {run.root} has no trials yet")
    front = write_tables(run, trials)
    if plot:
        write_plot(run, trials)
    return front, trials


def trials(run_dir: Path) -> pd.DataFrame:
    """Every trial of a run, read from its storage (nothing is written)."""
    return trials_frame(load_study(Run.open(run_dir)))


def trial(run_dir: Path, number: int) -> dict[str, Any]:
    """Everything trial `number` of a run recorded (see `nas.report.tables.trial_record`)."""
    return trial_record(load_study(Run.open(run_dir)), number)


def progress(run_dir: Path, started: float | None = None, ended: float | None = None) -> Progress:
    """How far a run's search is toward its target number of trials."""
    return LiveRun(Run.open(run_dir)).progress(started, ended)


def live(run_dir: Path) -> LiveRun:
    """A run kept open to be read again and again as it grows (see `nas.report.live`)."""
    return LiveRun(Run.open(run_dir))


def train(run_dir: Path, options: TrainOptions, progress: PhaseProgress = quiet) -> dict[str, Any]:
    """Train a trial at full fidelity; its record (also in RUN/trained/NNNNN/train.json)."""
    run = Run.open(run_dir)
    with run.lock():
        return train_trial(run, options, progress)


def export(run_dir: Path, options: ExportOptions, progress: PhaseProgress = quiet) -> Path:
    """Export a completed trial; the export folder."""
    return export_trial(Run.open(run_dir), options, progress)


def check_export(run_dir: Path, options: ExportOptions) -> None:
    """Everything `export` checks before it writes a file, without exporting."""
    _check_export(Run.open(run_dir), options)


def profile_layers(model_dir: Path, *, runs: int = 20, threads: int = 1) -> dict[str, Any]:
    """Per-layer latency of an exported model; writes profile.csv and profile.html into it."""
    return profile_model(model_dir, runs=runs, threads=threads)


def compare(options: CompareOptions, progress: PhaseProgress = quiet) -> pd.DataFrame:
    """A/B comparison of exported variants; the verdict table (first variant = reference)."""
    return _compare(options, progress)


def add_table(csv: bytes, metadata: bytes, runs_dir: Path, *, replace: bool = False) -> Path:
    """Check a device's latency table and install it under `runs_dir/tables/`; its path."""
    return _add_table(csv, metadata, runs_dir, replace=replace)


def profile_device(options: ProfileOptions, progress: PhaseProgress = quiet) -> Path:
    """Profile a device into a latency table; the table's path."""
    return _profile_device(options, progress)


def adapt_device(options: AdaptOptions, progress: PhaseProgress = quiet) -> dict[str, Any]:
    """Fit a new device's few-shot latency predictor from K measured candidates."""
    return _adapt_device(options, progress)


def calibrate_table(options: CalibrateOptions, progress: PhaseProgress = quiet) -> dict[str, Any]:
    """Time a few whole models here and store them as a table's calibration for this host."""
    return _calibrate_table(options, progress)


def check_device(options: CheckOptions, progress: PhaseProgress = quiet) -> dict[str, Any]:
    """Time a fixed set of candidates twice on a device; how repeatable this host is."""
    return _check_device(options, progress)


def evaluate_predictor(
    options: PredictorEvaluation, progress: PhaseProgress = quiet
) -> dict[str, Any]:
    """Fit a latency predictor and report its error on held-out candidates; the report."""
    return _evaluate_predictor(options, progress)


def list_devices(runs_dir: Path = DEFAULT_RUNS_DIR) -> list[dict[str, Any]]:
    """Every device with a measurement backend or a latency table, and its predictor reports."""
    return _list_devices(runs_dir)


def deploy(options: DeployOptions, say: Any = None) -> dict[str, Any]:
    """Start (or restart) a deployment on Ray Serve and wait until it answers; its record."""
    return _deploy.deploy(options, say or (lambda _: None))


def deployment_status(runs_dir: Path, name: str, *, live: bool = True) -> dict[str, Any]:
    """Traffic, ramp, recent events, request counts, and (if `live`) its replicas."""
    return _deploy.status(runs_dir, name, live=live)


def set_traffic(runs_dir: Path, name: str, weights: dict[str, float]) -> dict[str, float]:
    """Set a deployment's traffic split by hand (this stops a ramp); the new split."""
    return _deploy.set_traffic(runs_dir, name, weights)


def stop_deployment(runs_dir: Path, name: str, *, keep_ray: bool = False) -> bool:
    """Stop a deployment (its log stays); False when it was not running."""
    return _deploy.stop(runs_dir, name, keep_ray=keep_ray)


def deployment_report(runs_dir: Path, name: str) -> list[dict[str, Any]]:
    """Per variant: requests, errors, latency, throughput, accuracy on feedback, and the
    sequential tests against the control."""
    _, config, store = _deploy.open_store(runs_dir, name)
    state = store.state()
    rows = variant_rows(store.exposures(), config, state[0] if state else {})
    store.close()
    return rows


def train_supernet(
    config_path: Path,
    *,
    name: str | None = None,
    runs_dir: Path = DEFAULT_RUNS_DIR,
    progress: PhaseProgress = quiet,
) -> dict[str, Any]:
    """Train the weight-sharing supernet of a config's space into RUNS_DIR/NAME/supernet/
    (rerunning resumes it); its record: the history of both ends' accuracy and the time."""
    config = load_config(config_path).with_overrides(name=name)
    return train_run_supernet(config, runs_dir, progress)


def evaluate_supernet(
    run_dir: Path, candidates: list[str], progress: PhaseProgress = quiet
) -> list[dict[str, Any]]:
    """Each candidate's accuracy with the run's supernet weights, and its latency."""
    return evaluate_candidates(run_dir, candidates, progress)
