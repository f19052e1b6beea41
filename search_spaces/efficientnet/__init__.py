"""EfficientNet-style MBConv search space with compound scaling."""

from search_spaces.efficientnet.build import adapt_strides, build, fold_batchnorm
from search_spaces.efficientnet.candidate import (
    ACTIVATIONS,
    BLOCKS,
    EfficientNetCandidate,
    StageSpec,
)
from search_spaces.efficientnet.config import EfficientNetSpaceConfig
from search_spaces.efficientnet.scaling import B0_STAGES, CompoundCoefficients, compound_scale
from search_spaces.efficientnet.space import EfficientNetSpace

__all__ = [
    "ACTIVATIONS",
    "B0_STAGES",
    "BLOCKS",
    "CompoundCoefficients",
    "EfficientNetCandidate",
    "EfficientNetSpace",
    "EfficientNetSpaceConfig",
    "StageSpec",
    "adapt_strides",
    "build",
    "compound_scale",
    "fold_batchnorm",
]
