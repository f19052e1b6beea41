"""Compressed variants of a front member against ONNX Runtime fp32 of its unpruned parent.

Takes the best-accuracy member of a run's Pareto front (or ``--candidate``), sets its resolution
to 224, trains it with the config's proxy recipe, then for each prune ratio (0 = unpruned)
prunes it with Torch-Pruning and fine-tunes it (every variant, the unpruned one too, gets the
same fine-tuning epochs, distilled from the trained parent unless ``--no-distill``). Each
pruned network is exported and, for int8, statically quantized with calibration on proxy
images; every runtime/precision pair then

- runs the proxy-shape artifact on the validation split (accuracy), and
- times the 1x3x224x224 deployment artifact (latency; OpenVINO int8 both as the ONNX Runtime
  QDQ model and through NNCF, OpenVINO's own quantizer), in interleaved rounds so that every
  variant sees the same machine state; a variant's latency is its median over rounds.

Prints one table side by side: accuracy, drop against the parent (ONNX Runtime fp32,
unpruned), latency and speedup; then which variant won and why each other lost. Target: a
variant at least 2x faster than the parent with at most 1 point accuracy drop.

    .venv/bin/python benchmarks/compression.py configs/quickstart.yaml --run runs/quickstart \\
        [--candidate STR] [--ratios 0.15 0.25 0.35] [--epochs 3] [--finetune-epochs 3] \\
        [--lr-scale 1.0] [--rounds 7] [--no-distill]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from latency_predictors.backends import LatencyBackend
from latency_predictors.devices import BUILTIN_DEVICES, measurement_backend
from nas.compress.compressor import Compressor
from nas.compress.quantization import load_calibration
from nas.compress.space import Compression
from nas.config import CompressionConfig, load_config
from nas.train.data import load_dataset, make_splits
from nas.train.proxy import Distillation, train_proxy
from search_spaces import get_space

DEVICES = ("cpu-ort-fp32", "cpu-ort-int8", "cpu-ov-fp32", "cpu-ov-bf16", "cpu-ov-int8")
PARENT = "cpu-ort-fp32"
TARGET_SPEEDUP, MAX_DROP = 2.0, 0.01


def pick_candidate(space: Any, run: Path | None, text: str | None) -> Any:
    if text:
        return space.decode(text)
    if run is None:
        raise SystemExit("give --run (a finished search) or --candidate")
    front = pd.read_csv(run / "pareto.csv")
    best = front.sort_values("accuracy", ascending=False).iloc[0]
    print(
        f"best-accuracy front member of {run}: trial {best['number']}, accuracy "
        f"{best['accuracy']:.4f}"
    )
    return space.decode(best["candidate"])


def backends(threads: int, repeats: int) -> dict[str, LatencyBackend]:
    out = {}
    for name in DEVICES:
        reason = BUILTIN_DEVICES[name].unavailable_reason()
        if reason:
            print(f"skipping {name}: {reason}")
            continue
        try:
            out[name] = measurement_backend(
                name, threads=threads, warmup=10, repeats=repeats, batch_size=1
            )
        except Exception as e:
            print(f"skipping {name}: {e}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--candidate")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.15, 0.25, 0.35])
    parser.add_argument("--epochs", type=int, default=3, help="proxy training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--lr-scale", type=float, default=1.0, help="fine-tuning lr / training lr")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved latency rounds")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per round")
    parser.add_argument("--no-distill", action="store_true")
    args = parser.parse_args()

    config = load_config(args.config)
    torch.set_num_threads(config.training.threads or torch.get_num_threads())
    space = get_space(config.space.name, config.space)
    cand = pick_candidate(space, args.run, args.candidate)
    cand = dataclasses.replace(cand, resolution=224)
    print(f"candidate at 224x224: {space.encode(cand)}")
    splits = make_splits(load_dataset(config.data), config.data, config.seed)
    data = splits.resized(space.proxy_input_size(cand, splits.image_size))
    compression = CompressionConfig.model_validate(
        {
            "pruning": {"ratios": args.ratios, "finetune_epochs": args.finetune_epochs},
            "quantization": {"precisions": ["fp32", "bf16", "int8"]},
        }
    )
    measured = backends(config.latency.threads, args.repeats)
    by_runtime: dict[str, dict[str, LatencyBackend]] = {}
    for backend in measured.values():
        by_runtime.setdefault(backend.device.runtime, {})[backend.device.precision] = backend
    calibration = load_calibration(compression.quantization, splits)
    compressors = {
        runtime: Compressor(
            config=compression,
            space=space,
            deployment=config.deployment.target(),
            backends=bk,
            calibration=calibration,
        )
        for runtime, bk in by_runtime.items()
    }
    if "int8" in by_runtime.get("openvino", {}):  # OpenVINO's own int8 path beside the QDQ one
        nncf = compression.model_copy(
            update={
                "quantization": compression.quantization.model_copy(
                    update={"openvino_int8": "nncf"}
                )
            }
        )
        compressors["openvino+nncf"] = Compressor(
            config=nncf,
            space=space,
            deployment=config.deployment.target(),
            backends={"int8": by_runtime["openvino"]["int8"]},
            calibration=calibration,
        )

    torch.manual_seed(config.seed)
    parent = space.build(cand, data.num_classes, data.channels, input_size=data.image_size)
    recipe = config.training.model_copy(update={"epochs": args.epochs})
    start = time.perf_counter()
    trained = train_proxy(parent, data, recipe, seed=config.seed)
    print(
        f"parent trained for {args.epochs} epochs in {time.perf_counter() - start:.0f} s: "
        f"torch accuracy {trained.accuracy:.4f}"
    )
    distill = None
    if not args.no_distill:
        with torch.no_grad():
            parent.eval()
            logits = torch.cat([parent(x) for x in data.train_x.split(512)])
        distill = Distillation(logits, temperature=4.0, weight=0.5)

    def finetune(model: torch.nn.Module, epochs: int) -> float:
        lr = config.training.lr * args.lr_scale
        ft = config.training.model_copy(update={"epochs": epochs, "lr": lr})
        return train_proxy(model, data, ft, seed=config.seed + 1, distillation=distill).accuracy

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nas-bench-") as tmp_name:
        tmp = Path(tmp_name)
        any_compressor = next(iter(compressors.values()))
        for ratio in [0.0, *args.ratios]:
            model = copy.deepcopy(parent)
            history, attrs = any_compressor.prune_and_finetune(
                model, Compression((ratio,), "fp32"), data, finetune
            )
            deploy, shape = any_compressor.deployment_network(cand, model, history)
            fp32_file = any_compressor.artifact(deploy, shape, "fp32", tmp / f"p{ratio}_fp32")
            print(
                f"prune {ratio:.0%}: torch accuracy after fine-tuning "
                f"{attrs.get('accuracy_finetuned', float('nan')):.4f}, "
                f"{sum(p.numel() for p in deploy.parameters()) / 1e6:.2f} M params"
            )
            for runtime, comp in compressors.items():
                for precision, backend in comp.backends.items():
                    folder = tmp / f"acc_{ratio}_{runtime}_{precision}"
                    folder.mkdir()
                    path = fp32_file
                    try:
                        acc = comp.artifact_accuracy(model, data, precision, folder)
                        if precision == "int8":
                            path = comp.artifact(deploy, shape, "int8", folder / "deploy")
                        error = ""
                    except Exception as e:
                        acc, error = math.nan, str(e)
                    rows.append(
                        {
                            "prune": ratio,
                            "device": backend.device.name,
                            "runtime": runtime,
                            "precision": precision,
                            "accuracy": acc,
                            "path": path,
                            "shape": shape,
                            "backend": backend,
                            "times": [],
                            "error": error,
                        }
                    )
        print(
            f"timing {len(rows)} artifacts in {args.rounds} interleaved rounds of "
            f"{args.repeats} runs"
        )
        for r in range(args.rounds):
            for row in rows[r % len(rows) :] + rows[: r % len(rows)]:
                result = row["backend"].measure(row["path"], row["shape"])
                if result.ok:
                    row["times"].append(result.p50_ms)
                else:
                    row["error"] = result.error
    report(rows)


def report(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        row["latency_ms"] = float(np.median(row["times"])) if row["times"] else math.nan
    ref = next(r for r in rows if r["prune"] == 0 and r["device"] == PARENT)
    df = pd.DataFrame(
        [
            {
                "prune": f"{r['prune']:.0%}",
                "runtime": r["runtime"],
                "precision": r["precision"],
                "accuracy": r["accuracy"],
                "drop_pts": 100 * (ref["accuracy"] - r["accuracy"]),
                "p50_ms": r["latency_ms"],
                "speedup": ref["latency_ms"] / r["latency_ms"],
                "round_spread": (max(r["times"]) / min(r["times"])) if r["times"] else math.nan,
            }
            for r in rows
        ]
    ).sort_values("p50_ms")
    print(
        f"\nreference: unpruned fp32 parent on ONNX Runtime, accuracy {ref['accuracy']:.4f}, "
        f"{ref['latency_ms']:.3f} ms"
    )
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))

    def verdict(r: pd.Series) -> str:
        why = []
        if not math.isfinite(r["accuracy"]) or not math.isfinite(r["p50_ms"]):
            return "failed"
        if r["speedup"] < 1.0:
            why.append(f"slower than the parent ({r['speedup']:.2f}x)")
        elif r["speedup"] < TARGET_SPEEDUP:
            why.append(f"only {r['speedup']:.2f}x faster")
        if r["drop_pts"] > 100 * MAX_DROP:
            why.append(f"loses {r['drop_pts']:.2f} accuracy points")
        return "; ".join(why)

    df["why_not"] = df.apply(verdict, axis=1)
    is_ref = (df["prune"] == "0%") & (df["runtime"] == "onnxruntime") & (df["precision"] == "fp32")
    df.loc[is_ref, "why_not"] = "(the reference)"
    ok = df[df["why_not"] == ""]
    df = df[~is_ref]
    print()
    if ok.empty:
        best = df.sort_values("speedup", ascending=False).iloc[0]
        print(
            f"no variant met the target (>= {TARGET_SPEEDUP}x, <= {100 * MAX_DROP:.0f} pt drop);"
            f" fastest: prune {best['prune']} {best['runtime']} {best['precision']}, "
            f"{best['speedup']:.2f}x, drop {best['drop_pts']:.2f} pts"
        )
    else:
        win = ok.sort_values("speedup", ascending=False).iloc[0]
        print(
            f"WINNER: prune {win['prune']}, {win['runtime']} {win['precision']}: "
            f"{win['speedup']:.2f}x faster than ONNX Runtime fp32 of the unpruned parent, "
            f"accuracy drop {win['drop_pts']:.2f} pts"
        )
    for r in df.to_dict("records"):
        if r["why_not"]:
            print(f"  prune {r['prune']} {r['runtime']} {r['precision']}: {r['why_not']}")
    for row in rows:
        if row["error"]:
            print(f"  prune {row['prune']:.0%} {row['device']}: failed: {row['error']}")


if __name__ == "__main__":
    main()
