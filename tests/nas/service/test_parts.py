"""The service's parts on their own: options, login redirects, the job store, and the choice
helpers the API answers with."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nas.pareto import knee_index
from nas.report.choice import best_under, side_by_side
from nas.service.auth import safe_next, token_matches
from nas.service.jobs import FINISHED, QUEUED, SEARCH, Job, JobStore
from nas.service.state import ServeOptions
from tests.conftest import REPO


def test_options_know_loopback_from_the_rest() -> None:
    assert ServeOptions().loopback and ServeOptions(host="::1").loopback
    assert ServeOptions(host="localhost").loopback
    assert not ServeOptions(host="0.0.0.0").loopback and not ServeOptions(host="10.1.2.3").loopback


def test_login_only_returns_to_this_site_and_compares_whole_tokens() -> None:
    assert safe_next("/searches/a?x=1") == "/searches/a?x=1"
    for elsewhere in (None, "", "https://evil.example/", "//evil.example", "/\\\\evil.example"):
        assert safe_next(elsewhere) == "/"
    assert token_matches("abc", "abc") and not token_matches("ab", "abc")
    assert not token_matches(None, "abc") and not token_matches("", "abc")


def test_the_job_store_keeps_jobs_across_instances(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.add(Job(id="s1", kind=SEARCH, run="s1", state=QUEUED, params={"n": 1}))
    store.update("s1", state=FINISHED, message="done", pid=42)
    again = JobStore(tmp_path).get("s1")
    assert again is not None and (again.state, again.message, again.pid) == (FINISHED, "done", 42)
    assert again.params == {"n": 1} and again.ended_state
    assert JobStore(tmp_path).counts() == {(SEARCH, FINISHED): 1}
    with pytest.raises(KeyError, match="no job field"):
        store.update("s1", colour="red")


def test_the_knee_is_where_the_front_bends() -> None:
    # accuracy (max) against latency (min): a sharp bend at (2 ms, 0.80)
    points = np.array([[0.60, 1.0], [0.80, 2.0], [0.82, 6.0], [0.83, 10.0]])
    assert knee_index(points, (True, False)) == 1
    assert knee_index(points[:2], (True, False)) is None


def test_the_most_accurate_under_a_budget_and_a_pair_side_by_side() -> None:
    trials = pd.DataFrame(
        {
            "number": [0, 1, 2, 3],
            "state": ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"],
            "feasible": [True, True, False, False],
            "accuracy": [0.70, 0.75, 0.90, float("nan")],
            "latency_p50_ms": [1.0, 2.0, 1.5, float("nan")],
            "params": [100, 300, 200, None],
            "flops": [10, 30, 20, None],
        }
    )
    assert best_under(trials, 2.0)["number"] == 1  # trial 2 is faster but infeasible
    assert best_under(trials, 1.2)["number"] == 0
    assert best_under(trials, 0.5) is None
    pair = side_by_side(trials.iloc[0], trials.iloc[1])
    assert pair["accuracy_points"] == pytest.approx(5.0) and pair["latency_ratio"] == 2.0


def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "nas.cli",
                "serve",
                "--port",
                str(port),
                "--runs-dir",
                str(tmp_path),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0]
