"""Post-training static int8 quantization of a trained candidate, and accuracy measured in the
runtime.

The quantizer is ONNX Runtime's (`latency_predictors.quantize`), calibrated on proxy images
with the run's settings; OpenVINO devices may use NNCF instead. The QDQ graph is the artifact:
ONNX Runtime, OpenVINO and TensorRT all run its QuantizeLinear / DequantizeLinear pairs as int8
kernels. Accuracy is the artifact's, run by the target runtime on the validation split; no
torch simulation is involved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from latency_predictors.quantize import quantize_int8
from nas.config import QuantizationConfig
from nas.errors import CompressionError, ConfigError
from nas.train.data import ProxySplits, normalize, resize_images


def load_calibration(cfg: QuantizationConfig, data: ProxySplits) -> torch.Tensor:
    """Normalised calibration images: the config's file, or the first proxy training images.

    Raises:
        ConfigError: the file is missing, unreadable, or its images are not shaped like the
            proxy data.
    """
    n = cfg.calibration_batches * cfg.calibration_batch_size
    if cfg.calibration_path is None:
        return data.train_x[:n]
    path = cfg.calibration_path
    where = f"compression.quantization.calibration_path {path}"
    try:
        with np.load(path) as f:
            if "x" not in f:
                raise ConfigError(f"{where}: no array 'x' (has: {', '.join(f.files)})")
            x = f["x"]
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where}: cannot read: {e}") from None
    want = (data.channels, data.image_size, data.image_size)
    if x.ndim != 4 or tuple(x.shape[1:]) != want or x.dtype != np.uint8 or len(x) == 0:
        raise ConfigError(
            f"{where}: images are {x.dtype} {tuple(x.shape)}; need uint8 (N, "
            f"{', '.join(map(str, want))}) like the proxy data, N >= 1"
        )
    images = torch.from_numpy(x[:n].astype(np.float32) / 255.0)
    return normalize(images, data.mean, data.std)


def shaped(x: torch.Tensor, channels: int, side: int) -> torch.Tensor:
    """Images at `side` x `side` with `channels` channels (grey repeated, or colour averaged)."""
    if x.shape[-1] != side:
        x = resize_images(x, side)
    if x.shape[1] != channels:
        grey = x.mean(dim=1, keepdim=True)
        x = grey.expand(-1, channels, -1, -1).contiguous()
    return x


def quantize_artifact(
    fp32_path: Path, out: Path, images: torch.Tensor, cfg: QuantizationConfig
) -> Path:
    """Static int8 QDQ model of `fp32_path` with the config's calibration settings (ONNX
    Runtime's quantizer, `latency_predictors.quantize`), calibrated on `images`.

    Raises:
        CompressionError: pre-processing or quantization failed (the message says which).
    """
    return quantize_int8(
        fp32_path,
        out,
        images.numpy().astype(np.float32),
        batch_size=cfg.calibration_batch_size,
        method=cfg.calibration_method,
        per_channel=cfg.per_channel,
    )


def quantize_openvino(
    fp32_path: Path, out: Path, images: torch.Tensor, cfg: QuantizationConfig
) -> Path:
    """OpenVINO's own int8 path: NNCF post-training quantization of the OpenVINO model read
    from `fp32_path`, calibrated on `images`; written as IR (`out` .xml and its .bin).

    Raises:
        CompressionError: reading or quantization failed.
    """
    try:
        import nncf
        import openvino as ov
    except ImportError:
        raise CompressionError(
            "OpenVINO int8 through NNCF needs 'openvino' and 'nncf': pip install -e '.[openvino]'"
        ) from None
    try:
        model = ov.Core().read_model(str(fp32_path))
        static = model.inputs[0].get_partial_shape()[0]
        step = static.get_length() if static.is_static else cfg.calibration_batch_size
        batches = [x.numpy().astype(np.float32) for x in images.split(step) if len(x) == step] or [
            images[:1].numpy().astype(np.float32)
        ]
        quantized = nncf.quantize(
            model,
            nncf.Dataset(batches),
            subset_size=len(batches),
            preset=nncf.QuantizationPreset.PERFORMANCE,
        )
        ov.save_model(quantized, str(out))
    except Exception as e:  # openvino and nncf raise many types
        raise CompressionError(f"NNCF int8 quantization failed: {type(e).__name__}: {e}") from e
    return out


def runtime_accuracy(
    backend: Any, path: Path, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 250
) -> float:
    """Top-1 accuracy of the model at `path`, run by `backend`'s runtime on (x, y).

    The model sees fixed-size batches (the last one padded), which every runtime can run,
    TensorRT's fixed-shape engines included.
    """
    batch_size = min(batch_size, len(x))
    run = backend.runner(path, (batch_size, *x.shape[1:]))
    correct = 0
    for i in range(0, len(x), batch_size):
        chunk = x[i : i + batch_size]
        n = len(chunk)
        if n < batch_size:
            chunk = F.pad(chunk, (0, 0, 0, 0, 0, 0, 0, batch_size - n))
        logits = np.asarray(run(chunk.numpy().astype(np.float32)))[:n]
        correct += int((logits.argmax(1) == y[i : i + n].numpy()).sum())
    return correct / len(x)
