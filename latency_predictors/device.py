"""Device identity: everything that changes a latency number.

The identity is stored with every measurement and used in cache keys, so numbers from a
different runtime version, thread count or machine never mix (nn-Meter names its predictors
the same way, e.g. ``cortexA76cpu_tflite21``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any


@cache
def cpu_description() -> str:
    """CPU model name and core count of this machine, e.g. ``AMD EPYC (2 cores)``."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} ({os.cpu_count()} cores)"


@dataclass(frozen=True, slots=True)
class Device:
    """A named measurement target.

    Attributes:
        name: User-facing name, e.g. ``cpu-ort-fp32``.
        hardware: What runs the model, e.g. ``AMD EPYC (2 cores)``.
        runtime: Inference runtime, e.g. ``onnxruntime``.
        runtime_version: Its version string.
        precision: Numeric precision of the measured model, e.g. ``fp32``.
        batch_size: Batch size of the measured input.
        threads: Intra-op threads the runtime may use.
    """

    name: str
    hardware: str
    runtime: str
    runtime_version: str
    precision: str
    batch_size: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Device:
        return cls(**raw)

    def key(self) -> str:
        """Stable identity string: readable parts, then a hash of the full identity."""
        digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()
        return (
            f"{self.name}_{self.runtime}{self.runtime_version}_{self.precision}"
            f"_b{self.batch_size}_t{self.threads}_{digest[:10]}"
        )


@cache
def host_identity() -> dict[str, str]:
    """Which machine this is, and since when: its hostname, the CPU, and `id`, a short hash of
    those, the systemd machine id (when it has one) and the kernel's boot id. Two hosts of the same
    kind share `cpu`, not `id`. The boot id is there because virtual machines cloned from one
    image share hostname and machine id, and because a rebooted cloud VM may wake on other
    hardware: after a reboot, tables made here are calibrated again (a minute's work)."""
    import socket

    machine_id = ""
    for path in (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id")):
        if path.is_file():
            machine_id = path.read_text(errors="replace").strip()
            break
    boot = Path("/proc/sys/kernel/random/boot_id")
    secret = {
        "hostname": socket.gethostname(),
        "machine_id": machine_id,
        "boot_id": boot.read_text().strip() if boot.is_file() else "",
        "cpu": cpu_description(),
    }
    digest = hashlib.sha256(json.dumps(secret, sort_keys=True).encode()).hexdigest()
    # Only the hash leaves the machine: a table is shared, its host's machine id need not be.
    return {"id": digest[:12], "hostname": secret["hostname"], "cpu": secret["cpu"]}
