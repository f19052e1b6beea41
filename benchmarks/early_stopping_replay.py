"""Early stopping replayed on recorded learning curves: ours, Syne Tune's MOASHA, and none.

The curves are real: `benchmarks/learning_curves.yaml` is the quickstart's space, data and
recipe trained for 8 epochs, candidates drawn at random; every trial records its validation
accuracy after each epoch and its latency. ``--from-run`` turns such a run into the small CSV
the replay reads (``benchmarks/data/learning_curves.csv``: candidate, latency_ms, acc_1 ..
acc_E), so a stopping rule can be tried at many seeds in seconds instead of hours of training.

For each seed, the candidates are put in a random order and trained one after another, epoch
by epoch, as the search loop does; after each epoch the rule says whether the trial goes on.
A stopped trial keeps its last accuracy on the front. Rules replayed:

- none: every trial trains every epoch;
- ours: `ParetoSuccessiveHalving` (successive halving on Pareto rank of accuracy so far and
  latency, ties broken by accuracy), the rule ``search.early_stopping`` runs;
- moasha: Syne Tune's `MOASHA` scheduler (non-dominated sorting with the epsilon-net
  tie-break of Salinas et al., "A multi-objective perspective on jointly tuning hardware and
  hyperparameters", NAS workshop at ICLR 2021), driven as a library: each epoch's result goes
  to its `on_trial_result`, and its STOP ends the trial.
- moasha-ranked: the same scheduler with the priority the paper describes. In syne-tune 0.16,
  `NonDominatedPriority` returns the sorted order (item indices, best first) where the rung
  expects each item's priority, so a new result is judged by the index of whichever result
  sorts last: it is stopped only when it sorts last itself, or when the worst result at the
  rung happens to have arrived late (a result placing fourth of five is kept when the worst
  one arrived second). Here
  each result's priority is its position in the sort (fronts in turn, the epsilon-net order
  within a front), so a result is stopped when it falls outside the top 1/r, as the paper
  says.

Every rule uses rungs at g, g r, g r^2, ... epochs for the reduction factors r (default 2 and
3) and grace periods g (default 1) given.

The plain search is ``--plain-trials`` candidates trained fully, without stopping; its final
hypervolume is the target. Printed per rule, averaged over seeds: hypervolume reached after
25/50/75/100 % of the plain search's epochs (as % of its final), epochs needed to reach the
plain search's final hypervolume (median, and as a share of the plain search's epochs), how
many seeds reach it at all, and trials started per 100 epochs. Reference point: the lowest
accuracy and the highest latency among the curves (latency x 1.01).

    .venv/bin/nas search benchmarks/learning_curves.yaml      # hours: 64 x 8 epochs
    .venv/bin/python benchmarks/early_stopping_replay.py --from-run runs/learning-curves
    .venv/bin/python benchmarks/early_stopping_replay.py [--curves CSV] [--seeds 50]
        [--plain-trials 32] [--reduction-factors 2 3] [--grace-periods 1 2]
        [--plot runs/benchmarks/early_stopping.html]

Syne Tune: ``pip install --no-deps syne-tune==0.16.0`` (scripts/env.sh does it; its declared
dependencies serve parts of Syne Tune the replay does not use).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from nas.pareto import hypervolume_2d
from nas.search.early_stopping import Checkpoint, ParetoSuccessiveHalving

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CURVES = REPO / "benchmarks" / "data" / "learning_curves.csv"
MAXIMIZE = (True, False)
SHARES = (0.25, 0.50, 0.75, 1.00)


@dataclass(frozen=True)
class Curve:
    """A trial's validation accuracy after each epoch, and its latency."""

    candidate: str
    latency_ms: float
    accuracy: tuple[float, ...]


def read_curves(path: Path) -> list[Curve]:
    frame = pd.read_csv(path)
    epochs = sorted(
        (c for c in frame.columns if c.startswith("acc_")), key=lambda c: int(c.split("_")[1])
    )
    missing = {"candidate", "latency_ms"} - set(frame.columns)
    if missing or not epochs:
        raise SystemExit(
            f"{path}: needs columns candidate, latency_ms, acc_1 .. acc_E; lacks "
            f"{', '.join(sorted(missing)) or 'acc_ columns'}"
        )
    if frame[["latency_ms", *epochs]].isna().any().any():
        raise SystemExit(f"{path}: a curve has a missing value; every trial needs every epoch")
    accuracy = frame[epochs].to_numpy(float)
    return [
        Curve(str(c), float(lat), tuple(float(a) for a in row))
        for c, lat, row in zip(frame["candidate"], frame["latency_ms"], accuracy, strict=True)
    ]


def curves_from_run(run_dir: Path, out: Path) -> int:
    """Write the curves of a run's completed trials that trained every epoch; their count."""
    from nas.record import CANDIDATE, LATENCY
    from nas.run import Run
    from nas.storage import load_study

    study = load_study(Run.open(run_dir))
    rows = []
    for t in study.get_trials(deepcopy=False):
        curve = t.user_attrs.get("epoch_accuracy") or []
        if t.state.name != "COMPLETE" or LATENCY not in t.user_attrs or not curve:
            continue
        rows.append(
            {
                "candidate": t.user_attrs.get(CANDIDATE, t.number),
                "latency_ms": t.user_attrs[LATENCY],
                **{f"acc_{i}": a for i, a in enumerate(curve, start=1)},
            }
        )
    frame = pd.DataFrame(rows).dropna(axis="index")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False, float_format="%.6g")
    return len(frame)


class Rule(Protocol):
    name: str

    def start(self, trial: int) -> None: ...

    def stop(self, trial: int, epoch: int, accuracy: float, latency_ms: float) -> bool: ...


class NoStopping:
    name = "none"

    def start(self, trial: int) -> None:
        pass

    def stop(self, trial: int, epoch: int, accuracy: float, latency_ms: float) -> bool:
        return False


def settings(reduction_factor: int, grace: int) -> str:
    return f"r={reduction_factor}" + (f", g={grace}" if grace != 1 else "")


class Ours:
    """The search's own rule, asked exactly as the search loop asks it."""

    def __init__(self, reduction_factor: int, min_trials: int = 4, grace: int = 1) -> None:
        self.name = f"ours ({settings(reduction_factor, grace)})"
        self.rule = ParetoSuccessiveHalving(
            min_epochs=grace, reduction_factor=reduction_factor, min_trials=min_trials
        )
        self.history: list[Checkpoint] = []

    def start(self, trial: int) -> None:
        pass

    def stop(self, trial: int, epoch: int, accuracy: float, latency_ms: float) -> bool:
        here = Checkpoint(trial, epoch, accuracy, latency_ms)
        verdict = self.rule.should_stop(here, self.history)
        self.history.append(here)
        return verdict is not None


def ranked_priority() -> Any:
    """Syne Tune's non-dominated priority, returned as each item's position in the sort."""
    from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import MOPriority
    from syne_tune.optimizer.schedulers.multiobjective.non_dominated_priority import (
        compute_epsilon_net,
        pareto_efficient,
    )

    class RankedNonDominatedPriority(MOPriority):
        def priority_unsafe(self, objectives: np.ndarray) -> np.ndarray:
            remaining = np.arange(len(objectives))
            order: list[int] = []
            while remaining.size:
                on_front = pareto_efficient(objectives[remaining])
                front = remaining[on_front]
                # compute_epsilon_net gives each front member its rank (seeded at the lowest
                # value of the first objective); argsort turns ranks into an order
                order.extend(front[np.argsort(compute_epsilon_net(objectives[front], dim=0))])
                remaining = remaining[~on_front]
            position = np.empty(len(objectives), dtype=int)
            position[order] = np.arange(len(order))
            return position

    return RankedNonDominatedPriority()


class Moasha:
    """Syne Tune's MOASHA, fed the same results one epoch at a time; `ranked`: with each
    result ranked by its own position in the non-dominated sort (`ranked_priority`)."""

    def __init__(
        self, reduction_factor: int, epochs: int, seed: int, ranked: bool = False, grace: int = 1
    ) -> None:
        try:
            from syne_tune.backend.trial_status import Trial
            from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA
        except ImportError as exc:
            raise SystemExit(
                f"Syne Tune is not installed ({exc}); pip install --no-deps syne-tune==0.16.0"
            ) from exc
        self.name = f"moasha{'-ranked' if ranked else ''} ({settings(reduction_factor, grace)})"
        self._trial = Trial
        self.scheduler = MOASHA(
            config_space={},
            metrics=["error", "latency_ms"],
            do_minimize=True,
            time_attr="epoch",
            max_t=epochs,
            grace_period=grace,
            reduction_factor=reduction_factor,
            random_seed=seed,
            multiobjective_priority=ranked_priority() if ranked else None,
        )
        self.trials: dict[int, Any] = {}

    def start(self, trial: int) -> None:
        self.trials[trial] = self._trial(trial_id=trial, config={}, creation_time=datetime.now())
        self.scheduler.on_trial_add(self.trials[trial])

    def stop(self, trial: int, epoch: int, accuracy: float, latency_ms: float) -> bool:
        result = {"epoch": epoch, "error": 1.0 - accuracy, "latency_ms": latency_ms}
        decision = self.scheduler.on_trial_result(self.trials[trial], result)
        done = epoch == self.scheduler.max_t
        if done:
            self.scheduler.on_trial_complete(self.trials[trial], result)
        return decision == "STOP" and not done


@dataclass(frozen=True)
class Replay:
    """Hypervolume after each epoch spent (index i: after i + 1 epochs), and trials started."""

    hypervolume: np.ndarray
    trials: int


def replay(
    curves: Sequence[Curve], order: Sequence[int], rule: Rule, reference: tuple[float, float]
) -> Replay:
    front: dict[int, tuple[float, float]] = {}
    trace: list[float] = []
    for trial, index in enumerate(order):
        curve = curves[index]
        rule.start(trial)
        for epoch, accuracy in enumerate(curve.accuracy, start=1):
            front[trial] = (accuracy, curve.latency_ms)
            trace.append(hypervolume_2d(np.array(list(front.values())), MAXIMIZE, reference))
            if rule.stop(trial, epoch, accuracy, curve.latency_ms):
                break
    return Replay(np.asarray(trace), len(order))


def reference_point(curves: Sequence[Curve]) -> tuple[float, float]:
    lowest = min(min(c.accuracy) for c in curves)
    return lowest, 1.01 * max(c.latency_ms for c in curves)


def epochs_to_reach(trace: np.ndarray, target: float) -> float:
    hit = np.flatnonzero(trace >= target * (1 - 1e-12))
    return float(hit[0] + 1) if len(hit) else math.inf


def run(
    curves: Sequence[Curve],
    seeds: int,
    plain_trials: int,
    factors: Sequence[int],
    graces: Sequence[int] = (1,),
) -> tuple[pd.DataFrame, dict[str, np.ndarray], int]:
    """One row per (rule, seed), mean hypervolume traces per rule, and the plain search's
    epochs."""
    epochs = len(curves[0].accuracy)
    reference = reference_point(curves)
    plain_epochs = plain_trials * epochs
    rows: list[dict[str, Any]] = []
    traces: dict[str, list[np.ndarray]] = {}
    for seed in range(seeds):
        order = list(np.random.default_rng(seed).permutation(len(curves)))
        plain = replay(curves, order[:plain_trials], NoStopping(), reference)
        target = float(plain.hypervolume[-1])
        rules: list[Rule] = [NoStopping()]
        pairs = [(r, g) for g in graces for r in factors]
        rules += [Ours(r, grace=g) for r, g in pairs]
        rules += [Moasha(r, epochs, seed, grace=g) for r, g in pairs]
        rules += [Moasha(r, epochs, seed, ranked=True, grace=g) for r, g in pairs]
        for rule in rules:
            out = replay(curves, order, rule, reference)
            spent = len(out.hypervolume)
            trace = np.concatenate(
                [out.hypervolume, np.full(len(curves) * epochs - spent, out.hypervolume[-1])]
            )
            traces.setdefault(rule.name, []).append(trace / target)
            row = {
                "rule": rule.name,
                "seed": seed,
                "epochs_to_target": epochs_to_reach(out.hypervolume, target),
                "trials_per_100_epochs": 100.0 * out.trials / spent,
            }
            for share in SHARES:
                at = min(round(share * plain_epochs), len(trace)) - 1
                row[f"hv@{share:.0%}"] = 100.0 * trace[at] / target
            rows.append(row)
    return pd.DataFrame(rows), {k: np.mean(v, axis=0) for k, v in traces.items()}, plain_epochs


def report(frame: pd.DataFrame, plain_epochs: int, seeds: int, n_curves: int) -> None:
    print(
        f"\n{n_curves} recorded curves, {seeds} seeds; the plain search trains "
        f"{plain_epochs} epochs without stopping; hypervolume in % of its final"
    )
    header = "".join(f"{'hv@' + format(s, '.0%'):>9}" for s in SHARES)
    print(f"{'rule':<26}{header}{'epochs to target':>18}{'x plain':>9}{'reached':>9}"
          f"{'trials/100 ep':>15}")  # fmt: skip
    for rule, part in frame.groupby("rule", sort=False):
        reached = np.isfinite(part["epochs_to_target"])
        median = float(np.median(part["epochs_to_target"]))
        cells = "".join(f"{part[f'hv@{s:.0%}'].mean():>9.1f}" for s in SHARES)
        ratio = f"{median / plain_epochs:>9.2f}" if math.isfinite(median) else f"{'-':>9}"
        print(
            f"{rule:<26}{cells}{median:>18.0f}{ratio}{int(reached.sum()):>5}/{len(part):<3}"
            f"{part['trials_per_100_epochs'].mean():>15.1f}"
        )


def plot(traces: dict[str, np.ndarray], plain_epochs: int, path: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, trace in traces.items():
        fig.add_trace(go.Scatter(x=np.arange(1, len(trace) + 1), y=100 * trace, name=name))
    fig.add_vline(x=plain_epochs, line_dash="dot", annotation_text="plain search's epochs")
    fig.add_hline(y=100, line_dash="dot")
    fig.update_layout(
        xaxis_title="epochs spent",
        yaxis_title="hypervolume, % of the plain search's final (mean over seeds)",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", type=Path, default=DEFAULT_CURVES)
    parser.add_argument("--from-run", type=Path, help="write --curves from this run first")
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--plain-trials", type=int, default=32)
    parser.add_argument("--reduction-factors", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--grace-periods", type=int, nargs="+", default=[1])
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    if args.from_run is not None:
        n = curves_from_run(args.from_run, args.curves)
        print(f"wrote {n} curves to {args.curves}", file=sys.stderr)
    if not args.curves.is_file():
        parser.error(f"--curves {args.curves} does not exist (record them with --from-run)")
    curves = read_curves(args.curves)
    if not 2 <= args.plain_trials <= len(curves):
        parser.error(f"--plain-trials must be in 2..{len(curves)} (the curves recorded)")
    if any(r < 2 for r in args.reduction_factors):
        parser.error("--reduction-factors must be >= 2")
    epochs = len(curves[0].accuracy)
    if any(not 1 <= g < epochs for g in args.grace_periods):
        parser.error(f"--grace-periods must be in 1..{epochs - 1} (the curves' epochs less one)")
    frame, traces, plain_epochs = run(
        curves, args.seeds, args.plain_trials, args.reduction_factors, args.grace_periods
    )
    report(frame, plain_epochs, args.seeds, len(curves))
    if args.plot is not None:
        plot(traces, plain_epochs, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
