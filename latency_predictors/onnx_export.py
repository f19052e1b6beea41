"""torch -> ONNX export for timing (and for every artifact built on ONNX), and file hashing."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
from torch import nn

from hwnas_base.errors import ExportError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17


def export_onnx(
    model: nn.Module, input_shape: tuple[int, ...], path: Path, *, dynamic_batch: bool = False
) -> Path:
    """Export `model` in eval mode for an input of `input_shape` to `path`.

    Uses torch's TorchScript-based exporter: it exports an EfficientNet in about a second where
    the torch.export-based one takes several, which matters once per trial.
    """
    model.eval()
    example = torch.zeros(input_shape)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
            )
    except Exception as e:  # the exporter raises many unrelated types
        raise ExportError(f"ONNX export failed: {type(e).__name__}: {e}") from e
    return path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
