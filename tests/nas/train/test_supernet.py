"""Supernet training on real data: it learns, resumes to the same weights, refuses bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from nas.config import DataConfig, SupernetConfig, TrainingConfig
from nas.train.data import ProxySplits, load_dataset, make_splits
from nas.train.proxy import recalibrate_batchnorm
from nas.train.supernet import (
    SplitsBySize,
    SupernetFileError,
    SupernetHistory,
    inherit,
    load_supernet_file,
    score_subnet,
    train_supernet,
)
from search_spaces.efficientnet import EfficientNetSpace, EfficientNetSpaceConfig
from search_spaces.efficientnet.supernet import EfficientNetSupernet
from tests.conftest import ELASTIC_CHOICES

SPACE_CONFIG = {
    "scaling": {"mode": "independent", "width": [0.25, 0.5], "depth": [0.5], "resolution": [48]},
    "base_resolution": 48,
    "min_feature_size": 2,
    "choices": ELASTIC_CHOICES,
}
TRAINING = TrainingConfig(
    epochs=1, batch_size=64, optimizer="adamw", lr=0.003, weight_decay=0.01, threads=1
)


def _space(**changes: object) -> EfficientNetSpace:
    return EfficientNetSpace(EfficientNetSpaceConfig.model_validate({**SPACE_CONFIG, **changes}))


def _supernet(space: EfficientNetSpace | None = None) -> EfficientNetSupernet:
    torch.manual_seed(0)
    return EfficientNetSupernet(space or _space(), num_classes=10, in_chans=1)


@pytest.fixture(scope="module")
def digits() -> ProxySplits:
    cfg = DataConfig(dataset="digits", train_size=640, val_size=300)
    return make_splits(load_dataset(cfg), cfg, seed=0).resized(12)


class Stop(Exception):
    pass


def test_trains_both_ends_and_resumes_to_the_same_weights(
    digits: ProxySplits, tmp_path: Path
) -> None:
    recipe = SupernetConfig(epochs=2, random_subnets=1)
    whole = _supernet()
    steps: list[int] = []
    history = train_supernet(
        whole,
        digits,
        TRAINING,
        recipe,
        seed=3,
        checkpoint=tmp_path / "whole.pt",
        progress=lambda _, done, total: steps.append(done),
    )
    assert steps[-1] == 10 and len(history.largest_accuracy) == 2
    # Both ends of the space learn well above chance (10 classes).
    assert history.largest_accuracy[-1] > 0.5 and history.smallest_accuracy[-1] > 0.3

    def stop_after_first(epochs: int, _: SupernetHistory) -> None:
        if epochs == 1:
            raise Stop

    with pytest.raises(Stop):
        train_supernet(
            _supernet(),
            digits,
            TRAINING,
            recipe,
            seed=3,
            checkpoint=tmp_path / "parts.pt",
            on_epoch=stop_after_first,
        )
    resumed = _supernet()
    again = train_supernet(
        resumed, digits, TRAINING, recipe, seed=3, checkpoint=tmp_path / "parts.pt"
    )
    assert again.largest_accuracy == history.largest_accuracy
    for (name, a), b in zip(
        whole.net.state_dict().items(), resumed.net.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    # A finished file loads into a fresh supernet and scores the same.
    loaded = _supernet()
    assert load_supernet_file(tmp_path / "whole.pt", loaded)["epoch"] == 2
    largest = loaded.space.largest()
    assert score_subnet(loaded, largest, digits, TRAINING) == history.largest_accuracy[-1]


def test_sub_networks_are_scored_after_the_supernet_sections_batchnorm_re_estimation(
    digits: ProxySplits,
) -> None:
    supernet = _supernet()
    candidate = supernet.space.smallest()
    split = SplitsBySize(digits, supernet.space).at(
        supernet.space.proxy_input_size(candidate, digits.image_size)
    )
    assert SupernetConfig().scoring(TRAINING) is TRAINING
    scoring = SupernetConfig(bn_recalibration_batches=1).scoring(TRAINING)
    assert scoring.bn_recalibration_batches == 1 and scoring.batch_size == TRAINING.batch_size

    def means(module: torch.nn.Module) -> list[torch.Tensor]:
        return [m.running_mean for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    expected = supernet.extract_subnet(candidate, input_size=split.image_size)
    recalibrate_batchnorm(expected, split.train_x, 1, TRAINING.batch_size)
    one = means(inherit(supernet, candidate, split, scoring))
    assert all(torch.equal(a, b) for a, b in zip(one, means(expected), strict=True))
    eight = means(inherit(supernet, candidate, split, TRAINING))  # training's 8 batches
    assert not all(torch.equal(a, b) for a, b in zip(one, eight, strict=True))


def test_a_file_for_another_supernet_or_no_supernet_at_all_is_refused(
    digits: ProxySplits, tmp_path: Path
) -> None:
    path = tmp_path / "s.pt"
    train_supernet(
        _supernet(),
        digits,
        TRAINING,
        SupernetConfig(epochs=1, random_subnets=0),
        seed=0,
        checkpoint=path,
    )
    wider = _supernet(_space(scaling={**SPACE_CONFIG["scaling"], "width": [0.25, 0.75]}))
    with pytest.raises(SupernetFileError, match="another supernet; largest, space_config"):
        load_supernet_file(path, wider)
    with pytest.raises(SupernetFileError, match="another supernet; num_classes"):
        load_supernet_file(path, EfficientNetSupernet(_space(), num_classes=5, in_chans=1))

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:1000])
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Stop()))
    other = tmp_path / "other.pt"
    torch.save({"weights": {}}, other)
    for bad, reason in (
        (corrupt, "not a readable supernet file"),
        (evil, "not a readable supernet file"),
        (other, "not a supernet file"),
    ):
        with pytest.raises(SupernetFileError, match=reason) as e:
            load_supernet_file(bad, _supernet())
        assert "\n" not in str(e.value)


def test_a_bad_recipe_is_refused() -> None:
    with pytest.raises(ValueError, match="random_subnets"):
        SupernetConfig(random_subnets=-1)


def test_the_supernet_steps_with_its_own_batch_size_and_learning_rate(
    digits: ProxySplits,
) -> None:
    """`supernet.batch_size` and `supernet.lr` replace the proxy recipe's for the supernet's
    steps (640 images at 32 a step: 20 steps), while the training section still sets the rest."""
    recipe = SupernetConfig(epochs=1, random_subnets=0, batch_size=32, lr=0.01)
    steps: list[int] = []
    history = train_supernet(
        _supernet(),
        digits,
        TRAINING,
        recipe,
        seed=0,
        progress=lambda _, done, total: steps.append(total),
    )
    assert set(steps) == {20} and len(history.train_loss) == 1
    optim = recipe.training(TRAINING)
    assert (optim.batch_size, optim.lr, optim.optimizer) == (32, 0.01, TRAINING.optimizer)
    assert SupernetConfig().training(TRAINING) == TRAINING  # unset: the training section's
