"""Proxy training on real data: it learns, it is deterministic, it reports divergence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from nas.config import DataConfig, TrainingConfig
from nas.errors import TrainingDivergedError
from nas.train.data import load_dataset, make_splits
from nas.train.proxy import train_proxy
from search_spaces import get_space
from search_spaces.efficientnet import EfficientNetSpaceConfig


@pytest.fixture(scope="module")
def digits():
    cfg = DataConfig(dataset="digits", train_size=1000, val_size=400)
    return make_splits(load_dataset(cfg), cfg, seed=0)


def _model(seed: int = 0) -> torch.nn.Module:
    cfg = EfficientNetSpaceConfig.model_validate(
        {"scaling": {"width": 0.25, "depth": 0.5, "resolution": 224}, "min_feature_size": 2}
    )
    space = get_space("efficientnet", cfg)
    torch.manual_seed(seed)
    return space.build(space.sample(np.random.default_rng(0)), 10, 1, input_size=8)


def test_learns_well_above_chance(digits) -> None:
    epochs = []
    result = train_proxy(
        _model(),
        digits,
        TrainingConfig(epochs=4, batch_size=64, threads=1),
        seed=0,
        on_epoch=lambda e, t, acc, loss: epochs.append((e, t, acc)),
    )
    assert result.accuracy > 0.6  # chance is 0.1
    assert [e[:2] for e in epochs] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert result.epoch_accuracy == [e[2] for e in epochs]


def test_deterministic_for_a_seed(digits) -> None:
    cfg = TrainingConfig(epochs=1, batch_size=64, threads=1)
    a, b = _model(), _model()
    ra = train_proxy(a, digits, cfg, seed=5)
    rb = train_proxy(b, digits, cfg, seed=5)
    assert ra.accuracy == rb.accuracy and ra.train_loss == rb.train_loss
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_other_recipes_run(digits, schedule: str) -> None:
    cfg = TrainingConfig(
        epochs=1, batch_size=128, optimizer="adamw", lr=3e-3, schedule=schedule, threads=1
    )
    assert 0.0 <= train_proxy(_model(), digits, cfg, seed=0).accuracy <= 1.0


def test_divergence_is_reported(digits) -> None:
    poisoned = dataclasses.replace(digits, train_x=digits.train_x.clone())
    poisoned.train_x[3, 0, 2, 2] = float("nan")
    cfg = TrainingConfig(epochs=1, batch_size=4096, threads=1)
    with pytest.raises(TrainingDivergedError, match="loss became nan at epoch 1, step 1"):
        train_proxy(_model(), poisoned, cfg, seed=0)


@pytest.mark.parametrize("steps, warmup", [(4, 0.25), (10, 0.1), (1, 0.25), (2, 0.5), (7, 0.0)])
def test_onecycle_runs_whatever_the_step_count(steps: int, warmup: float) -> None:
    """Short schedules (a small training set, one epoch) step through without error and end
    below the peak; 4 steps at 25 % warm-up once divided by zero inside OneCycleLR."""
    from nas.train.proxy import make_scheduler

    cfg = TrainingConfig(warmup_fraction=warmup)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = make_scheduler(opt, cfg, steps)
    rates = []
    for _ in range(steps):  # as training does: one scheduler step after each batch
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert np.isfinite(rates).all() and max(rates) <= cfg.lr * (1 + 1e-9)
    assert steps == 1 or rates[-1] < cfg.lr
