"""EfficientNet space specifics: string form, scaling, B0, and stride adaptation."""

from __future__ import annotations

from dataclasses import replace
from typing import get_args

import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces.efficientnet import (
    ACTIVATIONS,
    B0_STAGES,
    BLOCKS,
    CompoundCoefficients,
    EfficientNetCandidate,
    EfficientNetSpace,
    EfficientNetSpaceConfig,
    StageSpec,
    build,
    compound_scale,
)
from search_spaces.efficientnet.config import Activation

B0 = EfficientNetCandidate(
    width=1.0, depth=1.0, resolution=224, stages=tuple(StageSpec.decode(s) for s in B0_STAGES)
)

finite = st.floats(min_value=1e-3, max_value=8.0, allow_nan=False, allow_infinity=False)


@st.composite
def stages(draw: st.DrawFn) -> StageSpec:
    block = draw(st.sampled_from(sorted(BLOCKS)))
    return StageSpec(
        block=block,
        repeats=draw(st.integers(1, 12)),
        kernel=draw(st.sampled_from([1, 3, 5, 7, 9])),
        stride=draw(st.sampled_from([1, 2])),
        expansion=1 if block == "ds" else draw(st.integers(1, 8)),
        channels=draw(st.integers(1, 2048)),
        se=draw(st.one_of(st.just(0.0), st.floats(min_value=1e-4, max_value=0.99))),
        act=draw(st.sampled_from(sorted(ACTIVATIONS))),
    )


@st.composite
def candidates(draw: st.DrawFn) -> EfficientNetCandidate:
    return EfficientNetCandidate(
        width=draw(finite),
        depth=draw(finite),
        resolution=draw(st.integers(8, 2048)),
        stages=tuple(draw(st.lists(stages(), min_size=1, max_size=9))),
        stem=draw(st.integers(1, 256)),
        head=draw(st.integers(1, 4096)),
        act=draw(st.sampled_from(sorted(ACTIVATIONS))),
    )


@given(candidates())
def test_string_round_trip_is_exact(c: EfficientNetCandidate) -> None:
    text = c.encode()
    assert EfficientNetCandidate.decode(text) == c
    assert EfficientNetCandidate.decode(text).encode() == text


def test_b0_string_matches_timm_notation() -> None:
    text = B0.encode()
    assert text.startswith("w1.0_d1.0_r224_st32_hd1280_nsw-ds_r1_k3_s1_e1_c16_se0.25_nsw-")
    assert text.endswith("-ir_r1_k3_s1_e6_c320_se0.25_nsw")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no stages"),
        ("w1.0_d1.0_r224_st32_hd1280_nsw", "no stages"),
        ("w1.0_d1.0_r224_st32_nsw-ds_r1_k3_s1_e1_c16_nsw", "missing hd"),
        ("w1.0_d1.0_r224_st32_hd1280_nsw-xx_r1_k3_s1_e1_c16_nsw", "block type 'xx' unknown"),
        ("w1.0_d1.0_r224_st32_hd1280_nsw-ir_r1_k4_s1_e6_c16_nsw", "kernel must be a positive odd"),
        ("w1.0_d1.0_r224_st32_hd1280_nsw-ir_r1_k3_s3_e6_c16_nsw", "stride must be 1 or 2"),
        ("w1.0_d1.0_r224_st32_hd1280_nsw-ir_r1_k3_s1_e6_c16_nzz", "unknown activation nzz"),
        ("w1.0_d1.0_r224_st32_hd1280_nsw-ds_r1_k3_s1_e6_c16_nsw", "'ds' stage has expansion 1"),
        ("wfoo_d1.0_r224_st32_hd1280_nsw-ds_r1_k3_s1_e1_c16_nsw", "is not a float"),
        ("w1.0_d1.0_r224_st32_hd1280_nsw-ir_r1_k3_s1_e6_c16_q8_nsw", "cannot read 'q8'"),
        ("w1.0_d1.0_r224_st32_hd1280_nsw-ir_r1_k3_s1_e6_c16_se0_nsw", "no se key"),
        ("w0_d1.0_r224_st32_hd1280_nsw-ir_r1_k3_s1_e6_c16_nsw", "width multiplier"),
    ],
)
def test_bad_strings_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EfficientNetCandidate.decode(text)


def test_activation_config_names_match_the_table() -> None:
    assert set(get_args(Activation)) == set(ACTIVATIONS)


def test_b0_parameter_count_matches_timm() -> None:
    ours = build(B0, num_classes=1000, in_chans=3)
    theirs = timm.create_model("efficientnet_b0", pretrained=False)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) == 5_288_548
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_b0_is_in_the_default_space() -> None:
    space = EfficientNetSpace()
    params = space.to_params(B0)
    assert params["phi"] == 0.0
    assert space.from_params(params) == B0


def test_compound_scaling() -> None:
    coeffs = CompoundCoefficients()
    assert compound_scale(0, coeffs) == (1.0, 1.0, 224)
    assert compound_scale(1, coeffs) == (1.1, 1.2, 256)  # 224 * 1.15 = 257.6 -> multiple of 8
    assert compound_scale(2, coeffs) == (1.21, 1.44, 296)
    with pytest.raises(ValueError, match="alpha"):
        CompoundCoefficients(alpha=0.9)


def test_compound_space_scales_width_depth_resolution() -> None:
    cfg = EfficientNetSpaceConfig.model_validate({"scaling": {"phi": [0, 1, 2]}})
    space = EfficientNetSpace(cfg)
    base = space.to_params(B0)
    big = space.from_params({**base, "phi": 2.0})
    assert (big.width, big.depth, big.resolution) == (1.21, 1.44, 296)
    small_model = build(B0, 10, 3)
    big_model = build(big, 10, 3)
    assert sum(p.numel() for p in big_model.parameters()) > 1.5 * sum(
        p.numel() for p in small_model.parameters()
    )
    assert space.to_params(big)["phi"] == 2.0


def test_repeats_and_depth_multiplier() -> None:
    space = EfficientNetSpace()
    params = space.to_params(B0)
    deeper = space.from_params({**params, "s5_repeats_delta": 1, "s0_repeats_delta": -1})
    assert deeper.stages[5].repeats == 5
    assert deeper.stages[0].repeats == 1  # never below one block
    model = build(deeper, 10, 3)
    assert len(model.blocks[5]) == 5
    half = EfficientNetCandidate(width=1.0, depth=0.5, resolution=224, stages=B0.stages)
    assert [len(s) for s in build(half, 10, 3).blocks] == [1, 1, 1, 2, 2, 2, 1]  # ceil


def _feature_side(model: torch.nn.Module, in_chans: int, side: int) -> int:
    model.eval()
    with torch.no_grad():
        return int(model.forward_features(torch.zeros(1, in_chans, side, side)).shape[-1])


@pytest.mark.parametrize(
    ("side", "min_size", "expected"), [(28, 4, 4), (28, 7, 7), (8, 2, 2), (224, 4, 7)]
)
def test_small_inputs_keep_a_feature_map(side: int, min_size: int, expected: int) -> None:
    model = build(B0, 10, 1, input_size=side, min_feature_size=min_size)
    assert _feature_side(model, 1, side) == expected


def test_proxy_and_deployment_networks_share_weights() -> None:
    proxy = build(B0, 10, 3, input_size=28)
    deploy = build(B0, 10, 3)
    assert {k: v.shape for k, v in proxy.state_dict().items()} == {
        k: v.shape for k, v in deploy.state_dict().items()
    }
    deploy.load_state_dict(proxy.state_dict())
    assert _feature_side(deploy, 3, 224) == 7  # every stride kept at deployment


def test_activations_and_se_reach_the_module() -> None:
    text = B0.encode().replace("ir_r1_k3_s1_e6_c320_se0.25_nsw", "ir_r1_k3_s1_e6_c320_nr6")
    c = EfficientNetCandidate.decode(text)
    last = build(c, 10, 3).blocks[-1][0]
    assert isinstance(last.bn1.act, torch.nn.ReLU6)
    assert isinstance(last.se, torch.nn.Identity)
    first = build(c, 10, 3).blocks[1][0]
    assert isinstance(first.bn1.act, torch.nn.SiLU)
    assert not isinstance(first.se, torch.nn.Identity)


def test_config_rejects_bad_choices() -> None:
    with pytest.raises(ValueError, match="odd"):
        EfficientNetSpaceConfig.model_validate({"choices": {"kernel": [4]}})
    with pytest.raises(ValueError, match="base_stages\\[1\\]"):
        EfficientNetSpaceConfig.model_validate({"base_stages": ["ds_r1_k3_s1_e1_c16_nsw", "zz"]})
    with pytest.raises(ValueError, match="multiple of step"):
        EfficientNetSpaceConfig.model_validate(
            {"scaling": {"mode": "independent", "width": {"low": 0.25, "high": 1, "step": 0.3}}}
        )


def test_candidate_outside_space_is_refused() -> None:
    space = EfficientNetSpace()
    other = EfficientNetCandidate(width=0.5, depth=1.0, resolution=224, stages=B0.stages)
    with pytest.raises(ValueError, match="matches no phi"):
        space.to_params(other)
    wrong_channels = B0.encode().replace("c16", "c24", 1)
    with pytest.raises(ValueError, match="channels must be"):
        space.to_params(space.decode(wrong_channels))


@given(
    st.sampled_from([0.1, 0.25, 0.35, 0.5, 0.75, 1.0, 1.1, 1.6]),
    st.sampled_from([0.3, 0.5, 0.75, 1.0, 1.2, 1.8]),
    st.integers(8, 640),
    st.lists(stages(), min_size=1, max_size=8),
    st.integers(1, 64),
    st.integers(1, 1280),
    st.sampled_from(sorted(ACTIVATIONS)),
    st.integers(1, 1000),
    st.sampled_from([1, 3]),
)
@settings(max_examples=30, deadline=None)
def test_operator_keys_without_building_match_the_built_network(
    width: float,
    depth: float,
    resolution: int,
    specs: list[StageSpec],
    stem: int,
    head: int,
    act: str,
    num_classes: int,
    in_chans: int,
) -> None:
    """The lookup-table predictor prices candidates from keys worked out without building the
    network; they must be the keys read from the network `build` makes."""
    from search_spaces.efficientnet.operators import operator_keys, operators

    small = [  # small enough to build quickly; SE that keeps at least one channel
        replace(s, repeats=min(s.repeats, 3), channels=min(s.channels, 192), se=s.se and 0.25)
        for s in specs
    ]
    c = EfficientNetCandidate(width, depth, resolution, tuple(small), stem, head, act)
    built = operators(c, build(c, num_classes, in_chans))
    assert operator_keys(c, num_classes, in_chans) == [op.key for op in built]
