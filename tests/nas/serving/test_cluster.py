"""`nas deploy --address`: a deployment on a real two-node Ray cluster. The CLI and the HTTP
client run inside the cluster's loopback-only network namespace, as the cluster's own tests do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO
from tests.services import RayCluster

CLIENT = """
import json, sys, httpx
url = sys.argv[1]
c, h, w = httpx.get(url + "/status", timeout=60).json()["variants"]["a"]["shape"]
x = [[[0.0] * w] * h] * c
r = httpx.post(url + "/predict", json={"inputs": x, "unit_id": "u1"}, timeout=60)
print(json.dumps({"status": r.status_code, "body": r.json()}))
"""


def _in_cluster(cluster: RayCluster, *args: str, timeout: float = 600) -> str:
    proc = subprocess.run(
        [*cluster.prefix(), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_a_deployment_runs_on_the_cluster(cluster: RayCluster, exported, tmp_path: Path) -> None:
    config = tmp_path / "deploy.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "oncluster",
                "variants": [{"name": "a", "export": str(exported["onnx"])}],
                "http": {"port": 8011},
            }
        )
    )
    nas = [sys.executable, "-m", "nas.cli", "deploy"]
    runs = ["--runs-dir", str(tmp_path / "runs")]
    try:
        _in_cluster(cluster, *nas, str(config), "--address", cluster.address, *runs)
        shape = json.loads(_in_cluster(cluster, *nas, "status", "oncluster", "--json", *runs))
        assert shape["serve"]["status"] == "RUNNING", shape
        answer = json.loads(
            _in_cluster(cluster, sys.executable, "-c", CLIENT, "http://127.0.0.1:8011/oncluster")
            .strip()
            .splitlines()[-1]
        )
        assert answer["status"] == 200 and answer["body"]["variant"] == "a", answer
    finally:
        _in_cluster(cluster, *nas, "stop", "oncluster", *runs)
    # No local instance was started: the cluster's address was used.
    assert not (tmp_path / "runs" / "deployments" / "ray.json").exists()
