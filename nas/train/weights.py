"""How a trial's weights are stored and read back, pruned shape included.

A trial's weights are a state dict written atomically. A pruned trial's network is smaller than
its architecture says: Torch-Pruning's pruning history (module, side, channel indices removed)
is written beside the weights, and replaying it on a fresh network of the same architecture
gives the shape the weights load into. The history goes in first and the weights load only
after it, so a reader never meets weights without their shape.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from torch import nn

from hwnas_base.io import write_atomic

# Torch-Pruning's history: (module name, out-channel side?, channel indices removed).
PruningHistory = list[tuple[str, bool, list[int]]]


def save_weights(model: nn.Module, path: Path) -> None:
    """Write a state dict atomically: a crash leaves the old file or none, never half a file."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    write_atomic(path, buffer.getvalue())


def history_path(weights_path: Path) -> Path:
    """Where a pruned trial's pruning history lives, beside its weights."""
    return weights_path.with_suffix(".pruning.json")


def save_history(history: PruningHistory, path: Path) -> None:
    """Write a pruning history beside a trial's weights (the weights load only after it)."""
    write_atomic(path, json.dumps(history))


def load_history(path: Path) -> PruningHistory:
    return [(str(n), bool(o), list(i)) for n, o, i in json.loads(path.read_text("utf-8"))]


def replay(model: nn.Module, example: torch.Tensor, history: PruningHistory) -> nn.Module:
    """Apply a recorded pruning to a network of the same architecture, in place."""
    import torch_pruning as tp

    model.eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    graph.load_pruning_history([list(h) for h in history])
    return model


def shape_like(model: nn.Module, weights_path: Path, example: torch.Tensor) -> nn.Module:
    """`model` pruned as the trial whose weights are at `weights_path` was (if it was)."""
    history = history_path(weights_path)
    if history.is_file():
        replay(model, example, load_history(history))
    return model


def transfer_weights(proxy: nn.Module, deploy: nn.Module) -> dict[str, str]:
    """Copy trained weights from the proxy network into the deployment network.

    Returns:
        How each differing tensor was handled, by state-dict key.
    """
    from timm.models import adapt_input_conv

    src, dst = proxy.state_dict(), deploy.state_dict()
    notes: dict[str, str] = {}
    for key, value in src.items():
        if dst[key].shape == value.shape:
            dst[key] = value
        elif key == "conv_stem.weight":
            dst[key] = adapt_input_conv(dst[key].shape[1], value, base_chans=value.shape[1])
            notes[key] = (
                f"adapted from {value.shape[1]} to {dst[key].shape[1]} input "
                "channels (timm adapt_input_conv)"
            )
        else:
            notes[key] = (
                f"freshly initialised: trained shape {tuple(value.shape)}, "
                f"deployment shape {tuple(dst[key].shape)}"
            )
    deploy.load_state_dict(dst)
    return notes
