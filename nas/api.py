"""The library facade that the CLI (and later the HTTP service) call.

Everything that can be wrong with the user's input is checked before the first file is
written: the config, the dataset, the seed candidates and, for a resumed run, that the config
matches the one the run was started with.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from nas.config import RunConfig, load_config
from nas.errors import RunError
from nas.run import Run, write_atomic

DEFAULT_RUNS_DIR = Path("runs")
LATENCY_CACHE = Path(".cache") / "latency.sqlite"


@dataclass
class SearchResult:
    run: Run
    finished: int
    target: int
    front: pd.DataFrame
    stopped_by_timeout: bool
    seconds: float


def resolve_config(
    config_path: str | Path,
    *,
    name: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
) -> RunConfig:
    return load_config(config_path).with_overrides(name=name, n_trials=n_trials, timeout=timeout)


def _file_logging(run: Run) -> logging.Handler:
    handler = logging.FileHandler(run.log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("nas")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def search(
    config_path: str | Path,
    *,
    name: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    runs_dir: str | Path = DEFAULT_RUNS_DIR,
    reporter: Any = None,
) -> SearchResult:
    """Run (or resume) the search that `config_path` describes; see `nas search --help`."""
    import optuna
    import torch

    from latency_predictors import LatencyCache, make_backend
    from nas.data import load_dataset, make_splits
    from nas.evaluate import Evaluator
    from nas.report import front_frame, trials_frame
    from nas.search import SearchLoop
    from search_spaces import get_space

    config = resolve_config(config_path, name=name, n_trials=n_trials, timeout=timeout)
    runs_dir = Path(runs_dir)
    space = get_space(config.space.name, config.space)
    dataset = load_dataset(config.data)
    splits = make_splits(dataset, config.data, config.seed)
    lat = config.latency
    backend = make_backend(
        lat.backend,
        name=lat.device,
        threads=lat.threads,
        warmup=lat.warmup,
        repeats=lat.repeats,
        batch_size=config.deployment.batch_size,
        precision=lat.precision,
    )
    run = Run.check(runs_dir, config)

    parts = ["nas", "search", str(config_path), "--name", config.name]
    if n_trials is not None:
        parts += ["--trials", str(n_trials)]
    if runs_dir != DEFAULT_RUNS_DIR:
        parts += ["--runs-dir", str(runs_dir)]
    hint = shlex.join(parts)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if config.training.threads is not None:
        torch.set_num_threads(config.training.threads)
    with run.lock():
        write_atomic(run.config_path, config.to_yaml())
        handler = _file_logging(run)
        try:
            evaluator = Evaluator(
                space=space,
                data=splits,
                training=config.training,
                deployment=config.deployment,
                backend=backend,
                cache=LatencyCache(runs_dir / LATENCY_CACHE),
                seed=config.seed,
            )
            loop = SearchLoop(
                run=run, config=config, evaluator=evaluator, reporter=reporter, resume_hint=hint
            )
            loop.study.set_user_attr(
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
            summary = loop.run_trials(config.search.n_trials, config.search.timeout)
            front = front_frame(trials_frame(loop.study))
        finally:
            logging.getLogger("nas").removeHandler(handler)
            handler.close()
    return SearchResult(
        run, summary.finished, summary.target, front, summary.stopped_by_timeout, summary.seconds
    )


def pareto(run_dir: str | Path, *, plot: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(front, all trials) of a run, read from its storage; rewrites the csv files and plot."""
    from nas.export import load_study
    from nas.report import trials_frame, write_plot, write_tables

    run = Run.open(run_dir)
    trials = trials_frame(load_study(run))
    if trials.empty:
        raise RunError(f"run {run.root} has no trials yet")
    front = write_tables(run, trials)
    if plot:
        write_plot(run, trials)
    return front, trials


def export(
    run_dir: str | Path,
    *,
    out: str | Path,
    trial: int | None = None,
    candidate: str | None = None,
    force: bool = False,
) -> Path:
    """Export a completed trial to `out`; see `nas export --help`."""
    from nas.export import export_trial

    return export_trial(
        Run.open(run_dir), out=Path(out), number=trial, candidate=candidate, force=force
    )
