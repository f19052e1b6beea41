"""The samplers a search can use, one registry keyed by the name `search.sampler` takes.

`make_sampler` builds the configured one for every backend (the local loop, shared-storage
workers and the Ray driver all open the study through `nas.search.study.open_study`), the
search-strategy benchmark reads the registry for its competitors, and the sampler contract test
(`tests/nas/search/test_samplers.py`) runs every registered sampler on every backend. Adding a
sampler is one `register_sampler` call below, plus its name in `nas.config.SamplerName`, the
type the config validates against (a test holds the two equal: the config sits a floor below
this registry and cannot read it).

A sampler need not survive pickling: the Ray backend keeps it in the driver process and never
checkpoints it (`nas.cluster.searcher.StudySearch.save`); the study in the run's storage is the
search's whole state.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler

from nas.config import SearchConfig
from nas.errors import ConfigError
from nas.evaluate.pool import Foresight
from nas.search.ehvi import EHVISampler


@dataclass(frozen=True)
class SamplerContext:
    """What a sampler may be built from.

    Attributes:
        search: The run's search section (the sampler's own settings among them).
        seed: The sampler's seed.
        foresight: What the sampler may know of untried candidates: their latency and
            surrogate features (see `nas.evaluate.pool`; only ehvi reads it).
        search_space: The distributions every trial asks for (ehvi's candidate pool).
    """

    search: SearchConfig
    seed: int
    foresight: Foresight
    search_space: dict[str, BaseDistribution] | None = None


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler.

    Attributes:
        name: The value of `search.sampler` that selects it.
        build: Makes a fresh sampler from the run's settings.
        optuna: One of Optuna's own samplers (the rivals the strategy benchmark compares ours
            with), rather than one of this project's.
    """

    name: str
    build: Callable[[SamplerContext], BaseSampler]
    optuna: bool


_SAMPLERS: dict[str, SamplerSpec] = {}


def register_sampler(spec: SamplerSpec) -> SamplerSpec:
    """Add a sampler to the registry.

    Raises:
        ValueError: a sampler of that name is registered already.
    """
    if spec.name in _SAMPLERS:
        raise ValueError(f"a sampler named {spec.name!r} is registered already")
    _SAMPLERS[spec.name] = spec
    return spec


def list_samplers() -> list[str]:
    """The registered samplers' names, in registration order."""
    return list(_SAMPLERS)


def get_sampler(name: str) -> SamplerSpec:
    """The registered sampler called `name`.

    Raises:
        ConfigError: no sampler has that name.
    """
    try:
        return _SAMPLERS[name]
    except KeyError:
        raise ConfigError(
            f"search.sampler {name!r} unknown; choose one of {', '.join(_SAMPLERS)}"
        ) from None


def make_sampler(
    search: SearchConfig,
    seed: int,
    foresight: Foresight | None = None,
    search_space: dict[str, BaseDistribution] | None = None,
) -> BaseSampler:
    """The sampler `search.sampler` names, built from the run's settings.

    Args:
        search: The run's search section.
        seed: The sampler's seed.
        foresight: What the ehvi sampler may know of untried candidates.
        search_space: The distributions every trial asks for (the ehvi sampler's pool).
    """
    context = SamplerContext(search, seed, foresight or Foresight(), search_space)
    return get_sampler(search.sampler).build(context)


def _nsga2(c: SamplerContext) -> BaseSampler:
    return optuna.samplers.NSGAIISampler(population_size=c.search.population_size, seed=c.seed)


def _tpe(c: SamplerContext) -> BaseSampler:
    return optuna.samplers.TPESampler(
        n_startup_trials=c.search.n_startup_trials, seed=c.seed, multivariate=True
    )


def _random(c: SamplerContext) -> BaseSampler:
    return optuna.samplers.RandomSampler(seed=c.seed)


def _gp(c: SamplerContext) -> BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.GPSampler(n_startup_trials=c.search.n_startup_trials, seed=c.seed)


def _ehvi(c: SamplerContext) -> BaseSampler:
    e = c.search.ehvi
    return EHVISampler(
        latency_of=c.foresight.latency_of,
        features=c.foresight.features,
        search_space=c.search_space,
        seed=c.seed,
        n_startup_trials=e.n_startup_trials,
        pool_size=e.pool_size,
        refit_every=e.refit_every,
        budget_sweep=e.budget_sweep,
        max_latency_ms=c.search.constraints.max_latency_ms,
    )


# NSGA-II (the default), TPE and GP read the constraints each trial sets on itself
# (`nas.search.study.tell_outcome`); ehvi is told the latency limit.
register_sampler(SamplerSpec("nsga2", _nsga2, optuna=True))
register_sampler(SamplerSpec("tpe", _tpe, optuna=True))
register_sampler(SamplerSpec("random", _random, optuna=True))
register_sampler(SamplerSpec("gp", _gp, optuna=True))
register_sampler(SamplerSpec("ehvi", _ehvi, optuna=False))
