"""The distillation teacher: a larger network trained once on the proxy data, cached in the run.

A teacher is a candidate string of the run's space or ``timm:<model name>`` (built by timm
without pretrained weights, which would need a download). It is trained with the run's proxy
recipe for ``teacher_epochs`` epochs; its weights and accuracy are written into the run folder,
so a resumed or repeated search reuses it. Students see the teacher's logits on their own
(resized) training images, computed once per image size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas_base.io import write_atomic
from hwnas_base.progress import PhaseProgress, quiet
from nas.config import DistillationConfig, TrainingConfig
from nas.errors import ConfigError
from nas.train.data import ProxySplits
from nas.train.proxy import Distillation, train_proxy
from nas.train.weights import save_weights

TIMM_PREFIX = "timm:"


def build_teacher(cfg: DistillationConfig, space: Any, data: ProxySplits) -> nn.Module:
    """A fresh teacher network for the proxy data.

    Raises:
        ConfigError: the teacher is neither a candidate of the space nor a timm model name.
    """
    spec = cfg.teacher or ""
    where = f"compression.distillation.teacher {spec!r}"
    if spec.startswith(TIMM_PREFIX):
        import timm

        name = spec.removeprefix(TIMM_PREFIX)
        if name not in timm.list_models():
            raise ConfigError(f"{where}: timm has no model {name!r} (see timm.list_models())")
        model: nn.Module = timm.create_model(
            name, pretrained=False, num_classes=data.num_classes, in_chans=data.channels
        )
        return model
    try:
        candidate = space.decode(spec)
        space.to_params(candidate)
    except ValueError as e:
        raise ConfigError(
            f"{where}: not a candidate of the space ({e}); or write timm:<model name>"
        ) from None
    size = space.proxy_input_size(candidate, data.image_size)
    built: nn.Module = space.build(candidate, data.num_classes, data.channels, input_size=size)
    return built


def check_teacher(cfg: DistillationConfig, space: Any, data: ProxySplits) -> None:
    """Fail before any training if the teacher cannot be built."""
    if cfg.enabled:
        build_teacher(cfg, space, data)


class Teacher:
    """Trains (or loads) the teacher and hands out its logits per image size."""

    def __init__(
        self,
        cfg: DistillationConfig,
        space: Any,
        data: ProxySplits,
        training: TrainingConfig,
        folder: Path,
        *,
        seed: int = 0,
    ) -> None:
        self.cfg, self.space, self.data, self.training = cfg, space, data, training
        self.folder, self.seed = folder, seed
        self._model: nn.Module | None = None
        self._logits: dict[int, torch.Tensor] = {}
        self.accuracy: float | None = None

    @property
    def weights_path(self) -> Path:
        return self.folder / "teacher.pt"

    @property
    def card_path(self) -> Path:
        return self.folder / "teacher.json"

    def _identity(self) -> dict[str, Any]:
        return {
            "teacher": self.cfg.teacher,
            "teacher_epochs": self.cfg.teacher_epochs,
            "seed": self.seed,
            "training": self.training.model_dump(mode="json"),
            "train_images": len(self.data.train_x),
            "image_size": self.data.image_size,
        }

    def model(self, progress: PhaseProgress = quiet) -> nn.Module:
        """The trained teacher: loaded when the run has it for the same settings, else trained."""
        if self._model is not None:
            return self._model
        torch.manual_seed(self.seed)
        model = build_teacher(self.cfg, self.space, self.data)
        identity = self._identity()
        if self.card_path.is_file() and self.weights_path.is_file():
            card = json.loads(self.card_path.read_text(encoding="utf-8"))
            if card.get("identity") == identity:
                model.load_state_dict(torch.load(self.weights_path, weights_only=True))
                self.accuracy = card["accuracy"]
                self._model = model.eval()
                return self._model
        recipe = self.training.model_copy(update={"epochs": self.cfg.teacher_epochs})
        epochs = recipe.epochs

        def on_step(epoch: int, step: int, steps: int) -> None:
            progress(f"training the teacher, epoch {epoch}/{epochs}", step, steps)

        result = train_proxy(model, self.data, recipe, seed=self.seed, on_step=on_step)
        save_weights(model, self.weights_path)
        card = {"identity": identity, "accuracy": result.accuracy}
        write_atomic(self.card_path, json.dumps(card, indent=2))
        self.accuracy = result.accuracy
        self._model = model.eval()
        return self._model

    def distillation(self, data: ProxySplits, progress: PhaseProgress = quiet) -> Distillation:
        """The teacher's logits on `data`'s training images, with the config's loss mix."""
        size = data.image_size
        if size not in self._logits:
            model = self.model(progress)
            with torch.no_grad():
                self._logits[size] = torch.cat([model(x) for x in data.train_x.split(512)])
        return Distillation(self._logits[size], self.cfg.temperature, self.cfg.weight)
