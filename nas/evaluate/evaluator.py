"""The one evaluation function: candidate -> (accuracy, latency, size).

Every search backend (the in-process Optuna loop, the Ray Tune trainable) calls `Evaluator` and
nothing else, so a candidate scores the same wherever it runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from hwnas_base.progress import PhaseProgress, quiet
from latency_predictors.backends import LatencyResult
from latency_predictors.deployment import Deployment
from latency_predictors.measure import deployment_shape
from latency_predictors.sources import LatencySource
from nas.compress.compressor import Compressor
from nas.compress.space import Compression
from nas.config import TrainingConfig
from nas.record import ACCURACY, CANDIDATE, LATENCY, STOP_REASON
from nas.train.data import ProxySplits
from nas.train.distillation import Teacher
from nas.train.proxy import Distillation, TrainResult, train_proxy
from nas.train.weights import PruningHistory, history_path, save_history, save_weights
from search_spaces.base import SearchSpace
from search_spaces.flops import count_flops, count_params

# (epoch, accuracy after it, latency ms) -> why to stop training now, or None.
StopCheck = Callable[[int, float, float], str | None]


class StoppedEarly(Exception):
    """Proxy training was stopped between epochs; `attrs` is what was measured until then."""

    def __init__(self, reason: str, attrs: dict[str, Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attrs = attrs


@dataclass
class Outcome:
    """What one evaluation measured."""

    candidate: str
    accuracy: float
    latency: LatencyResult
    params: int
    flops: int
    proxy_input_size: int
    epoch_accuracy: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    latency_cached: bool = False
    accuracy_trained: float | None = None
    compression: dict[str, Any] = field(default_factory=dict)
    # Where the accuracy comes from: trained (proxy training from scratch), supernet
    # (inherited weights), or table (a benchmark's recorded accuracy).
    accuracy_source: str = "trained"

    @property
    def values(self) -> tuple[float, float]:
        """Objectives in study order: accuracy (maximise), median latency in ms (minimise)."""
        return self.accuracy, self.latency.p50_ms

    def attrs(self) -> dict[str, Any]:
        """Flat JSON-safe record stored with the trial."""
        lat = self.latency
        return {
            CANDIDATE: self.candidate,
            ACCURACY: self.accuracy,
            LATENCY: lat.p50_ms,
            "latency_p90_ms": lat.p90_ms,
            "latency_mean_ms": lat.mean_ms,
            "latency_std_ms": lat.std_ms,
            "latency_n_runs": lat.n_runs,
            "latency_cached": self.latency_cached,
            "latency_source": lat.source,
            "latency_predicted_ms": lat.predicted_ms,
            "latency_uncertainty": lat.uncertainty,
            "latency_spread": lat.spread,
            "latency_drift": lat.drift,
            "device": lat.device.to_dict(),
            "params": self.params,
            "flops": self.flops,
            "proxy_input_size": self.proxy_input_size,
            "epoch_accuracy": self.epoch_accuracy,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "accuracy_trained": self.accuracy_trained,
            "accuracy_source": self.accuracy_source,
            **self.compression,
        }


class CandidateEvaluator(Protocol):
    """What a search loop calls: `Evaluator` (train and measure) or
    `nas.evaluate.tabular.TabularEvaluator` (look up)."""

    space: SearchSpace

    def __call__(
        self,
        candidate: Any,
        *,
        compression: Compression | None = None,
        weights_path: Path | None = None,
        progress: PhaseProgress = quiet,
        stop: StopCheck | None = None,
    ) -> Outcome: ...


class Evaluator:
    """Scores candidates of one space on one proxy dataset and one device.

    Args:
        space: The search space that builds candidates.
        data: Proxy training and validation splits.
        training: Proxy-training recipe.
        deployment: Shape at which latency is measured.
        latency: Where latency comes from: measured, predicted or hybrid. With compression,
            this is the fp32 parent's latency, used by early stopping and as the reference.
        seed: Seed for weight initialisation and data order; the same for every candidate.
        compressor: Prunes, fine-tunes, quantizes and scores the artifact, when the search has
            compression dimensions.
        teacher: Distillation teacher, when proxy training distils.
        finetune_lr_scale: Fine-tuning learning rate as a share of `training.lr`.
    """

    def __init__(
        self,
        *,
        space: SearchSpace,
        data: ProxySplits,
        training: TrainingConfig,
        deployment: Deployment,
        latency: LatencySource,
        seed: int = 0,
        compressor: Compressor | None = None,
        teacher: Teacher | None = None,
        finetune_lr_scale: float = 1.0,
    ) -> None:
        self.space = space
        self.data = data
        self.training = training
        self.deployment = deployment
        self.latency = latency
        self.seed = seed
        self.compressor = compressor
        self.teacher = teacher
        self.finetune_lr_scale = finetune_lr_scale
        self._resized: dict[int, ProxySplits] = {}

    def deployment_shape(self, candidate: Any) -> tuple[int, int, int, int]:
        return deployment_shape(self.space, candidate, self.deployment)

    def proxy_data(self, candidate: Any) -> ProxySplits:
        size = self.space.proxy_input_size(candidate, self.data.image_size)
        if size not in self._resized:
            self._resized[size] = self.data.resized(size)
        return self._resized[size]

    def build_proxy(self, candidate: Any) -> torch.nn.Module:
        """The proxy-shape network with this evaluator's seeded initialisation."""
        torch.manual_seed(self.seed)
        size = self.space.proxy_input_size(candidate, self.data.image_size)
        return self.space.build(
            candidate, self.data.num_classes, self.data.channels, input_size=size
        )

    def measure_latency(
        self, candidate: Any, model: torch.nn.Module | None = None
    ) -> tuple[LatencyResult, bool]:
        """Latency at the deployment shape (measured, predicted or both), and whether cached.

        Args:
            candidate: What to measure.
            model: The candidate's deployment-shape network, if the caller has built it.
        """
        return self.latency(candidate, model)

    def _distillation(self, data: ProxySplits, progress: PhaseProgress) -> Distillation | None:
        return None if self.teacher is None else self.teacher.distillation(data, progress)

    def finetune(self, data: ProxySplits, progress: PhaseProgress) -> Any:
        """A function that fine-tunes a network for some epochs at the fine-tuning rate."""

        def run(model: torch.nn.Module, epochs: int) -> float:
            recipe = self.training.model_copy(
                update={"epochs": epochs, "lr": self.training.lr * self.finetune_lr_scale}
            )

            def on_step(epoch: int, step: int, steps: int) -> None:
                progress(f"fine-tuning, epoch {epoch}/{epochs}", step, steps)

            result = train_proxy(
                model,
                data,
                recipe,
                seed=self.seed + 1,
                on_step=on_step,
                distillation=self._distillation(data, progress),
            )
            return result.accuracy

        return run

    def __call__(
        self,
        candidate: Any,
        *,
        compression: Compression | None = None,
        weights_path: Path | None = None,
        progress: PhaseProgress = quiet,
        stop: StopCheck | None = None,
    ) -> Outcome:
        """Measure, train, compress and score `candidate`; save the weights to `weights_path`.

        Without a compressor, accuracy is the trained network's in torch and latency the
        latency source's. With one, both come from the compressed artifacts (see
        `nas.compress.compressor`), and the pruning history is saved beside the weights.

        Raises:
            StoppedEarly: `stop` asked to stop after an epoch before the last.
        """
        began = time.perf_counter()
        outcome = self._measure(candidate, progress)
        data = self.proxy_data(candidate)
        model = self.build_proxy(candidate)
        start = time.perf_counter()
        result = self._train(model, data, outcome, progress, stop)
        outcome.accuracy = outcome.accuracy_trained = result.accuracy
        outcome.epoch_accuracy = result.epoch_accuracy
        if self.compressor is not None:
            history = self._compress(
                self.compressor,
                candidate,
                compression or Compression(),
                model,
                data,
                outcome,
                progress,
            )
            if weights_path is not None and history:
                save_history(history, history_path(weights_path))
        outcome.train_seconds = time.perf_counter() - start
        if weights_path is not None:
            save_weights(model, weights_path)
        outcome.eval_seconds = time.perf_counter() - began
        return outcome

    def _measure(self, candidate: Any, progress: PhaseProgress) -> Outcome:
        """Size and latency of the deployment-shape network, before any training."""
        progress("measuring size", 0, 1)
        deploy = self.space.build(candidate, self.deployment.num_classes, self.deployment.channels)
        params = count_params(deploy)
        flops = count_flops(deploy, self.deployment_shape(candidate))
        progress(f"latency on {self.latency.device.name}", 0, 1)
        latency, cached = self.measure_latency(candidate, deploy)
        return Outcome(
            candidate=self.space.encode(candidate),
            accuracy=float("nan"),
            latency=latency,
            params=params,
            flops=flops,
            proxy_input_size=self.space.proxy_input_size(candidate, self.data.image_size),
            latency_cached=cached,
        )

    def _train(
        self,
        model: torch.nn.Module,
        data: ProxySplits,
        outcome: Outcome,
        progress: PhaseProgress,
        stop: StopCheck | None,
    ) -> TrainResult:
        """Proxy training, asking `stop` after each epoch but the last."""
        epochs = self.training.epochs
        so_far: list[float] = []

        def on_step(epoch: int, step: int, steps: int) -> None:
            progress(f"training {data.image_size}px, epoch {epoch}/{epochs}", step, steps)

        def on_epoch(epoch: int, total: int, acc: float, loss: float) -> None:
            progress(f"epoch {epoch}/{total}: val acc {acc:.3f}, loss {loss:.3f}", 1, 1)
            so_far.append(acc)
            reason = stop(epoch, acc, outcome.latency.p50_ms) if stop and epoch < total else None
            if reason is not None:
                partial = replace(outcome, accuracy=acc, epoch_accuracy=list(so_far))
                raise StoppedEarly(reason, {**partial.attrs(), STOP_REASON: reason})

        return train_proxy(
            model,
            data,
            self.training,
            seed=self.seed,
            on_epoch=on_epoch,
            on_step=on_step,
            distillation=self._distillation(data, progress),
        )

    def _compress(
        self,
        compressor: Compressor,
        candidate: Any,
        compression: Compression,
        model: torch.nn.Module,
        data: ProxySplits,
        outcome: Outcome,
        progress: PhaseProgress,
    ) -> PruningHistory:
        """Compress the trained `model` and put the artifact's scores into `outcome`."""
        parent, parent_cached = outcome.latency, outcome.latency_cached
        score = compressor(
            candidate,
            compression,
            model,
            data,
            finetune=self.finetune(data, progress),
            progress=progress,
            parent=parent,
            parent_cached=parent_cached,
        )
        outcome.compression = {
            **score.attrs,
            "params_parent": outcome.params,
            "flops_parent": outcome.flops,
            "latency_parent_cached": parent_cached,
        }
        outcome.accuracy, outcome.latency = score.accuracy, score.latency
        outcome.latency_cached = score.latency_cached
        outcome.params, outcome.flops = score.params, score.flops
        return score.history
