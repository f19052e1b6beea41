"""Export one trial to every format this machine runs, and race the files side by side.

Exports the trial (default: the most accurate completed trial deployed at 224x224, else the
most accurate front member) with `nas export` in each available format, timing each export.
Then runs every exported deployment file and torch eager fp32 of the same network in
interleaved rounds (`nas.export.compare`), with accuracy from each file's proxy-shape twin on the
validation split. Prints per variant: export seconds, accuracy and drop against ONNX Runtime
fp32, median latency, speedup over torch eager and over ONNX Runtime fp32, and the achieved
GFLOP/s beside this machine's measured peak fp32 matrix-multiply GFLOP/s (torch, same threads).
Targets: every export under 2 minutes; the best variant >= 2x torch eager and >= 1.5x ONNX
Runtime fp32 with at most 1 point accuracy drop.

    .venv/bin/python benchmarks/export_formats.py runs/quickstart [--trial N] [--rounds 7]
        [--min-agreement 0.9]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from latency_predictors.backends.base import time_calls
from latency_predictors.measure import deployment_shape
from nas import api
from nas.errors import NASError
from nas.export.formats import FORMATS
from nas.run import Run
from nas.storage import find_trial, load_study
from nas.train.full import source_trial
from nas.train.weights import shape_like
from search_spaces import get_space
from search_spaces.flops import count_flops

VARIANTS = [
    ("onnx", None),
    ("onnx-fp16", None),
    ("onnx-int8", None),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
    ("tensorrt", "fp16"),
    ("torchscript", None),
    ("pt2", None),
]


def pick_trial(run: Path) -> int:
    trials = pd.read_csv(run / "trials.csv")
    done = trials[trials["state"] == "COMPLETE"].copy()
    done["res"] = done["candidate"].str.extract(r"_r(\d+)_").astype(int)
    at224 = done[done["res"] == 224]
    pool = at224 if len(at224) else done[done["on_front"]]
    best = pool.sort_values("accuracy", ascending=False).iloc[0]
    why = "at 224x224" if len(at224) else "on the front (no trial is deployed at 224x224)"
    print(
        f"trial {best['number']}: the most accurate completed trial {why}, proxy accuracy "
        f"{best['accuracy']:.4f}, resolution {best['res']}"
    )
    return int(best["number"])


def peak_matmul_gflops(threads: int) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    times = time_calls(lambda: a @ b, warmup=3, repeats=20)
    return 2 * 1024**3 / (times.min() / 1000) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--trial", type=int)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=0.9,
        help="quantized formats' parity floor for this benchmark",
    )
    args = parser.parse_args()
    number = args.trial if args.trial is not None else pick_trial(args.run)
    run = Run.open(args.run)
    config = run.config()
    threads = config.latency.threads

    with tempfile.TemporaryDirectory(prefix="nas-bench-export-") as tmp_name:
        tmp = Path(tmp_name)
        exported: list[tuple[str, Path, float]] = []
        for fmt, precision in VARIANTS:
            label = f"{fmt} {precision or FORMATS[fmt].precisions[0]}"
            out = tmp / label.replace(" ", "_")
            start = time.perf_counter()
            try:
                api.export(
                    args.run,
                    api.ExportOptions(
                        out=out,
                        trial=number,
                        format=fmt,
                        precision=precision,
                        weights="auto",
                        min_agreement=args.min_agreement,
                    ),
                )
            except NASError as e:
                print(f"{label}: not exported: {e}")
                continue
            seconds = time.perf_counter() - start
            exported.append((label, out, seconds))
            print(f"{label}: exported in {seconds:.1f} s")

        table = api.compare(
            api.CompareOptions(
                variants=tuple(p for _, p, _ in exported),
                with_baseline=False,
                rounds=args.rounds,
                repeats=args.repeats,
                threads=threads,
            )
        )

        # Torch eager fp32 of the same deployment network (pruned as the trial was), timed the
        # same way.
        trial = find_trial(load_study(run), number=number, candidate=None)
        space = get_space(config.space.name, config.space)
        cand = space.decode(trial.user_attrs["candidate"])
        dep = config.deployment
        shape = deployment_shape(space, cand, dep.target())
        deploy = space.build(cand, dep.num_classes, dep.channels)
        shape_like(deploy, run.weights_path(source_trial(trial)), torch.zeros(shape))
        deploy.eval()
        flops = count_flops(deploy, shape)
        torch.set_num_threads(threads)
        x = torch.randn(shape)
        eager = []
        for _ in range(args.rounds):
            with torch.no_grad():
                eager += time_calls(lambda: deploy(x), warmup=3, repeats=args.repeats).tolist()
        eager_ms = float(np.median(eager))

    ref = table.iloc[0]
    export_seconds = {label: s for label, _, s in exported}
    rows = []
    for (label, _, _), r in zip(exported, table.to_dict("records"), strict=True):
        rows.append(
            {
                "variant": label,
                "export_s": export_seconds[label],
                "accuracy": r["accuracy"],
                "drop_pts": 100 * (ref["accuracy"] - r["accuracy"]),
                "p50_ms": r["median_ms"],
                "vs_torch": eager_ms / r["median_ms"],
                "vs_ort_fp32": ref["median_ms"] / r["median_ms"],
                "ci_vs_ort": f"[{1 / r['ratio_ci_high']:.2f}, {1 / r['ratio_ci_low']:.2f}]",
                "gflops": flops / (r["median_ms"] / 1000) / 1e9,
            }
        )
    rows.append(
        {
            "variant": "torch eager fp32",
            "export_s": float("nan"),
            "accuracy": float("nan"),
            "drop_pts": float("nan"),
            "p50_ms": eager_ms,
            "vs_torch": 1.0,
            "vs_ort_fp32": ref["median_ms"] / eager_ms,
            "ci_vs_ort": "",
            "gflops": flops / (eager_ms / 1000) / 1e9,
        }
    )
    df = pd.DataFrame(rows)
    peak = peak_matmul_gflops(threads)
    print(
        f"\nshape {shape}, {flops / 1e9:.3f} GFLOPs per inference, {threads} thread(s); "
        f"peak fp32 matmul (torch, 1024^3): {peak:.1f} GFLOP/s"
    )
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    ok = df[(df["vs_torch"] >= 2) & (df["vs_ort_fp32"] >= 1.5) & (df["drop_pts"] <= 1)]
    slow = [v for v, s in export_seconds.items() if s >= 120]
    print(
        f"\nexports under 2 minutes: {len(export_seconds) - len(slow)}/{len(export_seconds)}"
        + (f" (over: {', '.join(slow)})" if slow else "")
    )
    if ok.empty:
        best = df.iloc[:-1].sort_values("p50_ms").iloc[0]
        print(
            f"no variant met >= 2x torch, >= 1.5x ONNX Runtime fp32, <= 1 pt drop; fastest: "
            f"{best['variant']} ({best['vs_torch']:.2f}x torch, {best['vs_ort_fp32']:.2f}x "
            f"ONNX Runtime fp32, drop {best['drop_pts']:.2f} pts)"
        )
    else:
        best = ok.sort_values("p50_ms").iloc[0]
        print(
            f"BEST: {best['variant']}: {best['vs_torch']:.2f}x torch eager, "
            f"{best['vs_ort_fp32']:.2f}x ONNX Runtime fp32, drop {best['drop_pts']:.2f} pts, "
            f"{best['gflops']:.1f} GFLOP/s ({best['gflops'] / peak:.0%} of peak matmul)"
        )


if __name__ == "__main__":
    main()
