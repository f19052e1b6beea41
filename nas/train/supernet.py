"""Training a weight-sharing supernet once, and scoring any sub-network with its weights.

Training follows BigNAS's sandwich rule with in-place distillation: every step trains the
largest sub-network on the labels, then the smallest and `random_subnets` random ones on the
largest one's softened predictions (detached), accumulating the gradients of all of them before
one optimiser step. The largest network learns from the data, the others learn to agree with it,
and training the two extremes every step keeps both ends of the space trained. Each sub-network
sees the proxy images at its own input size (its resolution scaled like the data's). Steps run
in channels-last memory format (faster on CPU for these small convolutions); the
weights are contiguous again for every checkpoint and score.

A run is deterministic for a seed: the data order and the sub-networks drawn depend only on
(seed, epoch, step). After every epoch the supernet, optimiser and schedule are checkpointed
atomically; a run that finds the checkpoint goes on from the next epoch and ends with the same
weights as an uninterrupted one. Files are loaded with ``weights_only=True``: nothing in them
is unpickled as an object.

A sub-network's accuracy is measured the way Once-for-All measures it: extracted as a static
module, its BatchNorm statistics re-estimated on a few training batches, then scored on the
validation split.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hwnas_base.io import write_atomic
from hwnas_base.progress import PhaseProgress, quiet
from nas.config import SupernetConfig, TrainingConfig
from nas.errors import NASError, TrainingDivergedError
from nas.train.data import ProxySplits
from nas.train.proxy import (
    channels_last,
    evaluate_accuracy,
    make_optimizer,
    make_scheduler,
    recalibrate_batchnorm,
)
from search_spaces.efficientnet import EfficientNetCandidate, EfficientNetSpace, fold_batchnorm
from search_spaces.efficientnet.supernet import EfficientNetSupernet

FORMAT = "nas-supernet/1"


class SupernetFileError(NASError, ValueError):
    """A supernet file that cannot be used here: corrupt, or for another space or data."""


@dataclass
class SupernetHistory:
    """Per epoch: the largest and smallest sub-networks' validation accuracy, mean loss, time."""

    largest_accuracy: list[float] = field(default_factory=list)
    smallest_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[float]]:
        return {
            "largest_accuracy": self.largest_accuracy,
            "smallest_accuracy": self.smallest_accuracy,
            "train_loss": self.train_loss,
            "seconds": self.seconds,
        }


class SplitsBySize:
    """The proxy splits at each input size a sub-network asks for, resized once."""

    def __init__(self, data: ProxySplits, space: EfficientNetSpace) -> None:
        self.data, self.space = data, space
        self._by_size: dict[int, ProxySplits] = {}

    def size(self, candidate: EfficientNetCandidate) -> int:
        return self.space.proxy_input_size(candidate, self.data.image_size)

    def at(self, size: int) -> ProxySplits:
        if size not in self._by_size:
            self._by_size[size] = self.data.resized(size)
        return self._by_size[size]


def _step_rng(seed: int, epoch: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, step])


def train_supernet(
    supernet: EfficientNetSupernet,
    data: ProxySplits,
    cfg: TrainingConfig,
    recipe: SupernetConfig,
    *,
    seed: int,
    checkpoint: Path | None = None,
    progress: PhaseProgress = quiet,
    on_epoch: Callable[[int, SupernetHistory], None] | None = None,
) -> SupernetHistory:
    """Train `supernet` in place with the sandwich rule; the per-epoch history.

    Args:
        supernet: The supernet to train.
        data: Proxy splits at the data's own image size.
        cfg: Optimiser, learning rate, schedule, batch size, label smoothing, threads; the
            BatchNorm re-estimation of the sub-networks scored after each epoch.
        recipe: Epochs, random sub-networks per step, in-place distillation, and the batch
            size, learning rate and BatchNorm re-estimation that replace `cfg`'s.
        seed: Data order and sub-networks drawn.
        checkpoint: Saved after every epoch (atomically); resumed from when it exists.
        progress: (phase, step, steps) during each epoch.
        on_epoch: Called with (epochs done, history) after each epoch.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite.
        SupernetFileError: the checkpoint is corrupt or belongs to another supernet.
    """
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    space = supernet.space
    sizes = SplitsBySize(data, space)
    optim = recipe.training(cfg)  # batch size and learning rate of the supernet's own steps
    steps_per_epoch = math.ceil(len(data.train_x) / optim.batch_size)
    opt = make_optimizer(supernet, optim)
    sched = make_scheduler(opt, optim, recipe.epochs * steps_per_epoch)
    first, history = _resume(checkpoint, supernet, opt, sched)
    largest, smallest = space.largest(), space.smallest()
    for epoch in range(first, recipe.epochs):
        start = time.perf_counter()
        history.train_loss.append(
            _train_epoch(
                supernet,
                data,
                sizes,
                cfg,
                recipe,
                opt=opt,
                sched=sched,
                seed=seed,
                epoch=epoch,
                progress=progress,
            )
        )
        scoring = recipe.scoring(cfg)
        history.largest_accuracy.append(score_subnet(supernet, largest, data, scoring, sizes=sizes))
        history.smallest_accuracy.append(
            score_subnet(supernet, smallest, data, scoring, sizes=sizes)
        )
        history.seconds.append(time.perf_counter() - start)
        if checkpoint is not None:
            last = epoch + 1 == recipe.epochs
            save_supernet_file(
                checkpoint,
                supernet,
                epoch=epoch + 1,
                history=history,
                optimizer=None if last else opt.state_dict(),
                scheduler=None if last else sched.state_dict(),
                finished=last,
            )
        if on_epoch is not None:
            on_epoch(epoch + 1, history)
    return history


def _train_epoch(
    supernet: EfficientNetSupernet,
    data: ProxySplits,
    sizes: SplitsBySize,
    cfg: TrainingConfig,
    recipe: SupernetConfig,
    *,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    seed: int,
    epoch: int,
    progress: PhaseProgress,
) -> float:
    """One epoch of sandwich steps in the order drawn for (seed, epoch); the mean loss."""
    space = supernet.space
    batch = recipe.training(cfg).batch_size
    steps = math.ceil(len(data.train_x) / batch)
    largest, smallest = space.largest(), space.smallest()
    supernet.train()
    order = torch.randperm(
        len(data.train_x), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)
    )
    total, seen = 0.0, 0
    with channels_last(supernet.net) as convert:
        for step in range(steps):
            idx = order[step * batch : (step + 1) * batch]
            if len(idx) < 2 and seen:  # a 1-image batch breaks BatchNorm
                break
            rng = _step_rng(seed, epoch, step)
            others = [smallest, *(space.sample(rng) for _ in range(recipe.random_subnets))]
            opt.zero_grad(set_to_none=True)

            def images(c: EfficientNetCandidate, i: torch.Tensor = idx) -> torch.Tensor:
                return convert(sizes.at(sizes.size(c)).train_x[i])

            loss = _sandwich_step(
                supernet, images, data.train_y[idx], [largest, *others], cfg, recipe
            )
            opt.step()
            sched.step()
            total += loss * len(idx)
            seen += len(idx)
            progress(f"supernet epoch {epoch + 1}/{recipe.epochs}", step + 1, steps)
    return total / max(seen, 1)


def _resume(
    checkpoint: Path | None,
    supernet: EfficientNetSupernet,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[int, SupernetHistory]:
    """Load the checkpoint when there is one; (epochs done, history so far)."""
    if checkpoint is None or not checkpoint.is_file():
        return 0, SupernetHistory()
    saved = load_supernet_file(checkpoint, supernet)
    if saved["optimizer"]:  # absent once training has finished
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
    return int(saved["epoch"]), SupernetHistory(**saved["history"])


def _sandwich_step(
    supernet: EfficientNetSupernet,
    images: Callable[[EfficientNetCandidate], torch.Tensor],
    labels: torch.Tensor,
    candidates: list[EfficientNetCandidate],
    cfg: TrainingConfig,
    recipe: SupernetConfig,
) -> float:
    """Accumulate the gradients of one batch (`images` gives it at a candidate's input size):
    the first candidate (the largest) on the labels, the others on its softened predictions (or
    on the labels without distillation); the largest one's loss."""
    t = recipe.temperature
    soft: torch.Tensor | None = None
    first = math.nan
    for candidate in candidates:
        out = supernet(images(candidate), candidate)
        if soft is None or not recipe.distillation:
            loss = F.cross_entropy(out, labels, label_smoothing=cfg.label_smoothing)
        else:
            kl = F.kl_div(
                F.log_softmax(out / t, dim=1), soft, reduction="batchmean", log_target=True
            )
            loss = kl * t * t
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"supernet loss became {loss.item()} on {candidate.encode()}; lower training.lr"
            )
        loss.backward()
        if soft is None:
            soft = F.log_softmax(out.detach() / t, dim=1)
            first = loss.item()
    return first


def score_subnet(
    supernet: EfficientNetSupernet,
    candidate: EfficientNetCandidate,
    data: ProxySplits,
    cfg: TrainingConfig,
    *,
    sizes: SplitsBySize | None = None,
) -> float:
    """Validation accuracy of `candidate` with inherited weights, BatchNorm re-estimated on
    `cfg.bn_recalibration_batches` training batches."""
    sizes = sizes or SplitsBySize(data, supernet.space)
    split = sizes.at(sizes.size(candidate))
    return inherited_accuracy(inherit(supernet, candidate, split, cfg), split.val_x, split.val_y)


def inherited_accuracy(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of an extracted sub-network on (x, y), scored on a copy with BatchNorm
    folded into the convolutions (`module` itself is untouched): the same answers as the
    module's, in about a tenth less time."""
    with torch.inference_mode():
        return evaluate_accuracy(fold_batchnorm(module), x, y)


def inherit(
    supernet: EfficientNetSupernet,
    candidate: EfficientNetCandidate,
    split: ProxySplits,
    cfg: TrainingConfig,
) -> torch.nn.Module:
    """`candidate` as a static module with the supernet's weights, its BatchNorm statistics
    re-estimated on `cfg.bn_recalibration_batches` batches of `split` (at its input size)."""
    module = supernet.extract_subnet(candidate, input_size=split.image_size)
    recalibrate_batchnorm(module, split.train_x, cfg.bn_recalibration_batches, cfg.batch_size)
    return module


def save_supernet_file(
    path: Path,
    supernet: EfficientNetSupernet,
    *,
    epoch: int,
    history: SupernetHistory,
    optimizer: dict[str, Any] | None = None,
    scheduler: dict[str, Any] | None = None,
    finished: bool = False,
) -> None:
    """Write the supernet's weights, what they belong to and how far training got, atomically.
    A finished supernet's file keeps no optimiser state: nothing is left to resume."""
    state = {
        "format": FORMAT,
        "describe": json.dumps(supernet.describe(), sort_keys=True),
        "weights": supernet.net.state_dict(),
        "epoch": epoch,
        "finished": finished,
        "history": history.to_dict(),
        "optimizer": optimizer or {},
        "scheduler": scheduler or {},
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def load_supernet_file(path: Path, supernet: EfficientNetSupernet) -> dict[str, Any]:
    """Load weights saved by `save_supernet_file` into `supernet`; the rest of the file.

    Raises:
        SupernetFileError: not a supernet file, corrupt, or trained for another space,
            another configuration of it, or another number of classes or channels.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SupernetFileError(f"{path}: not a readable supernet file ({reason})") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise SupernetFileError(f"{path}: not a supernet file (expected format {FORMAT})")
    theirs = json.loads(saved["describe"])
    ours = supernet.describe()
    different = sorted(k for k in ours if theirs.get(k) != ours[k])
    if different:
        raise SupernetFileError(
            f"{path}: trained for another supernet; {', '.join(different)} differ from this "
            "run's (train one for this configuration with `nas supernet train`)"
        )
    try:
        supernet.net.load_state_dict(saved["weights"])
    except RuntimeError as e:
        raise SupernetFileError(f"{path}: weights do not fit ({str(e).splitlines()[0]})") from None
    return dict(saved)
