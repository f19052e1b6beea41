"""Profile a device into a latency table for the space and deployment shape of a run config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hwnas_base.progress import PhaseProgress, quiet
from latency_predictors.devices import TABLES_DIR
from latency_predictors.profile import profile_space
from latency_predictors.sources import space_id
from nas.config import RunConfig, load_config, parse_config
from nas.errors import RunError
from nas.evaluate.latency import config_backend
from search_spaces import get_space


def latency_config(config_path: Path | None, space_name: str | None, device: str) -> RunConfig:
    """The run config that names the space and deployment shape, with `device` as target.

    Raises:
        RunError: `space_name` contradicts the config, or has no operator-level support.
        UnknownSpaceError: no space of that name.
    """
    if config_path is not None:
        config = load_config(config_path)
        if space_name is not None and space_name != config.space.name:
            raise RunError(
                f"--space {space_name} contradicts {config_path}, whose space is "
                f"{config.space.name}; give one of them"
            )
    else:
        config = RunConfig()
        if space_name is not None:
            get_space(space_name)  # unknown names fail here with the registered ones listed
            if space_name != config.space.name:
                raise RunError(
                    f"space {space_name!r} has no operator-level latency support; the "
                    f"EfficientNet space has (--space {config.space.name})"
                )
    raw = config.model_dump(mode="json")
    raw["latency"]["device"] = device
    return parse_config(raw, source=str(config_path or "--device"))


@dataclass(frozen=True)
class ProfileOptions:
    """What `nas latency profile` asks for.

    Attributes:
        device: The device to measure (see `nas devices`).
        config: A run config whose space and deployment shape to profile, or
        space: a registered space with its default settings.
        out: The table to write (.csv); default: the device's table in
            ``latency_predictors/tables/``.
        calibration: Random whole candidates to time for the table's correction.
    """

    device: str
    config: Path | None = None
    space: str | None = None
    out: Path | None = None
    calibration: int = 20


def profile_device(options: ProfileOptions, progress: PhaseProgress = quiet) -> Path:
    """Profile a device into a latency table; see `nas latency profile --help`."""
    config = latency_config(options.config, options.space, options.device)
    space = get_space(config.space.name, config.space)
    space_config = config.space.model_dump(mode="json")
    target = (
        options.out or TABLES_DIR / f"{options.device}__{space_id(space.name, space_config)}.csv"
    )
    return profile_space(
        space,
        config_backend(config),
        Path(target),
        num_classes=config.deployment.num_classes,
        in_chans=config.deployment.channels,
        space_config=space_config,
        calibration=options.calibration,
        progress=progress,
    )
