"""Profile a device into a latency table: every operator a search space can produce.

Each distinct operator is exported to ONNX on its own at the deployment shape and timed by the
device's backend. Then a few random whole candidates are timed as well (the table's
calibration), so a predictor can fit what the per-operator sum misses. Progress goes to a
``.partial.jsonl`` file beside the output, one line per measurement, so an interrupted profile
resumes where it stopped; the table itself is written only at the end, atomically.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwnas_base.errors import LatencyError, TableError
from hwnas_base.progress import PhaseProgress, quiet
from latency_predictors.backends import LatencyBackend, LatencyResult
from latency_predictors.deployment import Deployment
from latency_predictors.device import host_identity
from latency_predictors.onnx_export import export_onnx
from latency_predictors.table import Calibration, write_table
from search_spaces.efficientnet.operators import OperatorKey


def partial_path(out: Path) -> Path:
    return out.with_name(out.stem + ".partial.jsonl")


def _read_partial(path: Path, header: dict[str, Any]) -> list[dict[str, Any]]:
    """Records of an earlier, interrupted profile with the same header; [] if there is none."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        found = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        found = None
    if found != header:
        raise TableError(
            f"{path} holds an interrupted profile of another device, space or shape; delete it "
            "or choose another --out"
        )
    records = []
    for line in lines[1:]:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a killed run may be cut short
            break
    return records


def _measure(
    backend: LatencyBackend, module: torch.nn.Module, shape: tuple[int, ...], what: str
) -> LatencyResult:
    with tempfile.TemporaryDirectory(prefix="nas-profile-") as tmp:
        path = export_onnx(module, shape, Path(tmp) / "op.onnx")
        result = backend.measure(path, shape)
    if not result.ok:
        raise LatencyError(f"measuring {what} on {result.device.name} failed: {result.error}")
    return result


def _stats(result: LatencyResult, start: float) -> dict[str, Any]:
    return {
        "seconds": time.perf_counter() - start,
        "mean_ms": result.mean_ms,
        "p50_ms": result.p50_ms,
        "p90_ms": result.p90_ms,
        "std_ms": result.std_ms,
        "n_runs": result.n_runs,
    }


def profile_space(
    space: Any,
    backend: LatencyBackend,
    out: Path,
    *,
    num_classes: int,
    in_chans: int,
    space_config: dict[str, Any],
    calibration: int = 20,
    seed: int = 0,
    progress: PhaseProgress = quiet,
) -> Path:
    """Measure every operator of `space` on `backend` and write the table to `out`.

    Args:
        space: A search space with `covering_candidates` and `operators`.
        backend: The device's measurement backend.
        out: Table path (``.csv``); the side file goes beside it.
        num_classes: Classifier outputs at the deployment shape.
        in_chans: Input channels at the deployment shape.
        space_config: The space's config, stored in the metadata.
        calibration: Random whole candidates to time for the table's calibration.
        seed: Seed for choosing those candidates.
        progress: Called with (phase, done, total).
    """
    if not hasattr(space, "covering_candidates"):
        raise TableError(f"search space {space.name!r} has no operator table support")
    out = Path(out)
    if out.suffix != ".csv":
        raise TableError(f"--out {out}: a latency table is written as a .csv file")
    device = backend.device
    deployment = Deployment(device.batch_size, in_chans, num_classes)
    header = {
        "device": device.to_dict(),
        "space": {"name": space.name, "config": space_config},
        "deployment": asdict(deployment),
        "calibration": calibration,
        "seed": seed,
    }
    partial = partial_path(out)
    records = _read_partial(partial, header)
    covering = list(space.covering_candidates())
    n_ops = _operator_count(space, covering, deployment, progress)
    rng = np.random.default_rng(seed)
    calibration_set = [space.sample(rng) for _ in range(calibration)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("a", encoding="utf-8") as log:
        if log.tell() == 0:  # a new file; an interrupted one already has its header
            log.write(json.dumps(header) + "\n")

        def record(item: dict[str, Any]) -> None:
            records.append(item)
            log.write(json.dumps(item) + "\n")
            log.flush()

        todo = _Todo(covering, calibration_set, n_ops + len(calibration_set))
        _measure_all(space, backend, deployment, todo, records, record, progress)
    meter = getattr(backend, "meter", None)
    reference = meter.reference() if meter is not None else None
    _write(out, records, device, header, reference[1] if reference else None)
    partial.unlink()
    return out


def _operator_count(space: Any, covering: list[Any], deployment: Deployment, progress: Any) -> int:
    """How many distinct operators the covering candidates hold."""
    keys: set[OperatorKey] = set()
    for i, cand in enumerate(covering):
        progress("listing operators", i, len(covering))
        keys.update(
            op.key for op in space.operators(cand, deployment.num_classes, deployment.channels)
        )
    progress("listing operators", len(covering), len(covering))
    return len(keys)


@dataclass(frozen=True)
class _Todo:
    """What a profile measures: the covering candidates' operators, then whole candidates."""

    covering: list[Any]
    calibration: list[Any]
    total: int


def _measure_all(
    space: Any,
    backend: LatencyBackend,
    deployment: Deployment,
    todo: _Todo,
    records: list[dict[str, Any]],
    record: Callable[[dict[str, Any]], None],
    progress: PhaseProgress,
) -> None:
    """Time every operator and calibration candidate that `records` does not hold yet.

    Operators are built afresh per covering candidate rather than all kept at once: a space
    has thousands, and their modules together would take gigabytes.
    """
    done_ops = {OperatorKey(*r["key"]) for r in records if r["kind"] == "op"}
    done_cal = {r["candidate"] for r in records if r["kind"] == "calibration"}
    name, total = backend.device.name, todo.total
    done = len(done_ops) + len(done_cal)
    for cand in todo.covering:
        for op in space.operators(cand, deployment.num_classes, deployment.channels):
            if op.key in done_ops:  # measured already, here or in an interrupted run
                continue
            progress(f"operators on {name}", done, total)
            start = time.perf_counter()
            shape = op.input_shape(deployment.batch_size)
            result = _measure(backend, op.module, shape, op.key.op)
            record({"kind": "op", "key": list(op.key.as_tuple()), **_stats(result, start)})
            done_ops.add(op.key)
            done += 1
    for cand in todo.calibration:
        text = space.encode(cand)
        if text in done_cal:
            continue
        progress(f"whole candidates on {name}", done, total)
        start = time.perf_counter()
        model = space.build(cand, deployment.num_classes, deployment.channels)
        shape = deployment.shape(space.resolution(cand))
        result = _measure(backend, model, shape, "a candidate")
        record({"kind": "calibration", "candidate": text, **_stats(result, start)})
        done_cal.add(text)
        done += 1
    progress(f"profiled {name}", total, total)


def _write(
    out: Path,
    records: list[dict[str, Any]],
    device: Any,
    header: dict[str, Any],
    reference_ms: float | None,
) -> None:
    rows = [
        {
            **dict(zip(OperatorKey.columns(), r["key"], strict=True)),
            "precision": device.precision,
            **{k: r[k] for k in ("mean_ms", "p50_ms", "p90_ms", "std_ms", "n_runs")},
        }
        for r in records
        if r["kind"] == "op"
    ]
    cal = [
        Calibration(r["candidate"], r["p50_ms"], r["p90_ms"], r["mean_ms"], r["std_ms"])
        for r in records
        if r["kind"] == "calibration"
    ]
    write_table(
        out,
        rows,
        device=device,
        space=header["space"],
        deployment=header["deployment"],
        calibration=cal,
        profile_seconds=round(sum(r.get("seconds", 0.0) for r in records), 1),
        host=host_identity(),
        reference_ms=reference_ms,
    )
