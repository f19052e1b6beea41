"""A weight-sharing supernet over an EfficientNet space (Once-for-All style).

The supernet is the space's largest candidate (`EfficientNetSpace.largest`: every ordered choice
at its maximum) built by timm like any other candidate. Every candidate of the space is a
sub-network of it, and its weights are slices of the largest network's tensors:

- width and expansion: the leading channels (output channels first, then input channels);
- kernel: the centre of the largest kernel (BigNAS's centre crop; OFA adds a learned 5x5->3x3
  transform, which the sandwich rule makes unnecessary in BigNAS's measurements);
- depth: the first blocks of each stage;
- squeeze-excitation: the SE weights are used where the candidate has SE, skipped where not;
- activation: parameter-free, so a module with another activation still loads the weights,
  but weights trained under one activation are not trained for another; a supernet search
  fixes one (`evaluation: supernet` refuses a space that lists several), as Once-for-All and
  BigNAS do.

Nothing on the supernet says which sub-network is active. `forward(x, candidate)` builds the
candidate's static timm module (cached) and runs it with `torch.func.functional_call` on views
of the shared tensors, so gradients land in the shared weights; `extract_subnet(candidate)`
returns a fresh module from `build` with the slices copied in. Training and extraction run the
very same module code, so a sub-network scores the same inside the supernet and outside it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from search_spaces.efficientnet.candidate import EfficientNetCandidate
from search_spaces.efficientnet.space import EfficientNetSpace


def crop(weight: torch.Tensor, shape: torch.Size | tuple[int, ...], name: str = "") -> torch.Tensor:
    """The slice of `weight` a sub-network with a tensor of `shape` inherits (a view).

    Leading entries along the first two dimensions (output and input channels), the centre
    along the others (kernel). Raises ValueError when `shape` does not fit inside `weight`.
    """
    if weight.dim() != len(shape) or any(s > w for s, w in zip(shape, weight.shape, strict=True)):
        raise ValueError(
            f"{name or 'tensor'}: shape {tuple(shape)} does not fit in the supernet's "
            f"{tuple(weight.shape)}"
        )
    index: list[slice] = []
    for dim, (s, w) in enumerate(zip(shape, weight.shape, strict=True)):
        if dim < 2:
            index.append(slice(0, s))
        else:
            if (w - s) % 2:
                raise ValueError(
                    f"{name or 'tensor'}: kernel {s} has no centre in the supernet's kernel {w}"
                )
            start = (w - s) // 2
            index.append(slice(start, start + s))
    return weight[tuple(index)]


class EfficientNetSupernet(nn.Module):
    """The largest network of a space, whose slices are every candidate's weights.

    Args:
        space: The search space; every candidate it can produce is a sub-network.
        num_classes: Classifier outputs.
        in_chans: Input channels.
        cache_size: Built sub-network modules kept for `forward` (building one takes tens of
            milliseconds).
    """

    def __init__(
        self, space: EfficientNetSpace, num_classes: int, in_chans: int, *, cache_size: int = 16
    ) -> None:
        super().__init__()
        self.space = space
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.largest = space.largest()
        self.net = space.build(self.largest, num_classes, in_chans)
        self._cache_size = cache_size
        self._modules_cache: OrderedDict[tuple[str, int | None], nn.Module] = OrderedDict()

    def check(self, candidate: EfficientNetCandidate) -> None:
        """Raise ValueError naming the choice when `candidate` is not in the supernet's space."""
        try:
            self.space.to_params(candidate)
        except ValueError as e:
            raise ValueError(f"candidate outside the supernet's space: {e}") from None

    def _input_size(self, candidate: EfficientNetCandidate, side: int | None) -> int | None:
        return side if side is not None and side < candidate.resolution else None

    def subnet_module(
        self, candidate: EfficientNetCandidate, input_size: int | None = None
    ) -> nn.Module:
        """The candidate's static module (cached; its own weights are never used by `forward`)."""
        key = (candidate.encode(), self._input_size(candidate, input_size))
        module = self._modules_cache.get(key)
        if module is None:
            self.check(candidate)
            module = self.space.build(candidate, self.num_classes, self.in_chans, input_size=key[1])
            self._modules_cache[key] = module
            while len(self._modules_cache) > self._cache_size:
                self._modules_cache.popitem(last=False)
        else:
            self._modules_cache.move_to_end(key)
        return module

    def subnet_tensors(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """Views of the shared parameters and BatchNorm statistics, shaped as `module`'s."""
        shared: dict[str, torch.Tensor] = dict(self.net.named_parameters())
        shared.update(self.net.named_buffers())
        out: dict[str, torch.Tensor] = {}
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if name not in shared:
                raise ValueError(f"{name}: the supernet has no such tensor")
            out[name] = crop(shared[name], tensor.shape, name)
        return out

    def forward(self, x: torch.Tensor, candidate: EfficientNetCandidate) -> torch.Tensor:
        """The candidate's output on `x`, computed with the shared weights."""
        module = self.subnet_module(candidate, x.shape[-1])
        module.train(self.training)
        tensors = self.subnet_tensors(module)
        out: torch.Tensor = functional_call(module, tensors, (x,))
        return out

    @torch.no_grad()
    def extract_subnet(
        self, candidate: EfficientNetCandidate, input_size: int | None = None
    ) -> nn.Module:
        """A fresh module built exactly as `space.build(candidate)` with the inherited weights.

        Args:
            candidate: A candidate of the supernet's space.
            input_size: Proxy image side (strides adapted as in proxy training); None builds
                the deployment network.
        """
        self.check(candidate)
        module = self.space.build(
            candidate,
            self.num_classes,
            self.in_chans,
            input_size=self._input_size(candidate, input_size),
        )
        tensors = self.subnet_tensors(module)
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            tensor.copy_(tensors[name])
        return module

    def describe(self) -> dict[str, Any]:
        """What a supernet file must match to be loaded for this space."""
        return {
            "space": self.space.name,
            "space_config": self.space.config.model_dump(mode="json"),
            "largest": self.largest.encode(),
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
        }
