"""Export a trial's trained candidate in a runtime's format, checked and measured on the file.

Two models are written in the chosen format (see `nas.export.formats`). ``model_proxy.*`` is
the trained network at the shape it was trained at (proxy image size, the dataset's channels
and classes): its accuracy is measured by running the file on the validation split.
``model.*`` is the same network at the deployment shape: every stride as designed, the stem
adapted to the deployment channels with timm's `adapt_input_conv`, and the classifier reused
when the class counts agree (otherwise freshly initialised, and the card says so); its latency
is measured on the file. A pruned trial is rebuilt with its pruning history first. The weights
are the full-fidelity ones from `nas train` when the run has them, else the search's.

Parity (see `nas.export.verify`) is checked on both files. Files are written into a temporary
folder that is renamed into place only when every check passed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas_base.progress import PhaseProgress, quiet
from latency_predictors.onnx_export import file_sha256
from nas.compress.quantization import load_calibration, shaped
from nas.config import RunConfig
from nas.errors import ExportError, RunError, UnknownTrialError
from nas.export.card import card_markdown, example_script, export_details, model_card
from nas.export.formats import Format, default_precision, get_format, load, run_batches, write
from nas.export.verify import MIN_AGREEMENT, latency, parity, sweep
from nas.run import Run
from nas.storage import find_trial, load_study
from nas.train.data import ProxySplits, splits_for
from nas.train.full import source_trial, trained_dir, trained_info, trial_network
from nas.train.weights import shape_like, transfer_weights
from search_spaces import get_space

PARITY_IMAGES = 256
# A trial's precision -> the format that ships it on a CPU when none is named.
TRIAL_FORMATS = {"fp32": "onnx", "int8": "onnx-int8", "fp16": "onnx-fp16", "bf16": "openvino"}
WEIGHTS = ("auto", "trained", "search")


@dataclass(frozen=True)
class ExportOptions:
    """What `nas export` asks for.

    Attributes:
        out: Folder to create (refused when it exists and is not empty, unless `force`).
        trial: Trial number, or
        candidate: a candidate string of a completed trial (exactly one of the two).
        format: One of `nas.export.formats.FORMATS`; default: the one for the trial's precision.
        precision: The format's precision (default: the trial's own, or the format's first).
        dynamic_batch: Give the files a dynamic batch axis.
        weights: ``auto`` (full-fidelity weights when `nas train` made them), ``trained``
            (those, required) or ``search`` (the search's).
        force: Replace a non-empty `out`.
        min_agreement: Least top-1 agreement with torch a quantized format must reach.
    """

    out: Path
    trial: int | None = None
    candidate: str | None = None
    format: str | None = None
    precision: str | None = None
    dynamic_batch: bool = False
    weights: str = "auto"
    force: bool = False
    min_agreement: float = MIN_AGREEMENT


@dataclass
class _Plan:
    """What an export will write, every choice made and checked."""

    config: RunConfig
    trial: Any
    data_info: dict[str, Any]
    spec: Format
    precision: str
    weights_file: Path
    full: dict[str, Any] | None  # the `nas train` record, when its weights are exported


def export_trial(run: Run, options: ExportOptions, progress: PhaseProgress = quiet) -> Path:
    """Export a completed trial; returns the export folder.

    Raises:
        UnknownTrialError: the run has no such trial.
        RunError: the trial did not complete, or its weights are missing.
        ExportError: bad options, a format that cannot run here, a failed parity check.
    """
    plan = _plan(run, options)
    progress("rebuilding the network", 0, 1)
    proxy, deploy, deploy_shape, notes = _networks(run, plan)
    proxy_size = int(plan.trial.user_attrs["proxy_input_size"])
    models = {
        # Whether top-1 on validation images means anything for the file: only at the shape
        # the network was trained at (the deployment file sees resized images, and its
        # classifier may be fresh). Numeric parity of fp32 formats is enforced on both.
        "model": (deploy, deploy_shape, False),
        "model_proxy": (proxy, (1, plan.data_info["channels"], proxy_size, proxy_size), True),
    }
    config = plan.config
    splits = splits_for(config, plan.full["train_images"] if plan.full else None)
    calibration = load_calibration(config.compression.quantization, splits)
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files, measured = _write_files(
            plan, options, models, splits.resized(proxy_size), calibration, tmp, progress
        )
        card = model_card(run, config, plan.trial, plan.data_info, files, notes)
        card.update(
            export_details(
                plan.spec,
                plan.precision,
                options.dynamic_batch,
                measured,
                plan.full,
                splits,
                config.latency.threads,
                inherited=card["accuracy"]["source"] == "supernet",
            )
        )
        (tmp / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
        (tmp / "MODEL_CARD.md").write_text(card_markdown(card))
        (tmp / "example.py").write_text(example_script(plan.spec, plan.precision, card))
        _replace_dir(tmp, out, options.force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def check_export(run: Run, options: ExportOptions) -> None:
    """Everything an export checks before it writes a file: the trial, the format and its
    runtime here, the precision, the weights, the output folder."""
    _plan(run, options)


def _plan(run: Run, options: ExportOptions) -> _Plan:
    """Check the options against the run and choose trial, format, precision and weights."""
    if (options.trial is None) == (options.candidate is None):
        raise UnknownTrialError("give exactly one of a trial number or a candidate string")
    if not 0 < options.min_agreement <= 1:
        raise ExportError(f"--min-agreement {options.min_agreement}: a share in (0, 1], e.g. 0.98")
    if options.weights not in WEIGHTS:
        raise ExportError(f"--weights {options.weights!r}: allowed {', '.join(WEIGHTS)}")
    config = run.config()
    if config.benchmark is not None:
        raise RunError(
            f"run {run.root.name} was scored from the benchmark table {config.benchmark.table}: "
            "it trained nothing, so there are no weights to export"
        )
    study = load_study(run)
    trial = find_trial(study, number=options.trial, candidate=options.candidate)
    own = trial.user_attrs.get("precision", "fp32")
    spec = get_format(options.format or TRIAL_FORMATS.get(own, "onnx"))
    precision = options.precision
    if precision is None:
        precision = own if own in spec.precisions else default_precision(spec)
    spec.check(precision)
    _check_out(run, Path(options.out), options.force)
    data_info = study.user_attrs.get("data")
    if data_info is None:
        raise RunError(f"{run.root}: the study holds no dataset description")
    full = trained_info(run, trial.number)
    if options.weights == "trained" and full is None:
        raise RunError(
            f"trial {trial.number} has no full-fidelity weights; run `nas train {run.root} "
            f"--trial {trial.number}` first, or pass --weights search"
        )
    use_full = full is not None and options.weights != "search"
    source = source_trial(trial)
    weights_file = (
        trained_dir(run, trial.number) / "weights.pt" if use_full else run.weights_path(source)
    )
    if not weights_file.is_file():
        raise RunError(f"weights of trial {source} missing at {weights_file}")
    return _Plan(
        config, trial, data_info, spec, precision, weights_file, full if use_full else None
    )


def _check_out(run: Run, out: Path, force: bool) -> None:
    """`ExportError` when `out` overlaps the run, or is a non-empty folder without `force`."""
    root, target = run.root.resolve(), out.resolve()
    if target == root or root in target.parents or target in root.parents:
        raise ExportError(
            f"--out {out} overlaps the run directory {run.root}; export to a folder outside it, "
            "e.g. exports/NAME"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ExportError(f"{out} exists and is not empty; pass --force to replace it")


def _networks(
    run: Run, plan: _Plan
) -> tuple[nn.Module, nn.Module, tuple[int, ...], dict[str, str]]:
    """(the trained proxy-shape network, the deployment-shape network with its weights, the
    deployment input shape, how each tensor that differs between the two was handled)."""
    config, attrs = plan.config, plan.trial.user_attrs
    space = get_space(config.space.name, config.space)
    cand = space.decode(attrs["candidate"])
    proxy = trial_network(run, plan.trial, plan.data_info)
    proxy.load_state_dict(torch.load(plan.weights_file, map_location="cpu", weights_only=True))
    proxy.eval()
    dep = config.deployment
    shape = dep.target().shape(space.resolution(cand))
    deploy = space.build(cand, dep.num_classes, dep.channels)
    shape_like(deploy, run.weights_path(source_trial(plan.trial)), torch.zeros(1, *shape[1:]))
    notes = transfer_weights(proxy, deploy)
    deploy.eval()
    return proxy, deploy, shape, notes


def _write_files(
    plan: _Plan,
    options: ExportOptions,
    models: dict[str, tuple[nn.Module, tuple[int, ...], bool]],
    data: ProxySplits,
    calibration: torch.Tensor,
    tmp: Path,
    progress: PhaseProgress,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write each model into `tmp`, check its parity and measure it; (files, measured).

    `models` maps a file stem to (network, input shape, whether top-1 agreement on the proxy
    validation images `data` is enforced for it); quantized formats calibrate on
    `calibration`.
    """
    config, spec, precision = plan.config, plan.spec, plan.precision
    lat = config.latency
    files: dict[str, Any] = {}
    measured: dict[str, Any] = {}
    for i, (stem, (model, shape, meaningful_top1)) in enumerate(models.items()):
        progress(f"writing {stem}{spec.suffix} ({spec.name}, {precision})", i, 2)
        path = write(
            spec,
            model,
            shape,
            tmp / f"{stem}{spec.suffix}",
            precision=precision,
            dynamic=options.dynamic_batch,
            calibration=calibration,
            quantization=config.compression.quantization,
        )
        run_file = load(spec, path, shape, precision=precision, threads=lat.threads)
        batch = 250 if options.dynamic_batch else shape[0]
        files[path.name] = _check_file(
            plan, options, model, path, run_file, shape, data, batch, meaningful_top1
        )
        if stem == "model_proxy":
            progress("accuracy of the exported file on the validation split", 0, 1)
            preds = run_batches(run_file, data.val_x.numpy(), batch).argmax(1)
            measured["accuracy"] = float((preds == data.val_y.numpy()).mean())
        else:
            progress(f"latency of {path.name}", 0, 1)
            measured["latency"] = latency(run_file, shape, lat.warmup, lat.repeats)
            measured["sweep"] = sweep(
                spec,
                model,
                shape,
                precision,
                lat.threads,
                calibration,
                config.compression.quantization,
                lat.warmup,
            )
    return files, measured


def _check_file(
    plan: _Plan,
    options: ExportOptions,
    model: nn.Module,
    path: Path,
    run_file: Any,
    shape: tuple[int, ...],
    data: ProxySplits,
    batch: int,
    meaningful_top1: bool,
) -> dict[str, Any]:
    """Parity of the written file against torch on validation images; its card entry."""
    quantized = plan.precision != "fp32"
    x = shaped(data.val_x[:PARITY_IMAGES], shape[1], shape[-1])
    with torch.no_grad():
        reference = torch.cat([model(b) for b in x.split(32)]).numpy()
    got = run_batches(run_file, x.numpy(), batch)
    enforce = meaningful_top1 or not quantized
    check = parity(reference, got, quantized, enforce, path.name, options.min_agreement)
    stem = path.name.removesuffix(plan.spec.suffix)
    entry: dict[str, Any] = {
        "input_shape": [None if options.dynamic_batch else shape[0], *shape[1:]],
        "sha256": file_sha256(path),
        "bytes": sum(f.stat().st_size for f in path.parent.glob(f"{stem}.*")),
        "parity": check,
    }
    if path.suffix == ".xml":
        entry["weights_file"] = path.with_suffix(".bin").name
    return entry


def _replace_dir(tmp: Path, out: Path, force: bool) -> None:
    if out.exists():
        if not out.is_dir():
            raise ExportError(f"{out} exists and is not a folder")
        if any(out.iterdir()):
            if not force:
                raise ExportError(f"{out} exists and is not empty; pass --force to replace it")
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
            return
        out.rmdir()
    tmp.rename(out)
