"""TensorRT on an NVIDIA GPU: fp32, fp16 and int8 engines built from the ONNX model.

Needs the optional ``tensorrt`` package and a CUDA GPU that torch can see; without either,
constructing the backend fails with a message that says which is missing. Buffers live in torch
CUDA tensors, so no pycuda is needed. Every timed call synchronises, so a number is the latency
of one inference, not a throughput.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from latency_predictors.backends.base import (
    Runner,
    check_settings,
    is_quantized,
)
from latency_predictors.backends.metered import MeteredBackend
from latency_predictors.device import Device
from latency_predictors.protocol import AnchorStore, Call, Meter, ProtocolSettings

PRECISIONS = ("fp32", "fp16", "int8")


def gpu_unavailable_reason() -> str | None:
    """Why TensorRT cannot run here, or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt backend needs the 'tensorrt' package: pip install -e '.[tensorrt]'"
    import torch

    if not torch.cuda.is_available():
        return "the tensorrt backend needs an NVIDIA GPU, and torch sees no CUDA device here"
    return None


class TensorRtBackend(MeteredBackend):
    """Builds a TensorRT engine per model and times it on GPU 0 with the measurement protocol
    (`latency_predictors.protocol`): one call is an enqueue on a CUDA stream and its
    synchronisation; the reference network runs on the GPU too, so the GPU's clock changes are
    what the drift correction sees."""

    def __init__(
        self,
        *,
        name: str = "gpu-trt-fp16",
        threads: int = 1,
        warmup: int = 10,
        repeats: int = 50,
        batch_size: int = 1,
        precision: str = "fp16",
        workspace_mib: int = 1024,
        protocol: ProtocolSettings | None = None,
        anchors: AnchorStore | None = None,
    ) -> None:
        reason = gpu_unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        if precision not in PRECISIONS:
            raise ValueError(f"tensorrt precision {precision!r} unknown; allowed: {PRECISIONS}")
        check_settings(threads=threads, warmup=warmup, repeats=repeats, batch_size=batch_size)
        import tensorrt as trt
        import torch

        self._trt, self._torch = trt, torch
        self.warmup, self.repeats, self.precision = warmup, repeats, precision
        self.workspace_mib = workspace_mib
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._device = Device(
            name=name,
            hardware=torch.cuda.get_device_name(0),
            runtime="tensorrt",
            runtime_version=trt.__version__,
            precision=precision,
            batch_size=batch_size,
            threads=threads,
        )
        settings = replace(protocol or ProtocolSettings(), warmup=warmup, repeats=repeats)
        if settings.estimator == "cpu":
            settings = replace(settings, estimator="median")  # the host thread waits on the GPU
        self.meter = Meter(self._device, settings, self._prepare_reference, anchors)

    @property
    def device(self) -> Device:
        return self._device

    def build_engine(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Any:
        """A deserialized engine for `onnx_path` at a fixed `input_shape`."""
        trt = self._trt
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(Path(onnx_path).read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mib << 20)
        if self.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif self.precision == "int8" and is_quantized(onnx_path):
            # Explicit quantization: the QDQ pairs carry the calibrated scales.
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)
        elif self.precision == "int8":
            # Timing only: without a calibrator TensorRT uses placeholder dynamic ranges, which
            # gives int8 kernels and int8 speed but not int8 accuracy.
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)
            for i in range(network.num_layers):
                layer = network.get_layer(i)
                for j in range(layer.num_outputs):
                    layer.get_output(j).dynamic_range = (-4.0, 4.0)
            for i in range(network.num_inputs):
                network.get_input(i).dynamic_range = (-4.0, 4.0)
        profile = builder.create_optimization_profile()
        name = network.get_input(0).name
        profile.set_shape(name, input_shape, input_shape, input_shape)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT could not build an engine for {onnx_path}")
        return trt.Runtime(self._logger).deserialize_cuda_engine(serialized)

    def runner(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Runner:
        return engine_runner(self.build_engine(onnx_path, input_shape), input_shape)

    def _prepare(self, onnx_path: Path, input_shape: tuple[int, ...], tmp: Path) -> Call:
        engine = self.build_engine(onnx_path, input_shape)
        context, *buffers = bind(engine, input_shape)
        stream = self._torch.cuda.Stream()

        def call() -> None:
            context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()

        call.keep = (engine, context, buffers)  # type: ignore[attr-defined]
        return call


def load_engine(path: Path) -> Any:
    """A serialized engine read back from `path`."""
    import tensorrt as trt

    return trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(path.read_bytes())


def bind(engine: Any, input_shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
    """An execution context with CUDA buffers bound: (context, input tensor, output tensor)."""
    import tensorrt as trt
    import torch

    context = engine.create_execution_context()
    inputs: list[Any] = []
    outputs: list[Any] = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        if is_input:
            context.set_input_shape(name, input_shape)
        tensor = torch.randn(tuple(context.get_tensor_shape(name)), device="cuda")
        context.set_tensor_address(name, tensor.data_ptr())
        (inputs if is_input else outputs).append(tensor)
    return context, inputs[0], outputs[0]


def engine_runner(engine: Any, input_shape: tuple[int, ...]) -> Runner:
    """A function running `engine` on host batches of `input_shape`."""
    import torch

    context, x_gpu, y_gpu = bind(engine, input_shape)

    def run(x: np.ndarray) -> np.ndarray:
        x_gpu.copy_(torch.from_numpy(x))
        stream = torch.cuda.current_stream()
        context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return np.asarray(y_gpu.cpu().numpy())

    run.engine = engine  # type: ignore[attr-defined]  # keeps the engine alive
    return run
