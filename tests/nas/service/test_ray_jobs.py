"""`nas serve --address`: searches submitted to a real Ray cluster through Ray's job submission
API run with the Ray backend there. The service and its client run inside the cluster's
loopback-only network namespace, as the cluster's own tests do."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from nas.storage import is_finished
from tests.conftest import REPO
from tests.services import RayCluster


@pytest.mark.slow  # minutes: a Ray job's runtime and driver start on the cluster
def test_a_search_runs_as_a_ray_job_on_the_cluster(cluster: RayCluster, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [*cluster.prefix(), sys.executable, "-m", "tests.nas.service.in_cluster",
         cluster.jobs_address, str(runs)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["state"] == "finished", summary
    assert "3/3 trials finished" in summary["message"]
    with contextlib.closing(sqlite3.connect(runs / ".service" / "jobs.db")) as db:
        (ray_job, pid) = db.execute("SELECT ray_job, pid FROM jobs WHERE id = 'onray'").fetchone()
    assert ray_job and ray_job.startswith("nas-onray-") and pid is None
    study = optuna.load_study(
        study_name="onray", storage=f"sqlite:///{runs / 'onray' / 'study.db'}"
    )
    trials = study.get_trials()
    assert sum(is_finished(t) for t in trials) == 3
    assert all("ray_trained_on" in t.user_attrs for t in trials if t.state.name == "COMPLETE")
