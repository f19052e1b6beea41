"""The study's Optuna storage: opening it, checking it answers, reading its trials, and the
heartbeat of a trial.

A run's study is an Optuna RDB storage: the run's own SQLite file by default, or a shared
database (PostgreSQL) that workers on several machines open by URL. Workers record a heartbeat
for the trial they run; a trial whose heartbeat stops (its worker was killed or its machine
went away) is failed by whichever worker looks next, marked interrupted, and queued again.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from nas.config import ClusterConfig
from nas.errors import RunError, UnknownTrialError
from nas.record import CANDIDATE, FAILURE_REASON, INTERRUPTED, RETRY_OF
from nas.run import Run

CONNECT_TIMEOUT_S = 5


def driver_url(url: str) -> str:
    """SQLAlchemy URL with the driver the project installs (psycopg 3 for PostgreSQL)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def fail_interrupted(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """Fail a RUNNING trial whose process is gone, say why, and queue its candidate again.

    An interrupted trial does not count toward the target; its retry does. Optuna has no public
    call that annotates a trial another process started, hence the storage. When several
    workers race to fail the same trial, one wins and only it queues the retry.

    Returns:
        Whether this call failed the trial.
    """
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
        storage.set_trial_user_attr(trial._trial_id, FAILURE_REASON, reason)
        if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    if trial.params:
        study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
    return True


def fail_stale(study: optuna.Study) -> int:
    """Fail and queue again every trial whose heartbeats stopped; how many this call failed.

    Optuna's own `fail_stale_trials` fails them before a callback could say why, so the stale
    trials are listed (a private storage call) and failed here.
    """
    storage = study._storage
    if not isinstance(storage, BaseHeartbeat) or storage.get_heartbeat_interval() is None:
        return 0
    failed = 0
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        trial = storage.get_trial(trial_id)
        failed += fail_interrupted(
            study, trial, "interrupted: its worker stopped sending heartbeats; retried"
        )
    return failed


def open_storage(url: str, cluster: ClusterConfig | None = None) -> optuna.storages.RDBStorage:
    """The RDB storage at `url`; with `cluster`, heartbeats are on (for workers).

    Raises:
        RunError: the database cannot be reached within a few seconds, or refuses us.
    """
    import sqlalchemy.exc

    engine: dict[str, Any] = {}
    if url.startswith("postgresql"):
        engine["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    heartbeat: dict[str, Any] = {}
    if cluster is not None:
        heartbeat = {
            "heartbeat_interval": cluster.heartbeat_seconds,
            "grace_period": cluster.grace_seconds,
        }
        # Heartbeats are recorded by `heartbeat` below around ask/tell, which Optuna warns
        # about on every ask because its own loop is `Study.optimize`.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(driver_url(url), engine_kwargs=engine, **heartbeat)
        if url.startswith("sqlite:"):
            _write_ahead(storage.engine)
        return storage
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as e:
        detail = str(getattr(e, "orig", None) or e).strip().splitlines()
        raise RunError(
            f"cannot open the study storage {redact(url)}: {detail[0] if detail else e}; "
            "check that the database server runs and the URL (sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DB) is right"
        ) from None


def _write_ahead(engine: Any) -> None:
    """Put a SQLite study in write-ahead-log mode, synced at checkpoints rather than at every
    commit. Optuna commits each suggested parameter on its own, so a supernet trial (38
    parameters, about a second) spent 0.08 s in the default mode's syncs and 0.04 s in this one;
    readers (the dashboard, `nas report`) no longer wait for the writer either. One machine
    only, as SQLite studies are: a study shared across machines is PostgreSQL."""
    import sqlalchemy as sa

    def pragmas(dbapi: Any, _: Any) -> None:
        cursor = dbapi.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sa.event.listen(engine, "connect", pragmas)
    engine.dispose()  # the connections Optuna opened to set up the tables get the pragmas too


def close_storage(study: optuna.Study) -> None:
    """Let go of the study's database connections. A SQLite study's write-ahead log is folded
    back into the file when its last connection closes, and the file is put back in SQLite's
    default journal mode when nothing else has it open, so a finished search leaves the whole
    study in ``study.db`` alone, readable from read-only media too (a search killed with
    SIGKILL, or by a power loss, leaves ``study.db-wal`` beside it, which the next process to
    open the file reads back)."""
    storage = getattr(study._storage, "_backend", study._storage)  # Optuna's cache wraps it
    if not isinstance(storage, optuna.storages.RDBStorage):
        return
    storage.engine.dispose()
    url = storage.engine.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        # A reader still holding the file (the service, a dashboard) keeps it in WAL mode:
        # SQLite refuses the change then, which is fine. mode=rw: never creates a file.
        existing = Path(url.database).resolve().as_uri() + "?mode=rw"
        with (
            contextlib.suppress(sqlite3.Error),
            contextlib.closing(sqlite3.connect(existing, uri=True, timeout=0.5)) as db,
        ):
            db.execute("PRAGMA journal_mode=DELETE")


def check_storage(cluster: ClusterConfig, run_root: Path) -> None:
    """Open the config's shared storage once, so a wrong URL fails before anything is written.

    A SQLite file inside the run's own folder, which the search is about to create, is opened
    then instead.

    Raises:
        RunError: see `open_storage`.
    """
    url = cluster.storage
    if url is None:
        return
    if url.startswith("sqlite:///"):
        folder = Path(url[len("sqlite:///") :]).parent
        if folder.resolve() == run_root.resolve() and not folder.exists():
            return
    open_storage(url).engine.dispose()


@contextmanager
def heartbeat(
    storage: optuna.storages.BaseStorage, trial_ids: Callable[[], Iterable[int]] | list[int]
) -> Iterator[None]:
    """Record a heartbeat for each trial every heartbeat period while the block runs.

    Args:
        storage: The study's storage; without heartbeats (a run owned by one process) this
            does nothing.
        trial_ids: Storage ids of the trials, or a function that lists them at each beat.
    """
    listed = trial_ids if callable(trial_ids) else (lambda: trial_ids)
    interval = storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None
    if interval is None or not isinstance(storage, BaseHeartbeat):
        yield
        return
    beating: BaseHeartbeat = storage
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial_id in listed():
                # A missed beat is tried again next period; the grace period covers a few.
                with contextlib.suppress(Exception):
                    beating.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class NoStudyYet(RunError):
    """The run's search has not created its study yet (it is queued or starting)."""


def _sqlite_holds(path: Path, name: str) -> bool | None:
    """Whether the SQLite file at `path` holds study `name`, read without creating anything;
    None when the file is busy and cannot say."""
    import sqlite3

    if not path.is_file():
        return False
    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        ) as db:
            row = db.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone()
    except sqlite3.OperationalError as e:
        return None if "locked" in str(e) else False  # no tables yet: the search is starting
    return row is not None


def load_study(run: Run) -> optuna.Study:
    """The run's study, read from its storage.

    A reader must not race the search that is creating the study: opening an Optuna storage
    creates its tables, and two processes creating them at once fail one of them. So a run's
    own SQLite file is looked at read-only first.

    Raises:
        NoStudyYet: the search has not created the study yet.
    """
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = run.config().name
    not_yet = NoStudyYet(f"run {run.root.name} has no study yet: its search is queued or starting")
    url = run.storage_url
    local = url.startswith("sqlite:///")
    if local and _sqlite_holds(Path(url.removeprefix("sqlite:///")), name) is False:
        raise not_yet
    try:
        return optuna.load_study(study_name=name, storage=driver_url(url))
    except KeyError:  # Optuna's "Record does not exist."
        raise not_yet from None
    except sqlalchemy.exc.IntegrityError:  # a shared database's tables being created right now
        raise not_yet from None


def find_trial(study: optuna.Study, *, number: int | None, candidate: str | None) -> FrozenTrial:
    """The completed trial with `number`, or the first completed one with `candidate`.

    Raises:
        UnknownTrialError: the run holds no such trial.
        RunError: the trial did not complete.
    """
    trials = study.get_trials(deepcopy=False)
    if number is not None:
        match = [t for t in trials if t.number == number]
        if not match:
            last = f"0..{len(trials) - 1}" if trials else "none"
            raise UnknownTrialError(f"trial {number} not in run (trials: {last})")
        trial = match[0]
    else:
        match = [
            t
            for t in trials
            if t.user_attrs.get(CANDIDATE) == candidate and t.state.name == "COMPLETE"
        ]
        if not match:
            raise UnknownTrialError(f"no completed trial has candidate {candidate!r}")
        trial = match[0]
    if trial.state.name != "COMPLETE":
        why = trial.user_attrs.get(FAILURE_REASON, "")
        raise RunError(
            f"trial {trial.number} is {trial.state.name}"
            f"{': ' + why if why else ''}; export a completed trial"
        )
    return trial


def is_finished(trial: FrozenTrial) -> bool:
    """Counts toward the target: completed, stopped early, or failed other than by interruption."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and not trial.user_attrs.get(INTERRUPTED, False)


def is_active(trial: FrozenTrial) -> bool:
    """Finished, or running now: holds one of the target's places."""
    return is_finished(trial) or trial.state == TrialState.RUNNING
