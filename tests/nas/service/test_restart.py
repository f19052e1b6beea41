"""The service killed with kill -9 in the middle of a search, and started again: the search
goes on and ends with exactly the trials it asked for, none lost, none repeated."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import optuna
import pytest

from nas.storage import is_finished
from tests.nas.service.conftest import Served, follow_events, search_config, start_service
from tests.services import trial_states, wait_for

LONG = {"data": {"train_size": 1400}, "training": {"epochs": 4}, "search": {"n_trials": 4}}


def _study(runs: Path) -> optuna.Study:
    return optuna.load_study(
        study_name="restart", storage=f"sqlite:///{runs / 'restart' / 'study.db'}"
    )


def _job_pid(runs: Path) -> int:
    """The process id the service recorded for the search's job."""
    with contextlib.closing(sqlite3.connect(runs / ".service" / "jobs.db")) as db:
        (pid,) = db.execute("SELECT pid FROM jobs WHERE id = 'restart'").fetchone()
    return int(pid)


def _mid_search(runs: Path) -> Served:
    """A service running the 4-trial search, returned once one trial has finished and the
    next is running; the caller kills it."""
    service = start_service(runs)
    with service.client() as client:
        body = {"config": search_config("restart", **LONG)}
        response = client.post("/api/searches", json=body)
        assert response.status_code == 201, response.text
    wait_for(
        lambda: (
            "COMPLETE" in (states := trial_states(runs / "restart")) and states[-1] == "RUNNING"
        ),
        300,
        "a finished trial and the next one running",
        tolerate=(ValueError, KeyError),
    )
    return service


def _finish_after_restart(runs: Path) -> list[dict[str, Any]]:
    """Start the service again on `runs` and follow the search to its end; its events."""
    service = start_service(runs)
    try:
        with service.client() as client:
            events = follow_events(client, "restart")
    finally:
        service.stop()
    assert events[-1]["state"] == "finished", events[-1]
    return events


def test_kill_9_in_the_middle_then_start_again(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = _mid_search(runs)
    try:
        before = {t.number: t.values for t in _study(runs).get_trials() if t.values}
        first.kill()
    finally:
        first.stop()
    _finish_after_restart(runs)
    trials = _study(runs).get_trials()
    assert sum(is_finished(t) for t in trials) == 4  # exactly the asked number
    assert not [t for t in trials if t.state.name == "RUNNING"]
    after = {t.number: t.values for t in trials}
    assert all(after[n] == v for n, v in before.items())  # finished trials kept as they were
    # The search process outlived the service and the new service found it running: it was
    # neither started twice nor resumed, so no trial was interrupted and run again.
    assert not [t for t in trials if t.user_attrs.get("interrupted")]
    log = (runs / ".service" / "jobs" / "restart" / "log.txt").read_text()
    assert log.count("4/4 trials finished") == 1


@pytest.mark.slow  # the kill -9 test covers a restart; this adds the search's death
def test_service_and_search_killed_together_resume_from_the_study(tmp_path: Path) -> None:
    """As if the machine had gone away: the search's process dies with the service, so the
    restarted service queues the search again and it goes on from its study."""
    runs = tmp_path / "runs"
    first = _mid_search(runs)
    try:
        job_pid = _job_pid(runs)
        first.kill()
        os.killpg(job_pid, signal.SIGKILL)
    finally:
        first.stop()
    events = _finish_after_restart(runs)
    assert any("resumed from its study" in e["message"] for e in events)
    trials = _study(runs).get_trials()
    assert sum(is_finished(t) for t in trials) == 4
    cut = [t for t in trials if t.user_attrs.get("interrupted")]
    assert len(cut) == 1  # the trial the kill cut off, run again once
    retry = [t for t in trials if t.user_attrs.get("retry_of") == cut[0].number]
    assert len(retry) == 1 and retry[0].params == cut[0].params
