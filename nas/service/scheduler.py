"""Runs the queued jobs: at most `max_running` searches at once, each in a process of its own
(a subprocess here, or a Ray job on a cluster), and notices when one ends.

Processes are started in a session of their own, so they outlive the service: a service that is
stopped, even with kill -9, finds its running jobs again when it starts (by process id and
command line here, by Ray job id on a cluster) and keeps watching them. A search whose process
died without saying how it ended is queued again and resumes from its study, where finished
trials are kept and the one cut off is run again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from hwnas_base.io import write_atomic
from nas.service.jobs import (
    CANCELLED,
    EXPORT,
    FAILED,
    FINISHED,
    QUEUED,
    RUNNING,
    SEARCH,
    Job,
    JobStore,
)
from nas.service.runner import OUTCOME, SPEC

log = logging.getLogger("nas.service")

# A search whose process dies without an outcome this many times is given up.
MAX_ATTEMPTS = 3
# Seconds a cancelled job has to stop cleanly before it is killed.
CANCEL_GRACE_S = 60.0


class Launcher(Protocol):
    def start(self, job: Job, folder: Path) -> dict[str, Any]:
        """Start the job's process; the fields to record (``pid`` or ``ray_job``)."""
        ...

    def alive(self, job: Job, folder: Path) -> bool: ...

    def stop(self, job: Job, *, force: bool) -> None: ...


class LocalLauncher:
    """Jobs as subprocesses of this machine: ``python -m nas.service.runner FOLDER``."""

    def __init__(self) -> None:
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, job: Job, folder: Path) -> dict[str, Any]:
        with open(folder / "log.txt", "ab") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "nas.service.runner", str(folder)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the service, and takes signals as a group
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._children[job.id] = child
        return {"pid": child.pid, "ray_job": None}

    def alive(self, job: Job, folder: Path) -> bool:
        child = self._children.get(job.id)
        if child is not None and child.pid == job.pid:
            return child.poll() is None
        if job.pid is None:
            return False
        try:  # a process of an earlier service: the same pid running this job's folder
            cmdline = Path(f"/proc/{job.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(folder).encode() in cmdline

    def stop(self, job: Job, *, force: bool) -> None:
        if job.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.pid, signal.SIGKILL if force else signal.SIGINT)


class RayLauncher:
    """Jobs submitted to a Ray cluster through Ray's job submission API; each runs the search
    with the Ray backend on the cluster it was submitted to."""

    def __init__(self, address: str) -> None:
        from ray.job_submission import JobSubmissionClient

        self.client = JobSubmissionClient(address)

    def start(self, job: Job, folder: Path) -> dict[str, Any]:
        entrypoint = shlex.join([sys.executable, "-m", "nas.service.runner", str(folder)])
        submission = self.client.submit_job(
            entrypoint=entrypoint, submission_id=f"nas-{job.id}-{job.attempts}-{int(time.time())}"
        )
        return {"pid": None, "ray_job": submission}

    def alive(self, job: Job, folder: Path) -> bool:
        from ray.job_submission import JobStatus

        if job.ray_job is None:
            return False
        try:
            status = self.client.get_job_status(job.ray_job)
        except RuntimeError:  # the cluster forgot the job (a new head): it is not running
            return False
        return status in (JobStatus.PENDING, JobStatus.RUNNING)

    def stop(self, job: Job, *, force: bool) -> None:
        if job.ray_job is not None:
            self.client.stop_job(job.ray_job)


class Scheduler:
    """Starts queued jobs and watches running ones, in a thread of its own.

    Args:
        store: The jobs.
        runs_dir: The runs folder (absolute), where searches write and jobs keep their folders.
        launcher: Starts, watches and stops job processes.
        max_running: Searches at once; exports do not wait for a place.
        address: The Ray address the search processes join (``auto`` for a Ray job), or None.
        poll_s: Seconds between looks.
    """

    def __init__(
        self,
        store: JobStore,
        runs_dir: Path,
        launcher: Launcher,
        *,
        max_running: int = 1,
        address: str | None = None,
        poll_s: float = 0.5,
    ) -> None:
        self.store, self.runs_dir, self.launcher = store, Path(runs_dir).resolve(), launcher
        self.max_running, self.address, self.poll_s = max_running, address, poll_s
        self._cancelled_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nas-scheduler", daemon=True)

    def start(self) -> None:
        self.tick()  # jobs an earlier service left running are found (or requeued) first
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.tick()
            except Exception:  # a bad moment (a locked database) must not end the scheduler
                log.exception("scheduler tick failed")

    def tick(self) -> None:
        with self._lock:
            for job in self.store.list(state=RUNNING):
                folder = self.store.folder(job.id)
                if not self.launcher.alive(job, folder):
                    self._ended(job)
                elif job.cancel and self._overdue(job.id):
                    self.launcher.stop(job, force=True)
            running = len(self.store.list(kind=SEARCH, state=RUNNING))
            for job in self.store.list(state=QUEUED):
                if job.kind == EXPORT or running < self.max_running:
                    self._start(job)
                    running += job.kind == SEARCH

    def _overdue(self, job_id: str) -> bool:
        """Whether a cancelled job has had its grace period to stop cleanly (counted from when
        this service first saw the request)."""
        asked = self._cancelled_at.setdefault(job_id, time.time())
        return time.time() - asked > CANCEL_GRACE_S

    def _start(self, job: Job) -> None:
        folder = self.store.folder(job.id)
        (folder / OUTCOME).unlink(missing_ok=True)
        spec = {**job.params, "kind": job.kind, "run": job.run, "runs_dir": str(self.runs_dir)}
        if job.kind == SEARCH:
            spec["address"] = self.address
        write_atomic(folder / SPEC, json.dumps(spec, indent=1) + "\n")
        try:
            fields = self.launcher.start(job, folder)
        except Exception as e:  # a cluster that refuses the job, or no process could start
            self.store.update(job.id, state=FAILED, ended=time.time(), message=f"cannot start: {e}")
            return
        self.store.update(
            job.id,
            state=RUNNING,
            started=job.started or time.time(),
            attempts=job.attempts + 1,
            **fields,
        )

    def _ended(self, job: Job) -> None:
        outcome = self._outcome(job)
        now = time.time()
        if outcome is not None and outcome.get("ok"):
            self.store.update(job.id, state=FINISHED, ended=now, message=str(outcome["message"]))
        elif job.cancel:
            self.store.update(job.id, state=CANCELLED, ended=now, message="cancelled")
        elif outcome is not None:
            self.store.update(job.id, state=FAILED, ended=now, message=str(outcome["message"]))
        elif job.kind == SEARCH and job.attempts < MAX_ATTEMPTS:
            note = "its process ended without a result; resumed from its study"
            self.store.update(job.id, state=QUEUED, pid=None, ray_job=None, message=note)
        else:
            note = (
                f"its process ended without a result; see {self.store.folder(job.id) / 'log.txt'}"
            )
            self.store.update(job.id, state=FAILED, ended=now, message=note)
        self._cancelled_at.pop(job.id, None)

    def _outcome(self, job: Job) -> dict[str, Any] | None:
        try:
            outcome = json.loads((self.store.folder(job.id) / OUTCOME).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return outcome if isinstance(outcome, dict) else None

    def cancel(self, job: Job) -> None:
        """Stop a job: a queued one at once, a running one cleanly (SIGINT, then a kill)."""
        with self._lock:
            if job.state == QUEUED:
                self.store.update(job.id, state=CANCELLED, ended=time.time(), message="cancelled")
            elif job.state == RUNNING:
                self.store.update(job.id, cancel=True)
                self._cancelled_at[job.id] = time.time()
                self.launcher.stop(job, force=False)

    def resume(self, job: Job) -> None:
        """Queue an ended search again; it goes on from its study."""
        with self._lock:
            self.store.update(
                job.id, state=QUEUED, cancel=False, ended=None, attempts=0, message="resumed"
            )
