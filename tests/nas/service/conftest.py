"""A real `nas serve` on 127.0.0.1 (a subprocess), and an HTTP client that holds its token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import REPO, SMALL_CONFIG, deep_update
from tests.services import free_port, wait_for


@dataclass
class Served:
    """A running service: its URL, runs folder, token and process."""

    url: str
    runs: Path
    process: subprocess.Popen[str]
    port: int

    @property
    def token(self) -> str:
        return (self.runs / ".service" / "token").read_text().strip()

    def client(self, *, token: str | None = "auto", timeout: float = 60) -> httpx.Client:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {self.token if token == 'auto' else token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, as if the machine had pulled the plug on the service (not on its jobs)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_service(runs: Path, *extra: str, port: int | None = None) -> Served:
    port = port or free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nas.cli",
            "serve",
            "--port",
            str(port),
            "--runs-dir",
            str(runs),
            *extra,
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = Served(f"http://127.0.0.1:{port}", runs, process, port)

    def healthy() -> bool:
        assert process.poll() is None, process.communicate()
        return httpx.get(f"{served.url}/healthz", timeout=5).status_code == 200

    wait_for(healthy, 120, "the service to answer /healthz", tolerate=(httpx.HTTPError,))
    return served


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    service = start_service(tmp_path_factory.mktemp("served") / "runs")
    yield service
    service.stop()


def search_config(name: str, **changes: Any) -> str:
    """SMALL_CONFIG under another name, as the YAML text a user would submit."""
    return yaml.safe_dump(deep_update(SMALL_CONFIG, {"name": name, **changes}))


def follow_events(client: httpx.Client, name: str, timeout: float = 600) -> list[dict[str, Any]]:
    """Every progress event of a search until its end event."""
    seen: list[dict[str, Any]] = []
    with client.stream("GET", f"/api/searches/{name}/events", timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "progress":
                seen.append(json.loads(line.removeprefix("data: ")))
            elif line.startswith("data: ") and event == "end":
                return seen
    raise AssertionError(f"the events of {name} stopped without an end event")
