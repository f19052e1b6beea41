"""A supernet search against the quickstart's proxy search, at the same wall-clock budget.

Runs the proxy search (``configs/quickstart.yaml``: every candidate proxy-trained), then the
supernet search (``configs/supernet.yaml``) with a timeout equal to the proxy search's trial
time, so both spend the same wall clock on candidates; the supernet's one-off training is
printed apart (`benchmarks/proxy_ranking.py --supernet` compares it with proxy training). Both
counts are printed as trials and as distinct candidates: a candidate the sampler proposes again
reuses the earlier trial's results and evaluates nothing. Then every member of both fronts
is trained stand-alone with the longer reference recipe (15,000 images, 5 epochs by default),
scored on Fashion-MNIST's 10,000 test images, and timed with the same measured backend; the
script prints both fronts on those numbers, their hypervolumes (one reference point: the worst
accuracy and latency of either front) and how many of the proxy front's members a supernet
front member dominates or matches; for each one that none does, how far the best supernet member
at no more latency falls short.

Both searches resume, the reference runs are cached (shared with `proxy_ranking.py`), and a
finished supernet from elsewhere can be reused:

    .venv/bin/python benchmarks/supernet_search.py \\
        [--supernet-path runs/supernet-HASH.pt] [--runs-dir runs/supernet_search] \\
        [--reference-jobs 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import yaml
from proxy_ranking import positive, score, with_settings

from nas import api
from nas.config import RunConfig, load_config
from nas.evaluate.latency import latency_source
from nas.pareto import hypervolume_2d, non_dominated_mask
from nas.progress import RichReporter
from nas.record import trial_key
from nas.run import Run
from nas.storage import is_finished, load_study
from search_spaces import get_space

REPO = Path(__file__).resolve().parent.parent
NO_LIMIT = 1_000_000  # trials: the supernet search runs until its timeout


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy-config", type=Path, default=REPO / "configs/quickstart.yaml")
    parser.add_argument("--supernet-config", type=Path, default=REPO / "configs/supernet.yaml")
    parser.add_argument("--supernet-path", type=Path, help="a finished supernet to reuse")
    parser.add_argument("--reference-train-size", type=int, default=15000)
    parser.add_argument("--reference-epochs", type=int, default=5)
    parser.add_argument(
        "--reference-jobs",
        type=positive,
        default=1,
        metavar="N",
        help="train N front members at a time, one thread each",
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/supernet_search"))
    parser.add_argument("--cache", type=Path, default=Path("runs/proxy_ranking.json"))
    return parser.parse_args()


def trial_seconds(run_dir: Path) -> tuple[float, int, int]:
    """(wall clock from the first trial's start to the last one's end, finished trials,
    distinct evaluations among them: a sampler that proposes a candidate again gets the
    earlier trial's results, and that repeat evaluates nothing)."""
    trials = [t for t in load_study(Run(run_dir)).get_trials(deepcopy=False) if is_finished(t)]
    start = min(t.datetime_start for t in trials if t.datetime_start is not None)
    end = max(t.datetime_complete for t in trials if t.datetime_complete is not None)
    distinct = len({trial_key(t.user_attrs) for t in trials})
    return (end - start).total_seconds(), len(trials), distinct


def run_searches(args: argparse.Namespace) -> tuple[Path, Path, float]:
    """Run (or find finished) both searches; their run folders and the shared budget."""
    runs = args.runs_dir
    api.search(api.SearchOptions(config=args.proxy_config, runs_dir=runs), RichReporter())
    proxy_run = runs / load_config(args.proxy_config).name
    budget, _, _ = trial_seconds(proxy_run)
    raw = yaml.safe_load(args.supernet_config.read_text())
    if args.supernet_path is not None:
        raw.setdefault("supernet", {})["path"] = str(args.supernet_path.resolve())
    config = runs / "supernet-search.yaml"
    config.write_text(yaml.safe_dump(raw))
    supernet_run = runs / raw["name"]
    marker = supernet_run / "budget.json"
    if not marker.is_file():  # a finished budget is not spent again on a rerun
        options = api.SearchOptions(config=config, runs_dir=runs, n_trials=NO_LIMIT, timeout=budget)
        api.search(options, RichReporter())
        marker.write_text(json.dumps({"timeout_s": budget}))
    return proxy_run, supernet_run, budget


def stand_alone(
    args: argparse.Namespace, base: RunConfig, fronts: dict[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    """Each front member trained with the reference recipe (test accuracy) and measured."""
    reference = with_settings(
        base,
        [
            f"data.train_size={args.reference_train_size}",
            f"training.epochs={args.reference_epochs}",
        ],
    )
    space = get_space(base.space.name, base.space)
    measured = latency_source(base, space, args.runs_dir)
    cache = json.loads(args.cache.read_text()) if args.cache.is_file() else {}
    out = {}
    for label, front in fronts.items():
        candidates = [space.decode(text) for text in front["candidate"]]
        scores = score(
            reference, candidates, cache, args.cache, f"{label} front", args.reference_jobs
        )
        frame = front[["number", "accuracy"]].copy()
        frame["test_accuracy"] = [s["test"] for s in scores]
        frame["latency_ms"] = [measured(c)[0].p50_ms for c in candidates]
        frame["candidate"] = front["candidate"]
        out[label] = frame
    return out


def compare(scored: dict[str, pd.DataFrame]) -> None:
    both = pd.concat(scored.values())
    reference = (float(both["test_accuracy"].min()), float(both["latency_ms"].max()))
    maximize = (True, False)
    for label, frame in scored.items():
        print(f"\n{label} front, trained stand-alone:")
        print(frame.sort_values("latency_ms").to_string(index=False, float_format="%.4f"))
        points = frame[["test_accuracy", "latency_ms"]].to_numpy()
        stand_alone_front = int(non_dominated_mask(points, maximize).sum())
        print(
            f"hypervolume {hypervolume_2d(points, maximize, reference):.5f} (reference point: "
            f"accuracy {reference[0]:.4f}, latency {reference[1]:.3f} ms); {stand_alone_front} "
            f"of {len(frame)} non-dominated on the stand-alone numbers"
        )
    proxy, supernet = (scored[k][["test_accuracy", "latency_ms"]].to_numpy() for k in scored)
    covered = sum(any(s[0] >= p[0] and s[1] <= p[1] for s in supernet) for p in proxy)
    print(
        f"\n{covered} of {len(proxy)} proxy-front members are dominated or matched by a "
        "supernet-front member"
    )
    for p in proxy:
        faster = [s for s in supernet if s[1] <= p[1]]
        if faster and not any(s[0] >= p[0] for s in faster):
            best = max(faster, key=lambda s: s[0])
            print(
                f"  not covered: {p[0]:.4f} at {p[1]:.3f} ms; the best supernet member at no more "
                f"latency reaches {best[0]:.4f} at {best[1]:.3f} ms "
                f"({100 * (p[0] - best[0]):.2f} points lower)"
            )
        elif not faster:
            print(f"  not covered: {p[0]:.4f} at {p[1]:.3f} ms; no supernet member is as fast")


def main() -> None:
    args = parse_args()
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    proxy_run, supernet_run, budget = run_searches(args)
    _, proxy_n, proxy_distinct = trial_seconds(proxy_run)
    supernet_s, supernet_n, supernet_distinct = trial_seconds(supernet_run)
    own = supernet_run / "supernet" / "supernet.json"
    training = (
        f"{json.loads(own.read_text())['train_seconds']:.0f} s"
        if own.is_file()
        else "trained elsewhere"
    )
    print(
        f"budget {budget:.0f} s of trials: proxy search {proxy_n} trials ({proxy_distinct} "
        f"distinct candidates), supernet search {supernet_n} trials in {supernet_s:.0f} s "
        f"({supernet_distinct} distinct): {supernet_n / proxy_n:.1f}x the trials, "
        f"{supernet_distinct / proxy_distinct:.1f}x the distinct candidates; the supernet's "
        f"one-off training: {training}"
    )
    fronts = {
        "proxy": pd.read_csv(proxy_run / "pareto.csv"),
        "supernet": pd.read_csv(supernet_run / "pareto.csv"),
    }
    base = load_config(args.proxy_config)
    compare(stand_alone(args, base, fronts))


if __name__ == "__main__":
    main()
