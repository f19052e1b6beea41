"""Real services for the cluster tests: a PostgreSQL server and a two-node Ray cluster.

Both listen on 127.0.0.1 only. The Ray nodes (and every process that talks to them) run in a
network namespace whose only interface is loopback, so both nodes register as 127.0.0.1 and no
traffic can leave the machine.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
# Ray's settings for test clusters on one machine: no token auth, no usage reports,
# and dead nodes noticed in seconds rather than half a minute.
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "1000",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def interruptible() -> None:
    """A child's SIGINT as a terminal gives it: handled, not blocked, whatever this test
    process inherited or a library in it set (a `preexec_fn` for Popen)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def trial_states(run_dir: Path) -> list[str]:
    """Trial states of a run whose search may still be creating its study (then none), read
    as the service reads a run: without racing that creation (`nas.storage.load_study`)."""
    from nas.run import Run
    from nas.storage import NoStudyYet, load_study

    if not (run_dir / "config.yaml").is_file():
        return []
    try:
        return [t.state.name for t in load_study(Run(run_dir)).get_trials()]
    except NoStudyYet:
        return []


def wait_for(
    predicate,
    timeout: float,
    what: str,
    interval: float = 0.5,
    tolerate: tuple[type[BaseException], ...] = (),
):
    """Poll until `predicate()` is truthy; its value, or AssertionError naming `what`.

    Exceptions of the types in `tolerate` count as "not yet": a predicate that reads a file
    another process is writing (a study database that exists before its study is in it) may
    meet it half-written.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except tolerate:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# PostgreSQL


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@dataclass
class Postgres:
    """A throwaway PostgreSQL server on 127.0.0.1 with database ``nas`` for user ``nas``."""

    root: Path
    port: int
    bin: Path
    user: str | None  # the system user the server runs as (initdb refuses root)

    @property
    def url(self) -> str:
        return f"postgresql://nas@127.0.0.1:{self.port}/nas"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120)

    @classmethod
    def start(cls) -> Postgres:
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (scripts/env.sh installs it)")
        root = Path(tempfile.mkdtemp(prefix="nas-pg-"))
        user = None
        if os.geteuid() == 0:
            user = "postgres"
            entry = pwd.getpwnam(user)
            os.chmod(root, 0o755)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        server = cls(root, free_port(), bin_dir, user)
        server._run("initdb", "-D", str(root / "data"), "-U", "nas", "-A", "trust", "-E", "UTF8")
        server._run(
            "pg_ctl",
            "-D",
            str(root / "data"),
            "-l",
            str(root / "server.log"),
            "-w",
            "-o",
            f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1",
            "start",
        )
        server._run("createdb", "-h", "127.0.0.1", "-p", str(server.port), "-U", "nas", "nas")
        return server

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# Ray


def netns_available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


@dataclass
class RayCluster:
    """A Ray head and a second node, started with `ray start` in a loopback-only namespace.

    The head carries the latency device (``device:cpu-ort-fp32``) and the dashboard (for job
    submission); the second node only CPUs.
    """

    namespace: str
    port: int
    temp_dir: Path
    worker_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    device: str = "cpu-ort-fp32"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def jobs_address(self) -> str:
        """Where Ray's job submission API answers (the head's dashboard)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def prefix(self) -> list[str]:
        """Command prefix that runs a program inside the cluster's namespace."""
        return [
            "ip",
            "netns",
            "exec",
            self.namespace,
            "env",
            *(f"{k}={v}" for k, v in RAY_ENV.items()),
        ]

    def _ray(self, *args: str) -> None:
        subprocess.run(
            [*self.prefix(), str(VENV_BIN / "ray"), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )

    @classmethod
    def start(cls) -> RayCluster:
        name = f"nas-ray-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        temp = Path(tempfile.mkdtemp(prefix="nasray-", dir="/tmp"))
        cluster = cls(name, 6379, temp)
        try:
            cluster._ray(
                "start",
                "--head",
                f"--port={cluster.port}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=1",
                f"--resources={json.dumps({f'device:{cluster.device}': 1})}",
                # The dashboard serves Ray's job submission API, which `nas serve` uses.
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={cluster.dashboard_port}",
                f"--temp-dir={temp}",
                "--disable-usage-stats",
            )
            cluster.start_worker()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def start_worker(self) -> None:
        self._ray(
            "start",
            f"--address={self.address}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            f"--node-manager-port={self.worker_port}",
            "--disable-usage-stats",
        )
        self.wait_nodes(2)

    def nodes(self) -> dict[str, dict[str, float]]:
        """Live nodes: node id -> resources, asked of the cluster by a short-lived driver."""
        code = (
            "import json, ray; ray.init(address='auto', logging_level='ERROR'); "
            "print(json.dumps({n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}))"
        )
        proc = subprocess.run(
            [*self.prefix(), sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "RAY_ADDRESS": self.address},
        )
        lines = proc.stdout.strip().splitlines()
        return json.loads(lines[-1]) if proc.returncode == 0 and lines else {}

    def wait_nodes(self, n: int, timeout: float = 60) -> None:
        wait_for(lambda: len(self.nodes()) == n, timeout, f"{n} live Ray nodes")

    def worker_runs_trial(self) -> bool:
        """Whether a Tune trial (a function trainable's actor) runs on the second node."""
        import psutil

        for pid in self.worker_pids():
            try:
                title = " ".join(psutil.Process(pid).cmdline())
            except psutil.Error:
                continue
            if "ImplicitFunc" in title or "run_trial" in title:
                return True
        return False

    def worker_pids(self) -> list[int]:
        """The second node's raylet and every process under it."""
        import psutil

        flag = f"--node_manager_port={self.worker_port}"
        raylets = [
            p for p in psutil.process_iter(["cmdline"]) if flag in " ".join(p.info["cmdline"] or [])
        ]
        pids = []
        for raylet in raylets:
            pids.append(raylet.pid)
            pids += [c.pid for c in raylet.children(recursive=True)]
        return pids

    def kill_worker(self) -> int:
        """SIGKILL the second node's raylet and its workers, as if the machine had gone away."""
        pids = self.worker_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def stop(self) -> None:
        try:
            subprocess.run(
                [*self.prefix(), str(VENV_BIN / "ray"), "stop", "--force"],
                capture_output=True,
                timeout=120,
                check=False,
            )
        finally:
            subprocess.run(["ip", "netns", "delete", self.namespace], check=False)
            shutil.rmtree(self.temp_dir, ignore_errors=True)
