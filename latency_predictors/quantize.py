"""ONNX Runtime's post-training static int8 quantization, in QDQ form.

Shape inference and graph pre-processing (``quant_pre_process``, which fuses and folds what
would otherwise be quantized apart), then ``quantize_static`` with int8 weights (per channel by
default) and uint8 activations calibrated on the images given. The QDQ graph runs as int8 kernels
in ONNX Runtime, OpenVINO and TensorRT alike. `quantize_for_timing` calibrates on random inputs:
the right speed, meaningless accuracy.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from hwnas_base.errors import CompressionError

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def _batches(images: np.ndarray, batch_size: int, static_batch: int | None) -> list[np.ndarray]:
    """Calibration batches of `batch_size` (all images when fewer), re-cut to a fixed-batch
    graph's batch size when the graph has one."""
    x = images.astype(np.float32, copy=False)
    batches = [
        x[i : i + batch_size]
        for i in range(0, len(x), batch_size)
        if len(x[i : i + batch_size]) == batch_size or len(x) < batch_size
    ]
    if static_batch is not None:  # a fixed-batch graph takes one image at a time
        batches = [b[i : i + static_batch] for b in batches for i in range(0, len(b), static_batch)]
        batches = [b for b in batches if len(b) == static_batch]
    return batches


def quantize_int8(
    fp32_path: Path,
    out: Path,
    images: np.ndarray,
    *,
    batch_size: int,
    method: str = "minmax",
    per_channel: bool = True,
) -> Path:
    """Static int8 QDQ model of `fp32_path`, calibrated on `images`, written to `out`.

    Args:
        fp32_path: The fp32 ONNX model.
        out: Where the quantized model goes.
        images: Normalised calibration inputs shaped like the model's input, (N, C, H, W).
        batch_size: Calibration batch size.
        method: ``minmax``, ``entropy`` or ``percentile`` (ONNX Runtime's calibrators).
        per_channel: Per-channel int8 weights.

    Raises:
        CompressionError: pre-processing or quantization failed (the message says which).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise CompressionError(f"calibration method {method!r} unknown; {CALIBRATION_METHODS}")
    calibrator = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    try:
        graph_input = onnx.load(str(fp32_path), load_external_data=False).graph.input[0]
    except Exception as e:  # onnx raises protobuf and its own types
        raise CompressionError(
            f"int8 pre-processing failed: cannot read {fp32_path}: {type(e).__name__}: {e}"
        ) from e
    name = graph_input.name
    first = graph_input.type.tensor_type.shape.dim[0]
    static_batch = int(first.dim_value) if first.HasField("dim_value") else None
    batches = _batches(images, batch_size, static_batch)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: b} for b in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="nas-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        except Exception as e:  # onnx and onnxruntime raise many types
            raise CompressionError(f"int8 pre-processing failed: {type(e).__name__}: {e}") from e
        try:
            quantize_static(
                str(pre),
                str(out),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calibrator,
            )
        except Exception as e:
            raise CompressionError(f"int8 quantization failed: {type(e).__name__}: {e}") from e
    return out


def quantize_for_timing(
    onnx_path: Path, input_shape: tuple[int, ...], out: Path, *, batches: int = 4
) -> Path:
    """Static int8 QDQ quantization of an ONNX model, calibrated on random inputs.

    The weights and activation ranges are real (from the model and random data); the result is
    for timing only, never for accuracy.
    """
    rng = np.random.default_rng(0)
    shape = (batches * input_shape[0], *input_shape[1:])
    images = rng.standard_normal(shape).astype(np.float32)
    return quantize_int8(onnx_path, out, images, batch_size=input_shape[0])
