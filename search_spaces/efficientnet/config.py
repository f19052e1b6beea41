"""Typed configuration of the EfficientNet-style space (the ``space:`` section of a run config)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from search_spaces.efficientnet.candidate import StageSpec
from search_spaces.efficientnet.scaling import B0_STAGES

Activation = Literal["silu", "relu6", "hswish"]


def _values(raw: Any) -> Any:
    """Accept a number, a list of numbers, or ``{low, high, step}``; give a tuple of numbers."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return (raw,)
    if isinstance(raw, dict):
        extra = set(raw) - {"low", "high", "step"}
        if extra or not {"low", "high"} <= set(raw):
            raise ValueError("a range is {low, high, step}")
        low, high = float(raw["low"]), float(raw["high"])
        step = float(raw.get("step", high - low or 1.0))
        if high < low or step <= 0:
            raise ValueError(f"need low <= high and step > 0, got {raw}")
        count = round((high - low) / step)
        if abs(low + count * step - high) > 1e-6 * max(1.0, abs(high)):
            raise ValueError(f"high - low must be a multiple of step, got {raw}")
        return tuple(round(low + i * step, 6) for i in range(count + 1))
    return raw


Values = Annotated[tuple[float, ...], BeforeValidator(_values), Field(min_length=1)]


def _unique(values: tuple[Any, ...] | list[Any]) -> Any:
    if len(set(values)) != len(values):
        raise ValueError(f"values repeat: {list(values)}")
    return values


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CompoundScaling(_Strict):
    """Width, depth and resolution from one coefficient phi: beta**phi, alpha**phi, gamma**phi."""

    mode: Literal["compound"] = "compound"
    phi: Values = (0.0,)
    alpha: float = Field(1.2, ge=1.0)
    beta: float = Field(1.1, ge=1.0)
    gamma: float = Field(1.15, ge=1.0)

    @field_validator("phi")
    @classmethod
    def _phi(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(p < 0 or p > 8 for p in v):
            raise ValueError(f"phi values must be in [0, 8], got {list(v)}")
        return tuple(_unique(v))


class IndependentScaling(_Strict):
    """Width, depth and resolution each chosen from its own values."""

    mode: Literal["independent"] = "independent"
    width: Values = (1.0,)
    depth: Values = (1.0,)
    resolution: Values = (224,)

    @field_validator("width", "depth")
    @classmethod
    def _multiplier(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(x <= 0 or x > 8 for x in v):
            raise ValueError(f"multipliers must be in (0, 8], got {list(v)}")
        return tuple(_unique(v))

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(x != int(x) or not 8 <= x <= 2048 for x in v):
            raise ValueError(f"resolutions must be whole numbers in [8, 2048], got {list(v)}")
        return tuple(_unique(tuple(int(x) for x in v)))


class StageChoices(_Strict):
    """What each stage may choose; expansion applies to 'ir' stages ('ds' stages keep e1)."""

    kernel: tuple[int, ...] = Field((3, 5, 7), min_length=1)
    expansion: tuple[int, ...] = Field((3, 4, 6), min_length=1)
    se: tuple[float, ...] = Field((0.0, 0.25), min_length=1)
    act: tuple[Activation, ...] = Field(("silu", "relu6", "hswish"), min_length=1)
    repeats_delta: tuple[int, ...] = Field((-1, 0, 1), min_length=1)

    @field_validator("kernel", "expansion", "se", "act", "repeats_delta")
    @classmethod
    def _no_repeats(cls, v: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(_unique(v))

    @field_validator("kernel")
    @classmethod
    def _odd(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(k < 1 or k % 2 == 0 for k in v):
            raise ValueError(f"kernel sizes must be positive odd numbers, got {list(v)}")
        return v

    @field_validator("expansion")
    @classmethod
    def _expansion(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(e < 1 for e in v):
            raise ValueError(f"expansion ratios must be >= 1, got {list(v)}")
        return v

    @field_validator("se")
    @classmethod
    def _se(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 <= s < 1.0 for s in v):
            raise ValueError(f"se ratios must be in [0, 1) (0 = off), got {list(v)}")
        return v


class EfficientNetSpaceConfig(_Strict):
    """An EfficientNet-style space: a base network (B0 by default) and what may vary."""

    name: Literal["efficientnet"] = "efficientnet"
    scaling: CompoundScaling | IndependentScaling = Field(
        default_factory=CompoundScaling, discriminator="mode"
    )
    base_resolution: int = Field(224, ge=8, le=2048)
    base_stages: tuple[str, ...] = Field(B0_STAGES, min_length=1)
    stem: int = Field(32, ge=1)
    head: int = Field(1280, ge=1)
    choices: StageChoices = Field(default_factory=StageChoices)
    stem_head_act: tuple[Activation, ...] = Field(("silu",), min_length=1)
    min_feature_size: int = Field(
        4,
        ge=1,
        description="On small proxy images, a stride is dropped where it would shrink "
        "the feature map below this size; deployment builds keep every stride.",
    )

    @field_validator("scaling", mode="before")
    @classmethod
    def _infer_mode(cls, v: Any) -> Any:
        """Without ``mode``, width/depth/resolution keys mean independent, else compound."""
        if isinstance(v, dict) and "mode" not in v:
            independent = {"width", "depth", "resolution"} & set(v)
            return {**v, "mode": "independent" if independent else "compound"}
        return v

    @field_validator("base_stages")
    @classmethod
    def _stages(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for i, text in enumerate(v):
            try:
                StageSpec.decode(text)
            except ValueError as e:
                raise ValueError(f"base_stages[{i}]: {e}") from None
        return v
