"""What every route of the service shares: its options, jobs, scheduler, reader and token."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request

from nas.run import DEFAULT_RUNS_DIR
from nas.service.auth import is_authorized, load_or_create_token
from nas.service.errors import NotAuthenticated
from nas.service.jobs import SERVICE_DIR, JobStore
from nas.service.reader import RunReader
from nas.service.scheduler import LocalLauncher, RayLauncher, Scheduler

# Upload limits: a latency table of a large space is a few hundred kilobytes.
MAX_TABLE_BYTES = 16 * 2**20
MAX_METADATA_BYTES = 2 * 2**20


@dataclass(frozen=True)
class ServeOptions:
    """What `nas serve` asks for.

    Attributes:
        host: Address to listen on (loopback by default; anything else wants TLS in front).
        port: Port to listen on.
        runs_dir: The runs folder the service owns.
        address: Ray's job submission address (``http://HEAD:8265``); searches then run as Ray
            jobs with the Ray backend. None: subprocesses on this machine.
        max_running: Searches at once; the rest wait in the queue.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    runs_dir: Path = DEFAULT_RUNS_DIR
    address: str | None = None
    max_running: int = 1

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass
class Service:
    options: ServeOptions
    runs_dir: Path = field(init=False)
    store: JobStore = field(init=False)
    reader: RunReader = field(init=False)
    scheduler: Scheduler = field(init=False)
    token: str = field(init=False)

    def __post_init__(self) -> None:
        self.runs_dir = Path(self.options.runs_dir).resolve()
        self.store = JobStore(self.runs_dir)
        self.reader = RunReader(self.runs_dir)
        self.token = load_or_create_token(self.runs_dir / SERVICE_DIR)
        address = self.options.address
        launcher = RayLauncher(address) if address else LocalLauncher()
        self.scheduler = Scheduler(
            self.store,
            self.runs_dir,
            launcher,
            max_running=self.options.max_running,
            address="auto" if address else None,
        )


def service(request: Request) -> Service:
    """The service behind a request (a FastAPI dependency)."""
    found: Service = request.app.state.service
    return found


def authorized(request: Request) -> None:
    """Refuse a request without the service's token (a FastAPI dependency)."""
    if not is_authorized(request, service(request).token):
        raise NotAuthenticated
