"""Every device the project knows: built-in measurement backends (and whether they run here)
and latency tables, each with the error reports of the predictors fitted for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from latency_predictors.devices import BUILTIN_DEVICES
from latency_predictors.sources import PREDICTORS_DIR, table_folders
from latency_predictors.table import find_tables
from nas.run import DEFAULT_RUNS_DIR


def list_devices(runs_dir: Path = DEFAULT_RUNS_DIR) -> list[dict[str, Any]]:
    """Every device with a measurement backend or a latency table (under `runs_dir/tables/` or
    shipped), and its predictor reports."""
    runs_dir = Path(runs_dir)
    reports = _predictor_reports(runs_dir)
    rows: list[dict[str, Any]] = []
    for spec in BUILTIN_DEVICES.values():
        reason = spec.unavailable_reason()
        rows.append(
            {
                "device": spec.name,
                "source": f"backend {spec.backend}",
                "detail": spec.description,
                "measurable": reason is None,
                "note": reason or "",
                "predictors": reports.get(spec.name, []),
            }
        )
    for path in (p for folder in table_folders(runs_dir) for p in find_tables(folder)):
        try:
            meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            dev = meta["device"]
            name = dev["name"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        rows.append(
            {
                "device": name,
                "source": f"table {path}",
                "detail": f"{dev.get('runtime')} {dev.get('runtime_version')}, "
                f"{dev.get('precision')}, {dev.get('hardware')}, space "
                f"{(meta.get('space') or {}).get('name')}",
                "measurable": name in BUILTIN_DEVICES
                and BUILTIN_DEVICES[name].unavailable_reason() is None,
                "note": "",
                "predictors": reports.get(name, []) if name not in BUILTIN_DEVICES else [],
            }
        )
    return rows


def _predictor_reports(runs_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The error reports of fitted predictors under `runs_dir`, by device name."""
    reports: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((runs_dir / PREDICTORS_DIR).glob("*/*.report.json")):
        try:
            rep = json.loads(path.read_text(encoding="utf-8"))
            metrics = rep["metrics"][rep["predictor"]]
            flops = rep["metrics"]["flops"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        reports.setdefault(path.parent.name, []).append(
            {
                "predictor": rep["predictor"],
                "space": rep.get("space", "?"),
                "within_10": metrics["within_10"],
                "spearman": metrics["spearman"],
                "mape": metrics["mape"],
                "flops_within_10": flops["within_10"],
                "flops_spearman": flops["spearman"],
                "n_test": rep.get("n_test"),
                "report": str(path),
            }
        )
    return reports
