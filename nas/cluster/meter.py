"""Latency measured on the nodes that carry the device: one warm `Meter` actor per such node.

The actor holds the node's ``device:NAME`` resource for the whole search, so measurements on a
node run one at a time in a process that stays warm; `RemoteBackend` is the measurement backend
a trial uses to send its models there.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.cluster.connect import device_resource
from nas.config import RunConfig
from nas.errors import SearchError
from nas.evaluate.latency import config_backend


def _backend(config_json: str, device: str | None) -> Any:
    return config_backend(RunConfig.model_validate_json(config_json), device)


class Meter:
    """Measures models on one node that carries the device; one actor per such node.

    The actor holds the node's ``device:NAME`` resource for the whole search, so measurements
    on a node run one at a time in a process that stays warm (a task per measurement would
    start a fresh worker whenever Ray had reaped the idle one).
    """

    def __init__(self, config_json: str) -> None:
        self.config_json = config_json
        # One backend per device, kept: its reference network and anchor (the measurement
        # protocol's) are prepared once per node, not per measurement.
        self._backends: dict[str | None, Any] = {}

    def _backend(self, device: str | None) -> Any:
        if device not in self._backends:
            self._backends[device] = _backend(self.config_json, device)
        return self._backends[device]

    def identity(self, device: str | None) -> Any:
        return self._backend(device).device

    def measure(
        self, device: str | None, files: dict[str, bytes], name: str, shape: tuple[int, ...]
    ) -> tuple[Any, str]:
        """(latency result, id of this node)."""
        import ray

        with tempfile.TemporaryDirectory(prefix="nas-measure-") as tmp:
            for fname, data in files.items():
                (Path(tmp) / fname).write_bytes(data)
            result = self._backend(device).measure(Path(tmp) / name, shape)
        return result, ray.get_runtime_context().get_node_id()


def start_meters(config: RunConfig) -> list[Any]:
    """A `Meter` on every live node that advertises the config's device."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    resource = device_resource(config)
    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get(resource, 0) >= 1]
    return [
        ray.remote(Meter)
        .options(
            num_cpus=0,
            resources={resource: 1},
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
        )
        .remote(config.model_dump_json())
        for n in nodes
    ]


def measuring_on(meters: list[Any]) -> Any:
    """The backend factory that measures on `meters`; None (this machine) when there are none."""
    return functools.partial(RemoteBackend, meters=meters) if meters else None


class RemoteBackend:
    """A `LatencyBackend` whose measurements run on the meters of the device's nodes.

    Running a model on real inputs (accuracy of a quantized artifact) stays on the trial's own
    node, with the same runtime. A meter whose node died is dropped and the next one is asked.
    """

    def __init__(self, config: RunConfig, device: str | None, *, meters: list[Any]) -> None:
        self._json, self._name = config.model_dump_json(), device
        self._meters = list(meters)
        self._turn = 0
        self._local: Any = None
        self.nodes: set[str] = set()  # where measurements ran, for the trial's record
        self.seconds = 0.0  # spent waiting for measurements, queueing included
        self.device = self._call("identity", device)

    def _call(self, method: str, *args: Any) -> Any:
        import ray

        while self._meters:
            meter = self._meters[self._turn % len(self._meters)]
            self._turn += 1
            try:
                return ray.get(getattr(meter, method).remote(*args))
            except ray.exceptions.RayActorError:
                self._meters.remove(meter)
        raise SearchError("every node that carried the device has left the Ray cluster")

    def measure(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Any:
        files = {
            p.name: p.read_bytes()
            for p in onnx_path.parent.iterdir()
            if p.is_file() and p.name.startswith(onnx_path.stem)
        }
        began = time.perf_counter()
        result, node = self._call("measure", self._name, files, onnx_path.name, tuple(input_shape))
        self.seconds += time.perf_counter() - began
        self.nodes.add(node)
        return result

    def measure_many(self, models: Sequence[tuple[Path, tuple[int, ...]]]) -> list[Any]:
        """One after another on the device's nodes (interleaving across nodes would mix hosts)."""
        return [self.measure(path, shape) for path, shape in models]

    def runner(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Any:
        if self._local is None:
            self._local = _backend(self._json, self._name)
        return self._local.runner(onnx_path, input_shape)
