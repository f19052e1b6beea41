"""What running on Ray or on several workers costs and gains, measured side by side.

Part 1, scheduling overhead: the same trivial trials (digits, 64 training images, one epoch,
three latency repeats) run by the local backend and by Ray Tune on a local Ray instance, one trial
at a time. Per backend: start-up until the first trial, the steady per-trial cycle (median time
between consecutive trial completions), the median time the evaluation itself took, and their
difference, the scheduling overhead per trial.

Part 2, speed-up: the same small real trials (digits, full training split, a few epochs, one
torch thread each) run by one worker and by two workers sharing the run's SQLite study
(`nas search --storage ...` plus `nas worker`), and by Ray Tune with one and with two concurrent
trials. Prints wall times and speed-ups at the same number of trials.

Every search is a real `nas` subprocess, so interpreter and library start-up are included.

    .venv/bin/python benchmarks/cluster.py [--trivial-trials 20] [--trials 12] [--epochs 3]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
import yaml
from _digits import NAS, digits_search

REPO = Path(__file__).resolve().parents[1]


def nas(*args: Any) -> list[str]:
    return [*NAS, *map(str, args)]


def write(tmp: Path, name: str, changes: dict[str, Any]) -> Path:
    config = digits_search(name, **changes)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def trials(run: Path, storage: str | None = None) -> list[optuna.trial.FrozenTrial]:
    url = storage or f"sqlite:///{run / 'study.db'}"
    study = optuna.load_study(study_name=run.name, storage=url)
    return [t for t in study.get_trials() if t.state.name == "COMPLETE"]


def seconds(moment: datetime.datetime | None) -> float:
    """A trial's timestamp in seconds since the epoch."""
    if moment is None:
        raise SystemExit("a completed trial has no timestamp; the study is damaged")
    return moment.timestamp()


def start(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def study_ready(storage: str, name: str) -> bool:
    """Whether the study exists in `storage` (its file may exist before the study is in it)."""
    try:
        optuna.load_study(study_name=name, storage=storage)
    except (KeyError, ValueError, sqlalchemy.exc.SQLAlchemyError):
        return False
    return True


def timed(*commands: list[str], wait_for: tuple[str, str] | None = None) -> float:
    """Run commands at once (the others once the study `wait_for` = (storage, name) exists);
    wall seconds of all."""
    began = time.monotonic()
    procs = [start(commands[0])]
    for command in commands[1:]:
        while wait_for is not None and not study_ready(*wait_for):
            if procs[0].poll() is not None:
                break  # the first search ended early; its error is reported below
            time.sleep(0.2)
        procs.append(start(command))
    errors = [p.communicate()[1] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a search failed: {commands}\n{errors}")
    return time.monotonic() - began


def overhead(tmp: Path, runs: Path, n: int) -> None:
    print(f"\n== Scheduling overhead: {n} trivial trials, one at a time ==")
    trivial = {
        "data": {"train_size": 64, "val_size": 64},
        "training": {"epochs": 1},
        "latency": {"warmup": 0, "repeats": 3},
        "search": {"n_trials": n, "sampler": "random"},
        "cluster": {"max_concurrent_trials": 1},
    }
    rows = []
    for backend in ("local", "ray"):
        name = f"trivial-{backend}"
        config = write(tmp, name, trivial)
        began = time.time()
        # A runs folder each: the latency cache must not serve the second backend.
        folder = runs / backend
        wall = timed(nas("search", config, "--backend", backend, "--runs-dir", folder))
        done = sorted(trials(folder / name), key=lambda t: seconds(t.datetime_complete))
        first = seconds(done[0].datetime_start) - began
        ends = [seconds(t.datetime_complete) for t in done]
        cycle = statistics.median(b - a for a, b in itertools.pairwise(ends))
        evaluation = statistics.median(t.user_attrs["eval_seconds"] for t in done)
        rows.append((backend, len(done), wall, first, cycle, evaluation, cycle - evaluation))
    print(
        f"{'backend':8} {'trials':>6} {'wall s':>7} {'start-up s':>10} {'cycle s':>8} "
        f"{'eval s':>7} {'overhead s/trial':>17}"
    )
    for backend, count, wall, first, cycle, evaluation, extra in rows:
        print(
            f"{backend:8} {count:6d} {wall:7.1f} {first:10.1f} {cycle:8.3f} {evaluation:7.3f} "
            f"{extra:17.3f}"
        )
    local, ray = rows[0][-1], rows[1][-1]
    print(
        f"Ray's overhead per trial: {ray:.3f} s vs local {local:.3f} s "
        f"(+{ray - local:.3f} s; Ray Tune's default loop was reported at about 1.9 s)"
    )


def speedup(tmp: Path, runs: Path, n: int, epochs: int) -> None:
    print(f"\n== Speed-up at {n} trials ({epochs} epochs each, one torch thread a trial) ==")
    real = {"search": {"n_trials": n}, "training": {"epochs": epochs, "threads": 1}}
    results: dict[str, tuple[float, int]] = {}
    for workers in (1, 2):
        name = f"workers-{workers}"
        config = write(tmp, name, real)
        run = runs / name / name
        storage = f"sqlite:///{run.resolve() / 'study.db'}"
        commands = [nas("search", config, "--storage", storage, "--runs-dir", run.parent)]
        commands += [nas("worker", run)] * (workers - 1)
        wall = timed(*commands, wait_for=(storage, name))
        results[f"{workers} nas worker"] = (wall, len(trials(run, storage)))
    for concurrent in (1, 2):
        name = f"ray-{concurrent}"
        config = write(tmp, name, {**real, "cluster": {"max_concurrent_trials": concurrent}})
        wall = timed(nas("search", config, "--backend", "ray", "--runs-dir", runs / name))
        results[f"ray, {concurrent} at once"] = (wall, len(trials(runs / name / name)))
    print(f"{'setup':18} {'trials':>6} {'wall s':>7} {'trials/min':>10}")
    for label, (wall, count) in results.items():
        print(f"{label:18} {count:6d} {wall:7.1f} {60 * count / wall:10.2f}")
    one, two = results["1 nas worker"][0], results["2 nas worker"][0]
    r1, r2 = results["ray, 1 at once"][0], results["ray, 2 at once"][0]
    print(f"speed-up, 2 workers vs 1 (shared SQLite study): {one / two:.2f}x")
    print(f"speed-up, Ray 2 concurrent trials vs 1: {r1 / r2:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trivial-trials", type=int, default=20)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nas-bench-cluster-") as tmp_name:
        tmp = Path(tmp_name)
        runs = tmp / "runs"
        overhead(tmp, runs, args.trivial_trials)
        speedup(tmp, runs, args.trials, args.epochs)


if __name__ == "__main__":
    main()
