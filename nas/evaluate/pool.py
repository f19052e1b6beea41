"""Latency of candidates nobody has trained yet: what the ehvi sampler scores its pool with.

In tabular mode the benchmark table answers; otherwise the device's predictor (the configured
one when latency is predicted or hybrid, the device's lookup table when it is measured). Where
none can answer, or the candidates carry compression that no table describes, latency is not
free and the sampler models it from the trials instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latency_predictors.sources import LatencySource
from nas.config import RunConfig
from nas.errors import ConfigError, NASError, RunError
from nas.evaluate.latency import lookup_predictor
from nas.evaluate.tabular import TableLatency

PoolLatency = Callable[[Sequence[Mapping[str, Any]]], list[float]]
Features = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Foresight:
    """What a sampler may know of a candidate before training it."""

    latency_of: PoolLatency | None = None
    features: Features | None = None


def foresight(config: RunConfig, space: Any, runs_dir: Path, source: LatencySource) -> Foresight:
    """What the configured sampler may know of a candidate before training it: its latency
    (`pool_latency`) and the space's surrogate features (NAS-Bench-201's path encoding)."""
    if config.search.sampler != "ehvi":
        return Foresight()
    latency_of = pool_latency(config, space, runs_dir, source)
    if not hasattr(space, "path_features"):
        return Foresight(latency_of)

    def features(params: Mapping[str, Any]) -> Any:
        return space.path_features(space.from_params(params))

    return Foresight(latency_of, features)


def pool_latency(
    config: RunConfig, space: Any, runs_dir: Path, source: LatencySource
) -> PoolLatency | None:
    """Latencies (ms, NaN where unknown) of parameter assignments before training; None when
    the search does not use them or cannot have them.

    Raises:
        ConfigError: ``search.ehvi.latency: known`` where latency cannot be known in advance.
    """
    want = config.search.ehvi.latency
    if config.search.sampler != "ehvi" or want == "modelled":
        return None
    if config.compression.enabled:
        if want == "known":
            raise ConfigError(
                "search.ehvi.latency: known, but a compressed candidate's latency is known only "
                "once its artifact is measured; use auto or modelled"
            )
        return None
    if isinstance(source, TableLatency):
        return _from_table(space, source)
    predictor = getattr(source, "predictor", None)
    predictor = predictor or getattr(getattr(source, "predicted", None), "predictor", None)
    if predictor is None:
        try:
            predictor, _ = lookup_predictor(config, space, runs_dir)
        except NASError as e:
            if want == "known":
                raise ConfigError(f"search.ehvi.latency: known, but {e}") from None
            return None

    def predicted(assignments: Sequence[Mapping[str, Any]]) -> list[float]:
        candidates = [space.from_params(p) for p in assignments]
        return [float(v) for v in predictor.predict(candidates)]

    return predicted


def _from_table(space: Any, source: TableLatency) -> PoolLatency:
    def looked_up(assignments: Sequence[Mapping[str, Any]]) -> list[float]:
        out = []
        for p in assignments:
            try:
                out.append(source.ms(space.from_params(p)))
            except RunError:  # a candidate the table lacks cannot be scored
                out.append(math.inf)
        return out

    return looked_up
