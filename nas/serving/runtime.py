"""A variant as the server sees it: its exported file run in its own runtime with the model
card's settings, and the decoding of request bodies into the input that file expects.

Decoding is strict and every refusal is an `InputError` with one message and an HTTP status
(400 malformed, 413 too large, 415 unsupported media type, 422 wrong shape or dtype): bad input
never reaches a runtime, so it can neither crash a replica nor count as a server error.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import ConfigError

Runner = Callable[[np.ndarray], np.ndarray]
SUFFIX = {"onnxruntime": ".onnx", "openvino": ".xml", "tensorrt": ".engine"}
IMAGE_TYPES = ("image/png", "image/jpeg")
NPY_TYPES = ("application/x-npy", "application/octet-stream")
MAX_BATCH_IN_REQUEST = 64


class InputError(ValueError):
    """A request the server refuses: an HTTP status and one message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class VariantSpec:
    """Everything a replica needs to serve one variant: plain values, cheap to ship to Ray."""

    name: str
    path: Path  # the model file
    runtime: str  # onnxruntime | openvino | tensorrt
    precision: str
    threads: int
    shape: tuple[int, ...]  # (channels, height, width)
    dynamic_batch: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]


def variant_spec(name: str, folder: Path, file: str, threads: int | None) -> VariantSpec:
    """Read an export folder's model card into a `VariantSpec`; `ConfigError` naming the
    variant and what is missing when the folder is not a usable export."""
    card_path = folder / "model_card.json"
    if not card_path.is_file():
        raise ConfigError(
            f"variant {name}: {folder} has no model_card.json; give a folder written by "
            "`nas export`"
        )
    try:
        card = json.loads(card_path.read_text("utf-8"))
        fmt = card["format"]
        runtime = fmt["runtime"]
        inputs = card["inputs"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"variant {name}: {card_path} is not a model card: {e}") from None
    if runtime not in SUFFIX:
        raise ConfigError(
            f"variant {name}: format {fmt.get('name')} runs in {runtime}; serving runs "
            f"{', '.join(SUFFIX)} files"
        )
    path = folder / f"{file}{SUFFIX[runtime]}"
    entry = card.get("files", {}).get(path.name)
    if not path.is_file() or entry is None:
        raise ConfigError(f"variant {name}: {path} missing; export it again")
    shape = entry["input_shape"]
    latency = card.get("exported_latency", {})
    return VariantSpec(
        name=name,
        path=path,
        runtime=runtime,
        precision=str(fmt.get("precision", "fp32")),
        threads=int(threads or latency.get("threads") or 1),
        shape=tuple(int(d) for d in shape[1:]),
        dynamic_batch=shape[0] is None,
        mean=tuple(float(m) for m in inputs["mean"]),
        std=tuple(float(s) for s in inputs["std"]),
        classes=tuple(inputs.get("classes") or ()),
    )


def load_runner(spec: VariantSpec) -> Runner:
    """A function from a float32 NCHW batch to logits, running the file in its runtime."""
    shape = (1, *spec.shape)
    if spec.runtime == "onnxruntime":
        from latency_predictors.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(threads=spec.threads).runner(spec.path, shape)
    if spec.runtime == "openvino":
        from latency_predictors.backends.openvino import OpenVinoBackend

        hint = "bf16" if spec.precision == "bf16" else "fp32"
        return OpenVinoBackend(threads=spec.threads, precision=hint).runner(spec.path, shape)
    from latency_predictors.backends.tensorrt import engine_runner, load_engine

    return engine_runner(load_engine(spec.path), shape)


def normalize(spec: VariantSpec, pixels: np.ndarray) -> np.ndarray:
    """Pixels in [0, 1], NCHW, to the model's input (the card's per-channel mean and std)."""
    mean = np.asarray(spec.mean, np.float32)[None, :, None, None]
    std = np.asarray(spec.std, np.float32)[None, :, None, None]
    return ((pixels - mean) / std).astype(np.float32)


def decode_image(spec: VariantSpec, data: bytes) -> np.ndarray:
    """A PNG or JPEG as one normalised input row (1, C, H, W), resized to the model's side."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ("PNG", "JPEG"):
                raise InputError(415, f"image format {img.format} not served; send PNG or JPEG")
            mode = "L" if spec.shape[0] == 1 else "RGB"
            size = (spec.shape[2], spec.shape[1])
            resized = img.convert(mode).resize(size, Image.Resampling.BILINEAR)
            arr = np.asarray(resized, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise InputError(400, "body is not a readable PNG or JPEG image") from None
    arr = arr[None, None] if arr.ndim == 2 else arr.transpose(2, 0, 1)[None]
    return normalize(spec, arr)


def check_array(spec: VariantSpec, arr: Any, *, what: str) -> np.ndarray:
    """A model input given as an array: (C, H, W) or (N, C, H, W), already normalised."""
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        kind = getattr(getattr(arr, "dtype", None), "name", type(arr).__name__)
        raise InputError(422, f"{what}: dtype {kind} not served; send float32 numbers")
    if arr.ndim == 3:
        arr = arr[None]
    want = f"(C, H, W) or (N, C, H, W) with (C, H, W) = {spec.shape}"
    if arr.ndim != 4 or tuple(arr.shape[1:]) != spec.shape:
        raise InputError(422, f"{what}: shape {tuple(arr.shape)} is not {want}")
    if not 1 <= len(arr) <= MAX_BATCH_IN_REQUEST:
        raise InputError(422, f"{what}: {len(arr)} rows; send 1 to {MAX_BATCH_IN_REQUEST}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InputError(422, f"{what}: holds NaN or infinity")
    return arr


def decode_npy(spec: VariantSpec, data: bytes) -> np.ndarray:
    """A ``.npy`` body (numpy's format, read without pickle)."""
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(400, f"body is not a .npy array (read without pickle): {e}") from None
    return check_array(spec, arr, what="npy body")


def decode_json_input(spec: VariantSpec, body: dict[str, Any]) -> np.ndarray:
    """The ``inputs`` (nested lists, normalised) or ``image`` (base64 PNG/JPEG) of a JSON body."""
    if "image" in body:
        if not isinstance(body["image"], str):
            raise InputError(422, "image: a base64 string of a PNG or JPEG file")
        try:
            raw = base64.b64decode(body["image"], validate=True)
        except (binascii.Error, ValueError):
            raise InputError(422, "image: not valid base64") from None
        return decode_image(spec, raw)
    if "inputs" not in body:
        raise InputError(422, "JSON body needs 'inputs' (numbers) or 'image' (base64 PNG/JPEG)")
    try:
        arr = np.asarray(body["inputs"], dtype=np.float32)
    except (ValueError, TypeError):
        raise InputError(422, "inputs: not a rectangular array of numbers") from None
    return check_array(spec, arr, what="inputs")
