"""Fixtures of the nas tests: the small config's parts, loaded once."""

from __future__ import annotations

from typing import Any

import pytest

from nas.config import parse_config
from nas.train.data import load_dataset, make_splits
from search_spaces import get_space
from tests.conftest import SMALL_CONFIG


@pytest.fixture(scope="session")
def small() -> tuple[Any, Any, Any]:
    """(config, space, proxy splits) of the small config."""
    config = parse_config(SMALL_CONFIG, source="test")
    space = get_space("efficientnet", config.space)
    splits = make_splits(load_dataset(config.data), config.data, config.seed)
    return config, space, splits
