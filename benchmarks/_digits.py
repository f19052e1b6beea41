"""The small real search the benchmarks run: digits (scikit-learn's 8x8 images), a narrow
EfficientNet space at 32x32, one torch thread a trial; each benchmark sets the trials and
epochs. A helper of the benchmark scripts (they run with this folder on their path)."""

from __future__ import annotations

import copy
import sys
from typing import Any

DIGITS_SEARCH: dict[str, Any] = {
    "seed": 0,
    "space": {
        "scaling": {"mode": "independent", "width": [0.25, 0.5], "depth": 0.5, "resolution": [32]},
        "base_resolution": 32,
        "min_feature_size": 2,
        "choices": {"kernel": [3, 5], "expansion": [3, 6], "act": ["relu6", "hswish"]},
    },
    "data": {"dataset": "digits", "train_size": 1400, "val_size": 300},
    "training": {"epochs": 3, "batch_size": 64, "threads": 1},
    "deployment": {"num_classes": 10},
    "latency": {"warmup": 2, "repeats": 10},
    "search": {"sampler": "random"},
}

# The `nas` command of this interpreter.
NAS = [sys.executable, "-m", "nas.cli"]


def digits_search(name: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """The digits search under `name`, with `sections` merged into its sections."""
    config = copy.deepcopy(DIGITS_SEARCH)
    config["name"] = name
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config
