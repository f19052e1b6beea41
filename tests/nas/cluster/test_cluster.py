"""Searches across processes and machines: Ray Tune on a real two-node cluster, workers sharing
a real PostgreSQL (or SQLite) study, and the faults they must survive.

The Ray nodes and every process that talks to them run in a loopback-only network namespace
(tests/services.py); PostgreSQL listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, SMALL_CONFIG, SUPERNET_SETTINGS, deep_update, run_cli
from tests.searches import (
    SEARCH_TIMEOUT,
    check_exact,
    cli,
    env,
    finished,
    in_cluster,
    ray_search,
    study_of,
)
from tests.services import Postgres, RayCluster, netns_available, trial_states, wait_for

pytestmark = [
    pytest.mark.skipif(not netns_available(), reason="the cluster tests need root and `ip netns`"),
]

# Trials long enough to be killed in the middle (several seconds of training each).
LONG_TRIALS = {"data": {"train_size": 1400}, "training": {"epochs": 5}}
FIRST_TRIAL_WAIT = 600  # as SEARCH_TIMEOUT, for a search's first trial


def write(tmp_path: Path, changes: dict[str, Any], name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(deep_update(SMALL_CONFIG, changes)))
    return path


def search_on(cluster: RayCluster, config: Path, runs: Path) -> subprocess.CompletedProcess:
    return in_cluster(cluster, *ray_search(cluster, config, runs))


# Ray Tune backend


def test_ray_local_instance_writes_the_run_format(tmp_path: Path) -> None:
    """A supernet search with the default sampler (NSGA-II, which does not pickle in Optuna
    5.1): the driver trains the supernet once, trials score with its weights."""
    default_sampler = {"sampler": "nsga2", "population_size": 2}
    config = write(tmp_path, {**SUPERNET_SETTINGS, "name": "raylocal", "search": default_sampler})
    proc = run_cli("search", config, "--backend", "ray", "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "raylocal"
    for name in ("config.yaml", "study.db", "trials.csv", "pareto.csv", "pareto.html"):
        assert (run / name).is_file(), name
    assert (run / "supernet" / "supernet.json").is_file()
    assert not (run / "study.db-wal").exists(), "the driver closes the study whole"
    study = study_of(run)
    check_exact(run, study, 3)
    assert {t.user_attrs["accuracy_source"] for t in study.get_trials()} == {"supernet"}
    # Every other command reads a Ray run unchanged.
    front = run_cli("pareto", run)
    assert front.returncode == 0 and "Pareto front" in front.stdout
    number = int(pd.read_csv(run / "pareto.csv")["number"].iloc[0])
    out = tmp_path / "export"
    exported = run_cli("export", run, "--trial", number, "--out", out)
    assert exported.returncode == 0, exported.stderr
    assert (out / "model_card.json").is_file()


def test_sigterm_stops_a_ray_search_as_ctrl_c_does(tmp_path: Path) -> None:
    """`kill`, `timeout` and schedulers send SIGTERM: Ray's own handler used to abort the
    driver with a stack trace; now Tune ends its trials, they are queued again, and the one
    line left says how to resume, which reaches the exact count."""
    config = write(tmp_path, {"name": "rayterm", "search": {"n_trials": 4}, **LONG_TRIALS})
    runs = tmp_path / "runs"
    command = ["search", config, "--backend", "ray", "--runs-dir", runs]
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as err:
        driver = subprocess.Popen(cli(*command), cwd=REPO, env=env(), stdout=err, stderr=err)
    run = runs / "rayterm"
    table = run / "trials.csv"  # written whole after each trial; no hold on the study's file
    try:
        wait_for(
            lambda: table.is_file() and "COMPLETE" in table.read_text(),
            FIRST_TRIAL_WAIT,
            "a first completed trial",
        )
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=SEARCH_TIMEOUT) == 2, stderr.read_text()
    finally:
        driver.kill()
    text = stderr.read_text()
    assert "SIGTERM received" not in text and "Tuner.restore" not in text, text
    last = text.strip().splitlines()[-1]
    assert last.startswith("error: search interrupted; resume with: nas search"), text
    assert not (run / "study.db-wal").exists()
    study = study_of(run)
    before = {t.number: t.values for t in study.get_trials() if t.state.name == "COMPLETE"}
    assert 1 <= len(before) < 4
    assert not [t for t in study.get_trials() if t.state.name == "RUNNING"]

    again = run_cli(*command)
    assert again.returncode == 0, again.stderr
    study = study_of(run)
    check_exact(run, study, 4)
    after = {t.number: t.values for t in study.get_trials() if t.state.name == "COMPLETE"}
    assert all(after[n] == v for n, v in before.items()), "finished trials are kept as they were"


def test_cluster_places_latency_on_the_device_node(tmp_path: Path, cluster: RayCluster) -> None:
    """Two 1-CPU nodes train; only the head carries device:cpu-ort-fp32, so it measures."""
    # Two at once, long enough that neither node is free before the other has started one.
    config = write(
        tmp_path,
        {
            "name": "placed",
            "search": {"n_trials": 3},
            "cluster": {"max_concurrent_trials": 2},
            **LONG_TRIALS,
        },
    )
    runs = tmp_path / "runs"
    proc = search_on(cluster, config, runs)
    assert proc.returncode == 0, proc.stderr
    study = study_of(runs / "placed")
    check_exact(runs / "placed", study, 3)
    nodes = cluster.nodes()
    head = next(n for n, resources in nodes.items() if f"device:{cluster.device}" in resources)
    trained = {t.user_attrs["ray_trained_on"] for t in study.get_trials()}
    measured = {n for t in study.get_trials() for n in t.user_attrs["ray_measured_on"]}
    assert measured == {head}
    assert trained == set(nodes), "both nodes should have trained candidates"


@pytest.mark.slow  # a node's death is noticed after Ray's health-check period
def test_killing_a_worker_node_loses_and_duplicates_nothing(
    tmp_path: Path, cluster: RayCluster
) -> None:
    config = write(tmp_path, {"name": "nodekill", "search": {"n_trials": 4}, **LONG_TRIALS})
    runs = tmp_path / "runs"
    driver = subprocess.Popen(
        [*cluster.prefix(), *cli(*ray_search(cluster, config, runs))],
        cwd=REPO,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(cluster.worker_runs_trial, FIRST_TRIAL_WAIT, "a trial on the second node")
        assert cluster.kill_worker() > 0  # in the middle of that trial
        _, err = driver.communicate(timeout=SEARCH_TIMEOUT)
    finally:
        driver.kill()
        cluster.start_worker()  # for the tests after this one
    assert driver.returncode == 0, err
    run = runs / "nodekill"
    check_exact(run, study_of(run), 4)
    log = (run / "search.log").read_text()
    assert "its Ray worker or node died; Tune runs it again" in log


def test_killed_driver_resumes_with_the_exact_count(tmp_path: Path, cluster: RayCluster) -> None:
    config = write(tmp_path, {"name": "driverkill", "search": {"n_trials": 4}, **LONG_TRIALS})
    runs = tmp_path / "runs"
    command = ray_search(cluster, config, runs)
    driver = subprocess.Popen(
        [*cluster.prefix(), *cli(*command)],
        cwd=REPO,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run = runs / "driverkill"
    try:
        wait_for(
            lambda: "COMPLETE" in trial_states(run), FIRST_TRIAL_WAIT, "a first completed trial"
        )
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        driver.kill()
    before = {t.number: t.values for t in study_of(run).get_trials() if t.state.name == "COMPLETE"}
    assert 1 <= len(before) < 4

    again = in_cluster(cluster, *command)
    assert again.returncode == 0, again.stderr
    study = study_of(run)
    check_exact(run, study, 4)
    after = {t.number: t.values for t in study.get_trials() if t.state.name == "COMPLETE"}
    assert all(after[n] == v for n, v in before.items()), "finished trials are kept as they were"
    cut = [t for t in study.get_trials() if t.user_attrs.get("interrupted")]
    retried = {t.user_attrs.get("retry_of") for t in study.get_trials()}
    assert all(t.number in retried for t in cut if t.params)


def test_unreachable_ray_address_fails_fast(tmp_path: Path) -> None:
    from tests.services import free_port

    config = write(tmp_path, {"name": "noray"})
    start = time.monotonic()
    proc = run_cli(
        "search",
        config,
        "--backend",
        "ray",
        "--address",
        f"127.0.0.1:{free_port()}",
        "--runs-dir",
        tmp_path / "runs",
    )
    assert proc.returncode == 2
    assert time.monotonic() - start < 60  # not a hang; startup of the CLI included
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Ray cluster at 127.0.0.1:" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_cluster_without_the_device_node_says_so(tmp_path: Path, cluster: RayCluster) -> None:
    """Compressed candidates must be measured: no node carries cpu-ov-fp32, so it refuses."""
    config = write(
        tmp_path,
        {
            "name": "nodevice",
            "latency": {"device": "cpu-ov-fp32"},
            "compression": {"pruning": {"ratios": [0.25]}},
        },
    )
    proc = search_on(cluster, config, tmp_path / "runs")
    assert proc.returncode == 2
    # Ray's own start-up warnings may come first (this namespace has no route to probe).
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("[")]
    assert len(lines) == 1, proc.stderr
    assert "no node of the Ray cluster at" in lines[0] and "device:cpu-ov-fp32" in lines[0]
    assert "ray start --address" in lines[0]
    assert not (tmp_path / "runs" / "nodevice").exists()


def test_cluster_without_the_device_node_predicts_when_it_can(
    tmp_path: Path, cluster: RayCluster, small_table: Path
) -> None:
    """No node carries phone-x, but a latency table of that device exists: predict."""
    table = tmp_path / "phone.csv"
    shutil.copy(small_table, table)
    meta = json.loads(small_table.with_suffix(".json").read_text())
    meta["device"].update(name="phone-x", hardware="Snapdragon 8", runtime="tflite")
    table.with_suffix(".json").write_text(json.dumps(meta))
    config = write(
        tmp_path,
        {
            "name": "predicts",
            "latency": {"device": "phone-x", "table": str(table)},
            "search": {"n_trials": 2},
        },
    )
    proc = search_on(cluster, config, tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr
    assert "no node advertises device:phone-x" in proc.stderr
    rows = pd.read_csv(tmp_path / "runs" / "predicts" / "trials.csv")
    assert set(rows["latency_source"]) == {"predicted"}


# Workers sharing one study


def beating_trials(db: Path) -> int:
    """RUNNING trials of the study in `db` that have recorded a heartbeat."""
    with contextlib.closing(sqlite3.connect(db)) as con:
        (count,) = con.execute(
            "SELECT COUNT(*) FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
            "WHERE t.state = 'RUNNING'"
        ).fetchone()
    return int(count)


def _workers(run: Path, n: int, trials: int) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            cli("worker", run, "--trials", trials),
            cwd=REPO,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]


def test_two_workers_on_postgres_split_the_trials(tmp_path: Path, postgres: Postgres) -> None:
    config = write(tmp_path, {"name": "pgshared"})
    runs = tmp_path / "runs"
    first = run_cli("search", config, "--trials", 1, "--storage", postgres.url, "--runs-dir", runs)
    assert first.returncode == 0, first.stderr
    run = runs / "pgshared"
    assert not (run / "study.db").exists()  # the study lives in PostgreSQL

    workers = _workers(run, 2, 8)
    outputs = [w.communicate(timeout=SEARCH_TIMEOUT) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = study_of(run, postgres.url)
    check_exact(run, study, 8)
    # Each trial was run by exactly one worker, and every trial was run by one.
    import re

    ran = [
        {int(n) for n in re.findall(r"trial (\d+) (?:done|failed|stopped)", err)}
        for _, err in outputs
    ]
    assert not ran[0] & ran[1]
    assert ran[0] and ran[1], "both workers should have taken trials"
    assert ran[0] | ran[1] | {0} == {t.number for t in finished(study)}


def test_a_killed_worker_trial_is_retried_by_the_other(tmp_path: Path) -> None:
    """SQLite on one machine; heartbeats every second, stale after four."""
    config = write(
        tmp_path,
        {
            "name": "heartbeat",
            "cluster": {"heartbeat_seconds": 1, "grace_seconds": 4},
            **LONG_TRIALS,
        },
    )
    runs = tmp_path / "runs"
    first = run_cli("search", config, "--trials", 1, "--runs-dir", runs)
    assert first.returncode == 0, first.stderr
    run = runs / "heartbeat"
    victim, survivor = _workers(run, 2, 4)
    try:
        # Both running, and each trial's heartbeat recorded: a trial that never beat is never
        # found stale, so killing its worker earlier would test nothing.
        wait_for(
            lambda: beating_trials(run / "study.db") == 2,
            120,
            "both workers running a trial with a heartbeat",
            tolerate=(sqlite3.OperationalError,),
        )
        victim.kill()
        victim.wait(timeout=30)
        _, err = survivor.communicate(timeout=SEARCH_TIMEOUT)
    finally:
        victim.kill()
        survivor.kill()
    assert survivor.returncode == 0, err
    study = study_of(run)
    check_exact(run, study, 4)
    stale = [
        t for t in study.get_trials() if "heartbeats" in t.user_attrs.get("failure_reason", "")
    ]
    assert len(stale) == 1
    retry = [t for t in study.get_trials() if t.user_attrs.get("retry_of") == stale[0].number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert retry[0].params == stale[0].params


def test_unreachable_database_fails_fast(tmp_path: Path) -> None:
    from tests.services import free_port

    config = write(tmp_path, {"name": "nodb"})
    start = time.monotonic()
    proc = run_cli(
        "search",
        config,
        "--storage",
        f"postgresql://nas@127.0.0.1:{free_port()}/nas",
        "--runs-dir",
        tmp_path / "runs",
    )
    assert proc.returncode == 2
    assert time.monotonic() - start < 60
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot open the study storage postgresql://" in lines[0]
    assert not (tmp_path / "runs" / "nodb").exists()


def test_unsupported_storage_is_refused(tmp_path: Path) -> None:
    config = write(tmp_path, {"name": "badurl"})
    proc = run_cli(
        "search", config, "--storage", "mysql://x@127.0.0.1/nas", "--runs-dir", tmp_path / "r"
    )
    assert proc.returncode == 2
    assert "use sqlite:///PATH (one machine) or postgresql://" in proc.stderr
    assert not (tmp_path / "r").exists()
