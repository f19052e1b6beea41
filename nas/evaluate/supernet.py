"""A run's weight-sharing supernet: trained once, then scoring any candidate in seconds.

``RUN/supernet/supernet.pt`` holds the weights (checkpointed after every epoch, so training
resumes), ``RUN/supernet/supernet.json`` the training history. The run's ``config.yaml`` is
written first, so the same run can later be searched, and a supernet is only ever loaded into
the configuration it was trained for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hwnas_base.io import write_atomic
from hwnas_base.progress import PhaseProgress, quiet
from nas.config import RunConfig
from nas.errors import ConfigError, RunError
from nas.evaluate.latency import latency_source
from nas.run import Run
from nas.train.data import ProxySplits, load_dataset, make_splits
from nas.train.supernet import (
    SplitsBySize,
    SupernetHistory,
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
    """The untrained supernet of the config's space; ConfigError for a space that has none."""
    space = get_space(config.space.name, config.space)
    if not isinstance(space, EfficientNetSpace):
        raise ConfigError(
            f"supernet: the {config.space.name} space has no supernet; use space.name: efficientnet"
        )
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
    path = supernet_path(run.root)
    path.parent.mkdir(exist_ok=True)
    start = time.perf_counter()
    with run.lock():
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
    return record


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
    rows = []
    for i, candidate in enumerate(parsed):
        progress("scoring candidates", i, len(parsed))
        start = time.perf_counter()
        accuracy = score_subnet(supernet, candidate, splits, config.training, sizes=sizes)
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
        supernet.check(candidate)
    except ValueError as e:
        raise ConfigError(f"candidate {text!r}: {e}") from None
    return candidate
