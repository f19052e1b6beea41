"""The run's Optuna study and the bookkeeping every search backend shares.

Opening the study with the configured sampler, turning a space's dimensions into Optuna
distributions, telling a finished evaluation (attributes, constraints, objectives), queueing
seed candidates, recovering trials a dead process left running, reusing the results of a
candidate evaluated before, and early stopping's history. The local loop and the Ray driver
both do exactly this, so a trial is recorded the same way wherever it ran.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas.compress.space import CompressionSpace
from nas.config import EarlyStoppingConfig, RunConfig, SearchConfig
from nas.errors import SearchError
from nas.evaluate.evaluator import StopCheck
from nas.evaluate.pool import Foresight
from nas.record import (
    ACCURACY,
    DUPLICATE_OF,
    FAILURE_REASON,
    LATENCY,
    LOOP_ATTRS,
    MAXIMIZE,
    OBJECTIVES,
    SURPLUS,
)
from nas.run import Run
from nas.search.early_stopping import Checkpoint, ParetoSuccessiveHalving
from nas.search.samplers import make_sampler
from nas.storage import fail_interrupted, open_storage
from search_spaces.base import Dimension

DIRECTIONS = [StudyDirection.MAXIMIZE if m else StudyDirection.MINIMIZE for m in MAXIMIZE]


def _evenly_spaced(values: tuple[Any, ...]) -> bool:
    if len(values) < 2 or not all(isinstance(v, int | float) for v in values):
        return False
    steps = [b - a for a, b in itertools.pairwise(values)]
    return steps[0] > 0 and all(abs(s - steps[0]) < 1e-9 for s in steps)


def to_distribution(dim: Dimension) -> BaseDistribution:
    """Ordered, evenly spaced numbers become a stepped numeric range; the rest categorical."""
    values = dim.values
    if dim.ordered and _evenly_spaced(values):
        step = values[1] - values[0]
        if all(isinstance(v, int) for v in values):
            return IntDistribution(int(values[0]), int(values[-1]), step=int(step))
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(step))
    return CategoricalDistribution(list(values))


def distributions(dims: tuple[Dimension, ...]) -> dict[str, BaseDistribution]:
    return {d.name: to_distribution(d) for d in dims}


def open_study(
    run: Run,
    config: RunConfig,
    *,
    shared: bool = False,
    foresight: Foresight | None = None,
    search_space: dict[str, BaseDistribution] | None = None,
) -> optuna.Study:
    """Create the run's study, or load it to resume.

    A resumed sampler is seeded with the seed plus the number of trials so far: reseeding with
    the bare seed would replay the first invocation's candidates. Shared workers add their
    process id, or two workers starting together would propose the same candidates.
    """
    storage = open_storage(run.storage_url, config.cluster if shared else None)
    study = optuna.create_study(
        study_name=config.name,
        storage=storage,
        directions=DIRECTIONS,
        load_if_exists=True,
    )
    seed = config.seed + len(study.get_trials(False)) + (os.getpid() if shared else 0)
    study.sampler = make_sampler(config.search, seed % 2**31, foresight, search_space)
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(OBJECTIVES))
    return study


def constraint_values(config: SearchConfig, latency_ms: float, params: int) -> dict[str, float]:
    """Optuna constraint values by name; <= 0 means satisfied."""
    c = config.constraints
    values = {}
    if c.max_latency_ms is not None:
        values["max_latency_ms"] = latency_ms - c.max_latency_ms
    if c.max_params is not None:
        values["max_params"] = float(params - c.max_params)
    return values


def recover_interrupted(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a dead process as failed and queue their candidates again.

    Only safe while holding the run's exclusive lock: then no live process owns a RUNNING trial.
    """
    return sum(
        fail_interrupted(study, t, "interrupted: the process ended during this trial; retried")
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    )


def tell_outcome(
    study: optuna.Study, trial: optuna.Trial, attrs: Mapping[str, Any], search: SearchConfig
) -> None:
    """Store a completed evaluation on its trial: attributes, constraints, objectives.

    Raises:
        SearchError: an objective is not a finite number.
    """
    values = [attrs[ACCURACY], attrs[LATENCY]]
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        raise SearchError(f"non-finite objectives {values}")
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    for key, value in constraint_values(search, attrs[LATENCY], attrs["params"]).items():
        trial.set_constraint(key, value)
    study.tell(trial, values)


def enqueue_seeds(
    study: optuna.Study, config: RunConfig, space: Any, compression: CompressionSpace
) -> None:
    """Queue the config's seed candidates once (a resumed run does not queue them again)."""
    for text in config.search.seed_candidates:
        arch, fixed = compression.split(text)
        params = {**space.to_params(space.decode(arch)), **fixed}
        study.enqueue_trial(params, skip_if_exists=True)


def reusable_attrs(original: FrozenTrial) -> dict[str, Any]:
    """A completed trial's outcome, for a later trial of the same candidate."""
    attrs = {k: v for k, v in original.user_attrs.items() if k not in LOOP_ATTRS}
    attrs[DUPLICATE_OF] = original.number
    return attrs


def describe_outcome(attrs: Mapping[str, Any]) -> str:
    """One line for the log and the progress display."""
    return (
        f"accuracy {attrs['accuracy']:.4f}, latency {attrs['latency_p50_ms']:.3f} ms"
        f"{' (SLOWER than its fp32 parent)' if attrs.get('slower_than_parent') else ''}"
        f"{' (cached)' if attrs.get('latency_cached') else ''}"
        f"{' (predicted)' if attrs.get('latency_source') == 'predicted' else ''}, "
        f"{attrs['params'] / 1e6:.2f} M params"
    )


def checkpoints(study: optuna.Study) -> list[Checkpoint]:
    """Per-epoch accuracy of every trial that trained (completed or stopped early)."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        a = t.user_attrs
        if DUPLICATE_OF in a or LATENCY not in a:
            continue
        for epoch, acc in enumerate(a.get("epoch_accuracy", []), start=1):
            out.append(Checkpoint(t.number, epoch, acc, a[LATENCY]))
    return out


def stop_check(cfg: EarlyStoppingConfig, number: int, history: list[Checkpoint]) -> StopCheck:
    """Early stopping's question after each epoch of trial `number`, against `history`."""
    stopper = ParetoSuccessiveHalving(
        min_epochs=cfg.min_epochs,
        reduction_factor=cfg.reduction_factor,
        min_trials=cfg.min_trials,
    )

    def check(epoch: int, accuracy: float, latency_ms: float) -> str | None:
        return stopper.should_stop(Checkpoint(number, epoch, accuracy, latency_ms), history)

    return check


def check_any_completed(study: optuna.Study, run: Run) -> None:
    """Raise when trials failed and none completed: the search found nothing.

    Raises:
        SearchError: with the first failure's reason and where the tracebacks are.
    """
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get(SURPLUS)]
    if failed and not any(t.state == TrialState.COMPLETE for t in trials):
        reason = failed[0].user_attrs.get(FAILURE_REASON, "unknown")
        raise SearchError(
            f"all {len(failed)} trials failed; the first: {reason}; tracebacks in {run.log_path}"
        )
