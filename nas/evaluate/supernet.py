"""A run's weight-sharing supernet: trained once, then scoring any candidate in seconds.

``RUN/supernet/supernet.pt`` holds the weights (checkpointed after every epoch, so training
resumes), ``RUN/supernet/supernet.json`` the training history. The run's ``config.yaml`` is
written first, so the same run can later be searched, and a supernet is only ever loaded into
the configuration it was trained for.

A search with ``evaluation: supernet`` trains the supernet into its run before the first trial
(or loads ``supernet.path``), then `SupernetEvaluator` scores each candidate with inherited
weights: no training, the rest of a trial (latency, compression, the weights kept for export)
as usual.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hwnas_base.io import write_atomic
from hwnas_base.progress import PhaseProgress, quiet
from nas.config import RunConfig, TrainingConfig, supernet_space_problem
from nas.errors import ConfigError, RunError
from nas.evaluate.evaluator import Evaluator, Outcome
from nas.evaluate.latency import latency_source
from nas.run import Run
from nas.train.data import ProxySplits, load_dataset, make_splits
from nas.train.proxy import TrainResult
from nas.train.supernet import (
    SplitsBySize,
    SupernetFileError,
    SupernetHistory,
    inherit,
    inherited_accuracy,
    load_supernet_file,
    score_subnet,
    train_supernet,
)
from search_spaces import get_space
from search_spaces.efficientnet import EfficientNetCandidate, EfficientNetSpace
from search_spaces.efficientnet.supernet import EfficientNetSupernet

SUPERNET_DIR = "supernet"


def supernet_path(root: Path) -> Path:
    return root / SUPERNET_DIR / "supernet.pt"


def make_supernet(config: RunConfig, splits: ProxySplits) -> EfficientNetSupernet:
    """The untrained supernet of the config's space; ConfigError for a space that has none or
    that lists several activations."""
    space = get_space(config.space.name, config.space)
    if not isinstance(space, EfficientNetSpace):
        raise ConfigError(
            f"supernet: the {config.space.name} space has no supernet; use space.name: efficientnet"
        )
    problem = supernet_space_problem(space.config)
    if problem:
        raise ConfigError(f"supernet: {problem}")
    return EfficientNetSupernet(space, splits.num_classes, splits.channels)


def _splits(config: RunConfig) -> ProxySplits:
    return make_splits(load_dataset(config.data), config.data, config.seed)


def train_run_supernet(
    config: RunConfig, runs_dir: Path, progress: PhaseProgress = quiet
) -> dict[str, Any]:
    """Train (or go on training) the supernet of run `config.name`; its record.

    Raises:
        RunError: the run exists with another config.
        ConfigError: the space has no supernet.
        SupernetFileError: the checkpoint found is corrupt or for another supernet.
    """
    run = Run.check(runs_dir, config)
    splits = _splits(config)
    supernet = make_supernet(config, splits)
    run.root.mkdir(parents=True, exist_ok=True)
    if not run.config_path.is_file():
        write_atomic(run.config_path, config.to_yaml().encode())
    with run.lock():
        return _train_into(config, splits, supernet, run.root, progress)


def _train_into(
    config: RunConfig,
    splits: ProxySplits,
    supernet: EfficientNetSupernet,
    root: Path,
    progress: PhaseProgress,
) -> dict[str, Any]:
    """Train `supernet` into ``root/supernet/`` (or go on, or just load it when finished); its
    record. Processes sharing the run (`nas worker`s) wait here for the one that trains."""
    path = supernet_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(path.parent / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            history = train_supernet(
                supernet,
                splits,
                config.training,
                config.supernet,
                seed=config.seed,
                checkpoint=path,
                progress=progress,
            )
            record = _record(config, supernet, history, len(splits.train_x))
            record["this_call_seconds"] = time.perf_counter() - start
            write_atomic(path.with_suffix(".json"), json.dumps(record, indent=2).encode())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return record


def search_supernet(
    config: RunConfig, splits: ProxySplits, root: Path, progress: PhaseProgress = quiet
) -> EfficientNetSupernet:
    """The trained supernet a search with ``evaluation: supernet`` scores with:
    ``supernet.path`` when set, else the one in ``root/supernet/``, trained there first.

    Raises:
        SupernetFileError: the file is corrupt, for another configuration, or unfinished.
    """
    if config.supernet.path is None:
        supernet = make_supernet(config, splits)
        _train_into(config, splits, supernet, root, progress)
        return supernet
    return given_supernet(config, splits)


def given_supernet(config: RunConfig, splits: ProxySplits) -> EfficientNetSupernet:
    """The finished supernet at ``supernet.path``, loaded (checked before a search writes).

    Raises:
        SupernetFileError: missing, corrupt, for another configuration, or unfinished.
    """
    supernet = make_supernet(config, splits)
    path = Path(str(config.supernet.path))
    if not path.is_file():
        raise SupernetFileError(
            f"supernet.path {path}: no such file; train one with `nas supernet train CONFIG`"
        )
    if not load_supernet_file(path, supernet).get("finished"):
        raise SupernetFileError(
            f"supernet.path {path}: its training has not finished; finish it with "
            "`nas supernet train` on the config it was started with"
        )
    return supernet


class SupernetEvaluator(Evaluator):
    """Scores candidates with weights inherited from a trained supernet, BatchNorm re-estimated
    (no training). The network a trial keeps, compresses and exports is the extracted
    sub-network; `Outcome.accuracy_source` says the accuracy is inherited.

    Args:
        supernet: The trained supernet of the evaluator's space.
        scoring: The recipe whose BatchNorm re-estimation a sub-network gets before it is
            scored (`SupernetConfig.scoring`); unset: `training`. Fine-tuning (compression)
            keeps `training`.
        **kwargs: As `Evaluator`'s.
    """

    def __init__(
        self,
        *,
        supernet: EfficientNetSupernet,
        scoring: TrainingConfig | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.supernet = supernet
        self.scoring = scoring or self.training

    def build_proxy(self, candidate: Any) -> torch.nn.Module:
        _check(self.supernet, candidate, self.space.encode(candidate))
        return inherit(self.supernet, candidate, self.proxy_data(candidate), self.scoring)

    def _train(
        self,
        model: torch.nn.Module,
        data: ProxySplits,
        outcome: Outcome,
        progress: PhaseProgress,
        stop: Any,
    ) -> TrainResult:
        progress("scoring with inherited weights", 0, 1)
        start = time.perf_counter()
        accuracy = inherited_accuracy(model, data.val_x, data.val_y)
        outcome.accuracy_source = "supernet"
        progress("scoring with inherited weights", 1, 1)
        return TrainResult(
            accuracy=accuracy,
            train_loss=float("nan"),
            epoch_accuracy=[accuracy],
            seconds=time.perf_counter() - start,
        )


def _record(
    config: RunConfig, supernet: EfficientNetSupernet, history: SupernetHistory, images: int
) -> dict[str, Any]:
    return {
        "largest": supernet.largest.encode(),
        "smallest": supernet.space.smallest().encode(),
        "params": sum(p.numel() for p in supernet.parameters()),
        "epochs": config.supernet.epochs,
        "train_images": images,
        "history": history.to_dict(),
        "train_seconds": sum(history.seconds),
    }


def evaluate_candidates(
    run_dir: Path, candidates: Sequence[str], progress: PhaseProgress = quiet
) -> list[dict[str, Any]]:
    """Accuracy with inherited weights (BatchNorm re-estimated) and latency of each candidate.

    Raises:
        RunError: `run_dir` has no config, or its supernet is missing or not fully trained.
        ConfigError: a candidate string is unreadable or outside the supernet's space.
        SupernetFileError: the supernet file is corrupt or for another configuration.
    """
    root = Path(run_dir)
    run = Run(root)
    if not run.config_path.is_file():
        raise RunError(f"{root} has no config.yaml; train a supernet with `nas supernet train`")
    path = supernet_path(root)
    if not path.is_file():
        raise RunError(f"{root} has no trained supernet ({path}); run `nas supernet train`")
    config = run.config()
    splits = _splits(config)
    supernet = make_supernet(config, splits)
    parsed = [_candidate(supernet, text) for text in candidates]
    epochs = int(load_supernet_file(path, supernet)["epoch"])
    if epochs < config.supernet.epochs:
        raise RunError(
            f"the supernet in {root} is trained for {epochs} of {config.supernet.epochs} epochs; "
            f"finish it with `nas supernet train {run.config_path}`"
        )
    source = latency_source(config, supernet.space, root.parent)
    sizes = SplitsBySize(splits, supernet.space)  # each input size resized once, not per candidate
    scoring = config.supernet.scoring(config.training)
    rows = []
    for i, candidate in enumerate(parsed):
        progress("scoring candidates", i, len(parsed))
        start = time.perf_counter()
        accuracy = score_subnet(supernet, candidate, splits, scoring, sizes=sizes)
        seconds = time.perf_counter() - start
        latency, _ = source(candidate)
        rows.append(
            {
                "candidate": candidate.encode(),
                "accuracy": accuracy,
                "latency_ms": latency.p50_ms,
                "latency_source": latency.source,
                "score_seconds": seconds,
            }
        )
    progress("scoring candidates", len(parsed), len(parsed))
    return rows


def _candidate(supernet: EfficientNetSupernet, text: str) -> EfficientNetCandidate:
    try:
        candidate = supernet.space.decode(text)
    except ValueError as e:
        raise ConfigError(f"candidate {text!r}: {e}") from None
    _check(supernet, candidate, repr(text))
    return candidate


def _check(supernet: EfficientNetSupernet, candidate: EfficientNetCandidate, name: str) -> None:
    """ConfigError naming the candidate when it is outside the supernet's space."""
    try:
        supernet.check(candidate)
    except ValueError as e:
        raise ConfigError(f"candidate {name}: {e}") from None
