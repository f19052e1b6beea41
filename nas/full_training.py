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
from pathlib import Path
from typing import Any

import torch

from nas.artifacts import history_path, load_history
from nas.compression import replay
from nas.data import load_dataset, make_splits
from nas.errors import RunError
from nas.export import find_trial, load_study
from nas.progress import PhaseProgress, quiet
from nas.run import Run, write_atomic
from nas.training import train_proxy
from search_spaces import get_space


def trained_dir(run: Run, number: int) -> Path:
    return run.root / "trained" / f"{number:05d}"


def trained_info(run: Run, number: int) -> dict[str, Any] | None:
    """The record of a finished full-fidelity training of `number`, or None."""
    path = trained_dir(run, number) / "train.json"
    return json.loads(path.read_text("utf-8")) if path.is_file() else None


def splits_for(config: Any, train_images: int | None = None) -> Any:
    """The run's splits, with `train_images` training images (default: the search's); the
    validation split is the search's whatever the training size."""
    data = config.data
    if train_images is not None:
        data = data.model_copy(update={"train_size": train_images})
    return make_splits(load_dataset(config.data), data, config.seed)


def trial_network(run: Run, trial: Any, data_info: dict[str, Any]) -> torch.nn.Module:
    """The trial's proxy-shape network with its pruned channels, weights not loaded."""
    config = run.config()
    space = get_space(config.space.name, config.space)
    cand = space.decode(trial.user_attrs["candidate"])
    size = int(trial.user_attrs["proxy_input_size"])
    channels = data_info["channels"]
    model = space.build(cand, data_info["num_classes"], channels, input_size=size)
    source = int(trial.user_attrs.get("duplicate_of") or trial.number)
    history = history_path(run.weights_path(source))
    if history.is_file():
        replay(model, torch.zeros(1, channels, size, size), load_history(history))
    return model


def train_trial(
    run: Run,
    number: int,
    *,
    epochs: int | None = None,
    train_size: int | None = None,
    force: bool = False,
    progress: PhaseProgress = quiet,
) -> dict[str, Any]:
    """Train trial `number` at full fidelity; returns its record (also in train.json).

    Args:
        run: The run that holds the trial.
        number: A completed trial.
        epochs: Epochs (default: 5x the search's proxy epochs, at least 10).
        train_size: Training images (default: every image outside the validation split).
        force: Train again although a finished training with these settings exists.
        progress: Receives (phase, step, steps).
    """
    config = run.config()
    study = load_study(run)
    trial = find_trial(study, number=number, candidate=None)
    data_info = study.user_attrs.get("data")
    if data_info is None:
        raise RunError(f"{run.root}: the study holds no dataset description")
    dataset = load_dataset(config.data)
    available = len(dataset.images) - config.data.val_size
    n_train = train_size or available
    if not 1 <= n_train <= available:
        raise RunError(
            f"--train-size {n_train}: the dataset has {available} images outside the "
            f"{config.data.val_size} validation images; allowed 1..{available}"
        )
    recipe = config.training.model_copy(
        update={"epochs": epochs or max(10, 5 * config.training.epochs)}
    )
    identity = {
        "trial": number,
        "epochs": recipe.epochs,
        "train_size": n_train,
        "recipe": recipe.model_dump(mode="json"),
        "seed": config.seed,
    }
    folder = trained_dir(run, number)
    done = trained_info(run, number)
    if done is not None and done["identity"] == identity and not force:
        return done
    checkpoint = folder / "checkpoint.pt"
    state = folder / "identity.json"
    if state.is_file() and (force or json.loads(state.read_text("utf-8")) != identity):
        shutil.rmtree(folder)  # other settings: start over rather than mix two trainings
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(state, json.dumps(identity))

    splits = make_splits(
        dataset, config.data.model_copy(update={"train_size": n_train}), config.seed
    )
    size = int(trial.user_attrs["proxy_input_size"])
    data = splits.resized(size)
    model = trial_network(run, trial, data_info)
    source = int(trial.user_attrs.get("duplicate_of") or trial.number)
    model.load_state_dict(torch.load(run.weights_path(source), weights_only=True))
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
        checkpoint=checkpoint,
    )
    from nas.evaluate import save_weights

    save_weights(model, folder / "weights.pt")
    if history_path(run.weights_path(source)).is_file():
        shutil.copy(history_path(run.weights_path(source)), history_path(folder / "weights.pt"))
    record = {
        "identity": identity,
        "accuracy": result.accuracy,
        "search_accuracy": trial.user_attrs.get("accuracy_finetuned")
        or trial.user_attrs.get("accuracy"),
        "epoch_accuracy": result.epoch_accuracy,
        "train_images": n_train,
        "val_images": len(splits.val_y),
        "mean": list(splits.mean),
        "std": list(splits.std),
        "seconds_this_session": time.perf_counter() - start,
    }
    write_atomic(folder / "train.json", json.dumps(record, indent=2))
    checkpoint.unlink(missing_ok=True)
    return record
