"""Measurement backends behind one interface."""

from __future__ import annotations

from typing import Any

from latency_predictors.backends.base import LatencyBackend, LatencyResult

__all__ = ["BACKENDS", "LatencyBackend", "LatencyResult", "make_backend"]

# Backend name -> import path of its class; imported only when used.
BACKENDS: dict[str, str] = {
    "onnxruntime": "latency_predictors.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "latency_predictors.backends.openvino:OpenVinoBackend",
    "tensorrt": "latency_predictors.backends.tensorrt:TensorRtBackend",
}


def make_backend(kind: str, **settings: Any) -> LatencyBackend:
    """Instantiate the backend registered as `kind` with keyword `settings`."""
    import importlib

    if kind not in BACKENDS:
        raise KeyError(f"unknown latency backend {kind!r}; available: {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[kind].partition(":")
    backend: LatencyBackend = getattr(importlib.import_module(module), cls)(**settings)
    return backend
