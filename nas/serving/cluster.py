"""The Ray instance deployments run on: a cluster given by address, or a local instance that
`nas deploy` starts once and later commands find again.

The local instance is a ``ray start --head --block`` process of its own session, bound to
loopback, exporting metrics on a port recorded beside it (``runs/deployments/ray.json``); it
outlives the command that started it, and `stop_local` ends it with all of its processes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hwnas_base.io import write_atomic
from nas.errors import RunError

RECORD = "ray.json"
START_TIMEOUT_S = 120


def ray_env() -> dict[str, str]:
    """Environment of a loopback-only local instance (Ray reads it once, at import)."""
    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def local_record(folder: Path) -> dict[str, Any] | None:
    """The running local instance's record, or None when there is none (or it has died)."""
    path = folder / RECORD
    try:
        rec: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not _alive(int(rec.get("pid", -1))) or not _listening(int(rec["port"])):
        return None
    return rec


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def start_local(folder: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """The local instance, started if none is running."""
    rec = local_record(folder)
    if rec is not None:
        return rec
    folder.mkdir(parents=True, exist_ok=True)
    port, metrics_port, dash_port = _free_port(), _free_port(), _free_port()
    # A temp dir of its own (short: Ray's socket paths must fit 107 characters), so this
    # instance shares no session files with other Ray instances on the machine.
    temp_dir = tempfile.mkdtemp(prefix="nas-deploy-ray-", dir="/tmp")
    ray = Path(sys.executable).with_name("ray")
    if not ray.is_file():
        found = shutil.which("ray")
        if found is None:
            raise RunError("`ray` is not installed: pip install 'hwnas[serving]'")
        ray = Path(found)
    cmd = [
        str(ray),
        "start",
        "--head",
        "--block",
        "--port",
        str(port),
        "--node-ip-address",
        "127.0.0.1",
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dash_port),
        "--metrics-export-port",
        str(metrics_port),
        "--disable-usage-stats",
        "--num-cpus",
        str(os.cpu_count() or 1),
        "--temp-dir",
        temp_dir,
    ]
    say(f"starting a local Ray instance on 127.0.0.1:{port}")
    log = open(folder / "ray.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **ray_env()},
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _listening(port) or not _listening(dash_port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RunError(f"the local Ray instance did not start; see {folder / 'ray.log'}")
        time.sleep(0.2)
    rec = {
        "address": f"127.0.0.1:{port}",
        "port": port,
        "metrics_port": metrics_port,
        "dashboard_port": dash_port,
        "pid": proc.pid,
        "temp_dir": temp_dir,
    }
    write_atomic(folder / RECORD, json.dumps(rec, indent=2))
    return rec


def stop_local(folder: Path) -> bool:
    """End the local instance and every process it started; False when none was running."""
    rec = local_record(folder)
    if rec is None:
        return False
    pid = int(rec["pid"])
    os.kill(pid, signal.SIGTERM)  # `ray start --block` stops its processes on SIGTERM
    deadline = time.monotonic() + 60
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    (folder / RECORD).unlink(missing_ok=True)
    if rec.get("temp_dir"):
        shutil.rmtree(rec["temp_dir"], ignore_errors=True)
    return True


def connect(
    address: str | None, folder: Path, say: Callable[[str], None], *, start: bool = True
) -> str:
    """Connect this process to Ray: the cluster at `address`, or the local instance (started
    if `start`; otherwise `RunError` when none is running)."""
    if address is None:
        os.environ.update(ray_env())
        rec = start_local(folder, say) if start else local_record(folder)
        if rec is None:
            raise RunError("no local Ray instance is running")
        address = str(rec["address"])
    import ray

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    return address
