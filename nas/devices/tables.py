"""Adding a device's latency table: checked as a search would use it, then installed whole.

A table comes as its CSV and its JSON side file (`latency_predictors.table` documents both).
It is written to a temporary folder, loaded with every check a search makes (schema, units,
device identity against its own deployment shape, every operator of its space present, enough
whole-model measurements to fit the correction), and only then copied into the runs folder's
``tables/``, named from its own metadata, never from an uploaded file name. A table that fails
leaves nothing behind.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from hwnas_base.io import write_atomic
from latency_predictors.sources import USER_TABLES, space_id
from latency_predictors.table import metadata_path
from nas.config import parse_config
from nas.errors import ConfigError, TableError
from nas.evaluate.latency import lookup_predictor
from search_spaces import get_space

DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def add_table(csv: bytes, metadata: bytes, runs_dir: Path, *, replace: bool = False) -> Path:
    """Check a latency table and install it under `runs_dir/tables/`; its path.

    Raises:
        TableError: the table is malformed, does not cover its space, or a table for the same
            device and space exists and `replace` is not set.
    """
    meta = _metadata(metadata)
    device, space_meta = meta["device"], meta["space"]
    with tempfile.TemporaryDirectory(prefix="nas-table-") as tmp:
        path = Path(tmp) / "table.csv"
        path.write_bytes(csv)
        metadata_path(path).write_bytes(metadata)
        config = _config_for(meta, path)
        lookup_predictor(config, get_space(config.space.name, config.space), Path(tmp))
    target = (
        Path(runs_dir)
        / USER_TABLES
        / f"{device['name']}__{space_id(space_meta['name'], space_meta['config'])}.csv"
    )
    if target.exists() and not replace:
        raise TableError(
            f"a table for device {device['name']} and this space exists ({target.name}); "
            "replace it explicitly or name the device differently"
        )
    write_atomic(target, csv)
    write_atomic(metadata_path(target), metadata)
    return target


def _metadata(metadata: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(metadata.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TableError(f"latency table metadata: not valid JSON ({e})") from None
    device = meta.get("device") if isinstance(meta, dict) else None
    space = meta.get("space") if isinstance(meta, dict) else None
    if not isinstance(device, dict) or not isinstance(device.get("name"), str):
        raise TableError("latency table metadata: needs a device with a name")
    if not DEVICE_NAME.match(device["name"]):
        raise TableError(
            f"latency table metadata: device name {device['name']!r} must be letters, digits, "
            "'.', '_' or '-' (at most 64), starting with a letter or digit"
        )
    if not isinstance(space, dict) or not isinstance(space.get("config"), dict):
        raise TableError("latency table metadata: needs the space (name and config) it covers")
    return meta


def _config_for(meta: dict[str, Any], table: Path) -> Any:
    """A run config that searches on `table`, for its own device, space and deployment."""
    device, deployment = meta["device"], meta.get("deployment") or {}
    raw = {
        "space": meta["space"]["config"],
        "deployment": {
            k: deployment[k] for k in ("batch_size", "channels", "num_classes") if k in deployment
        },
        "latency": {
            "device": device["name"],
            "mode": "predicted",
            "table": str(table),
            "threads": device.get("threads", 1),
        },
    }
    try:
        return parse_config(raw, source="latency table metadata")
    except ConfigError as e:
        raise TableError(str(e)) from None
