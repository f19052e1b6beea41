"""Deployment lifecycle: start (or restart) a deployment on Ray Serve, show its status, change
its traffic, stop it.

A deployment keeps a folder, ``runs/deployments/<name>/``, holding ``deployment.json`` (the
config and where its store and endpoint are) and, by default, its SQLite store. The store is
the source of truth for traffic and ramp state: a restarted deployment resumes where it was.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwnas_base.io import write_atomic
from nas.errors import ConfigError, RunError
from nas.run import DEFAULT_RUNS_DIR
from nas.serving.cluster import connect, stop_local
from nas.serving.config import DeployConfig, load_deploy_config, parse_deploy_config
from nas.serving.ramp import start
from nas.serving.runtime import VariantSpec, variant_spec
from nas.serving.store import Store, sqlite_url

RECORD = "deployment.json"
READY_TIMEOUT_S = 600
Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class DeployOptions:
    """`nas deploy CONFIG`: where the config is, which Ray to use, where deployments live."""

    config: Path
    address: str | None = None
    runs_dir: Path = DEFAULT_RUNS_DIR


def deployments_dir(runs_dir: Path) -> Path:
    return Path(runs_dir) / "deployments"


def specs_for(config: DeployConfig) -> dict[str, VariantSpec]:
    """Each variant's spec, checked against what the deployment asks of it."""
    specs = {}
    for v in config.variants:
        spec = variant_spec(v.name, v.export, v.file, v.threads)
        batch = config.batching_of(v.name).max_batch_size
        if batch > 1 and not spec.dynamic_batch and spec.runtime == "tensorrt":
            raise ConfigError(
                f"variant {v.name}: the TensorRT engine has a fixed batch of 1; set its "
                "batching.max_batch_size: 1"
            )
        specs[v.name] = spec
    shapes = {s.shape for s in specs.values()}
    if len(shapes) > 1:
        raise ConfigError(
            f"variants take different inputs {sorted(shapes)}; one endpoint "
            "serves variants of one input shape"
        )
    return specs


def _initial_state(config: DeployConfig, store: Store, say: Say) -> None:
    """Traffic and ramp for a first start; a restart keeps what the store holds, unless the
    variants changed under it."""
    names = {v.name for v in config.variants}
    current = store.state()
    if current is not None and set(current[0]) == names:
        say(f"resuming: traffic {_fmt(current[0])}")
        return
    traffic = config.starting_traffic()
    reason = "deployed" if current is None else "variants changed; traffic reset"
    if config.ramp is None:
        store.set_traffic(traffic, "deploy", f"{reason}: {_fmt(traffic)}", None)
        return
    state, change = start(config.ramp, traffic, config.control_name, time.time())
    store.set_traffic(change.traffic, change.kind, f"{reason}; {change.reason}", state.to_json())


def _fmt(traffic: dict[str, float]) -> str:
    return ", ".join(f"{k}={w:g}%" for k, w in traffic.items())


def deploy(options: DeployOptions, say: Say = _quiet) -> dict[str, Any]:
    """Start the deployment (or update a running one) and wait until it answers."""
    config = load_deploy_config(options.config)
    specs = specs_for(config)
    folder = deployments_dir(options.runs_dir) / config.name
    folder.mkdir(parents=True, exist_ok=True)
    store_url = config.store or sqlite_url(folder / "serving.db")
    store = Store(store_url, config.name)
    _initial_state(config, store, say)
    address = connect(options.address, deployments_dir(options.runs_dir), say)
    from ray import serve

    from nas.serving.app import build

    serve.start(http_options={"host": config.http.host, "port": config.http.port})
    _check_http(config)
    say(f"deploying {config.name}: {', '.join(specs)}")
    serve.run(
        build(config, specs, store_url),
        name=config.name,
        route_prefix=f"/{config.name}",
        blocking=False,
    )
    _wait_running(config.name, say)
    url = f"http://{config.http.host}:{config.http.port}/{config.name}"
    record = {
        "name": config.name,
        "config": config.model_dump(mode="json"),
        "store": store_url,
        "address": options.address,
        "ray_address": address,
        "url": url,
        "started": time.time(),
    }
    write_atomic(folder / RECORD, json.dumps(record, indent=2))
    return record


def _check_http(config: DeployConfig) -> None:
    """Serve has one HTTP proxy per Ray instance; its address is set by the first deployment."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:
        return
    http = client.http_config
    if (http.host, http.port) != (config.http.host, config.http.port):
        raise ConfigError(
            f"Ray Serve on this Ray instance listens on {http.host}:{http.port}, not "
            f"{config.http.host}:{config.http.port}: every deployment on one instance shares "
            f"that address; set http: {{host: {http.host}, port: {http.port}}}"
        )


def _wait_running(name: str, say: Say) -> None:
    from ray import serve

    deadline = time.monotonic() + READY_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        app = serve.status().applications.get(name)
        state = str(app.status) if app is not None else "NOT_STARTED"
        if state != last:
            say(f"{name}: {state.split('.')[-1].lower()}")
            last = state
        if app is not None and state.endswith("RUNNING"):
            return
        if app is not None and "FAILED" in state:
            raise RunError(f"deployment {name} failed to start: {app.message.strip()[-800:]}")
        time.sleep(0.5)
    raise RunError(f"deployment {name} not running after {READY_TIMEOUT_S} s")


def load_record(runs_dir: Path, name: str) -> dict[str, Any]:
    path = deployments_dir(runs_dir) / name / RECORD
    try:
        record: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        known = sorted(p.parent.name for p in deployments_dir(runs_dir).glob(f"*/{RECORD}"))
        raise RunError(
            f"no deployment {name!r} in {deployments_dir(runs_dir)}; deployments: "
            f"{', '.join(known) or 'none (start one with nas deploy CONFIG)'}"
        ) from None
    return record


def open_store(runs_dir: Path, name: str) -> tuple[dict[str, Any], DeployConfig, Store]:
    record = load_record(runs_dir, name)
    config = parse_deploy_config(record["config"], source=f"deployment {name}")
    return record, config, Store(record["store"], name)


def status(runs_dir: Path, name: str, *, live: bool = True) -> dict[str, Any]:
    """Traffic, ramp, events and counts from the store; replica states from Ray if `live`."""
    record, _config, store = open_store(runs_dir, name)
    current = store.state()
    traffic, ramp = (current[0], current[1]) if current else ({}, None)
    out: dict[str, Any] = {
        "name": name,
        "url": record["url"],
        "store": record["store"],
        "traffic": traffic,
        "ramp": ramp,
        **store.counts(),
        "events": [e.__dict__ for e in store.events()[-20:]],
    }
    if live:
        out["serve"] = _serve_status(record, runs_dir, name)
    store.close()
    return out


def _serve_status(record: dict[str, Any], runs_dir: Path, name: str) -> dict[str, Any]:
    try:
        connect(record.get("address"), deployments_dir(runs_dir), _quiet, start=False)
    except RunError:
        return {"status": "NOT_RUNNING"}
    from ray import serve

    app = serve.status().applications.get(name)
    if app is None:
        return {"status": "NOT_RUNNING"}
    return {
        "status": str(app.status).split(".")[-1],
        "deployments": {
            d: {"status": str(s.status).split(".")[-1], "replicas": dict(s.replica_states)}
            for d, s in app.deployments.items()
        },
    }


def set_traffic(runs_dir: Path, name: str, weights: dict[str, float]) -> dict[str, float]:
    """Set the traffic split by hand (it stops a running ramp); endpoints follow within a
    second. Weights are normalised to percent."""
    _, config, store = open_store(runs_dir, name)
    names = [v.name for v in config.variants]
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ConfigError(f"unknown variants {unknown}; variants of {name}: {', '.join(names)}")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ConfigError(f"weights must be >= 0 and not all 0, got {weights}")
    current = store.state()
    merged = {**(current[0] if current else {}), **weights}
    total = sum(merged.get(n, 0.0) for n in names)
    traffic = {n: 100.0 * merged.get(n, 0.0) / total for n in names}
    ramp = current[1] if current else None
    if ramp is not None and ramp.get("status") == "ramping":
        ramp = {**ramp, "status": "manual", "reason": "ramp stopped: traffic set by hand"}
    store.set_traffic(traffic, "manual", f"set by hand: {_fmt(traffic)}", ramp)
    store.close()
    return traffic


def stop(runs_dir: Path, name: str, *, keep_ray: bool = False) -> bool:
    """Delete the Serve application (the store stays); end the local Ray instance when no
    deployment is left on it. False when the deployment was not running."""
    record = load_record(runs_dir, name)
    try:
        connect(record.get("address"), deployments_dir(runs_dir), _quiet, start=False)
    except RunError:
        return False
    from ray import serve

    running = name in serve.status().applications
    if running:
        serve.delete(name)
    if record.get("address") is None and not keep_ray and not serve.status().applications:
        import ray

        serve.shutdown()
        ray.shutdown()
        stop_local(deployments_dir(runs_dir))
    return running
