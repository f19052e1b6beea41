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
    storage: str | None = None,
) -> RunConfig:
    return load_config(config_path).with_overrides(
        name=name, n_trials=n_trials, timeout=timeout, storage=storage
    )


def file_logging(run: Run) -> logging.Handler:
    handler = logging.FileHandler(run.log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("nas")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


@dataclass
class Prepared:
    """Everything a search needs before the first trial, each part checked."""

    config: RunConfig
    space: Any
    dataset: Any
    splits: Any
    latency: Any
    compressor: Any


def prepare(config: RunConfig, runs_dir: Path, *, backend: Any = None) -> Prepared:
    """Check and load the space, dataset, latency source and compressor of `config`.

    Args:
        config: The run's config.
        runs_dir: Where runs (and the latency cache and fitted predictors) live.
        backend: Measurement backend factory instead of this machine's runtimes (the Ray
            backend measures on the nodes that carry the device).
    """
    from latency_predictors.devices import config_backend
    from latency_predictors.sources import latency_source
    from nas.data import load_dataset, make_splits
    from nas.distillation import check_teacher
    from search_spaces import get_space

    space = get_space(config.space.name, config.space)
    dataset = load_dataset(config.data)
    splits = make_splits(dataset, config.data, config.seed)
    backend = backend or config_backend
    latency = latency_source(config, space, runs_dir, backend)
    compressor = _compressor(config, space, splits, runs_dir, backend)
    check_teacher(config.compression.distillation, space, splits)
    return Prepared(config, space, dataset, splits, latency, compressor)


def teacher(prepared: Prepared, root: Path) -> Any:
    """The distillation teacher cached in `root`, or None when the search does not distil."""
    from nas.distillation import Teacher

    config = prepared.config
    if not config.compression.distillation.enabled:
        return None
    return Teacher(
        config.compression.distillation,
        prepared.space,
        prepared.splits,
        config.training,
        root,
        seed=config.seed,
    )


def evaluator(prepared: Prepared, root: Path) -> Any:
    """The evaluation function of a search whose run (or teacher cache) is at `root`."""
    from nas.evaluate import Evaluator

    config = prepared.config
    return Evaluator(
        space=prepared.space,
        data=prepared.splits,
        training=config.training,
        deployment=config.deployment,
        latency=prepared.latency,
        seed=config.seed,
        compressor=prepared.compressor,
        teacher=teacher(prepared, root),
        finetune_lr_scale=config.compression.pruning.finetune_lr_scale,
    )


def describe_study(study: Any, prepared: Prepared) -> None:
    """Store what the run's trials were scored on, for export and reports."""
    config, dataset, splits = prepared.config, prepared.dataset, prepared.splits
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
    study.set_user_attr("latency", prepared.latency.description)


def _hint(command: list[str], runs_dir: Path, n_trials: int | None) -> str:
    parts = list(command)
    if n_trials is not None:
        parts += ["--trials", str(n_trials)]
    if runs_dir != DEFAULT_RUNS_DIR:
        parts += ["--runs-dir", str(runs_dir)]
    return shlex.join(parts)


def search(
    config_path: str | Path,
    *,
    name: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    runs_dir: str | Path = DEFAULT_RUNS_DIR,
    reporter: Any = None,
    backend: str = "local",
    address: str | None = None,
    storage: str | None = None,
) -> SearchResult:
    """Run (or resume) the search that `config_path` describes; see `nas search --help`.

    With `backend="ray"` the trials run on a Ray cluster (`address`, or a local instance);
    with a shared storage in the config, this process works on the study beside any
    `nas worker` processes.
    """
    if backend not in ("local", "ray"):
        raise RunError(f"backend {backend!r} unknown; choose local or ray")
    if address is not None and backend != "ray":
        raise RunError("--address names a Ray cluster; add --backend ray")
    config = resolve_config(
        config_path, name=name, n_trials=n_trials, timeout=timeout, storage=storage
    )
    runs_dir = Path(runs_dir)
    command = ["nas", "search", str(config_path), "--name", config.name]
    if backend == "ray":
        command += ["--backend", "ray"] + (["--address", address] if address else [])
    if storage is not None:
        command += ["--storage", storage]
    hint = _hint(command, runs_dir, n_trials)
    if backend == "ray":
        from nas.ray_backend import ray_search

        return ray_search(config, runs_dir, address=address, hint=hint, reporter=reporter)
    from nas.storage import check_storage

    prepared = prepare(config, runs_dir)
    run = Run.check(runs_dir, config)
    check_storage(config.cluster, run.root)
    return _search_in(run, prepared, hint, reporter, shared=config.cluster.storage is not None)


def worker(
    run_dir: str | Path,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    reporter: Any = None,
) -> SearchResult:
    """Work on an existing run's study beside other workers; see `nas worker --help`."""
    run = Run.open(run_dir)
    config = run.config().with_overrides(n_trials=n_trials, timeout=timeout)
    prepared = prepare(config, run.root.parent)
    hint = _hint(["nas", "worker", str(run_dir)], DEFAULT_RUNS_DIR, n_trials)
    return _search_in(run, prepared, hint, reporter, shared=True, write_config=False)


def _search_in(
    run: Run,
    prepared: Prepared,
    hint: str,
    reporter: Any,
    *,
    shared: bool,
    write_config: bool = True,
) -> SearchResult:
    import optuna
    import torch

    from latency_predictors.sources import HybridLatency
    from nas.report import front_frame, trials_frame
    from nas.search import SearchLoop

    config = prepared.config
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if config.training.threads is not None:
        torch.set_num_threads(config.training.threads)
    with run.lock(shared=shared):
        if write_config:
            write_atomic(run.config_path, config.to_yaml())
        handler = file_logging(run)
        try:
            loop = SearchLoop(
                run=run,
                config=config,
                evaluator=evaluator(prepared, run.root),
                reporter=reporter,
                resume_hint=hint,
                shared=shared,
            )
            describe_study(loop.study, prepared)
            summary = loop.run_trials(config.search.n_trials, config.search.timeout)
            if isinstance(prepared.latency, HybridLatency):
                remeasure_front(loop.study, prepared.space, prepared.latency, run, reporter)
            front = front_frame(trials_frame(loop.study))
        finally:
            logging.getLogger("nas").removeHandler(handler)
            handler.close()
    return SearchResult(
        run, summary.finished, summary.target, front, summary.stopped_by_timeout, summary.seconds
    )


def _compressor(config: RunConfig, space: Any, splits: Any, runs_dir: Path, backend: Any) -> Any:
    """The compressor a config asks for, or None; checks runtimes and calibration data first."""
    from latency_predictors.sources import latency_cache, precision_backends
    from nas.artifacts import Compressor
    from nas.quantization import load_calibration

    if not config.compression.enabled:
        return None
    return Compressor(
        config=config.compression,
        space=space,
        deployment=config.deployment,
        backends=precision_backends(config, backend),
        calibration=load_calibration(config.compression.quantization, splits),
        cache=latency_cache(runs_dir),
    )


def remeasure_front(study: Any, space: Any, latency: Any, run: Run, reporter: Any) -> None:
    """Measure every front member whose latency was predicted; store it beside the prediction."""
    from nas.report import front_frame, trials_frame, write_plot, write_tables

    front = front_frame(trials_frame(study))
    todo = front[front["latency_source"] == "predicted"]
    done = dict(study.user_attrs.get("front_measured", {}))
    for i, r in enumerate(todo.itertuples()):
        if str(r.number) in done:
            continue
        result, _ = latency.measured(space.decode(r.candidate))
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
    fmt: str | None = None,
    precision: str | None = None,
    dynamic_batch: bool = False,
    weights: str = "auto",
    force: bool = False,
    min_agreement: float = 0.98,
    progress: Any = None,
) -> Path:
    """Export a completed trial to `out`; see `nas export --help`."""
    from nas.export import export_trial
    from nas.progress import quiet

    return export_trial(
        Run.open(run_dir),
        out=Path(out),
        number=trial,
        candidate=candidate,
        fmt=fmt,
        precision=precision,
        dynamic_batch=dynamic_batch,
        weights=weights,
        force=force,
        min_agreement=min_agreement,
        progress=progress or quiet,
    )


def train(
    run_dir: str | Path,
    *,
    trial: int,
    epochs: int | None = None,
    train_size: int | None = None,
    force: bool = False,
    progress: Any = None,
) -> dict[str, Any]:
    """Train a trial at full fidelity; see `nas train --help`."""
    from nas.full_training import train_trial
    from nas.progress import quiet

    run = Run.open(run_dir)
    with run.lock():
        return train_trial(
            run,
            trial,
            epochs=epochs,
            train_size=train_size,
            force=force,
            progress=progress or quiet,
        )


# -- devices, latency tables and predictors ---------------------------------------------------


def _latency_config(
    config_path: str | Path | None, space_name: str | None, device: str
) -> RunConfig:
    """The run config that names the space and deployment shape, with `device` as target."""
    from nas.config import parse_config
    from search_spaces import get_space

    if config_path is not None:
        config = load_config(config_path)
        if space_name is not None and space_name != config.space.name:
            raise RunError(
                f"--space {space_name} contradicts {config_path}, whose space is "
                f"{config.space.name}; give one of them"
            )
    else:
        config = RunConfig()
        if space_name is not None:
            get_space(space_name)  # unknown names fail here with the registered ones listed
            if space_name != config.space.name:
                raise RunError(
                    f"space {space_name!r} has no operator-level latency support; the "
                    f"EfficientNet space has (--space {config.space.name})"
                )
    raw = config.model_dump(mode="json")
    raw["latency"]["device"] = device
    return parse_config(raw, source=str(config_path or "--device"))


def profile_device(
    device: str,
    *,
    config_path: str | Path | None = None,
    space_name: str | None = None,
    out: str | Path | None = None,
    calibration: int = 20,
    progress: Any = None,
) -> Path:
    """Profile `device` into a latency table; see `nas latency profile --help`."""
    from latency_predictors.devices import TABLES_DIR, config_backend
    from latency_predictors.profile import profile_space
    from latency_predictors.sources import space_id
    from search_spaces import get_space

    config = _latency_config(config_path, space_name, device)
    space = get_space(config.space.name, config.space)
    backend = config_backend(config)
    space_config = config.space.model_dump(mode="json")
    target = (
        Path(out)
        if out is not None
        else TABLES_DIR / f"{device}__{space_id(space.name, space_config)}.csv"
    )
    return profile_space(
        space,
        backend,
        target,
        num_classes=config.deployment.num_classes,
        in_chans=config.deployment.channels,
        space_config=space_config,
        calibration=calibration,
        progress=progress or (lambda *_: None),
    )


def evaluate_predictor(
    device: str,
    kind: str,
    *,
    config_path: str | Path | None = None,
    space_name: str | None = None,
    n_test: int = 200,
    n_fit: int = 100,
    seed: int = 0,
    runs_dir: str | Path = DEFAULT_RUNS_DIR,
    progress: Any = None,
) -> dict[str, Any]:
    """Fit a predictor, measure held-out candidates, compare with FLOPs; save both.

    See `nas latency evaluate --help`.
    """
    import datetime
    import json

    import numpy as np

    from latency_predictors.cache import LatencyCache
    from latency_predictors.devices import config_backend
    from latency_predictors.measure import measure_candidates
    from latency_predictors.predictors import (
        PREDICTOR_KINDS,
        FlopsPredictor,
        GradientBoostingPredictor,
        accuracy_report,
        save_predictor,
    )
    from latency_predictors.sources import LATENCY_CACHE, lookup_predictor, predictor_path
    from nas.errors import PredictorError
    from nas.report import predictor_figure
    from search_spaces import get_space

    if kind not in PREDICTOR_KINDS:
        raise PredictorError(f"predictor {kind!r} unknown; allowed: {', '.join(PREDICTOR_KINDS)}")
    if n_test < 5 or n_fit < 10:
        raise PredictorError(f"need --test >= 5 and --fit >= 10, got {n_test} and {n_fit}")
    progress = progress or (lambda *_: None)
    config = _latency_config(config_path, space_name, device)
    space = get_space(config.space.name, config.space)
    backend = config_backend(config)
    runs_dir = Path(runs_dir)
    cache = LatencyCache(runs_dir / LATENCY_CACHE)
    predictor: Any
    if kind == "lut":
        predictor, table = lookup_predictor(config, space)
        fit_set = [space.decode(c.candidate) for c in table.calibration]
        fit_ms = np.array([c.p50_ms for c in table.calibration])
    else:
        rng = np.random.default_rng(seed)
        fit_set = list(dict.fromkeys(space.sample(rng) for _ in range(n_fit)))
        fit_ms = np.array(
            [
                r.p50_ms
                for r in measure_candidates(
                    space,
                    fit_set,
                    backend,
                    config.deployment,
                    cache=cache,
                    progress=progress,
                    what="measuring fitting candidates",
                )
            ]
        )
        if kind == "gbm":
            predictor = GradientBoostingPredictor(space, seed=seed).fit(fit_set, fit_ms)
        else:
            predictor = FlopsPredictor(space, config.deployment).fit(fit_set, fit_ms)
    predictor.device_ = backend.device
    # Held-out candidates: a different random stream, minus anything used for fitting.
    seen = set(fit_set)
    rng = np.random.default_rng(seed + 10_000)
    test_set: list[Any] = []
    for _ in range(100 * n_test):
        cand = space.sample(rng)
        if cand not in seen:
            seen.add(cand)
            test_set.append(cand)
            if len(test_set) == n_test:
                break
    else:
        raise PredictorError(
            f"found only {len(test_set)} held-out candidates besides the {len(fit_set)} fitted "
            f"on; this space is too small for --test {n_test}"
        )
    measured = np.array(
        [
            r.p50_ms
            for r in measure_candidates(
                space,
                test_set,
                backend,
                config.deployment,
                cache=cache,
                progress=progress,
                what="measuring held-out candidates",
            )
        ]
    )
    progress("predicting", 0, 1)
    predicted = np.asarray(predictor.predict(test_set))
    flops = (
        predictor
        if kind == "flops"
        else FlopsPredictor(space, config.deployment).fit(fit_set, fit_ms)
    )
    baseline = np.asarray(flops.predict(test_set))
    progress("predicting", 1, 1)
    path = predictor_path(runs_dir, device, space.name, config.space.model_dump(mode="json"), kind)
    report = {
        "device": backend.device.to_dict(),
        "predictor": kind,
        "space": space.name,
        "predictor_file": str(path),
        "n_fit": len(fit_set),
        "n_test": len(test_set),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "metrics": {
            kind: accuracy_report(predicted, measured),
            "flops": accuracy_report(baseline, measured),
        },
        "test": [
            {"candidate": space.encode(c), "measured_ms": m, "predicted_ms": p, "flops_ms": b}
            for c, m, p, b in zip(test_set, measured, predicted, baseline, strict=True)
        ],
    }
    save_predictor(predictor, path)
    write_atomic(path.with_suffix(".report.json"), json.dumps(report, indent=1) + "\n")
    fig = predictor_figure(report)
    write_atomic(path.with_suffix(".report.html"), fig.to_html(include_plotlyjs=True))
    return report


def list_devices(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> list[dict[str, Any]]:
    """Every device with a measurement backend or a latency table, and its predictor reports."""
    import json

    from latency_predictors.devices import BUILTIN_DEVICES, TABLES_DIR
    from latency_predictors.sources import PREDICTORS_DIR
    from latency_predictors.table import find_tables

    reports: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((Path(runs_dir) / PREDICTORS_DIR).glob("*/*.report.json")):
        try:
            rep = json.loads(path.read_text(encoding="utf-8"))
            metrics = rep["metrics"][rep["predictor"]]
            flops = rep["metrics"]["flops"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        reports.setdefault(path.parent.name, []).append(
            {
                "predictor": rep["predictor"],
                "space": rep.get("space", "?"),
                "within_10": metrics["within_10"],
                "spearman": metrics["spearman"],
                "mape": metrics["mape"],
                "flops_within_10": flops["within_10"],
                "flops_spearman": flops["spearman"],
                "n_test": rep.get("n_test"),
                "report": str(path),
            }
        )
    rows: list[dict[str, Any]] = []
    for spec in BUILTIN_DEVICES.values():
        reason = spec.unavailable_reason()
        rows.append(
            {
                "device": spec.name,
                "source": f"backend {spec.backend}",
                "detail": spec.description,
                "measurable": reason is None,
                "note": reason or "",
                "predictors": reports.get(spec.name, []),
            }
        )
    for path in find_tables(TABLES_DIR):
        try:
            meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            dev = meta["device"]
            name = dev["name"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        rows.append(
            {
                "device": name,
                "source": f"table {path}",
                "detail": f"{dev.get('runtime')} {dev.get('runtime_version')}, "
                f"{dev.get('precision')}, {dev.get('hardware')}, space "
                f"{(meta.get('space') or {}).get('name')}",
                "measurable": name in BUILTIN_DEVICES
                and BUILTIN_DEVICES[name].unavailable_reason() is None,
                "note": "",
                "predictors": reports.get(name, []) if name not in BUILTIN_DEVICES else [],
            }
        )
    return rows
