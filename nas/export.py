"""Export a trial's trained candidate to ONNX, checked against torch.

Two models are written. ``model_proxy.onnx`` is the trained network exactly as it was scored
(proxy image size, the dataset's channels and classes). ``model.onnx`` is the same network at
the deployment shape: every stride as designed, the stem adapted to the deployment channels
with timm's `adapt_input_conv`, and the classifier reused when the class counts agree
(otherwise it is freshly initialised and the card says so). Files are written into a temporary
folder that is renamed into place only when every check passed.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import nas
from nas.artifacts import history_path, load_history
from nas.compression import replay
from nas.errors import ExportError, RunError, UnknownTrialError
from nas.onnx_io import INPUT_NAME, OUTPUT_NAME, export_onnx, file_sha256, run_onnx
from nas.run import Run
from search_spaces import get_space

PARITY_RTOL = 1e-4
PARITY_SAMPLES = 4


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


def parity(model: nn.Module, onnx_path: Path, shape: tuple[int, ...], seed: int) -> dict[str, Any]:
    """Largest difference between ONNX Runtime and torch outputs on random normalised inputs."""
    rng = np.random.default_rng(seed)
    worst_abs, worst_rel = 0.0, 0.0
    model.eval()
    for _ in range(PARITY_SAMPLES):
        x = rng.standard_normal(shape).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = run_onnx(onnx_path, x)
        diff = float(np.abs(got - ref).max())
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / max(float(np.abs(ref).max()), 1e-12))
    return {
        "max_abs_diff": worst_abs,
        "max_rel_diff": worst_rel,
        "samples": PARITY_SAMPLES,
        "rtol": PARITY_RTOL,
        "passed": worst_rel <= PARITY_RTOL,
    }


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


def export_trial(
    run: Run,
    *,
    out: Path,
    number: int | None = None,
    candidate: str | None = None,
    force: bool = False,
) -> Path:
    """Export a completed trial; returns the export folder."""
    if (number is None) == (candidate is None):
        raise UnknownTrialError("give exactly one of a trial number or a candidate string")
    config = run.config()
    study = load_study(run)
    trial = find_trial(study, number=number, candidate=candidate)
    attrs = trial.user_attrs
    source = int(attrs.get("duplicate_of") or trial.number)
    weights = run.weights_path(source)
    if not weights.is_file():
        raise RunError(f"weights of trial {source} missing at {weights}")
    data_info = study.user_attrs.get("data")
    if data_info is None:
        raise RunError(f"{run.root}: the study holds no dataset description")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} exists and is not empty; pass --force to replace it")

    space = get_space(config.space.name, config.space)
    cand = space.decode(attrs["candidate"])
    proxy_size = int(attrs["proxy_input_size"])
    proxy = space.build(
        cand, data_info["num_classes"], data_info["channels"], input_size=proxy_size
    )
    dep = config.deployment
    deploy = space.build(cand, dep.num_classes, dep.channels)
    history_file = history_path(weights)
    if history_file.is_file():  # a pruned trial: cut both networks the same way first
        history = load_history(history_file)
        replay(proxy, torch.zeros(1, data_info["channels"], proxy_size, proxy_size), history)
        side = space.resolution(cand)
        replay(deploy, torch.zeros(1, dep.channels, side, side), history)
    proxy.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    notes = transfer_weights(proxy, deploy)
    shapes = {
        "model.onnx": (
            dep.batch_size,
            dep.channels,
            space.resolution(cand),
            space.resolution(cand),
        ),
        "model_proxy.onnx": (1, data_info["channels"], proxy_size, proxy_size),
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files: dict[str, Any] = {}
        for (name, shape), model in zip(shapes.items(), (deploy, proxy), strict=True):
            path = export_onnx(model, shape, tmp / name)
            check = parity(model, path, shape, seed=config.seed)
            if not check["passed"]:
                raise ExportError(
                    f"{name}: ONNX Runtime output differs from torch by {check['max_rel_diff']:.2e}"
                    f" relative (max abs {check['max_abs_diff']:.2e}); allowed {PARITY_RTOL:.0e}"
                )
            files[name] = {
                "input_shape": list(shape),
                "sha256": file_sha256(path),
                "bytes": path.stat().st_size,
                "parity": check,
            }
        if attrs.get("precision") == "int8":
            files.update(_int8_files(config, tmp, shapes))
        card = model_card(run, config, trial, data_info, files, notes)
        (tmp / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
        _replace_dir(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _int8_files(config: Any, folder: Path, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """int8 QDQ copies of the exported models, calibrated as the search calibrated them."""
    from nas.data import load_dataset, make_splits
    from nas.quantization import load_calibration, quantize_int8, shaped

    splits = make_splits(load_dataset(config.data), config.data, config.seed)
    images = load_calibration(config.compression.quantization, splits)
    files = {}
    for name, shape in shapes.items():
        out = folder / name.replace(".onnx", "_int8.onnx")
        x = shaped(images, shape[1], shape[-1])
        quantize_int8(folder / name, out, x, config.compression.quantization)
        # Top-1 agreement with the fp32 model on the calibration images, one batch at a time.
        sample = x[: 64 * shape[0]].numpy()
        batches = [sample[i : i + shape[0]] for i in range(0, len(sample) - shape[0] + 1, shape[0])]
        same = [
            (run_onnx(out, b).argmax(1) == run_onnx(folder / name, b).argmax(1)).mean()
            for b in batches
        ]
        files[out.name] = {
            "input_shape": list(shape),
            "sha256": file_sha256(out),
            "bytes": out.stat().st_size,
            "quantization": "static int8 QDQ (ONNX Runtime), calibrated on proxy images",
            "top1_agreement_with_fp32": float(np.mean(same)),
        }
    return files


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
            "measured_on": "model.onnx architecture at the deployment shape",
        },
        "params": a["params"],
        "flops": a["flops"],
        "compression": {
            key: a[key]
            for key in (
                "compression",
                "prune_ratio",
                "precision",
                "accuracy_trained",
                "accuracy_pruned",
                "accuracy_finetuned",
                "latency_parent_ms",
                "speedup_vs_parent",
                "slower_than_parent",
            )
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
            "model_proxy.onnx": "trained proxy weights, as scored",
            "model.onnx": {"trained": "every tensor except those listed", "adapted": notes},
        },
        "config": config.model_dump(mode="json"),
        "project_version": nas.__version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
