"""The same search with and without multi-objective early stopping, at the same wall-clock budget.

Runs a config twice with ``--timeout BUDGET`` and an unreachable trial count: once as written
with early stopping off, once with it on. Prints, for each: candidates evaluated, how many were
stopped early, the seconds spent in proxy training, and the hypervolume of the accuracy/latency
front (reference point: accuracy 0, 1.1x the slowest latency either run saw); then the
hypervolume ratio, and how much proxy-training time the early-stopping run needed to reach the
plain run's final hypervolume. Target: at least the plain hypervolume with at most half the
proxy-training time.

    .venv/bin/python benchmarks/early_stopping.py configs/quickstart.yaml --budget 300 \\
        [--epochs 4] [--min-trials 4] [--reduction-factor 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nas import api
from nas.pareto import hypervolume_2d
from nas.run import Run
from nas.storage import load_study


def run_search(
    config: dict[str, Any], name: str, budget: float, runs: Path, tmp: Path
) -> list[dict]:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**config, "name": name}))
    api.search(api.SearchOptions(config=path, n_trials=100_000, timeout=budget, runs_dir=runs))
    study = load_study(Run.open(runs / name))
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        if t.state.name not in ("COMPLETE", "PRUNED") or "latency_p50_ms" not in a:
            continue
        rows.append(
            {
                "state": t.state.name,
                "accuracy": a["accuracy"],
                "latency": a["latency_p50_ms"],
                "train_s": a.get("train_seconds", 0.0),
                "end": t.datetime_complete,
            }
        )
    return sorted(rows, key=lambda r: r["end"])


def trajectory(rows: list[dict], reference: tuple[float, float]) -> list[tuple[float, float]]:
    """(cumulative proxy-training seconds, hypervolume of completed trials) after each trial."""
    out, spent, done = [], 0.0, []
    for r in rows:
        spent += r["train_s"]
        if r["state"] == "COMPLETE":
            done.append((r["accuracy"], r["latency"]))
        hv = hypervolume_2d(np.array(done), (True, False), reference) if done else 0.0
        out.append((spent, hv))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--budget", type=float, default=300, help="seconds per search")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--min-trials", type=int, default=4)
    parser.add_argument("--reduction-factor", type=int, default=2)
    args = parser.parse_args()

    raw = yaml.safe_load(args.config.read_text())
    raw.setdefault("training", {})["epochs"] = args.epochs
    raw.setdefault("search", {}).pop("n_trials", None)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        for label, enabled in (("plain", False), ("early_stopping", True)):
            raw["search"]["early_stopping"] = {
                "enabled": enabled,
                "min_trials": args.min_trials,
                "reduction_factor": args.reduction_factor,
            }
            print(f"running {label} for {args.budget:.0f} s ...", flush=True)
            results[label] = run_search(raw, label, args.budget, runs, Path(tmp))
    slowest = max(r["latency"] for rows in results.values() for r in rows)
    reference = (0.0, 1.1 * slowest)
    curves = {k: trajectory(v, reference) for k, v in results.items()}
    print(
        f"\n{args.epochs} epochs per candidate, {args.budget:.0f} s per search, "
        f"halving: min_trials {args.min_trials}, reduction factor {args.reduction_factor}"
    )
    print(f"{'search':<16}{'evaluated':>10}{'stopped':>9}{'train s':>10}{'hypervolume':>13}")
    for label, rows in results.items():
        spent, hv = curves[label][-1] if curves[label] else (0.0, 0.0)
        stopped = sum(r["state"] == "PRUNED" for r in rows)
        print(f"{label:<16}{len(rows):>10}{stopped:>9}{spent:>10.0f}{hv:>13.4f}")
    plain_spent, plain_hv = curves["plain"][-1]
    es_hv = curves["early_stopping"][-1][1]
    reached = next((s for s, hv in curves["early_stopping"] if hv >= plain_hv), None)
    print(f"hypervolume ratio (early stopping / plain): {es_hv / plain_hv:.3f}")
    if reached is None:
        print("early stopping did not reach the plain search's hypervolume within the budget")
    else:
        print(
            f"early stopping reached the plain hypervolume after {reached:.0f} s of proxy "
            f"training, {reached / plain_spent:.2f}x the plain search's {plain_spent:.0f} s "
            "(target: at most 0.5x)"
        )


if __name__ == "__main__":
    main()
