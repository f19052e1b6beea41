"""Export formats: write a torch network in a runtime's format, and load it back to run it.

Every format has a writer (torch module -> file) and a loader (file -> a function from a
float32 NCHW batch to logits) that runs the file in its own runtime, so accuracy, parity and
latency are always measured on the written file:

=============  ===========================================  ================================
format         file                                         runs in
=============  ===========================================  ================================
onnx           fp32 ONNX                                    ONNX Runtime
onnx-fp16      fp16 ONNX (float32 inputs and outputs)       ONNX Runtime
onnx-int8      static int8 QDQ ONNX, calibrated on proxy    ONNX Runtime
openvino       OpenVINO IR; fp32, bf16 (a compile hint on   OpenVINO
               the fp32 IR) or int8 (NNCF)
tensorrt       serialized TensorRT engine (fp32/fp16/int8)  TensorRT (NVIDIA GPU only)
torchscript    ``torch.jit.trace`` archive                  torch
pt2            ``torch.export`` program                     torch
=============  ===========================================  ================================
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latency_predictors.onnx_export import export_onnx
from nas.compress.quantization import quantize_artifact, quantize_openvino, shaped
from nas.config import QuantizationConfig
from nas.errors import ExportError

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    precisions: tuple[str, ...]
    runtime: str
    description: str

    def check(self, precision: str) -> None:
        """`ExportError` if this format cannot be written or run here, or at `precision`."""
        if precision not in self.precisions:
            raise ExportError(
                f"format {self.name} has no precision {precision}; allowed: "
                f"{', '.join(self.precisions)}"
            )
        missing = {"openvino": "openvino", "tensorrt": "tensorrt"}.get(self.runtime)
        if missing and importlib.util.find_spec(missing) is None:
            raise ExportError(
                f"format {self.name} needs the '{missing}' package, not installed here: "
                f"pip install -e '.[{missing}]'"
            )
        if self.runtime == "openvino" and precision == "bf16":
            from latency_predictors.backends.openvino import bf16_unavailable_reason

            reason = bf16_unavailable_reason()
            if reason:
                raise ExportError(f"format openvino at bf16 cannot run here: {reason}")
        if self.runtime == "tensorrt":
            from latency_predictors.backends.tensorrt import gpu_unavailable_reason

            reason = gpu_unavailable_reason()
            if reason:
                raise ExportError(f"format tensorrt cannot be built here: {reason}")


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("onnx", ".onnx", ("fp32",), "onnxruntime", "fp32 ONNX"),
        Format("onnx-fp16", ".onnx", ("fp16",), "onnxruntime", "fp16 ONNX, float32 inputs"),
        Format("onnx-int8", ".onnx", ("int8",), "onnxruntime", "static int8 QDQ ONNX"),
        Format("openvino", ".xml", ("fp32", "bf16", "int8"), "openvino", "OpenVINO IR"),
        Format("tensorrt", ".engine", ("fp32", "fp16", "int8"), "tensorrt", "TensorRT engine"),
        Format("torchscript", ".pt", ("fp32",), "torch", "TorchScript (torch.jit.trace)"),
        Format("pt2", ".pt2", ("fp32",), "torch", "torch.export program"),
    )
}


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise ExportError(f"unknown format {name!r}; allowed: {', '.join(FORMATS)}")
    return FORMATS[name]


def default_precision(fmt: Format) -> str:
    return fmt.precisions[0]


def write(
    fmt: Format,
    model: nn.Module,
    shape: tuple[int, ...],
    path: Path,
    *,
    precision: str,
    dynamic: bool = False,
    calibration: torch.Tensor | None = None,
    quantization: QuantizationConfig | None = None,
) -> Path:
    """Write `model` (eval mode, input `shape`) in `fmt` to `path`; returns the main file."""
    model.eval()
    q = quantization or QuantizationConfig()
    if fmt.name == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, torch.zeros(shape))
        traced.save(str(path))
        return path
    if fmt.name == "pt2":
        batch = torch.export.Dim("batch", min=1, max=4096) if dynamic else None
        dims = ({0: batch},) if batch is not None else None
        example = torch.zeros((2, *shape[1:]) if dynamic else shape)
        program = torch.export.export(model, (example,), dynamic_shapes=dims)
        torch.export.save(program, str(path))
        return path
    with tempfile.TemporaryDirectory(prefix="nas-format-") as tmp:
        fp32 = export_onnx(model, shape, Path(tmp) / "fp32.onnx", dynamic_batch=dynamic)
        if fmt.name == "onnx":
            path.write_bytes(fp32.read_bytes())
        elif fmt.name == "onnx-fp16":
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            half = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
            onnx.save(half, str(path))
        elif fmt.name == "onnx-int8":
            images = shaped(_need(calibration), shape[1], shape[-1])
            quantize_artifact(fp32, path, images, q)
        elif fmt.name == "openvino":
            import openvino as ov

            if precision == "int8":
                images = shaped(_need(calibration), shape[1], shape[-1])
                quantize_openvino(fp32, path, images, q)
            else:
                ov.save_model(ov.convert_model(str(fp32)), str(path), compress_to_fp16=False)
        elif fmt.name == "tensorrt":
            from latency_predictors.backends.tensorrt import TensorRtBackend

            source = fp32
            if precision == "int8":  # explicit quantization: the calibrated QDQ model
                images = shaped(_need(calibration), shape[1], shape[-1])
                source = quantize_artifact(fp32, Path(tmp) / "int8.onnx", images, q)
            engine = TensorRtBackend(precision=precision).build_engine(source, shape)
            path.write_bytes(bytes(engine.serialize()))
        else:
            raise ExportError(f"unknown format {fmt.name!r}")
    return path


def _need(calibration: torch.Tensor | None) -> torch.Tensor:
    if calibration is None:
        raise ExportError("a quantized format needs calibration images")
    return calibration


def load(
    fmt: Format, path: Path, shape: tuple[int, ...], *, precision: str, threads: int
) -> Runner:
    """A function running the file at `path` in its runtime on float32 batches."""
    if fmt.runtime == "onnxruntime":
        from latency_predictors.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(threads=threads).runner(path, shape)
    if fmt.runtime == "openvino":
        from latency_predictors.backends.openvino import OpenVinoBackend

        hint = "bf16" if precision == "bf16" else "fp32"
        return OpenVinoBackend(threads=threads, precision=hint).runner(path, shape)
    if fmt.runtime == "tensorrt":
        from latency_predictors.backends.tensorrt import engine_runner, load_engine

        return engine_runner(load_engine(path), shape)
    torch.set_num_threads(threads)
    module: Any = (
        torch.jit.load(str(path))
        if fmt.name == "torchscript"
        else torch.export.load(str(path)).module()
    )

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(module(torch.from_numpy(x)).numpy())

    return run


def run_batches(run: Runner, x: np.ndarray, batch: int) -> np.ndarray:
    """Outputs for every row of `x`, through fixed-size batches (the last one padded)."""
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
        outs.append(np.asarray(run(chunk))[:n])
    return np.concatenate(outs)
