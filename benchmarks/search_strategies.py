"""Search strategies on NAS-Bench-201's table: how close each sampler gets to the true front.

Every device column of the table is a search problem of its own: maximise CIFAR-10 accuracy,
minimise that device's latency, over the 15,625 cells; its true front is known. Each sampler
(random, NSGA-II, multivariate TPE, Optuna's GPSampler and ours, ``ehvi``, all built by the
product's own `make_sampler`) runs an Optuna ask/tell loop on it, with accuracy and latency
looked up in the table; a candidate asked again costs nothing (the search reuses its result),
so a budget counts distinct candidates. Printed for budgets 50/100/200, averaged over devices and
seeds:

- hypervolume gap: 1 - HV(found) / HV(true front), in %, reference point the table's worst
  accuracy and worst latency;
- regret: for latency budgets at the 10/25/50/75 % quantiles of the true front's latencies,
  the best true accuracy under the budget minus the best found under it, in accuracy points,
  averaged over the four budgets;
- front share: the share of the true front's members found;

then per device at 100 evaluations, how many devices ``ehvi`` beats every Optuna sampler on,
and each sampler's time per suggestion. Runs are cached (``--cache``), so an interrupted run
goes on where it stopped, and a second run only prints.

Yardstick quoted for six other NAS-Bench-201 devices at 100 evaluations: GPSampler leaves a
hypervolume gap of about 1.3 % and a regret of about 1.9 points, multivariate TPE 1.7 % and 2.3,
NSGA-II 3.1 % and 10.6, random 4.6 % and 12.

    .venv/bin/python benchmarks/search_strategies.py [--table ../shared/bench/nb201/nb201.csv.gz]
        [--devices all] [--samplers random nsga2 tpe gp ehvi] [--budgets 50 100 200]
        [--seeds 5] [--jobs 2] [--cache runs/benchmarks/search_strategies.csv]
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from nas.config import parse_config
from nas.evaluate.pool import foresight
from nas.evaluate.tabular import BenchmarkTable, TableLatency
from nas.pareto import hypervolume_2d, non_dominated_mask
from nas.search.samplers import get_sampler, list_samplers, make_sampler
from nas.search.study import DIRECTIONS, distributions
from search_spaces.nb201 import NB201Space

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = REPO.parent / "shared" / "bench" / "nb201" / "nb201.csv.gz"
DEFAULT_CACHE = REPO / "runs" / "benchmarks" / "search_strategies.csv"
SAMPLERS = tuple(list_samplers())
OPTUNA = tuple(s for s in SAMPLERS if get_sampler(s).optuna)  # the rivals of ours
QUANTILES = (0.10, 0.25, 0.50, 0.75)
ACCURACY = "CIFAR10_test_acc"
MAX_ASKS_PER_BUDGET = 20  # a sampler that keeps repeating itself is stopped here


@dataclass(frozen=True)
class Problem:
    """One device column: every cell's accuracy (%) and latency (ms), and its true front."""

    device: str
    keys: list[str]
    accuracy: np.ndarray
    latency: np.ndarray

    @property
    def points(self) -> np.ndarray:
        return np.column_stack([self.accuracy, self.latency])

    @property
    def reference(self) -> tuple[float, float]:
        return float(self.accuracy.min()), float(self.latency.max())


def read_problems(path: Path) -> tuple[list[str], pd.DataFrame]:
    frame = pd.read_csv(path)
    devices = [c for c in frame.columns if c not in ("index", "arch_str") and "_acc" not in c]
    return devices, frame


def problem(frame: pd.DataFrame, device: str) -> Problem:
    return Problem(
        device,
        list(frame["arch_str"]),
        frame[ACCURACY].to_numpy(float),
        frame[device].to_numpy(float),
    )


def search(
    frame: pd.DataFrame, table_path: Path, device: str, sampler: str, seed: int, budget: int
) -> tuple[list[int], float]:
    """Row indices of the distinct candidates a sampler evaluates, in order, and its mean
    seconds per suggestion."""
    prob = problem(frame, device)
    space = NB201Space()
    row = {k: i for i, k in enumerate(prob.keys)}
    table = BenchmarkTable(
        table_path,
        device,
        dict(zip(prob.keys, prob.accuracy / 100.0, strict=True)),
        dict(zip(prob.keys, prob.latency, strict=True)),
    )
    config = parse_config(
        {
            "space": {"name": "nb201"},
            "benchmark": {"table": str(table_path), "latency": device},
            "search": {"sampler": sampler, "n_startup_trials": 10},
            "seed": seed,
        },
        source="benchmark",
    )
    ahead = foresight(config, space, REPO / "runs", TableLatency(space, table))
    dists = distributions(space.dimensions())
    sampler_ = make_sampler(config.search, seed, ahead, dists)
    study = optuna.create_study(directions=DIRECTIONS, sampler=sampler_)
    order: list[int] = []
    seen: set[int] = set()
    asking = 0.0
    for _ in range(budget * MAX_ASKS_PER_BUDGET):
        start = time.perf_counter()
        trial = study.ask(dists)
        asking += time.perf_counter() - start
        key = space.encode(space.from_params(trial.params))
        accuracy, latency = table.lookup(key)
        study.tell(trial, [accuracy, latency])
        if row[key] not in seen:
            seen.add(row[key])
            order.append(row[key])
            if len(order) == budget:
                break
    return order, asking / max(1, len(study.trials))


def scores(prob: Problem, found: list[int]) -> tuple[float, float, float]:
    """(hypervolume gap %, regret in accuracy points, share of the true front found)."""
    maximize = (True, False)
    true_front = non_dominated_mask(prob.points, maximize)
    full = hypervolume_2d(prob.points[true_front], maximize, prob.reference)
    pts = prob.points[found]
    gap = 100.0 * (1.0 - hypervolume_2d(pts, maximize, prob.reference) / full)
    regrets = []
    for q in QUANTILES:
        limit = float(np.quantile(prob.latency[true_front], q))
        best = prob.accuracy[prob.latency <= limit].max()
        under = pts[pts[:, 1] <= limit, 0]
        regrets.append(best - (under.max() if len(under) else prob.reference[0]))
    share = float(true_front[found].sum() / true_front.sum())
    return gap, float(np.mean(regrets)), share


_FRAME: pd.DataFrame | None = None


def _task(args: tuple[Path, str, str, int, int]) -> dict[str, object]:
    global _FRAME
    table_path, device, sampler, seed, budget = args
    if _FRAME is None:
        _FRAME = pd.read_csv(table_path)
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    order, per_ask = search(_FRAME, table_path, device, sampler, seed, budget)
    return {
        "device": device,
        "sampler": sampler,
        "seed": seed,
        "budget": budget,
        "seconds_per_suggestion": per_ask,
        "found": " ".join(map(str, order)),
    }


def read_cache(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(
            columns=["device", "sampler", "seed", "budget", "seconds_per_suggestion", "found"]
        )
    return pd.read_csv(path, dtype={"found": str})


def run_missing(
    table_path: Path,
    devices: list[str],
    samplers: list[str],
    seeds: int,
    budget: int,
    jobs: int,
    cache: Path,
) -> pd.DataFrame:
    done = read_cache(cache)
    enough = done[done["budget"].astype(int) >= budget]
    have = set(
        zip(enough["device"], enough["sampler"], enough["seed"].astype(int).tolist(), strict=True)
    )
    todo = [
        (table_path, d, s, seed, budget)
        for s in samplers
        for d in devices
        for seed in range(seeds)
        if (d, s, seed) not in have
    ]
    if todo:
        print(
            f"running {len(todo)} searches of {budget} evaluations on {jobs} processes",
            file=sys.stderr,
        )
        cache.parent.mkdir(parents=True, exist_ok=True)
        new_file = not cache.is_file()
        with (
            open(cache, "a", newline="") as out,
            multiprocessing.get_context("spawn").Pool(jobs) as pool,
        ):
            writer = csv.DictWriter(
                out,
                fieldnames=[
                    "device",
                    "sampler",
                    "seed",
                    "budget",
                    "seconds_per_suggestion",
                    "found",
                ],
            )
            if new_file:
                writer.writeheader()
            began = time.monotonic()
            for i, record in enumerate(pool.imap_unordered(_task, todo), start=1):
                writer.writerow(record)
                out.flush()
                left = (time.monotonic() - began) / i * (len(todo) - i)
                print(
                    f"  {i}/{len(todo)} {record['sampler']:<6} {record['device']:<15} "
                    f"seed {record['seed']}  ~{left / 60:.0f} min left",
                    file=sys.stderr,
                )
        done = read_cache(cache)
    keep = done[done["device"].isin(devices) & done["sampler"].isin(samplers)]
    keep = keep[keep["seed"].astype(int) < seeds]
    return keep.drop_duplicates(["device", "sampler", "seed"], keep="last")


def score_runs(frame: pd.DataFrame, runs: pd.DataFrame, budgets: list[int]) -> pd.DataFrame:
    rows = []
    problems = {d: problem(frame, d) for d in runs["device"].unique()}
    for r in runs.itertuples():
        found = [int(x) for x in str(r.found).split()]
        for budget in budgets:
            gap, regret, share = scores(problems[r.device], found[:budget])
            rows.append(
                {
                    "device": r.device,
                    "sampler": r.sampler,
                    "seed": r.seed,
                    "budget": budget,
                    "hv_gap": gap,
                    "regret": regret,
                    "front_share": share,
                    "seconds_per_suggestion": r.seconds_per_suggestion,
                }
            )
    return pd.DataFrame(rows)


def report(scored: pd.DataFrame, samplers: list[str], budgets: list[int]) -> None:
    print(
        "\nmean over devices and seeds (hypervolume gap %, regret in accuracy points, share of "
        "the true front found)"
    )
    print(
        f"{'sampler':<8}"
        + "".join(
            f"{'gap@' + str(b):>10}{'regret@' + str(b):>11}{'front@' + str(b):>10}" for b in budgets
        )
        + f"{'s/suggestion':>14}"
    )
    for s in samplers:
        part = scored[scored["sampler"] == s]
        cells = ""
        for b in budgets:
            at = part[part["budget"] == b]
            cells += (
                f"{at.hv_gap.mean():>10.2f}{at.regret.mean():>11.2f}{at.front_share.mean():>10.1%}"
            )
        print(f"{s:<8}{cells}{part.seconds_per_suggestion.mean():>14.3f}")
    focus = 100 if 100 in budgets else budgets[len(budgets) // 2]
    at = (
        scored[scored["budget"] == focus]
        .groupby(["device", "sampler"])[["hv_gap", "regret"]]
        .mean()
    )
    print(f"\nper device at {focus} evaluations: hypervolume gap % / regret (mean over seeds)")
    print(f"{'device':<16}" + "".join(f"{s:>15}" for s in samplers))
    wins_gap = wins_regret = 0
    devices = sorted({d for d, _ in at.index})
    for d in devices:
        cells = "".join(
            f"{at.loc[(d, s), 'hv_gap']:>8.2f} /{at.loc[(d, s), 'regret']:>5.2f}"
            if (d, s) in at.index
            else f"{'-':>15}"
            for s in samplers
        )
        print(f"{d:<16}{cells}")
        rivals = [s for s in OPTUNA if s in samplers and (d, s) in at.index]
        if "ehvi" in samplers and (d, "ehvi") in at.index and rivals:
            ours = at.loc[(d, "ehvi")]
            wins_gap += all(ours.hv_gap < at.loc[(d, s), "hv_gap"] for s in rivals)
            wins_regret += all(ours.regret <= at.loc[(d, s), "regret"] for s in rivals)
    if "ehvi" in samplers:
        print(
            f"\nehvi beats every Optuna sampler on hypervolume gap on {wins_gap} of {len(devices)} "
            f"devices, and is at least as good on regret on {wins_regret} (target: 18 of 21)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--devices", nargs="+", default=["all"])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--budgets", nargs="+", type=int, default=[50, 100, 200])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    if not args.table.is_file():
        parser.error(f"--table {args.table} does not exist")
    names, frame = read_problems(args.table)
    devices = names if args.devices == ["all"] else args.devices
    unknown = sorted(set(devices) - set(names))
    if unknown:
        parser.error(f"--devices: {', '.join(unknown)} not in the table; it has {', '.join(names)}")
    budgets = sorted(args.budgets)
    runs = run_missing(
        args.table.resolve(),
        devices,
        args.samplers,
        args.seeds,
        budgets[-1],
        args.jobs,
        args.cache,
    )
    report(score_runs(frame, runs, budgets), args.samplers, budgets)


if __name__ == "__main__":
    main()
