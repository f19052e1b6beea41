"""NAS-Bench-201 (Dong & Yang, ICLR 2020): 15,625 cells, one skeleton.

A cell is a DAG on 4 nodes; each of its 6 edges (j -> i, j < i) carries one of five operations.
The cell string is the benchmark's own: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, where ``op~j``
is the edge from node j into the node of that group. The network is the benchmark's skeleton:
a 3x3 stem convolution with C=16 channels, three stages of N=5 cells (C, 2C, 4C) joined by
residual reduction blocks, then BN-ReLU, global pooling and a linear classifier. Operations are
ReLU-Conv-BN as in the benchmark. The benchmark's tables are keyed by this string, so the space
can be scored on the published per-device tables.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import nn

from search_spaces.base import Dimension, mutate_params, sample_params
from search_spaces.flops import count_flops, count_params

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from), in string order
# The cell's input-to-output paths, as positions in EDGES: 0-3, 0-1-3, 0-2-3, 0-1-2-3.
PATHS = ((3,), (0, 4), (1, 5), (0, 2, 5))
LIVE_OPS = NB201_OPS[1:]  # every operation but "none" carries signal


@dataclass(frozen=True, slots=True)
class NB201Cell:
    """Operation on each of the 6 edges, in the cell string's order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ops) != len(EDGES):
            raise ValueError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(self.ops)}")
        bad = [op for op in self.ops if op not in NB201_OPS]
        if bad:
            raise ValueError(f"unknown operation {bad[0]!r}; allowed: {', '.join(NB201_OPS)}")

    def encode(self) -> str:
        groups, k = [], 0
        for node in (1, 2, 3):
            groups.append("|".join(f"{self.ops[k + j]}~{j}" for j in range(node)))
            k += node
        return "|" + "|+|".join(groups) + "|"

    @classmethod
    def decode(cls, text: str) -> NB201Cell:
        text = text.strip()
        groups = text.split("+")
        if len(groups) != 3:
            raise ValueError(
                f"cell {text!r}: expected 3 node groups joined by '+', e.g. "
                "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|none~1|"
                "nor_conv_1x1~2|"
            )
        ops = []
        for node, group in enumerate(groups, start=1):
            items = [x for x in group.split("|") if x]
            if len(items) != node:
                raise ValueError(f"cell {text!r}: node {node} needs {node} inputs, got {items}")
            for j, item in enumerate(items):
                op, _, src = item.partition("~")
                if src != str(j):
                    raise ValueError(f"cell {text!r}: {item!r} should read {op}~{j}")
                ops.append(op)
        return cls(tuple(ops))


class ReLUConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout),
        )


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def _op(name: str, channels: int) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1)
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class Cell(nn.Module):
    def __init__(self, cell: NB201Cell, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(_op(op, channels) for op in cell.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        k = 0
        for node in (1, 2, 3):
            total = self.edges[k](nodes[0])
            for j in range(1, node):
                total = total + self.edges[k + j](nodes[j])
            nodes.append(total)
            k += node
        return nodes[-1]


class ResNetBasicBlock(nn.Module):
    """The benchmark's stride-2 reduction block between stages."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, 2)
        self.conv_b = ReLUConvBN(cout, cout, 3, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(2, stride=2), nn.Conv2d(cin, cout, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.downsample(x)


class NB201Network(nn.Sequential):
    def __init__(
        self, cell: NB201Cell, num_classes: int, in_chans: int, channels: int = 16, cells: int = 5
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        ]
        c = channels
        for stage in range(3):
            if stage:
                layers.append(ResNetBasicBlock(c, c * 2))
                c *= 2
            layers.extend(Cell(cell, c) for _ in range(cells))
        layers += [
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=False),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c, num_classes),
        ]
        super().__init__(*layers)


class NB201Space:
    """The 15,625 cells of NAS-Bench-201; dimensions ``edge0`` .. ``edge5``."""

    name = "nb201"

    def __init__(self, config: Any = None) -> None:
        self.config = config
        self._dims = tuple(
            Dimension(f"edge{i}_{dst}from{src}", NB201_OPS) for i, (dst, src) in enumerate(EDGES)
        )

    def dimensions(self) -> tuple[Dimension, ...]:
        return self._dims

    def from_params(self, params: Mapping[str, Any]) -> NB201Cell:
        ops = []
        for d in self._dims:
            if d.name not in params:
                raise ValueError(f"parameter {d.name!r} missing; allowed: {list(d.values)}")
            ops.append(d.values[d.index(params[d.name])])
        return NB201Cell(tuple(ops))

    def to_params(self, candidate: NB201Cell) -> dict[str, Any]:
        return {d.name: op for d, op in zip(self._dims, candidate.ops, strict=True)}

    def sample(self, rng: np.random.Generator) -> NB201Cell:
        return self.from_params(sample_params(self._dims, rng))

    def mutate(self, candidate: NB201Cell, rng: np.random.Generator) -> NB201Cell:
        return self.from_params(mutate_params(self._dims, self.to_params(candidate), rng))

    def encode(self, candidate: NB201Cell) -> str:
        return candidate.encode()

    def decode(self, text: str) -> NB201Cell:
        return NB201Cell.decode(text)

    def features(self, candidate: NB201Cell) -> np.ndarray:
        """One-hot operation per edge (30 values)."""
        return np.asarray(
            [float(op == name) for op in candidate.ops for name in NB201_OPS], dtype=np.float64
        )

    def path_features(self, candidate: NB201Cell) -> np.ndarray:
        """Path encoding (White et al., BANANAS, AAAI 2021): for each input-to-output path of
        the cell, a one-hot of its sequence of operations, zero where a "none" cuts it (100
        values). Two cells that compute alike look alike, and a cell whose output is cut off
        from its input is all zeros, which accuracy surrogates learn from far fewer samples
        than from per-edge choices."""
        out = []
        for path in PATHS:
            block = np.zeros(len(LIVE_OPS) ** len(path))
            ops = [candidate.ops[e] for e in path]
            if "none" not in ops:
                index = 0
                for op in ops:
                    index = index * len(LIVE_OPS) + LIVE_OPS.index(op)
                block[index] = 1.0
            out.append(block)
        return np.concatenate(out)

    def resolution(self, candidate: NB201Cell) -> int:
        return 32

    def proxy_input_size(self, candidate: NB201Cell, image_size: int) -> int:
        return image_size

    def build(
        self,
        candidate: NB201Cell,
        num_classes: int,
        in_chans: int,
        *,
        input_size: int | None = None,
    ) -> nn.Module:
        return NB201Network(candidate, num_classes, in_chans)

    def all_cells(self) -> list[NB201Cell]:
        """Every cell of the space (5 ** 6), the first edge varying slowest."""
        return [NB201Cell(ops) for ops in itertools.product(NB201_OPS, repeat=len(EDGES))]

    def flops(self, candidate: NB201Cell, num_classes: int = 10, in_chans: int = 3) -> int:
        """FLOPs at 32x32 (as `search_spaces.flops.count_flops` counts them), from per-edge costs.

        Every edge of every cell in a stage sees the same shape, so FLOPs are a base cost plus
        a per-operation cost times how often the operation occurs; both are measured once.
        """
        base, per_op = _flop_terms(num_classes, in_chans)
        return int(base + sum(per_op[op] for op in candidate.ops))

    def params(self, candidate: NB201Cell, num_classes: int = 10, in_chans: int = 3) -> int:
        """Parameters, from per-edge counts as for `flops`."""
        base, per_op = _param_terms(num_classes, in_chans)
        return int(base + sum(per_op[op] for op in candidate.ops))


@cache
def _param_terms(num_classes: int, in_chans: int) -> tuple[int, dict[str, int]]:
    def params_of(op: str) -> int:
        net = NB201Network(NB201Cell((op,) * len(EDGES)), num_classes, in_chans)
        return count_params(net)

    base = params_of("none")
    per_op = {op: (params_of(op) - base) // len(EDGES) for op in NB201_OPS}
    return base, per_op


@cache
def _flop_terms(num_classes: int, in_chans: int) -> tuple[int, dict[str, int]]:
    def flops_of(op: str) -> int:
        net = NB201Network(NB201Cell((op,) * len(EDGES)), num_classes, in_chans)
        return count_flops(net, (1, in_chans, 32, 32))

    base = flops_of("none")
    per_op = {op: (flops_of(op) - base) // len(EDGES) for op in NB201_OPS}
    return base, per_op
