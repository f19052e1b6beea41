"""From a trained proxy network to the compressed artifact that would ship, scored for real.

Order follows practice: train (done by the caller), prune, fine-tune, quantize. Two artifacts
come out of one compressed network:

- the proxy artifact (the proxy images' side and channels, the dataset's classes), exported to
  ONNX, quantized when the precision is int8, and run by the target runtime on the validation
  split: that is the candidate's accuracy;
- the deployment artifact (the candidate's resolution, the deployment channels and classes),
  with the same pruned channels (Torch-Pruning's history replayed), the trained weights, the
  same quantization recipe, measured on the target runtime at that precision: that is the
  candidate's latency.

The fp32 unpruned parent's latency on the same runtime is measured beside it, and a compression
that made the model slower is flagged.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas_base.progress import PhaseProgress, quiet
from latency_predictors.backends import LatencyBackend, LatencyResult
from latency_predictors.cache import LatencyCache, latency_key
from latency_predictors.deployment import Deployment
from latency_predictors.measure import deployment_shape
from latency_predictors.onnx_export import export_onnx
from nas.compress.pruning import channel_signature, prune
from nas.compress.quantization import (
    quantize_artifact,
    quantize_openvino,
    runtime_accuracy,
    shaped,
)
from nas.compress.space import Compression
from nas.config import CompressionConfig
from nas.errors import CompressionError, LatencyError
from nas.train.data import ProxySplits
from nas.train.proxy import evaluate_accuracy
from nas.train.weights import PruningHistory, replay, transfer_weights
from search_spaces.flops import count_flops, count_params

# Fine-tunes a network in place for some epochs; returns its validation accuracy.
FineTune = Callable[[nn.Module, int], float]


@dataclass
class CompressedScore:
    """What scoring one compressed artifact measured."""

    accuracy: float
    latency: LatencyResult
    latency_cached: bool
    params: int
    flops: int
    history: PruningHistory
    attrs: dict[str, Any] = field(default_factory=dict)


class Compressor:
    """Prunes, fine-tunes and quantizes a trained candidate, and scores the artifacts.

    Args:
        config: The run's compression settings.
        space: The search space (builds the deployment network).
        deployment: The deployment shape.
        backends: One measurement backend per precision of the search, all on one runtime.
        calibration: Normalised proxy-shaped images for int8 calibration.
        cache: Persistent latency cache, or None.
    """

    def __init__(
        self,
        *,
        config: CompressionConfig,
        space: Any,
        deployment: Deployment,
        backends: dict[str, LatencyBackend],
        calibration: torch.Tensor,
        cache: LatencyCache | None = None,
    ) -> None:
        self.config, self.space, self.deployment = config, space, deployment
        self.backends, self.calibration, self.cache = backends, calibration, cache

    def prune_and_finetune(
        self,
        model: nn.Module,
        compression: Compression,
        data: ProxySplits,
        finetune: FineTune,
        progress: PhaseProgress = quiet,
    ) -> tuple[PruningHistory, dict[str, Any]]:
        """Prune `model` in place and fine-tune it; unpruned candidates get the same epochs."""
        cfg = self.config.pruning
        attrs: dict[str, Any] = {}
        if not cfg.enabled:
            return [], attrs
        epochs = cfg.finetune_epochs
        if not compression.pruned:
            attrs["accuracy_finetuned"] = finetune(model, epochs) if epochs else None
            return [], attrs
        steps = cfg.iterative_steps
        per_step = [epochs // steps + (i < epochs % steps) for i in range(steps)]

        def between(step: int, total: int) -> None:
            progress(f"pruning step {step}/{total}", step, total)
            if step == total:
                attrs["accuracy_pruned"] = evaluate_accuracy(model, data.val_x, data.val_y)
            if per_step[step - 1]:
                attrs["accuracy_finetuned"] = finetune(model, per_step[step - 1])

        before = count_params(model)
        try:
            history = prune(model, data.train_x[:2], compression.prune, cfg, between_steps=between)
        except (RuntimeError, ValueError, IndexError) as e:
            raise CompressionError(f"pruning failed: {type(e).__name__}: {e}") from e
        attrs.setdefault("accuracy_finetuned", attrs["accuracy_pruned"])
        attrs["proxy_params_removed"] = 1 - count_params(model) / before
        return history, attrs

    def __call__(
        self,
        candidate: Any,
        compression: Compression,
        model: nn.Module,
        data: ProxySplits,
        *,
        finetune: FineTune,
        progress: PhaseProgress = quiet,
        parent: LatencyResult,
        parent_cached: bool = False,
    ) -> CompressedScore:
        """Compress the trained proxy `model` in place and score its artifacts.

        Raises:
            CompressionError: pruning, export or quantization failed.
            LatencyError: the artifact could not be measured.
        """
        history, attrs = self.prune_and_finetune(model, compression, data, finetune, progress)
        precision = compression.precision
        backend = self.backends[precision]
        with tempfile.TemporaryDirectory(prefix="nas-artifact-") as tmp_name:
            tmp = Path(tmp_name)
            progress(f"scoring the {precision} artifact on {backend.device.name}", 0, 2)
            accuracy = self.artifact_accuracy(model, data, precision, tmp)
            deploy, shape = self.deployment_network(candidate, model, history)
            params, flops = count_params(deploy), count_flops(deploy, shape)
            progress(f"latency of the {precision} artifact on {backend.device.name}", 1, 2)
            key = latency_key(
                self.space.name,
                self.space.encode(candidate),
                shape,
                self.deployment.num_classes,
                variant=f"|{compression.encode()}#{channel_signature(deploy)}",
            )
            hit = self.cache.get(backend.device, key) if self.cache is not None else None
            if not compression.compressed:  # the artifact is the parent, already measured
                hit = parent
            if hit is None:
                path = self.artifact(deploy, shape, precision, tmp / "deploy")
                latency = backend.measure(path, shape)
                if not latency.ok:
                    raise LatencyError(
                        f"latency of the {precision} artifact failed on {backend.device.name}: "
                        f"{latency.error}"
                    )
                if self.cache is not None:
                    self.cache.put(key, latency)
            else:
                latency = hit
        speedup = parent.p50_ms / latency.p50_ms
        attrs.update(
            {
                "prune_ratio": compression.prune_ratio,
                "prune_ratios": list(compression.prune),
                "precision": precision,
                "accuracy_artifact": accuracy,
                "latency_parent_ms": parent.p50_ms,
                "parent_device": parent.device.name,
                "speedup_vs_parent": speedup,
                "slower_than_parent": bool(compression.compressed and speedup < 1.0),
                "compression": compression.encode(),
            }
        )
        cached = hit is not None and (compression.compressed or parent_cached)
        return CompressedScore(accuracy, latency, cached, params, flops, history, attrs)

    def artifact_accuracy(
        self, model: nn.Module, data: ProxySplits, precision: str, folder: Path
    ) -> float:
        """Validation accuracy of the proxy artifact at `precision`, run by the target runtime."""
        backend = self.backends[precision]
        side = data.image_size
        path = self.artifact(
            model, (1, data.channels, side, side), precision, folder / "proxy", dynamic=True
        )
        try:
            return runtime_accuracy(backend, path, data.val_x, data.val_y)
        except Exception as e:  # runtimes raise their own types
            raise CompressionError(
                f"{backend.device.runtime} could not run the {precision} artifact: "
                f"{type(e).__name__}: {e}"
            ) from e

    def deployment_network(
        self, candidate: Any, model: nn.Module, history: PruningHistory
    ) -> tuple[nn.Module, tuple[int, int, int, int]]:
        """The deployment-shape network with `model`'s channels and trained weights."""
        deploy = self.space.build(candidate, self.deployment.num_classes, self.deployment.channels)
        shape = deployment_shape(self.space, candidate, self.deployment)
        if history:
            replay(deploy, torch.zeros((1, *shape[1:])), history)
        transfer_weights(model, deploy)
        return deploy, shape

    def artifact(
        self,
        model: nn.Module,
        shape: tuple[int, ...],
        precision: str,
        stem: Path,
        *,
        dynamic: bool = False,
    ) -> Path:
        """ONNX file of `model` at `precision`: fp32 for fp32/fp16/bf16 (the runtime lowers the
        precision when it compiles), a calibrated QDQ model for int8."""
        fp32 = export_onnx(model, shape, stem.with_name(stem.name + ".onnx"), dynamic_batch=dynamic)
        if precision != "int8":
            return fp32
        images = shaped(self.calibration, shape[1], shape[-1])
        q = self.config.quantization
        if self.backends[precision].device.runtime == "openvino" and q.openvino_int8 == "nncf":
            return quantize_openvino(fp32, stem.with_name(stem.name + "_int8.xml"), images, q)
        return quantize_artifact(fp32, stem.with_name(stem.name + "_int8.onnx"), images, q)
