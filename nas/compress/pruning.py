"""Structured channel pruning with Torch-Pruning.

Torch-Pruning's dependency graph keeps residual, squeeze-excitation and depthwise channels
consistent, channels are ranked by weight magnitude, and the pruned network is physically
smaller. The cut is recorded as Torch-Pruning's pruning history (module, side, channel
indices), which `nas.train.weights.replay` applies to the deployment-shape network, so the
artifact whose latency is measured has exactly the channels of the network whose accuracy is
measured.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nas.config import PruningConfig
from nas.train.weights import PruningHistory

# Called after each pruning step with (step, steps): fine-tunes between steps.
StepHook = Callable[[int, int], None]


def _importance(cfg: PruningConfig) -> Any:
    import torch_pruning as tp

    return tp.importance.MagnitudeImportance(p=1 if cfg.importance == "l1" else 2)


def stages_of(model: nn.Module) -> list[nn.Module]:
    """The stage containers of a timm EfficientNet, for per-stage ratios."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential):
        raise ValueError(f"per-stage pruning needs a network with stages; got {type(model)}")
    return list(blocks)


def prune(
    model: nn.Module,
    example: torch.Tensor,
    ratios: tuple[float, ...],
    cfg: PruningConfig,
    *,
    between_steps: StepHook | None = None,
) -> PruningHistory:
    """Remove channels from `model` in place; returns the history that replays the cut.

    Args:
        model: The trained network (the classifier's outputs are never pruned).
        example: An input batch of the model's shape, for tracing the dependency graph.
        ratios: One ratio for the whole network, or one per stage (stem and head then take
            the mean).
        cfg: Importance, rounding, ranking scope and number of steps.
        between_steps: Called after each of `cfg.iterative_steps` steps (gradual pruning
            fine-tunes here).
    """
    import torch_pruning as tp

    get_classifier = getattr(model, "get_classifier", None)
    classifier = get_classifier() if callable(get_classifier) else None
    ignored = [classifier] if isinstance(classifier, nn.Module) else []
    per_stage: dict[nn.Module, float] | None = None
    if len(ratios) > 1:
        stages = stages_of(model)
        if len(stages) != len(ratios):
            raise ValueError(f"{len(ratios)} stage ratios for a network of {len(stages)} stages")
        per_stage = dict(zip(stages, ratios, strict=True))
    model.eval()
    pruner = tp.pruner.BasePruner(
        model,
        example,
        importance=_importance(cfg),
        global_pruning=cfg.global_ranking,
        pruning_ratio=sum(ratios) / len(ratios),
        pruning_ratio_dict=per_stage,
        max_pruning_ratio=0.95,
        iterative_steps=cfg.iterative_steps,
        ignored_layers=ignored,
        round_to=cfg.round_to,
    )
    for step in range(cfg.iterative_steps):
        pruner.step()
        if between_steps is not None:
            between_steps(step + 1, cfg.iterative_steps)
    return [
        (name, bool(out), list(map(int, idxs))) for name, out, idxs in pruner.DG.pruning_history()
    ]


def channel_signature(model: nn.Module) -> str:
    """Output channels of every convolution, in order: the pruned structure, for cache keys."""
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    return hashlib.sha256(repr(widths).encode()).hexdigest()[:12]
