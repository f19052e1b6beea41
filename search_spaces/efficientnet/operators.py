"""The operators of a built EfficientNet, as a latency table sees them.

An operator is one unit that a latency table times on its own: the stem (convolution, norm,
activation), each MBConv block, the head (1x1 convolution, norm, activation) and the classifier
(global pooling and the linear layer). Its key holds everything that changes its latency at a
fixed device: the feature-map side it reads, channels, kernel, stride, expansion, SE and
activation. The keys are read from the built network itself, tracking feature-map sizes through
the strides, so a table and a predictor always agree with what `build` makes.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from functools import partial
from typing import Any, cast

from timm.models._efficientnet_builder import decode_arch_def
from timm.models.efficientnet import EfficientNet
from torch import nn

from search_spaces.efficientnet.candidate import EfficientNetCandidate
from search_spaces.efficientnet.scaling import round_channels


@dataclass(frozen=True, slots=True, order=True)
class OperatorKey:
    """What identifies an operator's latency on one device (the table's key columns)."""

    op: str
    input_size: int
    cin: int
    cout: int
    kernel: int
    stride: int
    expansion: int
    se: float
    act: str

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def as_tuple(self) -> tuple[Any, ...]:
        return astuple(self)


@dataclass(frozen=True, slots=True)
class Operator:
    key: OperatorKey
    module: nn.Module

    def input_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        return batch_size, self.key.cin, self.key.input_size, self.key.input_size


OUTPUT_STRIDE = 32  # timm's EfficientNet default


def _out_size(size: int, stride: int) -> int:
    # timm's default symmetric padding: an odd kernel with padding k // 2 gives ceil(size / s).
    return -(-size // stride)


def operator_keys(
    candidate: EfficientNetCandidate, num_classes: int, in_chans: int
) -> list[OperatorKey]:
    """The keys `operators` reads from the deployment network, worked out from timm's block
    arguments without building it: microseconds instead of a tenth of a second, which is what
    lets a sampler price thousands of untried candidates by lookup table. The tests hold it
    equal to `operators` on built networks."""
    round_chs = partial(round_channels, multiplier=candidate.width, divisor=8)
    size, cin = candidate.resolution, round_chs(candidate.stem)
    keys = [OperatorKey("stem", size, in_chans, cin, 3, 2, 1, 0.0, candidate.act)]
    size, total = _out_size(size, 2), 2
    stages = decode_arch_def([[s.encode()] for s in candidate.stages], candidate.depth, "ceil")
    for spec, blocks in zip(candidate.stages, stages, strict=True):
        for i, args in enumerate(blocks):
            stride = args["stride"] if i == 0 else 1
            if total * stride > OUTPUT_STRIDE:  # timm dilates instead of striding past 32
                stride = 1
            total *= stride
            cout = round_chs(args["out_chs"])
            keys.append(
                OperatorKey(
                    spec.block,
                    size,
                    cin,
                    cout,
                    args["dw_kernel_size"],
                    stride,
                    spec.expansion,
                    spec.se,
                    spec.act,
                )
            )
            size, cin = _out_size(size, stride), cout
    head = round_chs(candidate.head)
    keys.append(OperatorKey("head", size, cin, head, 1, 1, 1, 0.0, candidate.act))
    keys.append(OperatorKey("classifier", size, head, num_classes, 1, 1, 1, 0.0, "none"))
    return keys


def operators(candidate: EfficientNetCandidate, model: EfficientNet) -> list[Operator]:
    """The operators of `model`, the deployment-shape network built for `candidate`, in order."""
    size = candidate.resolution
    stem = model.conv_stem
    ops = [
        Operator(
            OperatorKey(
                "stem",
                size,
                stem.in_channels,
                stem.out_channels,
                stem.kernel_size[0],
                stem.stride[0],
                1,
                0.0,
                candidate.act,
            ),
            nn.Sequential(model.conv_stem, model.bn1),
        )
    ]
    size = _out_size(size, stem.stride[0])
    for spec, stage in zip(candidate.stages, cast(nn.Sequential, model.blocks), strict=True):
        for block in cast(nn.Sequential, stage):
            dw = cast(nn.Conv2d, block.conv_dw)
            pw = cast(nn.Conv2d, block.conv_pw)
            cin = pw.in_channels if spec.block == "ir" else dw.in_channels
            cout = (cast(nn.Conv2d, block.conv_pwl) if spec.block == "ir" else pw).out_channels
            key = OperatorKey(
                spec.block,
                size,
                cin,
                cout,
                dw.kernel_size[0],
                dw.stride[0],
                spec.expansion,
                spec.se,
                spec.act,
            )
            ops.append(Operator(key, block))
            size = _out_size(size, dw.stride[0])
    head = model.conv_head
    ops.append(
        Operator(
            OperatorKey(
                "head", size, head.in_channels, head.out_channels, 1, 1, 1, 0.0, candidate.act
            ),
            nn.Sequential(model.conv_head, model.bn2),
        )
    )
    ops.append(
        Operator(
            OperatorKey(
                "classifier", size, model.num_features, model.num_classes, 1, 1, 1, 0.0, "none"
            ),
            nn.Sequential(model.global_pool, model.classifier),
        )
    )
    return ops
