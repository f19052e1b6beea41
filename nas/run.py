"""A run directory: the resolved config, the study storage and everything derived from them.

Layout of ``runs/NAME/``::

    config.yaml      the resolved run config (every default written out)
    study.db         Optuna storage (SQLite); opens in optuna-dashboard
    trials.csv       one row per trial
    pareto.csv       the feasible non-dominated trials
    pareto.html      interactive accuracy/latency plot
    search.log       per-trial log lines and failure tracebacks
    trials/NNNNN/weights.pt   trained proxy weights of trial NNNNN
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from nas.config import RunConfig, parse_config
from nas.errors import RunError

DEFAULT_RUNS_DIR = Path("runs")
CONFIG_FILE = "config.yaml"
STUDY_FILE = "study.db"
# Fields that may change between invocations of one run without changing its meaning.
RESUMABLE_FIELDS = {
    ("search", "n_trials"),
    ("search", "timeout"),
    # How trials are placed and watched, not what they compute.
    *(
        ("cluster", f)
        for f in (
            "trial_cpus",
            "trial_gpus",
            "trial_memory_gb",
            "max_concurrent_trials",
            "max_retries",
            "heartbeat_seconds",
            "grace_seconds",
        )
    ),
}


def _differences(a: dict, b: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key in sorted(set(a) | set(b)):
        path = (*prefix, key)
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, path)
        elif va != vb and path not in RESUMABLE_FIELDS:
            out.append(path)
    return out


@dataclass(frozen=True)
class Run:
    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def study_path(self) -> Path:
        return self.root / STUDY_FILE

    @property
    def storage_url(self) -> str:
        """The study's Optuna storage: the config's shared one, or this folder's SQLite file."""
        if self.config_path.is_file():
            shared = self.config().cluster.storage
            if shared is not None:
                return shared
        return f"sqlite:///{self.study_path.resolve()}"

    @property
    def trials_csv(self) -> Path:
        return self.root / "trials.csv"

    @property
    def pareto_csv(self) -> Path:
        return self.root / "pareto.csv"

    @property
    def pareto_html(self) -> Path:
        return self.root / "pareto.html"

    @property
    def log_path(self) -> Path:
        return self.root / "search.log"

    @contextmanager
    def lock(self, *, shared: bool = False) -> Iterator[None]:
        """Hold the run; the lock dies with the process, so a crash leaves none.

        Exclusive by default (one `nas search`); `shared=True` lets workers of one study hold
        it together while keeping an exclusive holder out.

        Raises:
            RunError: another process holds the run in a way that excludes this one.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as f:
            try:
                fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunError(
                    f"run {self.root} is in use by another `nas search` or `nas worker`; wait "
                    "for it or pick another --name"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def weights_path(self, number: int) -> Path:
        return self.root / "trials" / f"{number:05d}" / "weights.pt"

    def config(self) -> RunConfig:
        raw = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        return parse_config(raw, source=str(self.config_path))

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """An existing run; `RunError` if `path` is not one."""
        root = Path(path)
        if not root.is_dir():
            raise RunError(f"run directory {root} not found; runs are created by `nas search`")
        missing = [f for f in (CONFIG_FILE, STUDY_FILE) if not (root / f).is_file()]
        if missing == [STUDY_FILE] and cls(root).config().cluster.storage is not None:
            missing = []  # the study lives in a shared database
        if missing:
            raise RunError(f"{root} is not a run directory: {', '.join(missing)} missing")
        return cls(root)

    @classmethod
    def check(cls, runs_dir: Path, config: RunConfig) -> Run:
        """The run for `config` under `runs_dir`, new or matching `config`; writes nothing.

        Raises:
            RunError: the run exists and was started with a different config.
        """
        run = cls(Path(runs_dir) / config.name)
        new = config.model_dump(mode="json")
        if run.config_path.is_file():
            old = run.config().model_dump(mode="json")
            changed = _differences(old, new)
            if changed:
                fields = ", ".join(".".join(p) for p in changed)
                raise RunError(
                    f"run {run.root} was started with a different config ({fields} differ); "
                    f"resume it with its own config ({run.config_path}) or pick another --name"
                )
        elif run.root.exists() and any(p.name != ".lock" for p in run.root.iterdir()):
            raise RunError(f"{run.root} exists and is not a run directory; pick another --name")
        return run
