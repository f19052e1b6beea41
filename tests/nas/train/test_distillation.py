"""Distillation: the loss mix, and what a teacher may be."""

from __future__ import annotations

import pytest
import torch

from nas.config import DistillationConfig
from nas.errors import ConfigError
from nas.train.distillation import build_teacher
from nas.train.proxy import Distillation
from tests.conftest import SMALL_ARCH


def test_distillation_loss_mixes_labels_and_teacher():
    logits = torch.randn(6, 10)
    hard = torch.tensor(2.0)
    same = Distillation(logits.clone(), temperature=4.0, weight=0.25)
    assert same.loss(logits, torch.arange(6), hard).item() == pytest.approx(0.75 * 2.0)
    other = Distillation(torch.randn(6, 10), temperature=4.0, weight=0.25)
    assert other.loss(logits, torch.arange(6), hard).item() > 0.75 * 2.0


def test_a_teacher_is_a_candidate_of_the_space_or_a_timm_model(small):
    _, space, splits = small
    model = build_teacher(DistillationConfig(teacher=SMALL_ARCH), space, splits)
    assert model(splits.val_x[:2]).shape == (2, 10)
    with pytest.raises(ConfigError, match="not a candidate of the space"):
        build_teacher(DistillationConfig(teacher="w9_nonsense"), space, splits)
