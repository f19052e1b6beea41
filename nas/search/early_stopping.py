"""Multi-objective early stopping: successive halving on Pareto rank.

Optuna's pruners and Ray's schedulers compare trials on one number; a search for the
accuracy/latency front needs to compare on two. At each rung (after ``min_epochs``,
``min_epochs * reduction_factor``, ... epochs of proxy training) a trial is ranked among every
trial that reached the same epoch, by Pareto rank on (accuracy so far, latency), ties broken by
accuracy; it goes on only if it is among the best ``1 / reduction_factor`` of them. Latency is
known before training, so a slow candidate must keep up in accuracy to survive, and a fast one
may trail.

The stopper is a pure function of checkpoints, with no Optuna in it, so any backend (the local
loop, a Ray trainable) can ask it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from nas.pareto import pareto_ranks


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A trial's accuracy after `epoch` epochs of proxy training, beside its latency."""

    trial: int
    epoch: int
    accuracy: float
    latency_ms: float


class EarlyStopper(Protocol):
    def should_stop(self, current: Checkpoint, history: Sequence[Checkpoint]) -> str | None:
        """Why `current` should stop now, given earlier trials' checkpoints; None to go on."""
        ...


class ParetoSuccessiveHalving:
    """Successive halving with Pareto rank in place of a single score.

    Args:
        min_epochs: First rung.
        reduction_factor: Rungs are ``min_epochs * reduction_factor ** k``; at each, the best
            ``1 / reduction_factor`` of the trials there go on (at least one).
        min_trials: Trials that must have reached a rung (this one included) before it stops
            anything there.
    """

    def __init__(self, *, min_epochs: int = 1, reduction_factor: int = 2, min_trials: int = 4):
        if min_epochs < 1 or reduction_factor < 2 or min_trials < 2:
            raise ValueError(
                "need min_epochs >= 1, reduction_factor >= 2 and min_trials >= 2; got "
                f"{min_epochs}, {reduction_factor}, {min_trials}"
            )
        self.min_epochs = min_epochs
        self.reduction_factor = reduction_factor
        self.min_trials = min_trials

    def is_rung(self, epoch: int) -> bool:
        if epoch < self.min_epochs or epoch % self.min_epochs:
            return False
        step = epoch // self.min_epochs
        while step % self.reduction_factor == 0:
            step //= self.reduction_factor
        return step == 1

    def should_stop(self, current: Checkpoint, history: Sequence[Checkpoint]) -> str | None:
        if not self.is_rung(current.epoch):
            return None
        peers = [h for h in history if h.epoch == current.epoch and h.trial != current.trial]
        n = len(peers) + 1
        if n < self.min_trials:
            return None
        everyone = [*peers, current]
        points = np.array([(c.accuracy, c.latency_ms) for c in everyone])
        ranks = pareto_ranks(points, (True, False))
        order = np.lexsort((-points[:, 0], ranks))  # by rank, then higher accuracy first
        position = int(np.flatnonzero(order == n - 1)[0])
        keep = max(1, n // self.reduction_factor)
        if position < keep:
            return None
        return (
            f"stopped after epoch {current.epoch}: Pareto rank {ranks[-1] + 1} of the {n} trials "
            f"at that epoch, placed {position + 1}; the best {keep} go on"
        )
