"""A real deployment on Ray Serve: two exported variants of the small search (ONNX Runtime and
OpenVINO), started with `nas deploy` on a local Ray instance bound to loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from nas.serving.loadgen import png_bytes
from tests.conftest import run_cli
from tests.services import free_port


@dataclass
class Deployed:
    name: str
    config: Path
    runs: Path
    url: str

    def cli(self, *args: str | Path, timeout: float = 600) -> Any:
        return run_cli(*args, "--runs-dir", self.runs, timeout=timeout)

    def status(self) -> dict[str, Any]:
        proc = self.cli("deploy", "status", self.name, "--json")
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))

    def ray(self) -> dict[str, Any]:
        return dict(json.loads((self.runs / "deployments" / "ray.json").read_text()))


@pytest.fixture(scope="session")
def exported(finished_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Trial 0 of the small search exported with a dynamic batch axis, for ONNX Runtime and
    for OpenVINO."""
    root = tmp_path_factory.mktemp("serving-exports")
    formats = {"onnx": [], "openvino": ["--format", "openvino", "--precision", "fp32"]}
    out = {}
    for name, extra in formats.items():
        proc = run_cli(
            "export",
            finished_run,
            "--trial",
            "0",
            "--out",
            root / name,
            "--weights",
            "search",
            "--dynamic-batch",
            *extra,
        )
        assert proc.returncode == 0, proc.stderr
        out[name] = root / name
    return out


@pytest.fixture(scope="session")
def digits_png() -> tuple[list[bytes], np.ndarray]:
    """Real images (scikit-learn's digits) as PNG bodies, and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * (255 / 16)).astype(np.uint8)
    return [png_bytes(x) for x in images[:300]], d.target[:300]


def write_deploy_config(path: Path, name: str, exported: dict[str, Path], **extra: Any) -> Path:
    config = {
        "name": name,
        "variants": [
            {"name": "control", "export": str(exported["onnx"])},
            {
                "name": "candidate",
                "export": str(exported["openvino"]),
                "autoscaling": {"min_replicas": 1, "max_replicas": 2},
            },
            {
                "name": "narrow",
                "export": str(exported["onnx"]),
                "batching": {"max_batch_size": 1, "max_wait_ms": 0, "max_queue": 1},
            },
        ],
        "traffic": {"control": 50, "candidate": 50},
        "batching": {"max_batch_size": 8, "max_wait_ms": 5, "max_queue": 64},
        "http": {"port": free_port()},
        **extra,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def deployed(
    exported: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    root = tmp_path_factory.mktemp("deployed")
    config = write_deploy_config(root / "deploy.yaml", "digits", exported)
    d = Deployed("digits", config, root / "runs", "")
    proc = d.cli("deploy", config)
    assert proc.returncode == 0, proc.stderr
    d.url = yaml.safe_load(config.read_text())["http"]["port"]
    d.url = f"http://127.0.0.1:{d.url}/digits"
    try:
        yield d
    finally:
        proc = d.cli("deploy", "stop", "digits")
        assert proc.returncode == 0, proc.stderr


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as c:
        yield c
