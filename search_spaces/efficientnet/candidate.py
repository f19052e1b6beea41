"""EfficientNet-style candidates and their compact string form.

A candidate string is a header of global settings followed by one timm block string per stage,
joined by ``-``::

    w1.0_d1.0_r224_st32_hd1280_nsw-ds_r1_k3_s1_e1_c16_se0.25_nsw-ir_r2_k3_s2_e6_c24_se0.25_nsw-...

Header keys: ``w`` width multiplier, ``d`` depth multiplier, ``r`` input resolution, ``st`` stem
channels and ``hd`` head channels (both before width scaling), ``n`` stem/head activation.
Stage strings are timm's arch-string notation (``_efficientnet_builder._decode_block_str``):
block type, ``r`` repeats (before depth scaling), ``k`` kernel, ``s`` stride, ``e`` expansion,
``c`` output channels (before width scaling), ``se`` squeeze-excitation ratio (absent when off)
and ``n`` activation. The stage strings are handed to timm unchanged when building.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
from torch import nn

# Block type key -> timm block class. Used to validate strings and to check built modules.
BLOCKS: dict[str, type[nn.Module]] = {"ds": DepthwiseSeparableConv, "ir": InvertedResidual}

# Activation name (configs, reports) <-> code in strings (timm's ``n`` option).
ACTIVATIONS: dict[str, str] = {"silu": "sw", "relu6": "r6", "hswish": "hs"}
_ACT_BY_CODE = {code: name for name, code in ACTIVATIONS.items()}

STAGE_SEP = "-"


def _fmt(x: float) -> str:
    """Shortest text that reads back to the same float."""
    return repr(float(x))


def _number(key: str, text: str, kind: type[int] | type[float], where: str) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{where}: {key}{text!r} is not a {kind.__name__}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {key}{text} is not finite")
    return value


def _tokens(text: str, keys: tuple[str, ...], where: str) -> dict[str, str]:
    """Split ``k3_s2_se0.25`` into {key: value}, matching the longest known key first."""
    by_length = sorted(keys, key=len, reverse=True)
    out: dict[str, str] = {}
    for tok in text.split("_"):
        key = next((k for k in by_length if tok.startswith(k) and len(tok) > len(k)), None)
        if key is None:
            raise ValueError(f"{where}: cannot read {tok!r}; known keys: {', '.join(keys)}")
        if key in out:
            raise ValueError(f"{where}: key {key!r} appears twice")
        out[key] = tok[len(key) :]
    return out


def _activation(code: str, where: str) -> str:
    if code not in _ACT_BY_CODE:
        allowed = ", ".join(f"n{c} ({n})" for n, c in ACTIVATIONS.items())
        raise ValueError(f"{where}: unknown activation n{code}; allowed: {allowed}")
    return _ACT_BY_CODE[code]


@dataclass(frozen=True, slots=True)
class StageSpec:
    """One stage of MBConv blocks, before compound scaling."""

    block: str
    repeats: int
    kernel: int
    stride: int
    expansion: int
    channels: int
    se: float
    act: str

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise ValueError(f"block type {self.block!r} unknown; allowed: {sorted(BLOCKS)}")
        if self.block == "ds" and self.expansion != 1:
            raise ValueError(f"a 'ds' stage has expansion 1, got e{self.expansion}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd number, got {self.kernel}")
        if self.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {self.stride}")
        if self.expansion < 1:
            raise ValueError(f"expansion must be >= 1, got {self.expansion}")
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if not 0.0 <= self.se < 1.0:
            raise ValueError(f"se ratio must be in [0, 1), got {self.se}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"activation {self.act!r} unknown; allowed: {sorted(ACTIVATIONS)}")

    def encode(self) -> str:
        se = f"_se{_fmt(self.se)}" if self.se > 0 else ""
        return (
            f"{self.block}_r{self.repeats}_k{self.kernel}_s{self.stride}_e{self.expansion}"
            f"_c{self.channels}{se}_n{ACTIVATIONS[self.act]}"
        )

    @classmethod
    def decode(cls, text: str) -> StageSpec:
        where = f"stage {text!r}"
        block, _, rest = text.partition("_")
        if block not in BLOCKS:
            raise ValueError(f"{where}: block type {block!r} unknown; allowed: {sorted(BLOCKS)}")
        required = ("r", "k", "s", "e", "c", "n")
        toks = _tokens(rest, (*required, "se"), where) if rest else {}
        missing = [k for k in required if k not in toks]
        if missing:
            raise ValueError(
                f"{where}: missing {', '.join(missing)}; expected e.g. "
                "ir_r2_k3_s2_e6_c24_se0.25_nsw"
            )
        ints = {k: int(_number(k, toks[k], int, where)) for k in ("r", "k", "s", "e", "c")}
        se = float(_number("se", toks["se"], float, where)) if "se" in toks else 0.0
        if "se" in toks and se == 0.0:
            raise ValueError(f"{where}: write no se key instead of se0")
        return cls(
            block=block,
            repeats=ints["r"],
            kernel=ints["k"],
            stride=ints["s"],
            expansion=ints["e"],
            channels=ints["c"],
            se=se,
            act=_activation(toks["n"], where),
        )


@dataclass(frozen=True, slots=True)
class EfficientNetCandidate:
    """A fully specified EfficientNet-style network: global scaling plus its stages."""

    width: float
    depth: float
    resolution: int
    stages: tuple[StageSpec, ...]
    stem: int = 32
    head: int = 1280
    act: str = "silu"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.width) and 0.0 < self.width <= 8.0):
            raise ValueError(f"width multiplier must be in (0, 8], got {self.width}")
        if not (math.isfinite(self.depth) and 0.0 < self.depth <= 8.0):
            raise ValueError(f"depth multiplier must be in (0, 8], got {self.depth}")
        if not 8 <= self.resolution <= 2048:
            raise ValueError(f"resolution must be in [8, 2048], got {self.resolution}")
        if not isinstance(self.stages, tuple) or not self.stages:
            raise ValueError("stages must be a non-empty tuple of StageSpec")
        if not all(isinstance(s, StageSpec) for s in self.stages):
            raise ValueError("every stage must be a StageSpec")
        if self.stem < 1 or self.head < 1:
            raise ValueError(f"stem and head channels must be >= 1, got {self.stem}, {self.head}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"activation {self.act!r} unknown; allowed: {sorted(ACTIVATIONS)}")

    def encode(self) -> str:
        header = (
            f"w{_fmt(self.width)}_d{_fmt(self.depth)}_r{self.resolution}"
            f"_st{self.stem}_hd{self.head}_n{ACTIVATIONS[self.act]}"
        )
        return STAGE_SEP.join([header, *(s.encode() for s in self.stages)])

    @classmethod
    def decode(cls, text: str) -> EfficientNetCandidate:
        text = text.strip()
        header, *stages = text.split(STAGE_SEP)
        where = f"header {header!r}"
        if not stages:
            raise ValueError(
                f"candidate {text!r} has no stages; expected a header and stage strings "
                f"joined by {STAGE_SEP!r}"
            )
        required = ("w", "d", "r", "st", "hd", "n")
        toks = _tokens(header, required, where)
        missing = [k for k in required if k not in toks]
        if missing:
            raise ValueError(
                f"{where}: missing {', '.join(missing)}; expected e.g. "
                "w1.0_d1.0_r224_st32_hd1280_nsw"
            )
        return cls(
            width=float(_number("w", toks["w"], float, where)),
            depth=float(_number("d", toks["d"], float, where)),
            resolution=int(_number("r", toks["r"], int, where)),
            stem=int(_number("st", toks["st"], int, where)),
            head=int(_number("hd", toks["hd"], int, where)),
            act=_activation(toks["n"], where),
            stages=tuple(StageSpec.decode(s) for s in stages),
        )
