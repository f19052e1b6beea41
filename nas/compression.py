"""Compression as search dimensions: structured pruning ratio and deployment precision.

A trial's compression is drawn beside its architecture. Pruning uses Torch-Pruning: its
dependency graph keeps residual, squeeze-excitation and depthwise channels consistent, channels
are ranked by weight magnitude, and the pruned network is physically smaller. The pruning is
recorded as Torch-Pruning's pruning history (module, side, channel indices), which replays the
same cut on the deployment-shape network, so the artifact whose latency is measured has exactly
the channels of the network whose accuracy is measured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.config import CompressionConfig, PruningConfig
from search_spaces.base import Dimension

PRUNE_DIM = "prune_ratio"
PRECISION_DIM = "precision"

# Torch-Pruning's history: (module name, out-channel side?, channel indices removed).
PruningHistory = list[tuple[str, bool, list[int]]]
# Called after each pruning step with (step, steps): fine-tunes between steps.
StepHook = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Compression:
    """One trial's compression: prune ratio (one, or one per stage) and artifact precision."""

    prune: tuple[float, ...] = (0.0,)
    precision: str = "fp32"

    @property
    def pruned(self) -> bool:
        return any(r > 0 for r in self.prune)

    @property
    def prune_ratio(self) -> float:
        """The ratio, or the mean over stages when there is one per stage."""
        return sum(self.prune) / len(self.prune)

    @property
    def compressed(self) -> bool:
        return self.pruned or self.precision != "fp32"

    def encode(self) -> str:
        """``p0.25_int8``; per-stage ratios are joined by ``/``."""
        return f"p{'/'.join(repr(float(r)) for r in self.prune)}_{self.precision}"

    @classmethod
    def decode(cls, text: str) -> Compression:
        """Read `encode`'s form; `ValueError` naming what is wrong."""
        head, _, precision = text.partition("_")
        try:
            if not head.startswith("p") or not precision:
                raise ValueError
            prune = tuple(float(r) for r in head[1:].split("/"))
        except ValueError:
            raise ValueError(
                f"compression {text!r}: expected p<ratio>_<precision>, e.g. p0.25_int8"
            ) from None
        return cls(prune, precision)


class CompressionSpace:
    """The compression dimensions a config switches on, beside the architecture's."""

    def __init__(self, config: CompressionConfig, n_stages: int) -> None:
        self.config = config
        self.n_stages = n_stages
        pruning = config.pruning
        dims: list[Dimension] = []
        if pruning.enabled:
            ratios = (0.0, *sorted(pruning.ratios))
            names = (
                [f"s{i}_{PRUNE_DIM}" for i in range(n_stages)] if pruning.per_stage else [PRUNE_DIM]
            )
            dims += [Dimension(n, ratios, ordered=True) for n in names]
        self._prune_names = [d.name for d in dims]
        if len(config.quantization.precisions) > 1:
            dims.append(Dimension(PRECISION_DIM, tuple(config.quantization.precisions)))
        self._dims = tuple(dims)

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def dimensions(self) -> tuple[Dimension, ...]:
        return self._dims

    def from_params(self, params: Mapping[str, Any]) -> Compression:
        prune = tuple(float(params[n]) for n in self._prune_names) or (0.0,)
        precision = str(params.get(PRECISION_DIM, self.config.quantization.precisions[0]))
        return Compression(prune, precision)

    def to_params(self, compression: Compression) -> dict[str, Any]:
        """The dimension values of `compression`; `ValueError` if the search cannot draw it."""
        c = compression
        if len(c.prune) != max(1, len(self._prune_names)):
            raise ValueError(
                f"compression {c.encode()}: needs {max(1, len(self._prune_names))} prune "
                f"ratio(s) separated by '/'"
            )
        params: dict[str, Any] = {}
        for name, ratio in zip(self._prune_names, c.prune, strict=False):
            allowed = (0.0, *self.config.pruning.ratios)
            if ratio not in allowed:
                raise ValueError(f"compression {c.encode()}: prune ratio {ratio} not in {allowed}")
            params[name] = ratio
        if not self._prune_names and c.pruned:
            raise ValueError(f"compression {c.encode()}: pruning is off in this config")
        precisions = self.config.quantization.precisions
        if c.precision not in precisions:
            raise ValueError(f"compression {c.encode()}: precision not in {list(precisions)}")
        if any(d.name == PRECISION_DIM for d in self._dims):
            params[PRECISION_DIM] = c.precision
        return params

    def split(self, text: str) -> tuple[str, dict[str, Any]]:
        """A seed string ``ARCH`` or ``ARCH|p0.25_int8``: the architecture and compression
        params (empty when no compression is given, so the sampler draws it)."""
        arch, sep, rest = text.partition("|")
        return arch, self.to_params(Compression.decode(rest)) if sep else {}


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


def replay(model: nn.Module, example: torch.Tensor, history: PruningHistory) -> nn.Module:
    """Apply a recorded pruning to a network of the same architecture, in place."""
    import torch_pruning as tp

    model.eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    graph.load_pruning_history([list(h) for h in history])
    return model


def channel_signature(model: nn.Module) -> str:
    """Output channels of every convolution, in order: the pruned structure, for cache keys."""
    import hashlib

    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    return hashlib.sha256(repr(widths).encode()).hexdigest()[:12]
