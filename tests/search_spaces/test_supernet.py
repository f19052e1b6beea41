"""The EfficientNet supernet: every candidate is a slice of it, inside and outside alike."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from search_spaces.efficientnet import (
    EfficientNetSpace,
    EfficientNetSpaceConfig,
    StageSpec,
    fold_batchnorm,
)
from search_spaces.efficientnet.supernet import EfficientNetSupernet, crop
from tests.conftest import ELASTIC_CHOICES, SMALL_CONFIG

SPACE = EfficientNetSpace(
    EfficientNetSpaceConfig.model_validate(
        {
            **SMALL_CONFIG["space"],
            "choices": ELASTIC_CHOICES,
        }
    )
)


@pytest.fixture(scope="module")
def supernet() -> EfficientNetSupernet:
    torch.manual_seed(0)
    net = EfficientNetSupernet(SPACE, num_classes=10, in_chans=1)
    with torch.no_grad():  # BatchNorm statistics other than the identity, so they must be copied
        for name, buffer in net.net.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    return net.eval()


def test_the_largest_candidate_takes_every_ordered_choice_at_its_maximum() -> None:
    largest = SPACE.largest()
    assert largest.width == 0.5 and largest.resolution == 48
    for stage, base in zip(largest.stages, SPACE.base, strict=True):
        assert stage.kernel == 5 and stage.se == 0.25 and stage.repeats == base.repeats
        assert stage.expansion == (6 if base.block == "ir" else 1)


def test_extracted_subnets_are_built_like_any_candidate_and_match_the_supernet(
    supernet: EfficientNetSupernet,
) -> None:
    rng = np.random.default_rng(0)
    x = torch.randn(4, 1, 20, 20)
    seen = set()
    for _ in range(6):
        candidate = SPACE.sample(rng)
        seen.add((candidate.width, candidate.stages[1].kernel, candidate.stages[1].se))
        size = SPACE.proxy_input_size(candidate, 20)
        xs = torch.nn.functional.interpolate(x, size=size)
        subnet = supernet.extract_subnet(candidate, input_size=size)
        built = SPACE.build(candidate, 10, 1, input_size=size)
        assert type(subnet) is type(built)
        assert {k: v.shape for k, v in subnet.state_dict().items()} == {
            k: v.shape for k, v in built.state_dict().items()
        }
        with torch.no_grad():
            torch.testing.assert_close(subnet.eval()(xs), supernet(xs, candidate))
    assert len(seen) > 1


def test_a_smaller_kernel_is_the_centre_and_fewer_channels_the_leading_ones(
    supernet: EfficientNetSupernet,
) -> None:
    largest = SPACE.largest()
    small = replace(
        largest,
        width=0.25,
        stages=(
            largest.stages[0],
            replace(largest.stages[1], kernel=3, expansion=3),
            *largest.stages[2:],
        ),
    )
    subnet = supernet.extract_subnet(small)
    shared = supernet.net.blocks[1][0].conv_dw.weight
    own = subnet.blocks[1][0].conv_dw.weight
    assert own.shape[2:] == (3, 3) and own.shape[0] < shared.shape[0]
    torch.testing.assert_close(own, shared[: own.shape[0], :, 1:4, 1:4])
    assert subnet.blocks[1][0].conv_dw.weight.data_ptr() != shared.data_ptr()  # a copy


def test_folding_batchnorm_keeps_the_outputs_and_leaves_the_module_alone(
    supernet: EfficientNetSupernet,
) -> None:
    x = torch.randn(8, 1, 20, 20)
    for candidate in (SPACE.largest(), SPACE.smallest()):  # with SE and without
        size = SPACE.proxy_input_size(candidate, 20)
        xs = torch.nn.functional.interpolate(x, size=size)
        subnet = supernet.extract_subnet(candidate, input_size=size).eval()
        before = {k: v.clone() for k, v in subnet.state_dict().items()}
        folded = fold_batchnorm(subnet)
        norms = [m for m in subnet.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert norms and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        with torch.no_grad():
            torch.testing.assert_close(folded(xs), subnet(xs), rtol=1e-4, atol=1e-5)
        after = subnet.state_dict()
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert all(p.requires_grad for p in subnet.parameters())


def test_gradients_of_a_subnet_land_in_the_shared_weights(supernet: EfficientNetSupernet) -> None:
    supernet.zero_grad()
    supernet.train()
    try:
        candidate = replace(
            SPACE.largest(),
            width=0.25,
            stages=tuple(replace(s, kernel=3, se=0.0) for s in SPACE.largest().stages),
        )
        supernet(torch.randn(2, 1, 16, 16), candidate).sum().backward()
    finally:
        supernet.eval()
    grad = supernet.net.blocks[1][0].conv_dw.weight.grad
    assert grad is not None
    k = grad.shape[-1]
    assert grad[:, :, 1 : k - 1, 1 : k - 1].abs().sum() > 0  # the centre was used
    assert grad[:, :, 0].abs().sum() == 0 and grad[:, :, :, 0].abs().sum() == 0  # the rim not
    se = supernet.net.blocks[1][0].se.conv_reduce.weight.grad
    assert se is None or se.abs().sum() == 0  # SE skipped where the candidate has none
    supernet.zero_grad()


def test_a_candidate_outside_the_space_is_refused_in_one_line(
    supernet: EfficientNetSupernet,
) -> None:
    largest = SPACE.largest()
    too_wide = replace(largest, stages=(replace(largest.stages[0], kernel=7), *largest.stages[1:]))
    with pytest.raises(ValueError, match="outside the supernet's space.*kernel") as e:
        supernet.extract_subnet(too_wide)
    assert "\n" not in str(e.value)
    other_stage = replace(largest, stages=(StageSpec.decode("ds_r1_k3_s1_e1_c24_nr6"),))
    with pytest.raises(ValueError, match="outside the supernet's space"):
        supernet(torch.randn(1, 1, 16, 16), other_stage)


def test_crop_refuses_what_does_not_fit() -> None:
    w = torch.arange(2 * 3 * 5 * 5.0).reshape(2, 3, 5, 5)
    assert crop(w, (1, 2, 3, 3)).shape == (1, 2, 3, 3)
    with pytest.raises(ValueError, match=r"conv: shape \(3, 3, 3, 3\) does not fit"):
        crop(w, (3, 3, 3, 3), "conv")
    with pytest.raises(ValueError, match="no centre"):
        crop(w, (2, 3, 4, 4), "conv")
