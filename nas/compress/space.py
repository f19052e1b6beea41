"""Compression as search dimensions: structured pruning ratio and deployment precision.

A trial's compression is drawn by the sampler beside its architecture; `compression_space`
builds the dimensions a config switches on, for any search space.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nas.config import CompressionConfig
from search_spaces.base import Dimension

PRUNE_DIM = "prune_ratio"
PRECISION_DIM = "precision"


@dataclass(frozen=True, slots=True)
class Compression:
    """One trial's compression: prune ratio (one, or one per stage) and artifact precision."""

    prune: tuple[float, ...] = (0.0,)
    precision: str = "fp32"

    @property
    def pruned(self) -> bool:
        return any(r > 0 for r in self.prune)

    @property
    def prune_ratio(self) -> float:
        """The ratio, or the mean over stages when there is one per stage."""
        return sum(self.prune) / len(self.prune)

    @property
    def compressed(self) -> bool:
        return self.pruned or self.precision != "fp32"

    def encode(self) -> str:
        """``p0.25_int8``; per-stage ratios are joined by ``/``."""
        return f"p{'/'.join(repr(float(r)) for r in self.prune)}_{self.precision}"

    @classmethod
    def decode(cls, text: str) -> Compression:
        """Read `encode`'s form; `ValueError` naming what is wrong."""
        head, _, precision = text.partition("_")
        try:
            if not head.startswith("p") or not precision:
                raise ValueError
            prune = tuple(float(r) for r in head[1:].split("/"))
        except ValueError:
            raise ValueError(
                f"compression {text!r}: expected p<ratio>_<precision>, e.g. p0.25_int8"
            ) from None
        return cls(prune, precision)


class CompressionSpace:
    """The compression dimensions a config switches on, beside the architecture's."""

    def __init__(self, config: CompressionConfig, n_stages: int) -> None:
        self.config = config
        self.n_stages = n_stages
        pruning = config.pruning
        dims: list[Dimension] = []
        if pruning.enabled:
            ratios = (0.0, *sorted(pruning.ratios))
            names = (
                [f"s{i}_{PRUNE_DIM}" for i in range(n_stages)] if pruning.per_stage else [PRUNE_DIM]
            )
            dims += [Dimension(n, ratios, ordered=True) for n in names]
        self._prune_names = [d.name for d in dims]
        if len(config.quantization.precisions) > 1:
            dims.append(Dimension(PRECISION_DIM, tuple(config.quantization.precisions)))
        self._dims = tuple(dims)

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def dimensions(self) -> tuple[Dimension, ...]:
        return self._dims

    def from_params(self, params: Mapping[str, Any]) -> Compression:
        prune = tuple(float(params[n]) for n in self._prune_names) or (0.0,)
        precision = str(params.get(PRECISION_DIM, self.config.quantization.precisions[0]))
        return Compression(prune, precision)

    def to_params(self, compression: Compression) -> dict[str, Any]:
        """The dimension values of `compression`; `ValueError` if the search cannot draw it."""
        c = compression
        if len(c.prune) != max(1, len(self._prune_names)):
            raise ValueError(
                f"compression {c.encode()}: needs {max(1, len(self._prune_names))} prune "
                f"ratio(s) separated by '/'"
            )
        params: dict[str, Any] = {}
        for name, ratio in zip(self._prune_names, c.prune, strict=False):
            allowed = (0.0, *self.config.pruning.ratios)
            if ratio not in allowed:
                raise ValueError(f"compression {c.encode()}: prune ratio {ratio} not in {allowed}")
            params[name] = ratio
        if not self._prune_names and c.pruned:
            raise ValueError(f"compression {c.encode()}: pruning is off in this config")
        precisions = self.config.quantization.precisions
        if c.precision not in precisions:
            raise ValueError(f"compression {c.encode()}: precision not in {list(precisions)}")
        if any(d.name == PRECISION_DIM for d in self._dims):
            params[PRECISION_DIM] = c.precision
        return params

    def split(self, text: str) -> tuple[str, dict[str, Any]]:
        """A seed string ``ARCH`` or ``ARCH|p0.25_int8``: the architecture and compression
        params (empty when no compression is given, so the sampler draws it). The compression
        follows the last ``|``, as an architecture may contain (and end with) ``|`` itself:
        NAS-Bench-201's cells do."""
        arch, sep, rest = text.rpartition("|")
        if not sep or not rest:
            return text, {}
        return arch, self.to_params(Compression.decode(rest))


def compression_space(config: CompressionConfig, space: Any) -> CompressionSpace:
    """The compression dimensions `config` switches on for `space` (per-stage pruning has one
    ratio per stage of the space's base network)."""
    return CompressionSpace(config, n_stages=len(getattr(space, "base", ())))
