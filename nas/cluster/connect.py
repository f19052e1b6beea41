"""Joining a Ray cluster, and whether it can measure the search's device.

A node that carries the target device says so with the custom resource ``device:NAME``
(``ray start --resources '{"device:NAME": 1}'``). Without `--address` a local instance that
carries the device is started; with it, a cluster that answers is joined, and one that does not
answer fails within seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from pathlib import Path
from typing import Any

from nas.config import RunConfig
from nas.errors import NASError, RunError
from nas.evaluate.latency import latency_source, predicted

log = logging.getLogger("nas.ray")

CONNECT_TIMEOUT_S = 5.0


def device_resource(config: RunConfig) -> str:
    """The custom Ray resource a node advertises when it carries the config's device."""
    return f"device:{config.latency.device}"


def needs_device(config: RunConfig) -> bool:
    return config.latency.mode != "predicted" or config.compression.enabled


# The address of the cluster a process runs in: a Ray job's driver is started inside one.
IN_CLUSTER = "auto"


def check_address(address: str) -> None:
    """Fail within seconds, with one line, when nothing answers at `address`.

    ``auto`` (the cluster this process runs in, as a Ray job does) is not probed.

    Raises:
        RunError: `address` is not HOST:PORT, or no server listens there.
    """
    if address == IN_CLUSTER:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RunError(
            f"--address {address!r} is not HOST:PORT; give the address `ray start --head` "
            "printed, e.g. 127.0.0.1:6379 (or auto inside a Ray job)"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise RunError(
            f"cannot reach the Ray cluster at {address}: {e.strerror or e}; start its head with "
            f"`ray start --head --port {port}`, or leave out --address to start a local Ray "
            "instance"
        ) from None


def ray_environment(address: str | None) -> None:
    """Check that Ray is installed, and set what Ray reads when it is first imported.

    A local instance (no `address`) serves this machine only: Ray is told to use loopback
    addresses, which it reads once, at import, so this must run before anything imports Ray.

    Raises:
        RunError: Ray is not installed.
    """
    if importlib.util.find_spec("ray") is None:
        raise RunError(
            "--backend ray needs Ray: pip install 'hwnas[cluster]' (scripts/env.sh installs it)"
        )
    if address is None:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def connect(address: str | None, config: RunConfig) -> None:
    """Join the cluster at `address`, or start a local instance that carries the device
    (without a dashboard; see `ray_environment` for its addresses)."""
    import ray

    if address is not None:
        check_address(address)
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        ray.init(
            resources={device_resource(config): 1},
            include_dashboard=False,
            **common,
        )
    else:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise RunError(
                f"cannot join the Ray cluster at {address}: {first}; check that it runs the same "
                "Ray version and, with token authentication, that this machine has its token"
            ) from None


def check_device(config: RunConfig, address: str | None, space: Any, runs_dir: Path) -> bool:
    """Whether latency can be measured on the cluster; if not, whether to predict it.

    Returns:
        True when a node carries the device (or none is needed); False when latency will be
        predicted instead because no node carries it.

    Raises:
        RunError: no node carries the device and latency cannot be predicted.
    """
    import ray

    resource = device_resource(config)
    if not needs_device(config) or ray.cluster_resources().get(resource, 0) > 0:
        return True
    where = f"the Ray cluster at {address}" if address else "the local Ray instance"
    hint = (
        f"start one on a machine with that device: ray start --address {address or 'HEAD:PORT'} "
        f"--resources '{{\"{resource}\": 1}}'"
    )
    if config.compression.enabled:
        raise RunError(
            f"no node of {where} advertises {resource}, and compressed candidates are scored "
            f"on measured artifacts; {hint}"
        )
    try:
        latency_source(predicted(config), space, runs_dir)
    except NASError as e:
        raise RunError(
            f"no node of {where} advertises {resource}, and latency cannot be predicted ({e}); "
            f"{hint}"
        ) from None
    log.warning("no node advertises %s: latency is predicted, not measured", resource)
    return False
