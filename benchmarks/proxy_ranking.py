"""How well does a proxy-training recipe rank candidates, compared with longer training?

Samples N candidates from a run config's space and trains each twice: with the config's proxy
recipe, scored on its validation images exactly as the search scores it, and with a longer
reference recipe (more images, more epochs), scored on Fashion-MNIST's 10,000 test images, which
no search touches. Prints the accuracies and Kendall's tau and Spearman's rho between proxy and
reference, plus the proxy's own test-set accuracy, which separates validation-sampling noise from
what the short training itself gets wrong. Results are cached in a JSON file keyed by candidate
and recipe, so trying another proxy recipe reuses the reference runs.

With ``--supernet``, the config's weight-sharing supernet is trained once on the proxy images
(``supernet`` section; checkpointed, so a second run reuses it) and each candidate is also
scored with inherited weights, as ``evaluation: supernet`` scores it: its ranking is printed
beside the proxy's. Then ``--throughput N`` more random candidates are scored the way such a
search does, latency from the device's lookup table, and the CPU time per candidate gives
candidates per CPU-hour; the supernet's training time is printed beside what proxy-training 40
candidates costs. ``--supernet-repeat`` trains the supernet a second time at the next seed
(another draw of training images, initialisation, order and sub-networks) and prints how well
the two supernets agree with each other on the test set: a scorer cannot rank better than it
repeats. ``--reference-repeat`` does the same for the reference: it trains every candidate
again at the next seed and prints how the two reference runs agree, how large the seed-to-seed
differences are beside the candidates' spread, and each scorer against the mean of both runs.
No scorer can be expected to agree with one reference run much better than a second run of
that reference does.

    .venv/bin/python benchmarks/proxy_ranking.py configs/quickstart.yaml --candidates 10 \\
        [--reference-train-size 15000 --reference-epochs 5] [--set training.epochs=3 ...]
    .venv/bin/python benchmarks/proxy_ranking.py configs/supernet.yaml --candidates 16 \\
        --supernet --supernet-repeat --reference-repeat --throughput 50 --reference-jobs 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from scipy.stats import kendalltau, spearmanr

from hwnas_base.io import write_atomic
from nas.config import RunConfig, load_config, parse_config
from nas.evaluate.latency import latency_source
from nas.evaluate.supernet import SupernetEvaluator, make_supernet
from nas.progress import progress_bar
from nas.train.data import (
    ImageDataset,
    ProxySplits,
    load_dataset,
    load_fashion_mnist,
    make_splits,
    normalize,
    resize_images,
)
from nas.train.proxy import evaluate_accuracy, train_proxy
from nas.train.supernet import SplitsBySize, inherit, inherited_accuracy, train_supernet
from search_spaces import get_space
from search_spaces.flops import count_params


def with_settings(config: RunConfig, settings: list[str]) -> RunConfig:
    raw = config.model_dump(mode="json")
    for item in settings:
        path, _, value = item.partition("=")
        node = raw
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = yaml.safe_load(value)
    return parse_config(raw, source="--set")


def recipe_key(config: RunConfig) -> str:
    return json.dumps(
        {
            "data": config.data.model_dump(mode="json"),
            "training": config.training.model_dump(mode="json"),
            "seed": config.seed,
        },
        sort_keys=True,
    )


_DATA: dict[str, tuple[ProxySplits, ImageDataset, torch.Tensor]] = {}


def data_for(config: RunConfig) -> tuple[ProxySplits, ImageDataset, torch.Tensor]:
    """The recipe's splits, the test set and its normalised images; loaded once per process."""
    key = recipe_key(config)
    if key not in _DATA:
        splits = make_splits(load_dataset(config.data), config.data, config.seed)
        test = load_fashion_mnist(config.data.path, split="test")
        _DATA[key] = (splits, test, normalize(test.images.float() / 255.0, splits.mean, splits.std))
    return _DATA[key]


def test_images_at(test_x: torch.Tensor, size: int) -> torch.Tensor:
    """The normalised test images at a candidate's input size."""
    return test_x if size == test_x.shape[-1] else resize_images(test_x, size)


def train_and_test(config: RunConfig, cand: Any, threads: int | None = None) -> dict[str, float]:
    """Train `cand` with `config`'s recipe; its validation and test-set accuracy and seconds."""
    if threads is not None:
        torch.set_num_threads(threads)
    space = get_space(config.space.name, config.space)
    splits, test, test_x = data_for(config)
    size = space.proxy_input_size(cand, splits.image_size)
    torch.manual_seed(config.seed)
    model = space.build(cand, splits.num_classes, splits.channels, input_size=size)
    start = time.perf_counter()
    result = train_proxy(model, splits.resized(size), config.training, seed=config.seed)
    return {
        "val": result.accuracy,
        "test": evaluate_accuracy(model, test_images_at(test_x, size), test.labels),
        "seconds": time.perf_counter() - start,
    }


def score(
    config: RunConfig,
    candidates: list[Any],
    cache: dict[str, Any],
    cache_path: Path,
    label: str,
    jobs: int = 1,
) -> list[dict[str, float]]:
    """Train each candidate not in the cache with `config`'s recipe, `jobs` at a time (each at
    one thread when more than one); validation and test-set accuracy, cached as they finish."""
    space = get_space(config.space.name, config.space)
    key = recipe_key(config)
    entries = [f"{space.encode(cand)}|{key}" for cand in candidates]
    todo = [i for i, entry in enumerate(entries) if entry not in cache]

    def done(i: int, result: dict[str, float]) -> None:
        cache[entries[i]] = result
        if cache_path.is_file():  # what another run of this script cached meanwhile
            cache.update(
                {k: v for k, v in json.loads(cache_path.read_text()).items() if k not in cache}
            )
        write_atomic(cache_path, json.dumps(cache, indent=1).encode())
        print(
            f"  {label} {i + 1}/{len(candidates)}: val {result['val']:.4f}, test "
            f"{result['test']:.4f} in {result['seconds']:.0f} s",
            flush=True,
        )

    if jobs == 1:
        for i in todo:
            done(i, train_and_test(config, candidates[i]))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = {pool.submit(train_and_test, config, candidates[i], 1): i for i in todo}
            for future in as_completed(futures):
                done(futures[future], future.result())
    return [cache[entry] for entry in entries]


def supernet_scores(
    config: RunConfig,
    candidates: list[Any],
    folder: Path,
    label: str = "supernet",
) -> tuple[list[dict[str, float]], list[float], Callable[[Any], float]]:
    """Train the config's supernet once (checkpointed in `folder`); each candidate's validation
    and test-set accuracy with inherited weights, the training seconds per epoch, and a
    function that scores one more candidate as a supernet search does (its CPU seconds)."""
    splits, test, test_x = data_for(config)
    supernet = make_supernet(config, splits)
    space = supernet.space
    # What the weights depend on: the scoring's BatchNorm re-estimation does not change them.
    trained = config.supernet.model_dump_json(exclude={"bn_recalibration_batches"})
    recipe = recipe_key(config) + trained + config.space.model_dump_json()
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    with progress_bar(Console(stderr=True)) as bar:
        task = bar.add_task("supernet", total=1)

        def show(text: str, done: int, total: int) -> None:
            bar.update(task, description=text, completed=done, total=total)

        history = train_supernet(
            supernet,
            splits,
            config.training,
            config.supernet,
            seed=config.seed,
            checkpoint=folder / f"supernet-{key}.pt",
            progress=show,
        )
    sizes = SplitsBySize(splits, space)
    scoring = config.supernet.scoring(config.training)
    test_at: dict[int, torch.Tensor] = {}
    out = []
    for cand in candidates:
        split = sizes.at(sizes.size(cand))
        module = inherit(supernet, cand, split, scoring)
        size = split.image_size
        if size not in test_at:
            test_at[size] = test_images_at(test_x, size)
        x = test_at[size]
        out.append(
            {
                "val": inherited_accuracy(module, split.val_x, split.val_y),
                "test": inherited_accuracy(module, x, test.labels),
            }
        )
        print(
            f"  {label} {len(out)}/{len(candidates)}: val {out[-1]['val']:.4f}, test "
            f"{out[-1]['test']:.4f}",
            flush=True,
        )
    predicted = parse_config(
        {**config.model_dump(mode="json"), "latency": {"mode": "predicted"}},
        source="throughput",
    )
    evaluator = SupernetEvaluator(
        supernet=supernet,
        space=space,
        data=splits,
        training=config.training,
        scoring=scoring,
        deployment=config.deployment.target(),
        latency=latency_source(predicted, space, Path("runs")),
        seed=config.seed,
    )

    def one(cand: Any) -> float:
        """Score `cand` as a trial of `evaluation: supernet` does (size, latency from the
        lookup table, inherited weights, validation accuracy); its CPU seconds (all threads)."""
        start = time.process_time()
        evaluator(cand)
        return time.process_time() - start

    return out, history.seconds, one


def throughput(
    space: Any, one: Callable[[Any], float], n: int, seed: int, threads: list[int]
) -> dict[int, tuple[float, float]]:
    """Per torch thread count: (candidates per CPU-hour, per wall-clock hour) over the same `n`
    random candidates."""
    before = torch.get_num_threads()
    out = {}
    try:
        for k in threads:
            torch.set_num_threads(k)
            rng = np.random.default_rng(seed + 1)
            wall = time.perf_counter()
            cpu = sum(one(space.sample(rng)) for _ in range(n))
            out[k] = (3600 * n / cpu, 3600 * n / (time.perf_counter() - wall))
    finally:
        torch.set_num_threads(before)
    return out


def correlations(a: list[float], b: list[float]) -> str:
    tau, rho = kendalltau(a, b), spearmanr(a, b)
    return (
        f"Kendall tau {tau.statistic:.3f} (p={tau.pvalue:.3f}), "
        f"Spearman rho {rho.statistic:.3f} (p={rho.pvalue:.3f})"
    )


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="candidate sampling seed")
    parser.add_argument("--reference-train-size", type=int, default=15000)
    parser.add_argument("--reference-epochs", type=int, default=5)
    parser.add_argument(
        "--reference-jobs",
        type=positive,
        default=1,
        metavar="N",
        help="train N reference candidates at a time, one thread each (their time is not "
        "compared with anything)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change the proxy recipe, e.g. training.epochs=3",
    )
    parser.add_argument(
        "--supernet", action="store_true", help="also score with the config's trained supernet"
    )
    parser.add_argument(
        "--supernet-repeat",
        action="store_true",
        help="with --supernet: train a second supernet at the next seed and print how the two "
        "agree",
    )
    parser.add_argument(
        "--throughput",
        type=int,
        default=0,
        metavar="N",
        help="with --supernet: time N more candidates scored as a supernet search does",
    )
    parser.add_argument(
        "--throughput-threads",
        type=int,
        nargs="+",
        default=[1, 2],
        metavar="K",
        help="torch threads to time them at (a CPU-hour is one core's hour)",
    )
    parser.add_argument(
        "--reference-repeat",
        action="store_true",
        help="train the reference again at the next seed: how well it agrees with itself",
    )
    parser.add_argument("--cache", type=Path, default=Path("runs/proxy_ranking.json"))
    args = parser.parse_args()
    for flag, given in (
        ("--throughput", args.throughput),
        ("--supernet-repeat", args.supernet_repeat),
    ):
        if given and not args.supernet:
            parser.error(f"{flag} scores with the supernet: add --supernet")
    return args


def sample(space: Any, n: int, seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    candidates: list[Any] = []
    while len(candidates) < n:
        c = space.sample(rng)
        if c not in candidates:
            candidates.append(c)
    return candidates


def main() -> None:
    args = parse_args()
    base = load_config(args.config)
    if base.data.dataset != "fashion_mnist":
        raise SystemExit("this benchmark scores on Fashion-MNIST's test set; use such a config")
    proxy = with_settings(base, args.set)
    reference = with_settings(
        base,
        [
            f"data.train_size={args.reference_train_size}",
            f"training.epochs={args.reference_epochs}",
        ],
    )
    space = get_space(base.space.name, base.space)
    candidates = sample(space, args.candidates, args.seed)
    cache = json.loads(args.cache.read_text()) if args.cache.is_file() else {}
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    _, test, _ = data_for(proxy)
    print(
        f"proxy: {proxy.data.train_size} images x {proxy.training.epochs} epochs, scored on "
        f"{proxy.data.val_size} validation images (what the search sees); reference: "
        f"{reference.data.train_size} images x {reference.training.epochs} epochs, scored on "
        f"the {len(test.images)} test images"
    )
    sn: list[dict[str, float]] | None = None
    if args.supernet:  # first, so that its timings are taken before the long reference runs
        sn, epoch_seconds, one = supernet_scores(proxy, candidates, args.cache.parent)
        per_hour = (
            throughput(space, one, args.throughput, args.seed, args.throughput_threads)
            if args.throughput
            else {}
        )
    p = score(proxy, candidates, cache, args.cache, "proxy")
    if args.supernet:  # before the long reference runs, which they do not need
        costs(proxy, p, epoch_seconds, per_hour, args.throughput)
    again = None
    if args.supernet and args.supernet_repeat:
        second = with_settings(proxy, [f"seed={proxy.seed + 1}"])
        label = f"supernet seed {second.seed}"
        again, _, _ = supernet_scores(second, candidates, args.cache.parent, label)
    r = score(reference, candidates, cache, args.cache, "reference", args.reference_jobs)
    r2 = None
    if args.reference_repeat:
        repeat = with_settings(reference, [f"seed={reference.seed + 1}"])
        label = f"reference seed {repeat.seed}"
        r2 = score(repeat, candidates, cache, args.cache, label, args.reference_jobs)
    report(space, candidates, p, r, sn, again, r2)


def report(
    space: Any,
    candidates: list[Any],
    p: list[dict[str, float]],
    r: list[dict[str, float]],
    sn: list[dict[str, float]] | None,
    again: list[dict[str, float]] | None = None,
    r2: list[dict[str, float]] | None = None,
) -> None:
    extra = f" {'supernet val':>12} {'supernet test':>13}" if sn else ""
    extra += f" {'seed+1 test':>11}" if again else ""
    refs = f" {'ref test':>8}" + (f" {'ref seed+1':>10}" if r2 else "")
    print(f"{'#':>2} {'params M':>8} {'proxy val':>9} {'proxy test':>10}{extra}{refs}  candidate")
    for i, cand in enumerate(candidates):
        params = count_params(space.build(cand, 10, 1)) / 1e6
        inherited = f" {sn[i]['val']:>12.4f} {sn[i]['test']:>13.4f}" if sn else ""
        inherited += f" {again[i]['test']:>11.4f}" if again else ""
        measured = f" {r[i]['test']:>8.4f}" + (f" {r2[i]['test']:>10.4f}" if r2 else "")
        print(
            f"{i:>2} {params:>8.2f} {p[i]['val']:>9.4f} {p[i]['test']:>10.4f}{inherited}"
            f"{measured}  {space.encode(cand)}"
        )
    ref = [x["test"] for x in r]
    n = len(candidates)
    print(f"proxy (validation)    vs reference: {correlations([x['val'] for x in p], ref)}, n={n}")
    print(f"proxy (test set)      vs reference: {correlations([x['test'] for x in p], ref)}, n={n}")
    if sn:
        print(
            f"supernet (validation) vs reference: "
            f"{correlations([x['val'] for x in sn], ref)}, n={n}"
        )
        print(
            f"supernet (test set)   vs reference: "
            f"{correlations([x['test'] for x in sn], ref)}, n={n}"
        )
    if sn and again:
        first, second = ([x["test"] for x in run] for run in (sn, again))
        print(f"supernet (next seed, test set) vs reference: {correlations(second, ref)}, n={n}")
        print(
            f"supernet (next seed) vs supernet, both on the test set: "
            f"{correlations(second, first)}, n={n}"
        )
        mean = list(np.add(first, second) / 2)
        print(f"mean of both supernets (test set) vs reference: {correlations(mean, ref)}, n={n}")
    if r2:
        repeat_ref(ref, [x["test"] for x in r2], p, sn)
    scorers = {"reference": ref, "proxy (validation)": [x["val"] for x in p]}
    if sn:
        scorers["supernet (validation)"] = [x["val"] for x in sn]
    if again:
        scorers["supernet seed+1 (test)"] = [x["test"] for x in again]
    ranks_by(space, candidates, scorers)
    spread = max(ref) - min(ref)
    print(
        f"reference accuracy spread {spread:.4f}; proxy seconds "
        f"{sum(x['seconds'] for x in p):.0f}, reference seconds "
        f"{sum(x['seconds'] for x in r):.0f}"
    )


def repeat_ref(
    ref: list[float],
    again: list[float],
    p: list[dict[str, float]],
    sn: list[dict[str, float]] | None,
) -> None:
    """How the reference agrees with itself at the next seed (no scorer can be expected to
    rank much better than that), and each scorer against the next-seed run alone (a scorer
    that shares the first run's seed shares some of its noise) and against the mean of both
    runs, which has less of either run's training noise."""
    n = len(ref)
    print(f"reference (next seed) vs reference: {correlations(again, ref)}, n={n}")
    diffs = np.subtract(again, ref)
    print(
        f"reference seed-to-seed differences: mean {np.mean(diffs):+.4f}, std {np.std(diffs):.4f}"
        f" (candidates' spread: std {np.std(ref):.4f})"
    )
    mean = list(np.add(ref, again) / 2)
    scorers = {"proxy (validation)": [x["val"] for x in p]}
    if sn:
        scorers["supernet (validation)"] = [x["val"] for x in sn]
    for label, scores in scorers.items():
        print(f"{label} vs reference (next seed): {correlations(scores, again)}, n={n}")
        print(f"{label} vs mean of both references: {correlations(scores, mean)}, n={n}")


def ranks_by(space: Any, candidates: list[Any], scorers: dict[str, list[float]]) -> None:
    """What each scorer's ranking follows: its Spearman rho against simple traits of the
    candidates (a scorer that agrees with the reference follows the same traits)."""
    traits: dict[str, list[float]] = {
        "resolution": [float(space.resolution(c)) for c in candidates],
        "params": [float(count_params(space.build(c, 10, 1))) for c in candidates],
    }
    for name in ("width", "depth"):  # compound scaling, where the space has it
        if all(hasattr(c, name) for c in candidates):
            traits[name] = [float(getattr(c, name)) for c in candidates]
    print("Spearman rho against the candidates' traits:")
    print(f"  {'':<22}" + "".join(f"{name:>11}" for name in traits))
    for label, scores in scorers.items():
        rhos = [spearmanr(values, scores).statistic for values in traits.values()]
        cells = ("n/a" if np.isnan(rho) else f"{rho:+.2f}" for rho in rhos)  # a constant trait
        print(f"  {label:<22}" + "".join(f"{cell:>11}" for cell in cells))


def costs(
    config: RunConfig,
    p: list[dict[str, float]],
    epoch_seconds: list[float],
    per_hour: dict[int, tuple[float, float]],
    n: int,
) -> None:
    proxy_40 = 40 * float(np.mean([x["seconds"] for x in p]))
    sn_seconds = sum(epoch_seconds)
    print(
        f"supernet training {sn_seconds:.0f} s ({config.supernet.epochs} epochs on "
        f"{config.data.train_size} images; per epoch {', '.join(f'{s:.0f}' for s in epoch_seconds)}"
        f" s) vs proxy-training 40 candidates {proxy_40:.0f} s: ratio {sn_seconds / proxy_40:.2f}"
    )
    for threads, (per_cpu_hour, per_wall_hour) in per_hour.items():
        print(
            f"throughput over {n} candidates at {threads} thread(s) (inherited weights, "
            "BatchNorm re-estimated, validation accuracy, latency from the lookup table): "
            f"{per_cpu_hour:.0f} per CPU-hour, {per_wall_hour:.0f} per wall-clock hour"
        )


if __name__ == "__main__":
    main()
