"""Export a trial's trained candidate in a runtime's format, checked and measured on the file.

Two models are written in the chosen format (see `nas.formats`). ``model_proxy.*`` is the
trained network at the shape it was trained at (proxy image size, the dataset's channels and
classes): its accuracy is measured by running the file on the validation split. ``model.*`` is
the same network at the deployment shape: every stride as designed, the stem adapted to the
deployment channels with timm's `adapt_input_conv`, and the classifier reused when the class
counts agree (otherwise freshly initialised, and the card says so); its latency is measured on
the file. A pruned trial is rebuilt with its pruning history first. The weights are the
full-fidelity ones from `nas train` when the run has them, else the search's.

Parity: fp32 formats must match torch within 1e-4 relative on validation inputs; quantized ones
must agree with torch on top-1 for at least 98 % of them. Files are written into a temporary
folder that is renamed into place only when every check passed.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import nas
from latency_predictors.backends.base import time_calls
from nas.artifacts import history_path, load_history
from nas.compression import replay
from nas.errors import ExportError, RunError, UnknownTrialError
from nas.formats import Format, Runner, default_precision, get_format, load, run_batches, write
from nas.onnx_io import INPUT_NAME, OUTPUT_NAME, file_sha256
from nas.progress import PhaseProgress, quiet
from nas.report import COMPRESSION_COLUMNS
from nas.run import Run
from search_spaces import get_space

PARITY_RTOL = 1e-4
MIN_AGREEMENT = 0.98
PARITY_IMAGES = 256
SWEEP_BATCHES = (1, 8, 32)
# A trial's precision -> the format that ships it on a CPU when none is named.
TRIAL_FORMATS = {"fp32": "onnx", "int8": "onnx-int8", "fp16": "onnx-fp16", "bf16": "openvino"}


def load_study(run: Run) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=run.config().name, storage=run.storage_url)


def find_trial(study: Any, *, number: int | None, candidate: str | None) -> Any:
    """The trial with `number`, or the first completed one with `candidate`."""
    trials = study.get_trials(deepcopy=False)
    if number is not None:
        match = [t for t in trials if t.number == number]
        if not match:
            last = f"0..{len(trials) - 1}" if trials else "none"
            raise UnknownTrialError(f"trial {number} not in run (trials: {last})")
        trial = match[0]
    else:
        match = [
            t
            for t in trials
            if t.user_attrs.get("candidate") == candidate and t.state.name == "COMPLETE"
        ]
        if not match:
            raise UnknownTrialError(f"no completed trial has candidate {candidate!r}")
        trial = match[0]
    if trial.state.name != "COMPLETE":
        why = trial.user_attrs.get("failure_reason", "")
        raise RunError(
            f"trial {trial.number} is {trial.state.name}"
            f"{': ' + why if why else ''}; export a completed trial"
        )
    return trial


def transfer_weights(proxy: nn.Module, deploy: nn.Module) -> dict[str, str]:
    """Copy trained weights from the proxy network into the deployment network.

    Returns:
        How each differing tensor was handled, by state-dict key.
    """
    from timm.models import adapt_input_conv

    src, dst = proxy.state_dict(), deploy.state_dict()
    notes: dict[str, str] = {}
    for key, value in src.items():
        if dst[key].shape == value.shape:
            dst[key] = value
        elif key == "conv_stem.weight":
            dst[key] = adapt_input_conv(dst[key].shape[1], value, base_chans=value.shape[1])
            notes[key] = (
                f"adapted from {value.shape[1]} to {dst[key].shape[1]} input "
                "channels (timm adapt_input_conv)"
            )
        else:
            notes[key] = (
                f"freshly initialised: trained shape {tuple(value.shape)}, "
                f"deployment shape {tuple(dst[key].shape)}"
            )
    deploy.load_state_dict(dst)
    return notes


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


def _parity(
    reference: np.ndarray,
    got: np.ndarray,
    quantized: bool,
    enforce: bool,
    name: str,
    min_agreement: float = MIN_AGREEMENT,
) -> dict[str, Any]:
    """Parity of `got` against torch's `reference` logits; `ExportError` when it fails."""
    diff = float(np.abs(got - reference).max())
    rel = diff / max(float(np.abs(reference).max()), 1e-12)
    agree = float((got.argmax(1) == reference.argmax(1)).mean())
    report = {
        "inputs": f"{len(reference)} validation images",
        "max_abs_diff": diff,
        "max_rel_diff": rel,
        "top1_agreement": agree,
        "rule": f"top-1 agreement >= {min_agreement:.0%}"
        if quantized
        else f"relative difference <= {PARITY_RTOL:.0e}",
        "enforced": enforce,
    }
    report["passed"] = agree >= min_agreement if quantized else rel <= PARITY_RTOL
    if enforce and not report["passed"]:
        what = (
            f"top-1 agrees with torch on {agree:.2%} of validation images; needs "
            f"{min_agreement:.0%} (--min-agreement)"
            if quantized
            else f"output differs from torch by {rel:.2e} relative (max abs {diff:.2e}); "
            f"allowed {PARITY_RTOL:.0e}"
        )
        raise ExportError(f"{name}: parity failed: {what}")
    return report


def _latency(run: Runner, shape: tuple[int, ...], warmup: int, repeats: int) -> dict[str, Any]:
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    times = time_calls(lambda: run(x), warmup=warmup, repeats=repeats)
    p50 = float(np.percentile(times, 50))
    return {
        "batch_size": shape[0],
        "p50_ms": p50,
        "p90_ms": float(np.percentile(times, 90)),
        "mean_ms": float(times.mean()),
        "n_runs": len(times),
        "images_per_s": shape[0] * 1000.0 / p50,
    }


def export_trial(
    run: Run,
    *,
    out: Path,
    number: int | None = None,
    candidate: str | None = None,
    fmt: str | None = None,
    precision: str | None = None,
    dynamic_batch: bool = False,
    weights: str = "auto",
    force: bool = False,
    min_agreement: float = MIN_AGREEMENT,
    progress: PhaseProgress = quiet,
) -> Path:
    """Export a completed trial in `fmt`; returns the export folder.

    Args:
        run: The run.
        out: Folder to create (refused when it exists and is not empty, unless `force`).
        number: Trial number, or
        candidate: a candidate string of a completed trial.
        fmt: One of `nas.formats.FORMATS`; default: the one matching the trial's precision.
        precision: The format's precision (default: its first, or the trial's own).
        dynamic_batch: Give the files a dynamic batch axis.
        weights: ``auto`` (full-fidelity weights when `nas train` made them), ``trained``
            (those, required) or ``search`` (the search's).
        force: Replace a non-empty `out`.
        min_agreement: Least top-1 agreement with torch a quantized format must reach.
        progress: Receives (phase, step, steps).
    """
    from nas.full_training import splits_for, trained_dir, trained_info, trial_network

    if (number is None) == (candidate is None):
        raise UnknownTrialError("give exactly one of a trial number or a candidate string")
    if not 0 < min_agreement <= 1:
        raise ExportError(f"--min-agreement {min_agreement}: a share in (0, 1], e.g. 0.98")
    config = run.config()
    study = load_study(run)
    trial = find_trial(study, number=number, candidate=candidate)
    attrs = trial.user_attrs
    spec = get_format(fmt or TRIAL_FORMATS.get(attrs.get("precision", "fp32"), "onnx"))
    if precision is None:
        own = attrs.get("precision", "fp32")
        precision = own if own in spec.precisions else default_precision(spec)
    spec.check(precision)
    out = Path(out)
    root, target = run.root.resolve(), out.resolve()
    if target == root or root in target.parents or target in root.parents:
        raise ExportError(
            f"--out {out} overlaps the run directory {run.root}; export to a folder outside it, "
            "e.g. exports/NAME"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ExportError(f"{out} exists and is not empty; pass --force to replace it")
    data_info = study.user_attrs.get("data")
    if data_info is None:
        raise RunError(f"{run.root}: the study holds no dataset description")
    source = int(attrs.get("duplicate_of") or trial.number)
    full = trained_info(run, trial.number)
    if weights == "trained" and full is None:
        raise RunError(
            f"trial {trial.number} has no full-fidelity weights; run `nas train {run.root} "
            f"--trial {trial.number}` first, or pass --weights search"
        )
    use_full = full is not None and weights != "search"
    weights_file = (
        trained_dir(run, trial.number) / "weights.pt" if use_full else run.weights_path(source)
    )
    if not weights_file.is_file():
        raise RunError(f"weights of trial {source} missing at {weights_file}")

    progress("rebuilding the network", 0, 1)
    space = get_space(config.space.name, config.space)
    cand = space.decode(attrs["candidate"])
    proxy_size = int(attrs["proxy_input_size"])
    proxy = trial_network(run, trial, data_info)
    proxy.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
    proxy.eval()
    dep = config.deployment
    side = space.resolution(cand)
    deploy = space.build(cand, dep.num_classes, dep.channels)
    history_file = history_path(run.weights_path(source))
    if history_file.is_file():
        replay(deploy, torch.zeros(1, dep.channels, side, side), load_history(history_file))
    notes = transfer_weights(proxy, deploy)
    deploy.eval()

    from nas.quantization import load_calibration, shaped

    splits = splits_for(config, full["train_images"] if use_full and full else None)
    data = splits.resized(proxy_size)
    calibration = load_calibration(config.compression.quantization, splits)
    quantized = precision != "fp32"
    models = {
        # Whether top-1 on validation images means anything for the file: only at the shape
        # the network was trained at (the deployment file sees resized images, and its
        # classifier may be fresh). Numeric parity of fp32 formats is enforced on both.
        "model": (deploy, (dep.batch_size, dep.channels, side, side), False),
        "model_proxy": (proxy, (1, data_info["channels"], proxy_size, proxy_size), True),
    }
    threads, lat = config.latency.threads, config.latency
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
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
                dynamic=dynamic_batch,
                calibration=calibration,
                quantization=config.compression.quantization,
            )
            run_file = load(spec, path, shape, precision=precision, threads=threads)
            batch = 250 if dynamic_batch else shape[0]
            x = shaped(data.val_x[:PARITY_IMAGES], shape[1], shape[-1])
            with torch.no_grad():
                reference = torch.cat([model(b) for b in x.split(32)]).numpy()
            got = run_batches(run_file, x.numpy(), batch)
            enforce = meaningful_top1 or not quantized
            check = _parity(
                reference, got, quantized, enforce, f"{stem}{spec.suffix}", min_agreement
            )
            entry: dict[str, Any] = {
                "input_shape": [None if dynamic_batch else shape[0], *shape[1:]],
                "sha256": file_sha256(path),
                "bytes": sum(f.stat().st_size for f in tmp.glob(f"{stem}.*")),
                "parity": check,
            }
            if path.suffix == ".xml":
                entry["weights_file"] = path.with_suffix(".bin").name
            files[path.name] = entry
            if stem == "model_proxy":
                progress("accuracy of the exported file on the validation split", 0, 1)
                preds = run_batches(run_file, data.val_x.numpy(), batch).argmax(1)
                measured["accuracy"] = float((preds == data.val_y.numpy()).mean())
            else:
                progress(f"latency of {path.name}", 0, 1)
                measured["latency"] = _latency(run_file, shape, lat.warmup, lat.repeats)
                measured["sweep"] = _sweep(
                    spec, model, shape, precision, threads, calibration, config, lat.warmup
                )
        card = model_card(run, config, trial, data_info, files, notes)
        card.update(
            _export_details(
                spec,
                precision,
                dynamic_batch,
                measured,
                full if use_full else None,
                splits,
                threads,
            )
        )
        (tmp / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
        (tmp / "MODEL_CARD.md").write_text(card_markdown(card))
        (tmp / "example.py").write_text(example_script(spec, precision, card))
        _replace_dir(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _sweep(
    spec: Format,
    model: nn.Module,
    shape: tuple[int, ...],
    precision: str,
    threads: int,
    calibration: torch.Tensor,
    config: Any,
    warmup: int,
) -> dict[str, Any]:
    """Latency and throughput at batch 1, 8 and 32, on a dynamic-batch twin of the file."""
    if spec.name == "tensorrt":
        return {"note": "TensorRT engines have a fixed shape; export with another batch size"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="nas-sweep-") as tmp:
        path = write(
            spec,
            model,
            shape,
            Path(tmp) / f"twin{spec.suffix}",
            precision=precision,
            dynamic=True,
            calibration=calibration,
            quantization=config.compression.quantization,
        )
        for batch in SWEEP_BATCHES:
            batch_shape = (batch, *shape[1:])
            run_file = load(spec, path, batch_shape, precision=precision, threads=threads)
            rows.append(_latency(run_file, batch_shape, min(warmup, 3), 10))
    return {"measured_on": "a dynamic-batch twin of model file, same format", "batches": rows}


def _export_details(
    spec: Format,
    precision: str,
    dynamic_batch: bool,
    measured: dict[str, Any],
    full: dict[str, Any] | None,
    splits: Any,
    threads: int,
) -> dict[str, Any]:
    from latency_predictors.device import cpu_description

    return {
        "format": {
            "name": spec.name,
            "description": spec.description,
            "precision": precision,
            "runtime": spec.runtime,
            "dynamic_batch": dynamic_batch,
        },
        "training": (
            {
                "fidelity": "full (nas train)",
                "epochs": full["identity"]["epochs"],
                "train_images": full["train_images"],
                "recipe": full["identity"]["recipe"],
            }
            if full is not None
            else {"fidelity": "proxy (the search's weights)"}
        ),
        "exported_accuracy": {
            "value": measured["accuracy"],
            "how": f"model_proxy{spec.suffix} run in {spec.runtime} on the "
            f"{len(splits.val_y)} validation images",
            "mean": list(splits.mean),
            "std": list(splits.std),
        },
        "exported_latency": {
            **measured["latency"],
            "file": f"model{spec.suffix}",
            "runtime": spec.runtime,
            "precision": precision,
            "threads": threads,
            "hardware": cpu_description(),
        },
        "batch_sweep": measured["sweep"],
    }


def card_markdown(card: dict[str, Any]) -> str:
    """MODEL_CARD.md: the card for people."""
    f, acc, lat = card["format"], card["exported_accuracy"], card["exported_latency"]
    lines = [
        f"# Model card: trial {card['trial']} of {card['run']}",
        "",
        f"Candidate: `{card['candidate']}`",
        "",
        f"Format: {f['name']} ({f['description']}), precision {f['precision']}, runs in "
        f"{f['runtime']}; dynamic batch: {'yes' if f['dynamic_batch'] else 'no'}.",
        "",
        f"Training: {card['training']['fidelity']}"
        + (
            f", {card['training']['epochs']} epochs on {card['training']['train_images']} images"
            if "epochs" in card["training"]
            else ""
        )
        + ".",
        "",
        f"Dataset: {card['config']['data']['dataset']}; validation: {card['accuracy']['split']}.",
        "",
        "## Measured on the exported files",
        "",
        f"- Accuracy: **{acc['value']:.4f}** top-1 ({acc['how']}).",
        f"- Latency of `{lat['file']}` (batch {lat['batch_size']}): median **{lat['p50_ms']:.3f} "
        f"ms**, p90 {lat['p90_ms']:.3f} ms over {lat['n_runs']} runs; {lat['runtime']}, "
        f"{lat['threads']} thread(s), {lat['hardware']}.",
    ]
    sweep = card["batch_sweep"]
    if "batches" in sweep:
        lines += [
            "",
            f"Batch sweep ({sweep['measured_on']}):",
            "",
            "| batch | median ms | images/s |",
            "|---:|---:|---:|",
        ]
        lines += [
            f"| {b['batch_size']} | {b['p50_ms']:.3f} | {b['images_per_s']:.0f} |"
            for b in sweep["batches"]
        ]
    lines += [
        "",
        "## Files",
        "",
        "Parity is on validation images against torch. Top-1 agreement is enforced on the "
        "proxy-shape file only: the deployment-shape file sees resized images (and may have a "
        "fresh classifier), so its agreement is reported.",
        "",
        "| file | input | bytes | parity |",
        "|---|---|---:|---|",
    ]
    for name, info in card["files"].items():
        p = info["parity"]
        verdict = (
            f"top-1 agreement {p['top1_agreement']:.2%}, max rel diff {p['max_rel_diff']:.1e}"
            f" ({'passed' if p['passed'] else 'not enforced' if not p['enforced'] else 'failed'})"
        )
        lines.append(f"| {name} | {info['input_shape']} | {info['bytes']:,} | {verdict} |")
    inputs = card["inputs"]
    lines += [
        "",
        "## Inputs",
        "",
        f"`{inputs['name']}`: {inputs['layout']}; {inputs['preprocessing']}, mean "
        f"{acc['mean']}, std {acc['std']}. Output `{inputs['output']}`: logits over "
        f"{len(inputs['classes'])} classes ({', '.join(map(str, inputs['classes']))}).",
        "",
        f"Search scores: accuracy {card['accuracy']['value']:.4f} (proxy), latency "
        f"{card['latency']['p50_ms']:.3f} ms on {card['latency']['device']['name']}.",
        "",
        f"Project version {card['project_version']}, created {card['created']}. "
        "`python example.py` runs the model on a blank image.",
        "",
    ]
    return "\n".join(lines)


def example_script(spec: Format, precision: str, card: dict[str, Any]) -> str:
    """A small script that loads the exported proxy-shape model and classifies one image."""
    shape = card["files"][f"model_proxy{spec.suffix}"]["input_shape"]
    shape = [1 if d is None else d for d in shape]
    loaders = {
        "onnxruntime": (
            "import onnxruntime as ort\n"
            f"session = ort.InferenceSession(str(HERE / 'model_proxy{spec.suffix}'))\n"
            "logits = session.run(None, {session.get_inputs()[0].name: x})[0]\n"
        ),
        "openvino": (
            "import openvino as ov\n"
            + (
                "config = {'INFERENCE_PRECISION_HINT': 'bf16'}\n"
                if precision == "bf16"
                else "config = {}\n"
            )
            + f"model = ov.Core().compile_model(str(HERE / 'model_proxy{spec.suffix}'), 'CPU', "
            "config)\nlogits = model(x)[0]\n"
        ),
        "torch": (
            "import torch\n"
            + (
                f"model = torch.jit.load(str(HERE / 'model_proxy{spec.suffix}'))\n"
                if spec.name == "torchscript"
                else f"model = torch.export.load(str(HERE / 'model_proxy{spec.suffix}')).module()\n"
            )
            + "with torch.no_grad():\n    logits = model(torch.from_numpy(x)).numpy()\n"
        ),
        "tensorrt": (
            "raise SystemExit('run model_proxy.engine with the TensorRT runtime on an NVIDIA GPU; "
            "see nas.formats.load for a complete runner')\n"
        ),
    }
    acc = card["exported_accuracy"]
    return (
        f'"""Load model_proxy{spec.suffix} ({spec.name}, {precision}) and classify one image."""\n'
        "from pathlib import Path\n\nimport numpy as np\n\n"
        "HERE = Path(__file__).parent\n"
        f"MEAN = np.array({acc['mean']}, dtype=np.float32)[None, :, None, None]\n"
        f"STD = np.array({acc['std']}, dtype=np.float32)[None, :, None, None]\n"
        f"CLASSES = {card['inputs']['classes']!r}\n\n"
        f"pixels = np.zeros({tuple(shape)}, dtype=np.float32)  # your image, values in [0, 1]\n"
        "x = ((pixels - MEAN) / STD).astype(np.float32)\n"
        + loaders[spec.runtime]
        + "print(CLASSES[int(np.argmax(logits[0]))])\n"
    )


def model_card(
    run: Run,
    config: Any,
    trial: Any,
    data_info: dict[str, Any],
    files: dict[str, Any],
    notes: dict[str, str],
) -> dict[str, Any]:
    a = trial.user_attrs
    return {
        "candidate": a["candidate"],
        "space": config.space.name,
        "run": str(run.root),
        "trial": trial.number,
        "accuracy": {
            "value": a["accuracy"],
            "metric": "top-1",
            "split": f"proxy validation ({data_info['val_size']} held-out images of "
            f"{data_info['dataset']})",
            "epoch_accuracy": a["epoch_accuracy"],
        },
        "latency": {
            "p50_ms": a["latency_p50_ms"],
            "p90_ms": a["latency_p90_ms"],
            "mean_ms": a["latency_mean_ms"],
            "std_ms": a["latency_std_ms"],
            "n_runs": a["latency_n_runs"],
            "device": a["device"],
            "measured_on": "the search's artifact of this architecture at the deployment shape",
        },
        "params": a["params"],
        "flops": a["flops"],
        "compression": {
            key: a[key]
            for key in ("compression", "prune_ratio", "precision", *COMPRESSION_COLUMNS)
            if key in a
        }
        or None,
        "inputs": {
            "name": INPUT_NAME,
            "output": OUTPUT_NAME,
            "layout": "NCHW float32",
            "preprocessing": "x = (pixels / 255 - mean) / std per channel",
            "mean": data_info["mean"],
            "std": data_info["std"],
            "classes": data_info["classes"],
        },
        "files": files,
        "weights": {
            "model_proxy": "the trained weights at the shape they were trained at",
            "model": {"trained": "every tensor except those listed", "adapted": notes},
        },
        "config": config.model_dump(mode="json"),
        "project_version": nas.__version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
