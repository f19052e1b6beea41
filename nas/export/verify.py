"""Checks and measurements made on exported files: parity against torch, latency, and the
batch sweep.

Parity: fp32 formats must match torch within 1e-4 relative on validation inputs; quantized ones
must agree with torch on top-1 for at least 98 % of them (or the `--min-agreement` given).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latency_predictors.backends.base import time_calls
from nas.config import QuantizationConfig
from nas.errors import ExportError
from nas.export.formats import Format, Runner, load, write

PARITY_RTOL = 1e-4
MIN_AGREEMENT = 0.98
SWEEP_BATCHES = (1, 8, 32)


def parity(
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


def latency(run: Runner, shape: tuple[int, ...], warmup: int, repeats: int) -> dict[str, Any]:
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


def sweep(
    spec: Format,
    model: nn.Module,
    shape: tuple[int, ...],
    precision: str,
    threads: int,
    calibration: torch.Tensor,
    quantization: QuantizationConfig,
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
            quantization=quantization,
        )
        for batch in SWEEP_BATCHES:
            batch_shape = (batch, *shape[1:])
            run_file = load(spec, path, batch_shape, precision=precision, threads=threads)
            rows.append(latency(run_file, batch_shape, min(warmup, 3), 10))
    return {"measured_on": "a dynamic-batch twin of model file, same format", "batches": rows}
