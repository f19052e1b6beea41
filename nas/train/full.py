"""Full-fidelity training of a chosen trial: all the training data, more epochs, resumable.

The trial's network (its architecture, and its pruned channels when it was pruned) starts from
the weights the search left, and trains with the run's recipe on every image of the dataset
except the validation images, which stay exactly the search's, so the accuracies compare.
A checkpoint after every epoch lets an interrupted run go on where it stopped. The result lives
in the run under ``trained/NNNNN/``, where `nas export` finds it.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hwnas_base.io import write_atomic
from hwnas_base.progress import PhaseProgress, quiet
from nas.config import RunConfig
from nas.errors import RunError
from nas.record import DUPLICATE_OF
from nas.run import Run
from nas.storage import find_trial, load_study
from nas.train.data import load_dataset, make_splits
from nas.train.proxy import train_proxy
from nas.train.weights import history_path, save_weights, shape_like
from search_spaces import get_space


@dataclass(frozen=True)
class TrainOptions:
    """What `nas train` asks for.

    Attributes:
        trial: A completed trial's number.
        epochs: Epochs (default: 5x the search's proxy epochs, at least 10).
        train_size: Training images (default: every image outside the validation split).
        force: Train again although a finished training with these settings exists.
    """

    trial: int
    epochs: int | None = None
    train_size: int | None = None
    force: bool = False


def trained_dir(run: Run, number: int) -> Path:
    return run.root / "trained" / f"{number:05d}"


def trained_info(run: Run, number: int) -> dict[str, Any] | None:
    """The record of a finished full-fidelity training of `number`, or None."""
    path = trained_dir(run, number) / "train.json"
    return json.loads(path.read_text("utf-8")) if path.is_file() else None


def source_trial(trial: Any) -> int:
    """The trial whose weights `trial` has: itself, or the one it duplicated."""
    return int(trial.user_attrs.get(DUPLICATE_OF) or trial.number)


def trial_network(run: Run, trial: Any, data_info: dict[str, Any]) -> torch.nn.Module:
    """The trial's proxy-shape network with its pruned channels, weights not loaded."""
    config = run.config()
    space = get_space(config.space.name, config.space)
    cand = space.decode(trial.user_attrs["candidate"])
    size = int(trial.user_attrs["proxy_input_size"])
    channels = data_info["channels"]
    model = space.build(cand, data_info["num_classes"], channels, input_size=size)
    example = torch.zeros(1, channels, size, size)
    return shape_like(model, run.weights_path(source_trial(trial)), example)


def train_trial(run: Run, options: TrainOptions, progress: PhaseProgress = quiet) -> dict[str, Any]:
    """Train a trial at full fidelity; returns its record (also in train.json).

    Raises:
        UnknownTrialError: the run has no such trial.
        RunError: the trial did not complete, or `options.train_size` is out of range.
    """
    config = run.config()
    if config.benchmark is not None:
        raise RunError(
            f"run {run.root.name} was scored from the benchmark table {config.benchmark.table}: "
            "it has no proxy dataset to train on"
        )
    study = load_study(run)
    trial = find_trial(study, number=options.trial, candidate=None)
    data_info = study.user_attrs.get("data")
    if data_info is None:
        raise RunError(f"{run.root}: the study holds no dataset description")
    dataset = load_dataset(config.data)
    available = len(dataset.images) - config.data.val_size
    n_train = options.train_size or available
    if not 1 <= n_train <= available:
        raise RunError(
            f"--train-size {n_train}: the dataset has {available} images outside the "
            f"{config.data.val_size} validation images; allowed 1..{available}"
        )
    recipe = config.training.model_copy(
        update={"epochs": options.epochs or max(10, 5 * config.training.epochs)}
    )
    identity = {
        "trial": options.trial,
        "epochs": recipe.epochs,
        "train_size": n_train,
        "recipe": recipe.model_dump(mode="json"),
        "seed": config.seed,
    }
    done = trained_info(run, options.trial)
    if done is not None and done["identity"] == identity and not options.force:
        return done
    folder = _start_folder(trained_dir(run, options.trial), identity, options.force)
    splits = make_splits(
        dataset, config.data.model_copy(update={"train_size": n_train}), config.seed
    )
    model = trial_network(run, trial, data_info)
    source = run.weights_path(source_trial(trial))
    model.load_state_dict(torch.load(source, weights_only=True))
    record = _train(model, splits, trial, recipe, config, folder, progress)
    if history_path(source).is_file():
        shutil.copy(history_path(source), history_path(folder / "weights.pt"))
    record = {"identity": identity, **record}
    write_atomic(folder / "train.json", json.dumps(record, indent=2))
    (folder / "checkpoint.pt").unlink(missing_ok=True)
    return record


def _start_folder(folder: Path, identity: dict[str, Any], force: bool) -> Path:
    """The training folder, emptied when it holds a training with other settings."""
    state = folder / "identity.json"
    if state.is_file() and (force or json.loads(state.read_text("utf-8")) != identity):
        shutil.rmtree(folder)  # other settings: start over rather than mix two trainings
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(state, json.dumps(identity))
    return folder


def _train(
    model: torch.nn.Module,
    splits: Any,
    trial: Any,
    recipe: Any,
    config: RunConfig,
    folder: Path,
    progress: PhaseProgress,
) -> dict[str, Any]:
    """Train from the checkpoint in `folder` (if any) to the end; the record's figures."""
    data = splits.resized(int(trial.user_attrs["proxy_input_size"]))
    total = recipe.epochs

    def on_step(epoch: int, step: int, steps: int) -> None:
        progress(f"epoch {epoch}/{total}", step, steps)

    def on_epoch(epoch: int, epochs_: int, acc: float, loss: float) -> None:
        progress(f"epoch {epoch}/{total}: loss {loss:.3f}, val acc {acc:.4f}", 1, 1)

    start = time.perf_counter()
    result = train_proxy(
        model,
        data,
        recipe,
        seed=config.seed,
        on_step=on_step,
        on_epoch=on_epoch,
        checkpoint=folder / "checkpoint.pt",
    )
    save_weights(model, folder / "weights.pt")
    return {
        "accuracy": result.accuracy,
        "search_accuracy": trial.user_attrs.get("accuracy_finetuned")
        or trial.user_attrs.get("accuracy"),
        "epoch_accuracy": result.epoch_accuracy,
        "train_images": len(splits.train_y),
        "val_images": len(splits.val_y),
        "mean": list(splits.mean),
        "std": list(splits.std),
        "seconds_this_session": time.perf_counter() - start,
    }
