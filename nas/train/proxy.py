"""Proxy training: a short, deterministic training run that ranks candidates.

Every candidate of a run gets the same recipe and the same seed, so two evaluations of one
candidate give the same weights and the same accuracy. Accuracy is top-1 on the validation
split, which training never sees. After the last epoch BatchNorm statistics are re-estimated on
training batches (as Once-for-All does for sub-networks): after a few hundred steps the running
averages still lag the weights, and re-estimating them is cheap.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwnas_base.io import write_atomic
from nas.config import TrainingConfig
from nas.errors import TrainingDivergedError
from nas.train.data import ProxySplits

# (epoch, epochs, val_accuracy, train_loss) after each epoch.
EpochCallback = Callable[[int, int, float, float], None]
# (epoch, step, steps) during an epoch.
StepCallback = Callable[[int, int, int], None]


@dataclass(frozen=True)
class Distillation:
    """Knowledge distillation: the teacher's logits on every training image, and the loss mix.

    The loss is ``(1 - weight) * CE(student, labels) + weight * T^2 * KL(teacher_T || student_T)``
    with both distributions softened by temperature T (Hinton et al., 2015).
    """

    teacher_logits: torch.Tensor
    temperature: float
    weight: float

    def loss(self, logits: torch.Tensor, idx: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(logits / t, dim=1),
            F.log_softmax(self.teacher_logits[idx] / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        return (1 - self.weight) * hard + self.weight * t * t * soft


@dataclass
class TrainResult:
    accuracy: float
    train_loss: float
    epoch_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0


def make_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    # No weight decay on norm parameters and biases (timm's `param_groups_weight_decay`).
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def make_scheduler(
    opt: torch.optim.Optimizer, cfg: TrainingConfig, steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "onecycle":
        pct = max(cfg.warmup_fraction, 1e-3)
        if math.isclose(pct * steps, 1.0):  # OneCycleLR divides by zero on a one-step warm-up
            pct = 1.5 / steps
        return torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=cfg.lr,
            total_steps=steps,
            pct_start=pct,
            cycle_momentum=False,
        )
    if cfg.schedule == "cosine":
        warm = int(steps * cfg.warmup_fraction)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

        return torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


@contextmanager
def channels_last(model: nn.Module) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """Run `model` in channels-last memory format inside the block; yields the input
    conversion. On CPU this makes the small depthwise and 1x1 convolutions of EfficientNet
    candidates at 20-28 px about 1.3x faster, training and inference alike (measured at one
    thread); the weights are contiguous again afterwards."""
    model.to(memory_format=torch.channels_last)
    try:
        yield lambda x: x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
    finally:
        model.to(memory_format=torch.contiguous_format)


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128
) -> float:
    """Top-1 accuracy of `model` on (x, y), in batches of `batch_size` (128 runs faster on CPU
    than larger batches, whose activations leave the cache)."""
    model.eval()
    correct = 0
    with channels_last(model) as convert:
        for i in range(0, len(x), batch_size):
            out = model(convert(x[i : i + batch_size]))
            correct += int((out.argmax(1) == y[i : i + batch_size]).sum())
    return correct / len(x)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batches: int, batch_size: int) -> None:
    """Replace BatchNorm running statistics by exact averages over `batches` batches of `x`."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or batches == 0:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    with channels_last(model) as convert:
        for i in range(min(batches, math.ceil(len(x) / batch_size))):
            model(convert(x[i * batch_size : (i + 1) * batch_size]))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


def train_proxy(
    model: nn.Module,
    data: ProxySplits,
    cfg: TrainingConfig,
    *,
    seed: int,
    on_epoch: EpochCallback | None = None,
    on_step: StepCallback | None = None,
    distillation: Distillation | None = None,
    checkpoint: Path | None = None,
) -> TrainResult:
    """Train `model` in place on `data` and return its validation accuracy.

    With `distillation`, the loss mixes the labels with the teacher's softened predictions.
    With `checkpoint`, the model, optimiser, schedule and data order are saved after every
    epoch, and a run that finds the file goes on from the epoch after it (same result as an
    uninterrupted run).

    Raises:
        TrainingDivergedError: the loss became NaN or infinite.
    """
    start = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    state = _State(
        model=model,
        generator=torch.Generator().manual_seed(seed),
        opt=make_optimizer(model, cfg),
        steps_per_epoch=math.ceil(len(data.train_x) / cfg.batch_size),
    )
    state.sched = make_scheduler(state.opt, cfg, cfg.epochs * state.steps_per_epoch)
    result = TrainResult(accuracy=0.0, train_loss=math.nan)
    first = state.resume(checkpoint, result) if checkpoint is not None else 0
    for epoch in range(first, cfg.epochs):
        result.train_loss = _train_epoch(state, data, cfg, epoch, on_step, distillation)
        if epoch == cfg.epochs - 1:
            recalibrate_batchnorm(model, data.train_x, cfg.bn_recalibration_batches, cfg.batch_size)
        acc = evaluate_accuracy(model, data.val_x, data.val_y)
        result.epoch_accuracy.append(acc)
        if checkpoint is not None:
            state.save(checkpoint, epoch + 1, result)
        if on_epoch is not None:
            on_epoch(epoch + 1, cfg.epochs, acc, result.train_loss)
    result.accuracy = result.epoch_accuracy[-1]
    result.seconds = time.perf_counter() - start
    return result


@dataclass
class _State:
    """What a training run carries from step to step, and what its checkpoint holds."""

    model: nn.Module
    generator: torch.Generator
    opt: torch.optim.Optimizer
    steps_per_epoch: int
    sched: Any = None

    def resume(self, checkpoint: Path, result: TrainResult) -> int:
        """Load `checkpoint` when it exists; the epoch to go on from."""
        if not checkpoint.is_file():
            return 0
        saved = torch.load(checkpoint, weights_only=False)
        self.model.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["optimizer"])
        self.sched.load_state_dict(saved["scheduler"])
        self.generator.set_state(saved["generator"])
        result.epoch_accuracy = saved["epoch_accuracy"]
        return int(saved["epoch"])

    def save(self, checkpoint: Path, epochs_done: int, result: TrainResult) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "generator": self.generator.get_state(),
            "epoch": epochs_done,
            "epoch_accuracy": result.epoch_accuracy,
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomic(checkpoint, buffer.getvalue())


def _train_epoch(
    state: _State,
    data: ProxySplits,
    cfg: TrainingConfig,
    epoch: int,
    on_step: StepCallback | None,
    distillation: Distillation | None,
) -> float:
    """One pass over the training images in a seeded order; the mean training loss."""
    model = state.model
    model.train()
    order = torch.randperm(len(data.train_x), generator=state.generator)
    with channels_last(model) as convert:
        return _train_steps(state, data, cfg, epoch, order, convert, on_step, distillation)


def _train_steps(
    state: _State,
    data: ProxySplits,
    cfg: TrainingConfig,
    epoch: int,
    order: torch.Tensor,
    convert: Callable[[torch.Tensor], torch.Tensor],
    on_step: StepCallback | None,
    distillation: Distillation | None,
) -> float:
    model, opt = state.model, state.opt
    total, seen = 0.0, 0
    for step in range(state.steps_per_epoch):
        idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        if len(idx) < 2 and seen:  # a 1-image batch breaks BatchNorm; skip the remainder
            break
        logits = model(convert(data.train_x[idx]))
        loss = F.cross_entropy(logits, data.train_y[idx], label_smoothing=cfg.label_smoothing)
        if distillation is not None:
            loss = distillation.loss(logits, idx, loss)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                "lower training.lr"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state.sched.step()
        total += loss.item() * len(idx)
        seen += len(idx)
        if on_step is not None:
            on_step(epoch + 1, step + 1, state.steps_per_epoch)
    return total / max(seen, 1)
