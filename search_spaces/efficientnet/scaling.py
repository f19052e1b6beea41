"""Compound scaling as pure functions (EfficientNet, Tan & Le 2019).

Channel rounding and depth scaling are timm's (`round_channels`, `decode_arch_def` with
``depth_trunc='ceil'``, which adds repeats from the last block of a stage); this module adds the
compound coefficients and the mapping from phi to (width, depth, resolution).
"""

from __future__ import annotations

from dataclasses import dataclass

from timm.models._efficientnet_builder import round_channels

__all__ = ["B0_STAGES", "CompoundCoefficients", "compound_scale", "round_channels"]

# EfficientNet-B0's stages in timm's notation (timm `_gen_efficientnet`), activations explicit.
B0_STAGES: tuple[str, ...] = (
    "ds_r1_k3_s1_e1_c16_se0.25_nsw",
    "ir_r2_k3_s2_e6_c24_se0.25_nsw",
    "ir_r2_k5_s2_e6_c40_se0.25_nsw",
    "ir_r3_k3_s2_e6_c80_se0.25_nsw",
    "ir_r3_k5_s1_e6_c112_se0.25_nsw",
    "ir_r4_k5_s2_e6_c192_se0.25_nsw",
    "ir_r1_k3_s1_e6_c320_se0.25_nsw",
)


@dataclass(frozen=True, slots=True)
class CompoundCoefficients:
    """Per-unit-phi growth of depth (alpha), width (beta) and resolution (gamma)."""

    alpha: float = 1.2
    beta: float = 1.1
    gamma: float = 1.15

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            if getattr(self, name) < 1.0:
                raise ValueError(
                    f"compound coefficient {name} must be >= 1, got {getattr(self, name)}"
                )


def compound_scale(
    phi: float,
    coeffs: CompoundCoefficients,
    base_resolution: int = 224,
    resolution_divisor: int = 8,
) -> tuple[float, float, int]:
    """(width, depth, resolution) for compound coefficient `phi`.

    Width and depth are rounded to 3 decimals so that they print compactly in candidate strings;
    the resolution is rounded to a multiple of `resolution_divisor`.
    """
    width = round(coeffs.beta**phi, 3)
    depth = round(coeffs.alpha**phi, 3)
    res = base_resolution * coeffs.gamma**phi
    resolution = max(resolution_divisor, round(res / resolution_divisor) * resolution_divisor)
    return width, depth, resolution
