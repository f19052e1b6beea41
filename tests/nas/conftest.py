"""Fixtures of the nas tests: the small config's parts, loaded once; a Ray cluster and a
PostgreSQL server, started once for every test that needs them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nas.config import parse_config
from nas.train.data import load_dataset, make_splits
from search_spaces import get_space
from tests.conftest import SMALL_CONFIG
from tests.services import Postgres, RayCluster, netns_available, postgres_bin


@pytest.fixture(scope="session")
def small() -> tuple[Any, Any, Any]:
    """(config, space, proxy splits) of the small config."""
    config = parse_config(SMALL_CONFIG, source="test")
    space = get_space("efficientnet", config.space)
    splits = make_splits(load_dataset(config.data), config.data, config.seed)
    return config, space, splits


@pytest.fixture(scope="session")
def cluster() -> Iterator[RayCluster]:
    """A real two-node Ray cluster on loopback, shared by the tests that need one."""
    if not netns_available():
        pytest.skip("a Ray cluster test needs root and `ip netns`")
    c = RayCluster.start()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed; scripts/env.sh installs it")
    server = Postgres.start()
    yield server
    server.stop()
