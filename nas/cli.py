"""The ``nas`` command: a thin map from subcommands onto `nas.api`.

User errors (any `NASError`) print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nas.errors import NASError

app = typer.Typer(
    name="nas",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Hardware-aware neural architecture search: accuracy on a proxy dataset, latency on "
    "the target runtime, the Pareto front, and deployable exports.",
)
out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])
EXIT_USER_ERROR = 2


def user_errors(fn: F) -> F:
    """Turn a `NASError` into one line on stderr and exit code 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NASError as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_USER_ERROR) from None

    return wrapper  # type: ignore[return-value]


class TableFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _print_front(front: Any, fmt: TableFormat) -> None:
    from nas.record import TRIAL_COLUMNS
    from nas.report.tables import front_records

    if fmt is TableFormat.csv:
        sys.stdout.write(front[TRIAL_COLUMNS].to_csv(index=False))
        return
    if fmt is TableFormat.json:
        sys.stdout.write(json.dumps(front_records(front), indent=2) + "\n")
        return
    table = Table(title=f"Pareto front ({len(front)} candidates)", show_lines=False)
    compressed = bool((front["precision"] != "").any()) if len(front) else False
    columns = [("trial", "right"), ("accuracy", "right"), ("p50 ms", "right")]
    columns += [("p90 ms", "right"), ("params M", "right"), ("GFLOPs", "right")]
    if compressed:
        columns += [("pruned", "right"), ("precision", "left"), ("vs fp32 parent", "right")]
    for col, justify in columns:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in front.itertuples():
        cells = [
            str(r.number),
            f"{r.accuracy:.4f}",
            f"{r.latency_p50_ms:.3f}",
            f"{r.latency_p90_ms:.3f}",
            f"{r.params / 1e6:.2f}",
            f"{r.flops / 1e9:.3f}",
        ]
        if compressed:
            slower = " SLOWER" if r.slower_than_parent is True else ""
            cells += [
                f"{r.prune_ratio:.0%}",
                str(r.precision),
                f"{r.speedup_vs_parent:.2f}x{slower}",
            ]
        table.add_row(*cells)
    out.print(table)
    # Candidate strings on lines of their own, never folded, so they copy and paste whole.
    for r in front.itertuples():
        out.print(f"trial {r.number}: {r.candidate}", soft_wrap=True, highlight=False)


@contextmanager
def _progress(interrupted: str | None = None) -> Iterator[Any]:
    """A progress bar on stderr; yields the phase callback that `nas.api` calls take.

    Args:
        interrupted: Message for Ctrl-C or SIGTERM (then exit 130), for work that resumes
            where it stopped.
    """
    from nas.progress import phase_callback, progress_bar
    from nas.search.loop import sigterm_as_ctrl_c

    stops = sigterm_as_ctrl_c() if interrupted is not None else nullcontext()
    try:
        with progress_bar(err) as bar, stops:
            yield phase_callback(bar)
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        err.print(interrupted, highlight=False)
        raise typer.Exit(130) from None


class Backend(StrEnum):
    local = "local"
    ray = "ray"


@app.command()
@user_errors
def search(
    config: Annotated[Path, typer.Argument(help="Run config (YAML), e.g. configs/quickstart.yaml")],
    name: Annotated[str | None, typer.Option(help="Run name; default: the config's name")] = None,
    trials: Annotated[
        int | None, typer.Option(help="Finished trials to reach (overrides search.n_trials)")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds after which no new trial starts")
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where runs are written")] = Path("runs"),
    backend: Annotated[
        Backend, typer.Option(help="local: trials in this process; ray: on a Ray cluster")
    ] = Backend.local,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to join (HOST:PORT of `ray start --head`, or auto inside a Ray "
            "job); default: start a local Ray instance"
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage shared with `nas worker` processes, e.g. "
            "postgresql://USER@HOST:PORT/DB (overrides cluster.storage)"
        ),
    ] = None,
) -> None:
    """Run a search, or resume it: the same command continues where it stopped."""
    from nas import api
    from nas.progress import RichReporter

    options = api.SearchOptions(
        config=config,
        name=name,
        n_trials=trials,
        timeout=timeout,
        runs_dir=runs_dir,
        backend=backend.value,
        address=address,
        storage=storage,
    )
    _print_summary(api.search(options, RichReporter(err)))


@app.command()
@user_errors
def worker(
    run_dir: Annotated[Path, typer.Argument(help="A run directory, e.g. runs/quickstart")],
    trials: Annotated[
        int | None,
        typer.Option(
            help="Finished trials the study should reach; default the run's "
            "search.n_trials (give every worker the same number)"
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds after which this worker starts no new trial")
    ] = None,
) -> None:
    """Work on a run's study beside other workers until it has its number of trials.

    Workers share the study through its storage: the run's study.db on one machine, or the
    database in the run's cluster.storage (PostgreSQL) across machines. A trial whose worker
    dies stops sending heartbeats and is run again by another worker.
    """
    from nas import api
    from nas.progress import RichReporter

    options = api.WorkerOptions(run_dir=run_dir, n_trials=trials, timeout=timeout)
    _print_summary(api.worker(options, RichReporter(err)))


def _print_summary(result: Any) -> None:
    _print_front(result.front, TableFormat.table)
    stop = " (stopped by --timeout)" if result.stopped_by_timeout else ""
    out.print(
        f"{result.finished}/{result.target} trials finished{stop}; outputs in "
        f"{result.run.root}/ (trials.csv, pareto.csv, pareto.html)",
        highlight=False,
    )


@app.command()
@user_errors
def pareto(
    run_dir: Annotated[Path, typer.Argument(help="A run directory, e.g. runs/quickstart")],
    format: Annotated[TableFormat, typer.Option("--format", "-f")] = TableFormat.table,
) -> None:
    """Print a run's Pareto front and regenerate pareto.csv and pareto.html."""
    from nas import api

    front, _ = api.pareto(run_dir)
    _print_front(front, format)


@app.command()
@user_errors
def train(
    run_dir: Annotated[Path, typer.Argument(help="A run directory, e.g. runs/quickstart")],
    trial: Annotated[int, typer.Option(help="Trial number (see `nas pareto`)")],
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epochs; default 5x the search's, at least 10")
    ] = None,
    train_size: Annotated[
        int | None,
        typer.Option(min=1, help="Training images; default every image outside validation"),
    ] = None,
    force: Annotated[bool, typer.Option(help="Train again though a result exists")] = False,
) -> None:
    """Train a trial's candidate (architecture, pruned channels) at full fidelity.

    Starts from the search's weights, uses all the training data and more epochs with the
    run's recipe, checkpoints every epoch (rerun the same command to resume), and stores the
    result in RUN_DIR/trained/, where `nas export` picks it up.
    """
    from nas import api

    with _progress("training interrupted; rerun the same command to resume") as progress:
        options = api.TrainOptions(trial=trial, epochs=epochs, train_size=train_size, force=force)
        record = api.train(run_dir, options, progress)
    ident = record["identity"]
    out.print(
        f"trial {trial}: {ident['epochs']} epochs on {record['train_images']} images, validation "
        f"accuracy {record['accuracy']:.4f} (search: {record['search_accuracy']:.4f}); weights "
        f"in {Path(run_dir) / 'trained' / f'{trial:05d}'}",
        highlight=False,
    )


class ExportFormat(StrEnum):
    onnx = "onnx"
    onnx_fp16 = "onnx-fp16"
    onnx_int8 = "onnx-int8"
    openvino = "openvino"
    tensorrt = "tensorrt"
    torchscript = "torchscript"
    pt2 = "pt2"


class WeightsChoice(StrEnum):
    auto = "auto"
    trained = "trained"
    search = "search"


@app.command()
@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory, e.g. runs/quickstart")],
    out_dir: Annotated[Path, typer.Option("--out", help="Export folder to create")],
    trial: Annotated[int | None, typer.Option(help="Trial number (see `nas pareto`)")] = None,
    candidate: Annotated[
        str | None, typer.Option(help="Candidate string instead of --trial")
    ] = None,
    format: Annotated[
        ExportFormat | None,
        typer.Option(help="File format; default: the one for the trial's precision"),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="openvino: fp32, bf16, int8; tensorrt: fp32, fp16, int8"),
    ] = None,
    dynamic_batch: Annotated[bool, typer.Option(help="Dynamic batch axis")] = False,
    weights: Annotated[
        WeightsChoice,
        typer.Option(help="auto: `nas train` weights when present; trained; search"),
    ] = WeightsChoice.auto,
    force: Annotated[bool, typer.Option(help="Replace a non-empty --out folder")] = False,
    min_agreement: Annotated[
        float, typer.Option(help="Least top-1 agreement with torch for quantized formats")
    ] = 0.98,
) -> None:
    """Export a trial in a runtime's format, with parity, accuracy and latency measured on the
    files, a model card (JSON and Markdown) and an example script."""
    from nas import api

    with _progress() as progress:
        options = api.ExportOptions(
            out=out_dir,
            trial=trial,
            candidate=candidate,
            format=format.value if format else None,
            precision=precision,
            dynamic_batch=dynamic_batch,
            weights=weights.value,
            force=force,
            min_agreement=min_agreement,
        )
        path = api.export(run_dir, options, progress)
    card = json.loads((path / "model_card.json").read_text())
    for name, info in card["files"].items():
        p = info["parity"]
        state = "passed" if p["passed"] else "not enforced" if not p["enforced"] else "failed"
        out.print(
            f"{path / name}: input {info['input_shape']}, {info['bytes']:,} bytes; parity "
            f"{state} ({p['rule']}): max rel diff {p['max_rel_diff']:.2e}, top-1 agreement "
            f"{p['top1_agreement']:.2%}",
            highlight=False,
        )
    acc, lat = card["exported_accuracy"], card["exported_latency"]
    out.print(
        f"accuracy of the exported file: {acc['value']:.4f}; latency {lat['p50_ms']:.3f} ms "
        f"median, {lat['p90_ms']:.3f} ms p90 ({lat['runtime']}, {card['format']['precision']})",
        highlight=False,
    )
    out.print(
        f"model card: {path / 'MODEL_CARD.md'}; example: {path / 'example.py'}", highlight=False
    )


@app.command()
@user_errors
def profile(
    model_dir: Annotated[Path, typer.Argument(help="A folder made by `nas export`")],
    runs: Annotated[int, typer.Option(min=1, help="Profiled inferences")] = 20,
    threads: Annotated[int, typer.Option(min=1, help="Runtime threads")] = 1,
    top: Annotated[int, typer.Option(min=1, help="Layers to list")] = 15,
) -> None:
    """Per-layer latency breakdown of an exported model from its runtime's profiler; writes
    profile.csv and profile.html into MODEL_DIR."""
    from nas import api

    result = api.profile_layers(model_dir, runs=runs, threads=threads)
    table = Table(title=result["title"])
    for col in ("layer", "op type", "us", "share"):
        table.add_column(col, justify="left" if col in ("layer", "op type") else "right")
    for r in result["layers"].head(top).itertuples():
        table.add_row(str(r.layer), str(r.op_type), f"{r.us:.1f}", f"{r.share:.1%}")
    out.print(table)
    types = Table(title="by operator type")
    for col in ("op type", "layers", "us", "share"):
        types.add_column(col, justify="left" if col == "op type" else "right")
    for r in result["by_type"].itertuples():
        types.add_row(str(r.op_type), str(r.layers), f"{r.us:.1f}", f"{r.share:.1%}")
    out.print(types)
    out.print(f"chart: {Path(model_dir) / 'profile.html'}", highlight=False)


@app.command()
@user_errors
def compare(
    variants: Annotated[
        list[Path], typer.Argument(help="Folders made by `nas export`; the first is the reference")
    ],
    baseline: Annotated[
        bool, typer.Option(help="Keep timm's efficientnet_b0 (fp32 ONNX) as a baseline")
    ] = True,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved latency rounds")] = 5,
    repeats: Annotated[int, typer.Option(min=3, help="Timed runs per round")] = 20,
    threads: Annotated[int, typer.Option(min=1, help="Runtime threads")] = 1,
    report: Annotated[Path, typer.Option(help="HTML report with the plots")] = Path("compare.html"),
) -> None:
    """A/B test exported variants on the same data and machine: latency ratio with a bootstrap
    95 % interval, accuracy difference with an exact McNemar test, size and peak memory."""
    from nas import api

    options = api.CompareOptions(
        variants=tuple(variants),
        with_baseline=baseline,
        rounds=rounds,
        repeats=repeats,
        threads=threads,
        report=report,
    )
    with _progress() as progress:
        table = api.compare(options, progress)
    view = Table(title=f"A/B comparison (reference: {variants[0]})")
    for col in (
        "variant",
        "format",
        "accuracy",
        "vs ref",
        "McNemar p",
        "median ms",
        "ratio [95% CI]",
        "MB",
        "RSS MB (model)",
        "verdict",
    ):
        view.add_column(col, justify="left" if col in ("variant", "format", "verdict") else "right")
    for r in table.to_dict("records"):
        nan = {k: v != v for k, v in r.items() if isinstance(v, float)}
        view.add_row(
            str(r["variant"]),
            str(r["format"]),
            "n/a" if nan["accuracy"] else f"{r['accuracy']:.4f}",
            "" if nan["accuracy_diff"] else f"{100 * r['accuracy_diff']:+.2f} pt",
            "" if nan["mcnemar_p"] else f"{r['mcnemar_p']:.3f}",
            f"{r['median_ms']:.3f}",
            f"{r['ratio']:.2f} [{r['ratio_ci_low']:.2f}, {r['ratio_ci_high']:.2f}]",
            f"{r['size_mb']:.2f}",
            "n/a" if nan["peak_rss_mb"] else f"{r['peak_rss_mb']:.0f} ({r['model_rss_mb']:.0f})",
            "; ".join(str(x) for x in (r["latency"], r["accuracy_verdict"]) if x),
        )
    out.print(view)
    out.print(f"report: {report}", highlight=False)


latency_app = typer.Typer(
    name="latency",
    no_args_is_help=True,
    help="Latency tables and predictors: profile a device, measure how good a predictor is.",
)
app.add_typer(latency_app)


class PredictorKind(StrEnum):
    lut = "lut"
    gbm = "gbm"
    flops = "flops"


@latency_app.command("profile")
@user_errors
def latency_profile(
    device: Annotated[str, typer.Option(help="Device to measure (see `nas devices`)")],
    config: Annotated[
        Path | None, typer.Option(help="Run config whose space and deployment shape to profile")
    ] = None,
    space: Annotated[
        str | None, typer.Option(help="A registered space with its default settings")
    ] = None,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Table to write (.csv); default: latency_predictors/tables/"),
    ] = None,
    calibration: Annotated[
        int, typer.Option(min=0, help="Random whole candidates to time for the correction")
    ] = 20,
) -> None:
    """Time every operator a search space can produce on DEVICE and write a latency table.

    Rerunning the same command after an interruption resumes it.
    """
    from nas import api

    with _progress(
        "profile interrupted; what was measured is kept, rerun the same command to resume"
    ) as progress:
        options = api.ProfileOptions(
            device=device, config=config, space=space, out=out_path, calibration=calibration
        )
        path = api.profile_device(options, progress)
    out.print(f"latency table: {path} (metadata {path.with_suffix('.json')})", highlight=False)


@latency_app.command("check")
@user_errors
def latency_check(
    device: Annotated[str, typer.Option(help="Device to measure (see `nas devices`)")],
    config: Annotated[
        Path | None, typer.Option(help="Run config whose space, shape and protocol to use")
    ] = None,
    space: Annotated[
        str | None, typer.Option(help="A registered space with its default settings")
    ] = None,
    candidates: Annotated[
        int, typer.Option(min=5, help="Fixed candidates to time twice, interleaved")
    ] = 30,
    runs_dir: Annotated[Path, typer.Option(help="Where the latency cache is kept")] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """How repeatable latency is on this host now: a fixed set of candidates timed twice with
    the measurement protocol; prints the passes' agreement and the drift the reference saw."""
    from nas import api

    with _progress() as progress:
        options = api.CheckOptions(
            device=device, config=config, space=space, candidates=candidates, runs_dir=runs_dir
        )
        report = api.check_device(options, progress)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=1) + "\n")
        return
    r = report["repeatability"]
    out.print(
        f"{device} ({report['device']['hardware']}): {report['candidates']} candidates timed "
        f"twice in {report['seconds']:.0f} s, estimator {report['estimator']}, reference "
        f"anchor {report['anchor_ms'] or float('nan'):.3f} ms",
        highlight=False,
    )
    out.print(
        f"second pass vs first: {r['within_5']:.1%} within +-5 %, {r['within_10']:.1%} within "
        f"+-10 %, MAPE {r['mape']:.1%}, Spearman {r['spearman']:.4f}",
        highlight=False,
    )
    drift = report["drift_max"]
    out.print(
        "per-candidate spread (relative std of rounds): median "
        f"{report['spread_median']:.1%}; host drift seen by the reference: "
        + (
            f"median {report['drift_median']:.1%}, max {drift:.1%}"
            if drift is not None
            else "not watched (latency.drift_correction: false)"
        ),
        highlight=False,
    )


@latency_app.command("calibrate")
@user_errors
def latency_calibrate(
    device: Annotated[str, typer.Option(help="The table's device, measured here")],
    table: Annotated[Path, typer.Option(help="Latency table (.csv with its .json side file)")],
    samples: Annotated[int, typer.Option(help="Whole candidates to time here")] = 10,
    config: Annotated[
        Path | None, typer.Option(help="Run config whose space, shape and protocol to use")
    ] = None,
    space: Annotated[
        str | None, typer.Option(help="A registered space with its default settings")
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where the latency cache is kept")] = Path("runs"),
) -> None:
    """Recalibrate a table profiled on another host for this one: time a few whole models here
    and store them beside the table; searches on this host then use them."""
    from nas import api

    with _progress() as progress:
        options = api.CalibrateOptions(
            device=device,
            table=table,
            samples=samples,
            config=config,
            space=space,
            runs_dir=runs_dir,
        )
        report = api.calibrate_table(options, progress)
    before, after = report["before"], report["after_leave_one_out"]
    out.print(
        f"table profiled on {report['table_host']}; this is {report['this_host']}",
        highlight=False,
    )
    out.print(
        f"{report['samples']} whole models here run {report['scale']:.2f}x the table's "
        f"prediction; within +-10 %: {before['within_10']:.0%} with the table's correction, "
        f"{after['within_10']:.0%} with this host's (leave-one-out, MAPE {before['mape']:.1%} "
        f"-> {after['mape']:.1%})",
        highlight=False,
    )
    out.print(f"calibration: {report['calibration']}", highlight=False)


@latency_app.command("adapt")
@user_errors
def latency_adapt(
    device: Annotated[str, typer.Option(help="The new device's name")],
    measurements: Annotated[
        Path | None, typer.Option(help="CSV of candidate,latency_ms measured on the device")
    ] = None,
    measure: Annotated[
        bool, typer.Option("--measure", help="Measure --samples candidates here instead")
    ] = False,
    samples: Annotated[int, typer.Option(help="With --measure: candidates to measure")] = 10,
    reference: Annotated[
        list[Path] | None, typer.Option(help="A reference table besides those found (repeat)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Run config whose space and deployment shape to use")
    ] = None,
    space: Annotated[
        str | None, typer.Option(help="A registered space with its default settings")
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where predictors are kept")] = Path("runs"),
) -> None:
    """Build a latency predictor for a new device from a few measured candidates and the
    other devices' tables; searches use it with latency.predictor: fewshot."""
    from nas import api

    with _progress() as progress:
        options = api.AdaptOptions(
            device=device,
            measurements=measurements,
            measure=measure,
            samples=samples,
            references=list(reference or []),
            config=config,
            space=space,
            runs_dir=runs_dir,
        )
        report = api.adapt_device(options, progress)
    out.print(
        f"few-shot predictor for {device}: {report['samples']} measured candidates, inputs "
        f"{', '.join(report['references'])}",
        highlight=False,
    )
    loo = report["expected_error"]
    if loo:
        out.print(
            f"expected error (leave-one-out on the {report['samples']}): MAPE {loo['mape']:.1%}, "
            f"{loo['within_10']:.0%} within +-10 %, Spearman {loo['spearman']:.3f}",
            highlight=False,
        )
    out.print(f"predictor: {report['predictor_file']}", highlight=False)


@latency_app.command("evaluate")
@user_errors
def latency_evaluate(
    device: Annotated[str, typer.Option(help="Device to measure (see `nas devices`)")],
    predictor: Annotated[PredictorKind, typer.Option(help="Predictor to fit and evaluate")],
    config: Annotated[
        Path | None, typer.Option(help="Run config whose space and deployment shape to use")
    ] = None,
    space: Annotated[
        str | None, typer.Option(help="A registered space with its default settings")
    ] = None,
    test: Annotated[int, typer.Option(help="Held-out random candidates to measure")] = 200,
    fit: Annotated[
        int, typer.Option(help="gbm/flops: measured candidates to fit on (lut: the table's)")
    ] = 100,
    seed: Annotated[int, typer.Option(help="Seed for the random candidates")] = 0,
    runs_dir: Annotated[Path, typer.Option(help="Where predictors and reports are kept")] = Path(
        "runs"
    ),
) -> None:
    """Fit a latency predictor, measure held-out candidates, and report its error beside the
    FLOPs baseline; the predictor and its report are saved for searches and `nas devices`."""
    from nas import api

    with _progress() as progress:
        options = api.PredictorEvaluation(
            device=device,
            kind=predictor.value,
            config=config,
            space=space,
            n_test=test,
            n_fit=fit,
            seed=seed,
            runs_dir=runs_dir,
        )
        report = api.evaluate_predictor(options, progress)
    table = Table(
        title=f"{predictor.value} on {device}: {report['n_test']} held-out candidates, "
        f"fitted on {report['n_fit']}"
    )
    for col in ("predictor", "RMSE ms", "MAPE", "<=5 %", "<=10 %", "<=15 %", "Spearman", "Kendall"):
        table.add_column(col, justify="right")
    for name, m in report["metrics"].items():
        table.add_row(
            name,
            f"{m['rmse_ms']:.3f}",
            f"{m['mape']:.1%}",
            f"{m['within_5']:.1%}",
            f"{m['within_10']:.1%}",
            f"{m['within_15']:.1%}",
            f"{m['spearman']:.4f}",
            f"{m['kendall']:.4f}",
        )
    out.print(table)
    path = Path(report["predictor_file"])
    out.print(
        f"predictor: {path}; report: {path.with_suffix('.report.json')} and "
        f"{path.with_suffix('.report.html')}",
        highlight=False,
    )


@app.command()
@user_errors
def devices(
    runs_dir: Annotated[Path, typer.Option(help="Where predictor reports are kept")] = Path("runs"),
) -> None:
    """List devices: built-in measurement backends and latency tables, with predictor reports."""
    from nas import api

    rows = api.list_devices(runs_dir)
    table = Table(title="devices")
    for col in ("device", "source", "measurable here", "detail"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["device"],
            escape(r["source"]),
            escape("yes" if r["measurable"] else f"no: {r['note']}" if r["note"] else "no"),
            escape(r["detail"]),
        )
    out.print(table)
    reports = [(r["device"], p) for r in rows for p in r["predictors"]]
    if reports:
        rep = Table(title="predictor reports (held-out candidates)")
        for col in (
            "device",
            "predictor",
            "space",
            "n",
            "<=10 %",
            "Spearman",
            "FLOPs <=10 %",
            "FLOPs Spearman",
        ):
            rep.add_column(col)
        for name, p in reports:
            rep.add_row(
                name,
                p["predictor"],
                p["space"],
                str(p["n_test"]),
                f"{p['within_10']:.1%}",
                f"{p['spearman']:.4f}",
                f"{p['flops_within_10']:.1%}",
                f"{p['flops_spearman']:.4f}",
            )
        out.print(rep)


@app.command()
@user_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    runs_dir: Annotated[Path, typer.Option(help="The runs folder the service owns")] = Path("runs"),
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray job submission address (http://HEAD:8265): searches run as Ray jobs with "
            "the Ray backend; default: subprocesses on this machine"
        ),
    ] = None,
    max_running: Annotated[int, typer.Option(help="Searches at once; the rest wait")] = 1,
) -> None:
    """Serve the JSON API and web UI: submit, watch, choose, export, add devices' tables.

    Prints the URL and the token to log in with. Jobs outlive the service: start it again and
    it finds them running, or resumes them from their studies.
    """
    from nas.service.server import serve as run_service
    from nas.service.state import ServeOptions

    run_service(
        ServeOptions(
            host=host, port=port, runs_dir=runs_dir, address=address, max_running=max_running
        )
    )


class _DeployGroup(typer.core.TyperGroup):
    """`nas deploy CONFIG` is `nas deploy start CONFIG`; the other words are subcommands."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


deploy_app = typer.Typer(
    name="deploy",
    cls=_DeployGroup,
    no_args_is_help=True,
    help="Serve exported variants behind one endpoint on Ray Serve: `nas deploy CONFIG` starts "
    "one; status, set-traffic, report, stop.",
)
app.add_typer(deploy_app)
RunsDir = Annotated[Path, typer.Option(help="Where runs and deployments live")]
AddressOption = Annotated[
    str | None,
    typer.Option(help="Ray cluster (HEAD:PORT); default: a local instance on this machine"),
]


@deploy_app.command("start")
@user_errors
def deploy_start(
    config: Annotated[Path, typer.Argument(help="Deployment config (YAML), see configs/")],
    address: AddressOption = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Start a deployment (or restart it: traffic, ramp and logs carry on from its store)."""
    from nas.api import DeployOptions, deploy

    record = deploy(
        DeployOptions(config=config, address=address, runs_dir=runs_dir),
        lambda line: err.print(line, highlight=False),
    )
    out.print(f"{record['name']} is serving at {record['url']}/predict", highlight=False)
    out.print(f"feedback: {record['url']}/feedback   status: nas deploy status {record['name']}")


@deploy_app.command("status")
@user_errors
def deploy_status(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    runs_dir: RunsDir = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Traffic, ramp, replicas and the latest traffic events of a deployment."""
    from nas.api import deployment_status

    st = deployment_status(runs_dir, name)
    if as_json:
        sys.stdout.write(json.dumps(st, indent=2, default=str) + "\n")
        return
    serve_state = st["serve"].get("status", "?")
    out.print(
        f"{name}: {serve_state} at {st['url']}  ({st['requests']} requests, "
        f"{st['feedback']} labelled)",
        highlight=False,
    )
    for d, info in st["serve"].get("deployments", {}).items():
        out.print(f"  {d}: {info['status']} {info['replicas']}", highlight=False)
    out.print("traffic: " + ", ".join(f"{k} {w:g} %" for k, w in st["traffic"].items()))
    if st["ramp"]:
        out.print(f"ramp: {st['ramp']['status']}: {st['ramp']['reason']}", highlight=False)
    for e in st["events"][-10:]:
        out.print(f"  {_when(e['ts'])} {e['kind']}: {e['reason']}", highlight=False)


def _when(ts: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts).strftime("%H:%M:%S")


@deploy_app.command("set-traffic")
@user_errors
def deploy_set_traffic(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    weights: Annotated[list[str], typer.Argument(help="VARIANT=WEIGHT ..., e.g. control=90")],
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Set the traffic split by hand (this stops a running ramp)."""
    from nas.api import set_traffic

    parsed: dict[str, float] = {}
    for w in weights:
        variant, sep, value = w.partition("=")
        try:
            parsed[variant] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise NASError(f"{w!r} is not VARIANT=WEIGHT (a number), e.g. candidate=10")
    traffic = set_traffic(runs_dir, name, parsed)
    out.print("traffic: " + ", ".join(f"{k} {v:g} %" for k, v in traffic.items()))


@deploy_app.command("report")
@user_errors
def deploy_report(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    runs_dir: RunsDir = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Per variant: requests, errors, latency against the control, throughput, accuracy on
    feedback, and always-valid tests against the control."""
    from nas.api import deployment_report
    from nas.serving.report import report_table

    rows = deployment_report(runs_dir, name)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2, default=float) + "\n")
        return
    table = report_table(rows).T
    view = Table(title=f"{name}: live traffic by variant")
    view.add_column("")
    for col in table.columns:
        view.add_column(str(col), justify="right")
    for metric, values in table.iterrows():
        view.add_row(str(metric), *("" if _is_nan(v) else str(v) for v in values))
    out.print(view)


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and v != v


@deploy_app.command("stop")
@user_errors
def deploy_stop(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    runs_dir: RunsDir = Path("runs"),
    keep_ray: Annotated[
        bool, typer.Option(help="Keep the local Ray instance running though no deployment is")
    ] = False,
) -> None:
    """Stop a deployment; its exposure log, feedback and traffic state stay for a restart."""
    from nas.api import stop_deployment

    was = stop_deployment(runs_dir, name, keep_ray=keep_ray)
    out.print(f"{name}: stopped" if was else f"{name}: was not running")


supernet_app = typer.Typer(
    name="supernet",
    no_args_is_help=True,
    help="A weight-sharing supernet: train it once, then score candidates with its weights.",
)
app.add_typer(supernet_app)


@supernet_app.command("train")
@user_errors
def supernet_train(
    config: Annotated[Path, typer.Argument(help="Run config (YAML) of an efficientnet space")],
    name: Annotated[str | None, typer.Option(help="Run name; default: the config's name")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where runs are written")] = Path("runs"),
) -> None:
    """Train the supernet of CONFIG's space on its proxy data (the `supernet` section).

    Checkpoints every epoch; rerun the same command to resume. The weights land in
    RUNS_DIR/NAME/supernet/supernet.pt, beside the run's config.
    """
    from nas import api

    with _progress("supernet training interrupted; rerun the same command to resume") as bar:
        record = api.train_supernet(config, name=name, runs_dir=runs_dir, progress=bar)
    history = record["history"]
    out.print(
        f"supernet: {record['epochs']} epochs on {record['train_images']} images in "
        f"{record['train_seconds']:.0f} s; validation accuracy of the largest sub-network "
        f"{history['largest_accuracy'][-1]:.4f}, of the smallest "
        f"{history['smallest_accuracy'][-1]:.4f}",
        highlight=False,
    )


@supernet_app.command("evaluate")
@user_errors
def supernet_evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run with a trained supernet")],
    candidates: Annotated[list[str], typer.Argument(help="Candidate strings of the run's space")],
    fmt: Annotated[TableFormat, typer.Option("--format", help="Output format")] = (
        TableFormat.table
    ),
) -> None:
    """Score candidates with the supernet's weights (BatchNorm re-estimated on a few training
    batches), and give each one's latency from the run's latency source."""
    from nas import api

    with _progress() as bar:
        rows = api.evaluate_supernet(run_dir, candidates, bar)
    if fmt is not TableFormat.table:
        import pandas as pd

        frame = pd.DataFrame(rows)
        text = frame.to_csv(index=False) if fmt is TableFormat.csv else json.dumps(rows, indent=2)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    table = Table("candidate", "accuracy", "latency ms", "scored in s")
    for row in rows:
        table.add_row(
            row["candidate"],
            f"{row['accuracy']:.4f}",
            f"{row['latency_ms']:.3f}",
            f"{row['score_seconds']:.2f}",
        )
    out.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
