"""Does the tabular win carry over? ``ehvi`` against NSGA-II on the real EfficientNet search.

Runs one config (the quickstart's, by default) once per sampler and seed, with the same number
of trained candidates, the same seeds, and latency from the device's lookup-table predictor, so
``ehvi`` knows the latency of every candidate in its pool before training it (NSGA-II sees the
same latencies, after each trial). Prints, per seed and averaged: the hypervolume of each
front at a quarter, half and all of the trials (reference point: the lowest accuracy and 1.1x
the slowest latency any run saw), the ratio ehvi / NSGA-II, and the best accuracy each found
under the latency budgets at 25/50/75 % of the latency range all runs span. The runs are
ordinary runs under ``--runs-dir`` (resumed when the command is run again), so every front can
be opened with ``nas report`` or exported.

    .venv/bin/python benchmarks/efficientnet_samplers.py [configs/quickstart.yaml] \\
        [--trials 40] [--seeds 2] [--epochs 2] [--train-size 5000] \\
        [--runs-dir runs/benchmarks/efficientnet_samplers]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from nas import api
from nas.pareto import hypervolume_2d
from nas.report.choice import best_under
from nas.report.tables import trials_frame
from nas.run import Run
from nas.storage import load_study

REPO = Path(__file__).resolve().parents[1]
SAMPLERS = ("nsga2", "ehvi")
FRACTIONS = (0.25, 0.5, 1.0)
BUDGETS = (0.25, 0.5, 0.75)


def configure(raw: dict[str, Any], sampler: str, seed: int, args: argparse.Namespace) -> dict:
    """The config of one run: the given one with this sampler and seed, latency predicted by
    the device's lookup table (known for untried candidates too)."""
    config = yaml.safe_load(yaml.safe_dump(raw))
    config["name"] = f"{config.get('name', 'search')}-{sampler}-s{seed}"
    config["seed"] = seed
    latency = config.setdefault("latency", {})
    latency.update({"mode": "predicted", "predictor": "lut"})
    search = config.setdefault("search", {})
    search["sampler"] = sampler
    search["n_trials"] = args.trials
    if args.epochs is not None:
        config.setdefault("training", {})["epochs"] = args.epochs
    if args.train_size is not None:
        config.setdefault("data", {})["train_size"] = args.train_size
    return config


def trials(run_dir: Path, count: int) -> pd.DataFrame:
    """The run's first `count` trials, as `nas report` tables them."""
    return trials_frame(load_study(Run.open(run_dir))).head(count)


def points(frame: pd.DataFrame) -> np.ndarray:
    """(accuracy, latency ms) of the completed trials, in trial order."""
    done = frame[frame["state"] == "COMPLETE"]
    return done[["accuracy", "latency_p50_ms"]].to_numpy(float)


def best_accuracy_under(frame: pd.DataFrame, limit: float) -> float:
    best = best_under(frame, limit)  # what `nas report` picks for the budget
    return float("nan") if best is None else float(best["accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, nargs="?", default=REPO / "configs/quickstart.yaml")
    parser.add_argument("--trials", type=int, default=40, help="trained candidates per run")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    parser.add_argument("--train-size", type=int, default=None, help="override data.train_size")
    parser.add_argument(
        "--runs-dir", type=Path, default=REPO / "runs" / "benchmarks" / "efficientnet_samplers"
    )
    args = parser.parse_args()
    if args.trials < 4 or args.seeds < 1:
        parser.error("--trials must be >= 4 and --seeds >= 1")

    raw = yaml.safe_load(args.config.read_text())
    results: dict[tuple[str, int], pd.DataFrame] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for sampler in SAMPLERS:
                config = configure(raw, sampler, seed, args)
                path = Path(tmp) / f"{config['name']}.yaml"
                path.write_text(yaml.safe_dump(config))
                print(f"{config['name']}: {args.trials} trials", flush=True)
                api.search(
                    api.SearchOptions(config=path, n_trials=args.trials, runs_dir=args.runs_dir)
                )
                results[sampler, seed] = trials(args.runs_dir / config["name"], args.trials)

    everything = np.vstack([points(frame) for frame in results.values()])
    reference = (float(everything[:, 0].min()), 1.1 * float(everything[:, 1].max()))
    low, high = float(everything[:, 1].min()), float(everything[:, 1].max())
    limits = [low + q * (high - low) for q in BUDGETS]
    print(
        f"\n{args.trials} trained candidates per run; hypervolume reference: accuracy "
        f"{reference[0]:.3f}, latency {reference[1]:.2f} ms; budgets "
        + ", ".join(f"{v:.2f} ms" for v in limits)
    )
    head = "".join(f"{f'HV@{int(f * 100)}%':>10}" for f in FRACTIONS)
    head += "".join(f"{f'best<{v:.1f}ms':>13}" for v in limits)
    print(f"{'seed':<6}{'sampler':<8}{head}")
    hv: dict[tuple[str, int], list[float]] = {}
    for seed in range(args.seeds):
        for sampler in SAMPLERS:
            frame = results[sampler, seed]
            hv[sampler, seed] = [
                hypervolume_2d(
                    points(frame.head(max(1, round(f * len(frame))))), (True, False), reference
                )
                for f in FRACTIONS
            ]
            row = "".join(f"{v:>10.4f}" for v in hv[sampler, seed])
            row += "".join(f"{best_accuracy_under(frame, v):>13.3f}" for v in limits)
            print(f"{seed:<6}{sampler:<8}{row}")
    mean = {s: np.mean([hv[s, k] for k in range(args.seeds)], axis=0) for s in SAMPLERS}
    for sampler in SAMPLERS:
        print(f"{'mean':<6}{sampler:<8}" + "".join(f"{v:>10.4f}" for v in mean[sampler]))
    ratio = mean["ehvi"] / mean["nsga2"]
    wins = sum(hv["ehvi", k][-1] > hv["nsga2", k][-1] for k in range(args.seeds))
    print(
        "ratio ehvi / nsga2: "
        + ", ".join(f"{r:.3f} at {int(f * 100)}%" for r, f in zip(ratio, FRACTIONS, strict=True))
        + f"; ehvi's final front is larger on {wins}/{args.seeds} seeds"
    )


if __name__ == "__main__":
    main()
