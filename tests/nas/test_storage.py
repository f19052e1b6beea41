"""Study storage for shared runs: URLs, heartbeats, failing stale trials, the cluster config."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import optuna
import pytest
import yaml

from nas.config import ClusterConfig, parse_config
from nas.errors import ConfigError, RunError
from nas.run import Run
from nas.storage import (
    INTERRUPTED,
    NoStudyYet,
    check_storage,
    close_storage,
    driver_url,
    fail_interrupted,
    fail_stale,
    heartbeat,
    is_finished,
    load_study,
    open_storage,
    redact,
)
from tests.conftest import SMALL_CONFIG, deep_update
from tests.services import wait_for


def test_urls() -> None:
    assert driver_url("postgresql://u@h:5432/d") == "postgresql+psycopg://u@h:5432/d"
    assert driver_url("sqlite:////x/study.db") == "sqlite:////x/study.db"
    assert redact("postgresql://nas:secret@h:5432/d") == "postgresql://nas:***@h:5432/d"
    assert redact("postgresql://nas@h/d") == "postgresql://nas@h/d"


@pytest.mark.parametrize(
    ("cluster", "message"),
    [
        ({"storage": "mysql://x@h/d"}, "use sqlite:///PATH (one machine) or postgresql://"),
        ({"heartbeat_seconds": 10, "grace_seconds": 10}, "grace_seconds (10) must exceed"),
        ({"trial_cpus": 0}, "cluster.trial_cpus"),
        ({"max_concurrent_trials": 0}, "cluster.max_concurrent_trials"),
    ],
)
def test_cluster_config_errors(cluster: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(deep_update(SMALL_CONFIG, {"cluster": cluster}), source="test")


def test_run_uses_the_shared_storage(tmp_path: Path) -> None:
    run = Run(tmp_path / "shared")
    run.root.mkdir()
    assert run.storage_url == f"sqlite:///{(run.root / 'study.db').resolve()}"
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    config = deep_update(SMALL_CONFIG, {"cluster": {"storage": url}})
    run.config_path.write_text(yaml.safe_dump(config))
    assert run.storage_url == url
    assert Run.open(run.root) == run  # no study.db in the folder: the study is elsewhere


def test_reading_a_starting_run_neither_races_nor_creates_its_study(tmp_path: Path) -> None:
    """A reader (the service, a report) that looks while the search is still creating its
    study gets one clear error, and writes nothing into the file the search is creating."""
    run = Run(tmp_path / "small")
    run.root.mkdir()
    run.config_path.write_text(yaml.safe_dump(SMALL_CONFIG))
    message = "run small has no study yet: its search is queued or starting"
    with pytest.raises(NoStudyYet, match=message):
        load_study(run)  # no file yet
    run.study_path.touch()  # the search has just created the file
    with pytest.raises(NoStudyYet, match=message):
        load_study(run)
    assert run.study_path.stat().st_size == 0  # no tables created by the reader
    storage = open_storage(run.storage_url)  # the search's tables, then its study
    with pytest.raises(NoStudyYet, match=message):
        load_study(run)
    optuna.create_study(storage=storage, study_name="small", directions=["maximize", "minimize"])
    assert load_study(run).study_name == "small"


def test_unopenable_storage_is_one_line(tmp_path: Path) -> None:
    bad = ClusterConfig(storage=f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    with pytest.raises(RunError, match="cannot open the study storage sqlite:///") as e:
        check_storage(bad, tmp_path / "run")
    assert "\n" not in str(e.value)
    # A file in the run's folder, which the search creates: checked when it is opened.
    inside = ClusterConfig(storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    check_storage(inside, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_sqlite_study_writes_ahead_and_leaves_one_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    storage = open_storage(f"sqlite:///{path}")
    with storage.engine.connect() as db:
        assert db.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert db.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(
            params={"x": 1.0},
            distributions={"x": optuna.distributions.FloatDistribution(0, 2)},
            value=0.5,
        )
    )
    # A reader sees every committed trial while the writer still holds the file,
    reader = optuna.load_study(study_name="s", storage=f"sqlite:///{path}")
    assert len(reader.trials) == 1
    close_storage(study)  # a reader holds the file: it stays in WAL mode, for the reader
    assert _journal_mode(path) == "wal" and path.with_name("study.db-wal").exists()
    assert reader.trials[0].value == 0.5
    close_storage(reader)
    # Once the last one lets go, the log is folded back: study.db alone holds the whole study,
    # in the default journal mode.
    assert not path.with_name("study.db-wal").exists()
    assert not path.with_name("study.db-shm").exists()
    # A search opening it again writes ahead again, and leaves it as it found it.
    storage = open_storage(f"sqlite:///{path}")
    study = optuna.load_study(study_name="s", storage=storage)
    assert _journal_mode(path) == "wal"
    close_storage(study)
    assert _journal_mode(path) == "delete"
    copy = tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())
    assert optuna.load_study(study_name="s", storage=f"sqlite:///{copy}").trials[0].value == 0.5


def _journal_mode(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return str(db.execute("PRAGMA journal_mode").fetchone()[0])


def _study(tmp_path: Path, cluster: ClusterConfig) -> optuna.Study:
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", cluster)
    return optuna.create_study(storage=storage, directions=["maximize", "minimize"])


def test_stale_trial_is_failed_once_and_queued_again(tmp_path: Path) -> None:
    study = _study(tmp_path, ClusterConfig(heartbeat_seconds=1, grace_seconds=2))
    dists = {"x": optuna.distributions.IntDistribution(0, 9)}
    alive, dead = study.ask(dists), study.ask(dists)
    with heartbeat(study._storage, [alive._trial_id]):
        study._storage.record_heartbeat(dead._trial_id)  # then it goes silent
        wait_for(
            lambda: study._storage._get_stale_trial_ids(study._study_id),
            30,
            "the silent trial to pass its grace period",
            interval=0.2,
        )
        assert fail_stale(study) == 1
        assert fail_stale(study) == 0  # a second worker looking finds nothing to do
    trials = study.get_trials()
    assert trials[alive.number].state.name == "RUNNING"
    stale = trials[dead.number]
    assert stale.state.name == "FAIL" and stale.user_attrs[INTERRUPTED]
    assert "stopped sending heartbeats" in stale.user_attrs["failure_reason"]
    assert not is_finished(stale)
    queued = [t for t in trials if t.state.name == "WAITING"]
    assert len(queued) == 1 and queued[0].user_attrs["retry_of"] == dead.number
    assert study.ask(dists).params == stale.params  # the retry runs the same candidate


def test_failing_an_already_finished_trial_is_a_no_op(tmp_path: Path) -> None:
    study = _study(tmp_path, ClusterConfig())
    trial = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    study.tell(trial, [0.5, 1.0])
    frozen = study.get_trials()[trial.number]
    assert not fail_interrupted(study, frozen, "late")
    assert study.get_trials()[trial.number].state.name == "COMPLETE"
    assert len(study.get_trials()) == 1  # nothing queued
