"""The worker side of a Ray trial: evaluate one suggested candidate and report the outcome.

Each worker process builds its search session once (from the config shipped in the payload)
and keeps it for every trial it runs; the trained weights go back to the run directory through
a small actor on the driver's node.
"""

from __future__ import annotations

import hashlib
import json
import math
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hwnas_base.io import write_atomic
from nas.cluster.meter import RemoteBackend, measuring_on
from nas.compress.space import CompressionSpace
from nas.config import RunConfig
from nas.errors import NASError
from nas.evaluate.evaluator import CandidateEvaluator, StoppedEarly
from nas.record import ACCURACY, LATENCY
from nas.search.early_stopping import Checkpoint
from nas.search.session import make_evaluator, prepare
from nas.search.study import stop_check

# The payload file holding a supernet search's trained supernet.
SHIPPED_SUPERNET = "supernet.pt"


@dataclass
class Payload:
    """What every trial needs, shipped once through the object store."""

    config_json: str
    meters: list[Any]  # empty when latency is predicted
    runs_dir: str
    writer: Any
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return hashlib.sha256(self.config_json.encode()).hexdigest()[:16]


_WORKER: dict[str, tuple[CandidateEvaluator, CompressionSpace, RunConfig]] = {}


def _worker_state(payload: Payload) -> tuple[CandidateEvaluator, CompressionSpace, RunConfig]:
    """(evaluator, compression space, config), built once per worker process."""
    if payload.key in _WORKER:
        return _WORKER[payload.key]
    config = RunConfig.model_validate_json(payload.config_json)
    root = Path(tempfile.gettempdir()) / "nas-ray" / f"{config.name}-{payload.key}"
    root.mkdir(parents=True, exist_ok=True)
    for name, data in payload.files.items():
        write_atomic(root / name, data)
    if SHIPPED_SUPERNET in payload.files:  # trained by the driver: loaded, never trained here
        shipped = config.supernet.model_copy(update={"path": root / SHIPPED_SUPERNET})
        config = config.model_copy(update={"supernet": shipped})
    # The driver's runs folder where this node shares it (fitted predictors, latency cache).
    runs_dir = Path(payload.runs_dir) if Path(payload.runs_dir).is_dir() else root
    if config.training.threads is None:
        torch.set_num_threads(max(1, int(config.cluster.trial_cpus)))
    else:
        torch.set_num_threads(config.training.threads)
    session = prepare(config, runs_dir, backend=measuring_on(payload.meters))
    _WORKER[payload.key] = (make_evaluator(session, root), session.compression, config)
    return _WORKER[payload.key]


def _report(status: str, **extra: Any) -> None:
    from ray import tune

    # Tune checks every result for the searcher's metrics, so they are always present.
    tune.report({ACCURACY: math.nan, LATENCY: math.nan, "status": status, **extra})


def run_trial(spec: dict[str, Any], payload: Payload) -> None:
    """Tune's function trainable: evaluate one suggested candidate and report the outcome."""
    import ray

    if spec.get("reuse") is not None:
        _report("reused", outcome=json.dumps(spec["reuse"]))
        return
    number, params = spec["number"], spec["params"]
    with tempfile.TemporaryDirectory(prefix="nas-trial-") as tmp:
        try:
            evaluator, compression_space, config = _worker_state(payload)
            for backend in _remote_backends(evaluator):
                backend.nodes.clear()
                backend.seconds = 0.0
            stopping = config.search.early_stopping
            stop = (
                stop_check(stopping, number, [Checkpoint(*c) for c in spec["history"]])
                if stopping.enabled
                else None
            )
            outcome = evaluator(
                evaluator.space.from_params(params),
                compression=compression_space.from_params(params),
                weights_path=Path(tmp) / "weights.pt",
                stop=stop,
            )
        except StoppedEarly as stopped:
            _report("stopped", reason=stopped.reason, outcome=json.dumps(stopped.attrs))
            return
        except ray.exceptions.RayError:
            raise  # a node or worker went away: Tune runs the trial again
        except Exception as e:
            reason = str(e) if isinstance(e, NASError) else f"{type(e).__name__}: {e}"
            _report("failed", reason=f"{reason} (on {socket.gethostname()})")
            return
        files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
        ray.get(payload.writer.save.remote(number, files))
    attrs = outcome.attrs()
    attrs["ray_trained_on"] = ray.get_runtime_context().get_node_id()
    remote = _remote_backends(evaluator)
    attrs["ray_measured_on"] = sorted({n for b in remote for n in b.nodes})
    attrs["ray_measure_seconds"] = sum(b.seconds for b in remote)
    objectives = dict(zip((ACCURACY, LATENCY), outcome.values, strict=True))
    _report("done", outcome=json.dumps(attrs), **objectives)


def _remote_backends(evaluator: CandidateEvaluator) -> list[RemoteBackend]:
    """The evaluator's measurement backends that run on device nodes."""
    latency = getattr(evaluator, "latency", None)
    measured = getattr(latency, "measured", latency)  # hybrid wraps one
    found = [getattr(measured, "backend", None)]
    compressor = getattr(evaluator, "compressor", None)
    if compressor is not None:
        found += list(compressor.backends.values())
    return [b for b in found if isinstance(b, RemoteBackend)]
