"""The EfficientNet-style search space: compound scaling plus per-stage MBConv choices."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from torch import nn

from search_spaces.base import Dimension, mutate_params, sample_params
from search_spaces.efficientnet.build import build
from search_spaces.efficientnet.candidate import (
    ACTIVATIONS,
    EfficientNetCandidate,
    StageSpec,
)
from search_spaces.efficientnet.config import CompoundScaling, EfficientNetSpaceConfig
from search_spaces.efficientnet.operators import Operator, OperatorKey, operator_keys, operators
from search_spaces.efficientnet.scaling import CompoundCoefficients, compound_scale

_ACT_NAMES = tuple(ACTIVATIONS)


class EfficientNetSpace:
    """MBConv stages of a base network (B0 by default), scaled and varied per stage.

    Dimensions: the scaling (``phi`` in compound mode; ``width``, ``depth``, ``resolution`` in
    independent mode), ``act`` for stem and head, and per stage ``sI_kernel``, ``sI_se``,
    ``sI_act``, ``sI_repeats_delta`` and, for 'ir' stages, ``sI_expansion``.
    """

    name = "efficientnet"

    def __init__(self, config: EfficientNetSpaceConfig | None = None) -> None:
        self.config = config or EfficientNetSpaceConfig()
        self.base = tuple(StageSpec.decode(s) for s in self.config.base_stages)
        scaling = self.config.scaling
        self._compound = isinstance(scaling, CompoundScaling)
        if isinstance(scaling, CompoundScaling):
            self._coeffs = CompoundCoefficients(scaling.alpha, scaling.beta, scaling.gamma)
        self._dims = self._make_dimensions()
        self._by_name = {d.name: d for d in self._dims}

    # -- dimensions -------------------------------------------------------------------------

    def _make_dimensions(self) -> tuple[Dimension, ...]:
        cfg = self.config
        scaling = cfg.scaling
        dims: list[Dimension] = []
        if isinstance(scaling, CompoundScaling):
            dims.append(Dimension("phi", tuple(float(p) for p in scaling.phi), ordered=True))
        else:
            dims.append(Dimension("width", tuple(float(w) for w in scaling.width), ordered=True))
            dims.append(Dimension("depth", tuple(float(d) for d in scaling.depth), ordered=True))
            dims.append(
                Dimension("resolution", tuple(int(r) for r in scaling.resolution), ordered=True)
            )
        dims.append(Dimension("act", tuple(cfg.stem_head_act)))
        ch = cfg.choices
        for i, stage in enumerate(self.base):
            dims.append(Dimension(f"s{i}_kernel", tuple(ch.kernel), ordered=True))
            if stage.block == "ir":
                dims.append(Dimension(f"s{i}_expansion", tuple(ch.expansion), ordered=True))
            dims.append(Dimension(f"s{i}_se", tuple(float(s) for s in ch.se), ordered=True))
            dims.append(Dimension(f"s{i}_act", tuple(ch.act)))
            dims.append(Dimension(f"s{i}_repeats_delta", tuple(ch.repeats_delta), ordered=True))
        return tuple(dims)

    def dimensions(self) -> tuple[Dimension, ...]:
        return self._dims

    def _value(self, params: Mapping[str, Any], name: str) -> Any:
        dim = self._by_name[name]
        if name not in params:
            raise ValueError(f"parameter {name!r} missing; allowed: {list(dim.values)}")
        return dim.values[dim.index(params[name])]

    # -- params <-> candidate ---------------------------------------------------------------

    def _scaling_of(self, params: Mapping[str, Any]) -> tuple[float, float, int]:
        if self._compound:
            return compound_scale(
                self._value(params, "phi"), self._coeffs, self.config.base_resolution
            )
        return (
            float(self._value(params, "width")),
            float(self._value(params, "depth")),
            int(self._value(params, "resolution")),
        )

    def from_params(self, params: Mapping[str, Any]) -> EfficientNetCandidate:
        width, depth, resolution = self._scaling_of(params)
        stages = []
        for i, base in enumerate(self.base):
            expansion = int(self._value(params, f"s{i}_expansion")) if base.block == "ir" else 1
            stages.append(
                StageSpec(
                    block=base.block,
                    repeats=max(1, base.repeats + int(self._value(params, f"s{i}_repeats_delta"))),
                    kernel=int(self._value(params, f"s{i}_kernel")),
                    stride=base.stride,
                    expansion=expansion,
                    channels=base.channels,
                    se=float(self._value(params, f"s{i}_se")),
                    act=str(self._value(params, f"s{i}_act")),
                )
            )
        return EfficientNetCandidate(
            width=width,
            depth=depth,
            resolution=resolution,
            stages=tuple(stages),
            stem=self.config.stem,
            head=self.config.head,
            act=str(self._value(params, "act")),
        )

    def to_params(self, candidate: EfficientNetCandidate) -> dict[str, Any]:
        c = candidate
        if len(c.stages) != len(self.base):
            raise ValueError(
                f"candidate has {len(c.stages)} stages; this space has {len(self.base)}"
            )
        if (c.stem, c.head) != (self.config.stem, self.config.head):
            raise ValueError(
                f"stem/head channels st{c.stem}/hd{c.head} differ from the space's "
                f"st{self.config.stem}/hd{self.config.head}"
            )
        params: dict[str, Any] = {"act": c.act}
        if self._compound:
            params["phi"] = self._phi_of(c)
        else:
            params.update(width=c.width, depth=c.depth, resolution=c.resolution)
        for i, (stage, base) in enumerate(zip(c.stages, self.base, strict=True)):
            fixed = (base.block, base.stride, base.channels)
            if (stage.block, stage.stride, stage.channels) != fixed:
                raise ValueError(
                    f"stage {i} {stage.encode()!r}: block type, stride and channels must be "
                    f"{base.block}, s{base.stride}, c{base.channels} as in the base network"
                )
            params[f"s{i}_kernel"] = stage.kernel
            if base.block == "ir":
                params[f"s{i}_expansion"] = stage.expansion
            params[f"s{i}_se"] = stage.se
            params[f"s{i}_act"] = stage.act
            params[f"s{i}_repeats_delta"] = self._delta_of(i, stage.repeats)
        for name, value in params.items():
            params[name] = self._by_name[name].values[self._by_name[name].index(value)]
        return params

    def _phi_of(self, c: EfficientNetCandidate) -> float:
        for phi in self._by_name["phi"].values:
            w, d, r = compound_scale(phi, self._coeffs, self.config.base_resolution)
            if (w, d, r) == (c.width, c.depth, c.resolution):
                return float(phi)
        raise ValueError(
            f"scaling w{c.width}_d{c.depth}_r{c.resolution} matches no phi in "
            f"{list(self._by_name['phi'].values)}"
        )

    def _delta_of(self, i: int, repeats: int) -> int:
        for delta in self._by_name[f"s{i}_repeats_delta"].values:
            if max(1, self.base[i].repeats + delta) == repeats:
                return int(delta)
        raise ValueError(
            f"stage {i}: r{repeats} is not reachable from base r{self.base[i].repeats}"
            f" with repeats_delta {list(self._by_name[f's{i}_repeats_delta'].values)}"
        )

    def largest(self) -> EfficientNetCandidate:
        """The candidate with every ordered choice at its largest (the first activations).

        Every candidate's weight tensors fit inside this one's: channels, expansion, kernel,
        squeeze-excitation and repeats only grow with their choices. It is the supernet.
        """
        return self.from_params(
            {d.name: max(d.values) if d.ordered else d.values[0] for d in self._dims}
        )

    def smallest(self) -> EfficientNetCandidate:
        """The candidate with every ordered choice at its smallest (the first activations)."""
        return self.from_params(
            {d.name: min(d.values) if d.ordered else d.values[0] for d in self._dims}
        )

    # -- protocol ---------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> EfficientNetCandidate:
        return self.from_params(sample_params(self._dims, rng))

    def mutate(
        self, candidate: EfficientNetCandidate, rng: np.random.Generator
    ) -> EfficientNetCandidate:
        for _ in range(100):
            mutated = self.from_params(mutate_params(self._dims, self.to_params(candidate), rng))
            if mutated != candidate:
                return mutated
        raise ValueError("no dimension change alters this candidate")

    def encode(self, candidate: EfficientNetCandidate) -> str:
        return candidate.encode()

    def decode(self, text: str) -> EfficientNetCandidate:
        return EfficientNetCandidate.decode(text)

    def features(self, candidate: EfficientNetCandidate) -> np.ndarray:
        """Scaling, then per stage: kernel, expansion, se, repeats, activation one-hot."""
        c = candidate
        row: list[float] = [c.width, c.depth, c.resolution / self.config.base_resolution]
        row += [float(c.act == a) for a in _ACT_NAMES]
        for stage in c.stages:
            row += [stage.kernel, stage.expansion, stage.se, stage.repeats * c.depth]
            row += [float(stage.act == a) for a in _ACT_NAMES]
        return np.asarray(row, dtype=np.float64)

    def resolution(self, candidate: EfficientNetCandidate) -> int:
        return candidate.resolution

    def proxy_input_size(self, candidate: EfficientNetCandidate, image_size: int) -> int:
        """Proxy image side for `candidate`: the data's size scaled like its resolution."""
        return max(1, round(image_size * candidate.resolution / self.config.base_resolution))

    def build(
        self,
        candidate: EfficientNetCandidate,
        num_classes: int,
        in_chans: int,
        *,
        input_size: int | None = None,
    ) -> nn.Module:
        return build(
            candidate,
            num_classes,
            in_chans,
            input_size=input_size,
            min_feature_size=self.config.min_feature_size,
        )

    # -- operators (latency tables) ---------------------------------------------------------

    def operators(
        self,
        candidate: EfficientNetCandidate,
        num_classes: int,
        in_chans: int,
        model: nn.Module | None = None,
    ) -> list[Operator]:
        """The operators of the deployment network, each with its module and table key."""
        if model is None:
            model = self.build(candidate, num_classes, in_chans)
        return operators(candidate, model)  # type: ignore[arg-type]

    def operator_keys(
        self, candidate: EfficientNetCandidate, num_classes: int, in_chans: int
    ) -> list[OperatorKey]:
        """The table keys of `operators`, without building the network."""
        return operator_keys(candidate, num_classes, in_chans)

    def covering_candidates(self) -> Iterator[EfficientNetCandidate]:
        """A few candidates whose operators, together, are every operator of the space.

        A block's key depends only on the scaling (its input side and channels) and its own
        stage's choices; depth and repeats only say how many copies there are. So for each
        scaling, candidate j gives every stage its j-th combination of choices, with the most
        repeats, and the stem/head its j-th activation.
        """
        scaling_dims = [d for d in self._dims if d.name in ("phi", "width", "resolution")]
        fixed: dict[str, Any] = {}
        if not self._compound:
            fixed["depth"] = max(self._by_name["depth"].values)
        per_stage: list[list[dict[str, Any]]] = []
        for i in range(len(self.base)):
            names = [
                n
                for n in (f"s{i}_kernel", f"s{i}_expansion", f"s{i}_se", f"s{i}_act")
                if n in self._by_name
            ]
            product = itertools.product(*(self._by_name[n].values for n in names))
            per_stage.append([dict(zip(names, c, strict=True)) for c in product])
            fixed[f"s{i}_repeats_delta"] = max(self._by_name[f"s{i}_repeats_delta"].values)
        acts = self._by_name["act"].values
        n = max(len(acts), *(len(c) for c in per_stage))
        for scaling in itertools.product(*(d.values for d in scaling_dims)):
            params = dict(fixed)
            params.update(zip((d.name for d in scaling_dims), scaling, strict=True))
            for j in range(n):
                params["act"] = acts[j % len(acts)]
                for combos in per_stage:
                    params.update(combos[j % len(combos)])
                yield self.from_params(params)
