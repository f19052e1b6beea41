"""Typed configuration of the NAS-Bench-201 space (the ``space:`` section of a run config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class NB201SpaceConfig(BaseModel):
    """The benchmark's cell space; nothing to configure: every cell of 6 edges x 5 operations."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["nb201"] = "nb201"
