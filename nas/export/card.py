"""The model card of an export: ``model_card.json`` for tools, ``MODEL_CARD.md`` for people,
and ``example.py``, a script that loads the exported proxy-shape model and classifies an image.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import nas
from latency_predictors.device import cpu_description
from latency_predictors.onnx_export import INPUT_NAME, OUTPUT_NAME
from nas.export.formats import Format
from nas.record import COMPRESSION, COMPRESSION_COLUMNS
from nas.run import Run


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
            "source": a.get("accuracy_source", "trained"),
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
            for key in (COMPRESSION, "prune_ratio", "precision", *COMPRESSION_COLUMNS)
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


def export_details(
    spec: Format,
    precision: str,
    dynamic_batch: bool,
    measured: dict[str, Any],
    full: dict[str, Any] | None,
    splits: Any,
    threads: int,
    inherited: bool = False,
) -> dict[str, Any]:
    search_weights = (
        "inherited from the run's supernet (no stand-alone training; `nas train` fine-tunes it)"
        if inherited
        else "proxy (the search's weights)"
    )
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
            else {"fidelity": search_weights}
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
        f"Search scores: accuracy {card['accuracy']['value']:.4f} "
        f"({'supernet' if card['accuracy'].get('source') == 'supernet' else 'proxy'}), latency "
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
            "see nas.export.formats.load for a complete runner')\n"
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
