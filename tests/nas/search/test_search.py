"""Search-loop behaviour: failures, constraints, duplicates, interruption and resume."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from nas import api
from nas.errors import RunError, SearchError
from nas.evaluate.evaluator import Evaluator
from tests.conftest import REPO, SMALL_CONFIG, deep_update, run_cli
from tests.services import interruptible, wait_for


def _study(run_dir: Path, name: str = "small") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{run_dir / 'study.db'}")


class FaultyEvaluator(Evaluator):
    """The real evaluator, with a crash injected for half-width candidates."""

    def __call__(self, candidate, **kwargs):
        if candidate.width == 0.5:
            raise RuntimeError("injected crash")
        return super().__call__(candidate, **kwargs)


def test_failed_trials_are_recorded_and_the_search_goes_on(
    write_config, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr("nas.search.session.Evaluator", FaultyEvaluator)
    cfg = write_config({"search": {"n_trials": 6}})
    result = api.search(api.SearchOptions(config=cfg, runs_dir=tmp_path / "runs"))
    trials = pd.read_csv(result.run.root / "trials.csv", keep_default_na=False)
    assert len(trials) == 6
    failed = trials[trials["state"] == "FAIL"]
    done = trials[trials["state"] == "COMPLETE"]
    assert len(failed) >= 1 and len(done) >= 1
    assert (failed["failure_reason"] == "RuntimeError: injected crash").all()
    assert (failed["candidate"].str.startswith("w0.5_")).all()
    assert (done["failure_reason"] == "").all()
    assert "injected crash" in (result.run.root / "search.log").read_text()
    assert not (result.run.root / "study.db-wal").exists()  # the whole study is in study.db
    with pytest.raises(RunError, match=r"trial \d+ is FAIL: RuntimeError: injected crash"):
        number = int(failed["number"].iloc[0])
        api.export(result.run.root, api.ExportOptions(out=tmp_path / "x", trial=number))
    assert not (tmp_path / "x").exists()


def test_every_trial_failing_is_an_error(write_config, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("nas.search.session.Evaluator", FaultyEvaluator)
    cfg = write_config({"space": {"scaling": {"width": 0.5}}})
    with pytest.raises(SearchError, match="all 3 trials failed.*injected crash"):
        api.search(api.SearchOptions(config=cfg, runs_dir=tmp_path / "runs"))
    assert len(pd.read_csv(tmp_path / "runs" / "small" / "trials.csv")) == 3


@pytest.mark.parametrize(("limit", "feasible"), [(1e-6, False), (1e6, True)])
def test_latency_constraint_marks_infeasible(
    write_config, tmp_path: Path, limit: float, feasible: bool
) -> None:
    cfg = write_config(
        {"search": {"n_trials": 2, "sampler": "nsga2", "constraints": {"max_latency_ms": limit}}}
    )
    result = api.search(api.SearchOptions(config=cfg, runs_dir=tmp_path / "runs"))
    trials = pd.read_csv(result.run.root / "trials.csv")
    assert trials["feasible"].tolist() == [feasible, feasible]
    assert len(pd.read_csv(result.run.root / "pareto.csv")) == (
        len(result.front) if feasible else 0
    )
    study = _study(result.run.root)
    assert all(list(t.constraints) == ["max_latency_ms"] for t in study.trials)


def test_repeated_candidate_costs_nothing(write_config, tmp_path: Path) -> None:
    one_choice = {
        "kernel": [3],
        "expansion": [3],
        "se": [0.0],
        "act": ["relu6"],
        "repeats_delta": [0],
    }
    cfg = write_config(
        {
            "space": {
                "choices": one_choice,
                "stem_head_act": ["relu6"],
                "scaling": {"width": [0.25, 0.5], "resolution": 32},
            }
        }
    )
    result = api.search(api.SearchOptions(config=cfg, runs_dir=tmp_path / "runs"))
    trials = pd.read_csv(result.run.root / "trials.csv")
    dup = trials.dropna(subset=["duplicate_of"])
    assert len(dup) >= 1  # three trials, two distinct candidates
    for row in dup.itertuples():
        original = trials[trials["number"] == row.duplicate_of].iloc[0]
        assert (row.candidate, row.accuracy, row.latency_p50_ms) == (
            original.candidate,
            original.accuracy,
            original.latency_p50_ms,
        )
        assert row.duration_s < original.duration_s


def _spawn(config: Path, runs: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "search", str(config), "--runs-dir", str(runs), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        preexec_fn=interruptible,  # Ctrl-C as a terminal sends it
    )


def _wait_for_running_after_complete(db: Path, proc: subprocess.Popen[str]) -> None:
    """Wait until a trial completed and the next one is inside its evaluation (it has recorded
    its candidate, which the loop does within the block that handles an interruption)."""

    def evaluating_after_a_complete_one() -> bool:
        assert proc.poll() is None, proc.communicate()
        if not db.is_file():  # opening a missing SQLite file would create it
            return False
        with contextlib.closing(sqlite3.connect(db)) as con:
            rows = con.execute(
                "SELECT t.state, EXISTS (SELECT 1 FROM trial_user_attributes a "
                "WHERE a.trial_id = t.trial_id AND a.key = 'candidate') "
                "FROM trials t ORDER BY t.number"
            ).fetchall()
        states = [state for state, _ in rows]
        return "COMPLETE" in states and rows[-1] == ("RUNNING", 1)

    wait_for(
        evaluating_after_a_complete_one,
        300,
        "a second trial inside its evaluation",
        interval=0.1,
        tolerate=(sqlite3.OperationalError,),
    )


def _search_stopped_mid_trial(tmp_path: Path, sig: int) -> tuple[Path, Path, int, str]:
    """Start a 4-trial search, send `sig` during its second trial, and wait for it to end.

    Returns the config, the runs folder, the exit code and what the search wrote to stderr.
    """
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            deep_update(SMALL_CONFIG, {"search": {"n_trials": 4}, "training": {"epochs": 3}})
        )
    )
    runs = tmp_path / "runs"
    proc = _spawn(config, runs)
    _wait_for_running_after_complete(runs / "small" / "study.db", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return config, runs, proc.returncode, err


def _rerun_and_check_exact_resume(
    config: Path, runs: Path, before: dict[int, str], interrupted_number: int
) -> None:
    rerun = _spawn(config, runs)
    _out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    trials = _study(runs / "small").trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4
    for number, candidate in before.items():  # kept, not redone
        assert trials[number].state.name == "COMPLETE"
        assert trials[number].user_attrs["candidate"] == candidate
    interrupted = trials[interrupted_number]
    assert interrupted.state.name == "FAIL" and interrupted.user_attrs["interrupted"]
    retried = [t for t in complete if t.user_attrs.get("retry_of") == interrupted.number]
    assert len(retried) == 1 and retried[0].params == interrupted.params
    assert len(pd.read_csv(runs / "small" / "trials.csv")) == len(trials)


def _completed(runs: Path) -> dict[int, str]:
    return {
        t.number: t.user_attrs["candidate"]
        for t in _study(runs / "small").trials
        if t.state.name == "COMPLETE"
    }


def test_kill_9_then_rerun_resumes_exactly(tmp_path: Path) -> None:
    config, runs, code, _ = _search_stopped_mid_trial(tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL
    killed = [t for t in _study(runs / "small").trials if t.state.name == "RUNNING"]
    assert len(killed) == 1  # nothing could mark it: the rerun must
    _rerun_and_check_exact_resume(config, runs, _completed(runs), killed[0].number)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_cleanly_with_a_resume_hint(tmp_path: Path, sig: int) -> None:
    """Ctrl-C, and SIGTERM as `kill`, `timeout` or a scheduler send it, stop the search
    between two progress reports: the trial is marked interrupted and queued again, the study
    is closed whole (no write-ahead log left beside it), and a rerun resumes exactly."""
    config, runs, code, err = _search_stopped_mid_trial(tmp_path, sig)
    assert code == 2, err
    assert f"resume with: nas search {config} --name small --runs-dir {runs}" in err
    assert not (runs / "small" / "study.db-wal").exists()
    trials = _study(runs / "small").trials
    stopped = [t for t in trials if t.state.name == "FAIL"]
    assert len(stopped) == 1 and stopped[0].user_attrs["interrupted"]
    queued = [t for t in trials if t.state.name == "WAITING"]
    assert [t.user_attrs["retry_of"] for t in queued] == [stopped[0].number]
    assert (runs / "small" / "pareto.html").is_file()
    _rerun_and_check_exact_resume(config, runs, _completed(runs), stopped[0].number)


# A search in a fresh interpreter whose first trial takes a Ctrl-C where Python drops its
# KeyboardInterrupt ("Exception ignored in ..."): inside a ``__del__``, as SQLAlchemy's weakref
# callbacks in a real search do. Run apart from the test process, whose signal state earlier
# tests and libraries have changed.
DROPPED_CTRL_C = """
import os, signal, sys
import nas.search.session as session
from nas import api
from nas.errors import SearchError

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # let the handler run here, inside __del__
            pass

calls = []

class Dropping(session.Evaluator):
    def __call__(self, candidate, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            Finalized()
        return super().__call__(candidate, **kwargs)

session.Evaluator = Dropping
try:
    api.search(api.SearchOptions(config=sys.argv[1], runs_dir=sys.argv[2]))
except SearchError as e:
    print("stopped:", e, "after", len(calls))
    sys.exit(3)
print("ran to the end after", len(calls))
"""


def test_a_dropped_ctrl_c_still_stops_the_trial_and_marks_it_interrupted(
    write_config, tmp_path: Path
):
    cfg = write_config({"search": {"n_trials": 3}})
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-c", DROPPED_CTRL_C, str(cfg), str(runs)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"}, preexec_fn=interruptible,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "stopped: search interrupted; resume with" in proc.stdout
    assert proc.stdout.strip().endswith("after 1")
    assert "Exception ignored in" in proc.stderr  # Python did drop the KeyboardInterrupt
    # The trial stopped at its next progress report, not at its end, and runs again on resume.
    trials = _study(runs / "small").trials
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[0].user_attrs["interrupted"] and trials[1].user_attrs["retry_of"] == 0


def test_second_search_on_a_busy_run_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            deep_update(SMALL_CONFIG, {"search": {"n_trials": 6}, "training": {"epochs": 3}})
        )
    )
    runs = tmp_path / "runs"
    first = _spawn(config, runs)
    _wait_for_running_after_complete(runs / "small" / "study.db", first)
    second = _spawn(config, runs)
    _, err = second.communicate(timeout=120)
    first.communicate(timeout=600)
    assert second.returncode == 2 and "in use by another `nas search`" in err
    assert first.returncode == 0


def test_a_failure_outside_the_input_ends_in_one_line(write_config, tmp_path: Path) -> None:
    """The run's table cannot be written (a folder stands where trials.csv goes): one line
    with the cause, the log that holds the traceback and the command that resumes; after the
    fix, that command finishes with the trials done before kept."""
    config, runs = write_config({"search": {"n_trials": 1}}), tmp_path / "runs"
    assert run_cli("search", config, "--runs-dir", runs).returncode == 0
    run = runs / "small"
    (run / "trials.csv").unlink()
    (run / "trials.csv").mkdir()
    proc = run_cli("search", config, "--trials", 2, "--runs-dir", runs)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "search failed: IsADirectoryError" in line
    assert f"traceback in {run / 'search.log'}" in line
    resume = line.split("resume with: ", 1)[1]
    assert resume == f"nas search {config} --name small --trials 2 --runs-dir {runs}"
    assert "Traceback (most recent call last)" in (run / "search.log").read_text()
    (run / "trials.csv").rmdir()
    assert run_cli("search", config, "--trials", 2, "--runs-dir", runs).returncode == 0
    assert [t.state.name for t in _study(run).get_trials()] == ["COMPLETE", "COMPLETE"]


def test_a_failure_before_the_run_exists_leaves_no_folder(write_config, tmp_path: Path) -> None:
    """Failing before anything of the run is written: the traceback goes to a temporary file,
    and the run's name stays free for the rerun."""
    config, runs = write_config(), tmp_path / "runs"
    runs.write_text("a file where the runs folder goes")
    proc = run_cli("search", config, "--runs-dir", runs)
    assert proc.returncode == 2, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    where = Path(line.split("traceback in ", 1)[1].split(")", 1)[0])
    assert where.parent == Path(tempfile.gettempdir()) and "Traceback" in where.read_text()
    where.unlink()
