"""Torch eager vs ONNX Runtime fp32 at 224x224 on this machine, measured side by side.

For EfficientNet-B0 and two candidates sampled from the default space: median latency of a
1x3x224x224 forward pass in torch eager mode and in an ONNX Runtime CPU session (the backend the
search uses), with the same thread count, and their ratio.

    .venv/bin/python benchmarks/torch_vs_onnxruntime.py [--threads 1] [--repeats 50]
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch

from latency_predictors.backends.base import time_calls
from latency_predictors.backends.onnxruntime import OnnxRuntimeBackend
from latency_predictors.device import cpu_description
from latency_predictors.onnx_export import export_onnx
from search_spaces.efficientnet import (
    B0_STAGES,
    EfficientNetCandidate,
    EfficientNetSpace,
    EfficientNetSpaceConfig,
    StageSpec,
    build,
)
from search_spaces.flops import count_flops


def candidates(seed: int) -> list[tuple[str, EfficientNetCandidate]]:
    b0 = EfficientNetCandidate(1.0, 1.0, 224, tuple(StageSpec.decode(s) for s in B0_STAGES))
    space = EfficientNetSpace(
        EfficientNetSpaceConfig.model_validate(
            {"scaling": {"width": [0.5, 0.75, 1.0], "depth": [0.75, 1.0], "resolution": 224}}
        )
    )
    rng = np.random.default_rng(seed)
    return [
        ("efficientnet_b0", b0),
        ("sampled_1", space.sample(rng)),
        ("sampled_2", space.sample(rng)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    backend = OnnxRuntimeBackend(threads=args.threads, warmup=args.warmup, repeats=args.repeats)
    shape = (1, 3, 224, 224)
    x = torch.randn(shape)
    print(
        f"machine: {cpu_description()}; threads: {args.threads}; torch {torch.__version__}; "
        f"onnxruntime {backend.device.runtime_version}; {args.repeats} runs after "
        f"{args.warmup} warm-up, median ms"
    )
    print(f"{'model':<16} {'GFLOPs':>7} {'torch ms':>9} {'ort ms':>8} {'torch/ort':>9}")
    ratios = []
    for name, cand in candidates(args.seed):
        model = build(cand, 1000, 3).eval()
        with torch.inference_mode():
            eager = np.median(
                time_calls(partial(model, x), warmup=args.warmup, repeats=args.repeats)
            )
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(model, shape, Path(tmp) / "m.onnx")
            ort = backend.measure(path, shape)
        if not ort.ok:
            raise SystemExit(f"{name}: {ort.error}")
        ratios.append(eager / ort.p50_ms)
        print(
            f"{name:<16} {count_flops(model, shape) / 1e9:>7.3f} {eager:>9.2f} "
            f"{ort.p50_ms:>8.2f} {ratios[-1]:>8.2f}x"
        )
        if name != "efficientnet_b0":
            print(f"  {cand.encode()}")
    print(f"geometric mean torch/ort: {float(np.exp(np.mean(np.log(ratios)))):.2f}x")


if __name__ == "__main__":
    main()
