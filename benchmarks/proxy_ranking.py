"""How well does a proxy-training recipe rank candidates, compared with longer training?

Samples N candidates from a run config's space and trains each twice: with the config's proxy
recipe, scored on its validation images exactly as the search scores it, and with a longer
reference recipe (more images, more epochs), scored on Fashion-MNIST's 10,000 test images, which
no search touches. Prints the accuracies and Kendall's tau and Spearman's rho between proxy and
reference, plus the proxy's own test-set accuracy, which separates validation-sampling noise from
what the short training itself gets wrong. Results are cached in a JSON file keyed by candidate
and recipe, so trying another proxy recipe reuses the reference runs.

    .venv/bin/python benchmarks/proxy_ranking.py configs/quickstart.yaml --candidates 10 \\
        [--reference-train-size 15000 --reference-epochs 5] [--set training.epochs=3 ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from scipy.stats import kendalltau, spearmanr

from nas.config import RunConfig, load_config, parse_config
from nas.train.data import (
    ImageDataset,
    load_dataset,
    load_fashion_mnist,
    make_splits,
    normalize,
    resize_images,
)
from nas.train.proxy import evaluate_accuracy, train_proxy
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


def score(
    config: RunConfig,
    candidates: list[Any],
    test: ImageDataset,
    cache: dict[str, Any],
    cache_path: Path,
    label: str,
) -> list[dict[str, float]]:
    """Train each candidate with `config`'s recipe; validation and test-set accuracy."""
    space = get_space(config.space.name, config.space)
    splits = make_splits(load_dataset(config.data), config.data, config.seed)
    test_x = normalize(test.images.float() / 255.0, splits.mean, splits.std)
    key = recipe_key(config)
    out = []
    for i, cand in enumerate(candidates):
        entry = f"{space.encode(cand)}|{key}"
        if entry not in cache:
            size = space.proxy_input_size(cand, splits.image_size)
            torch.manual_seed(config.seed)
            model = space.build(cand, splits.num_classes, splits.channels, input_size=size)
            start = time.perf_counter()
            result = train_proxy(model, splits.resized(size), config.training, seed=config.seed)
            x = resize_images(test_x, size) if size != test_x.shape[-1] else test_x
            cache[entry] = {
                "val": result.accuracy,
                "test": evaluate_accuracy(model, x, test.labels),
                "seconds": time.perf_counter() - start,
            }
            cache_path.write_text(json.dumps(cache, indent=1))
            print(
                f"  {label} {i + 1}/{len(candidates)}: val {cache[entry]['val']:.4f}, test "
                f"{cache[entry]['test']:.4f} in {cache[entry]['seconds']:.0f} s",
                flush=True,
            )
        out.append(cache[entry])
    return out


def correlations(a: list[float], b: list[float]) -> str:
    tau, rho = kendalltau(a, b), spearmanr(a, b)
    return (
        f"Kendall tau {tau.statistic:.3f} (p={tau.pvalue:.3f}), "
        f"Spearman rho {rho.statistic:.3f} (p={rho.pvalue:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="candidate sampling seed")
    parser.add_argument("--reference-train-size", type=int, default=15000)
    parser.add_argument("--reference-epochs", type=int, default=5)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change the proxy recipe, e.g. training.epochs=3",
    )
    parser.add_argument("--cache", type=Path, default=Path("runs/proxy_ranking.json"))
    args = parser.parse_args()

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
    rng = np.random.default_rng(args.seed)
    candidates: list[Any] = []
    while len(candidates) < args.candidates:
        c = space.sample(rng)
        if c not in candidates:
            candidates.append(c)
    cache = json.loads(args.cache.read_text()) if args.cache.is_file() else {}
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    test = load_fashion_mnist(base.data.path, split="test")

    print(
        f"proxy: {proxy.data.train_size} images x {proxy.training.epochs} epochs, scored on "
        f"{proxy.data.val_size} validation images (what the search sees); reference: "
        f"{reference.data.train_size} images x {reference.training.epochs} epochs, scored on "
        f"the {len(test.images)} test images"
    )
    p = score(proxy, candidates, test, cache, args.cache, "proxy")
    r = score(reference, candidates, test, cache, args.cache, "reference")

    print(
        f"{'#':>2} {'params M':>8} {'proxy val':>9} {'proxy test':>10} {'ref test':>8}  candidate"
    )
    for i, cand in enumerate(candidates):
        params = count_params(space.build(cand, 10, 1)) / 1e6
        print(
            f"{i:>2} {params:>8.2f} {p[i]['val']:>9.4f} {p[i]['test']:>10.4f} "
            f"{r[i]['test']:>8.4f}  {space.encode(cand)}"
        )
    ref = [x["test"] for x in r]
    n = len(candidates)
    print(f"proxy (validation) vs reference: {correlations([x['val'] for x in p], ref)}, n={n}")
    print(f"proxy (test set)   vs reference: {correlations([x['test'] for x in p], ref)}, n={n}")
    spread = max(ref) - min(ref)
    print(
        f"reference accuracy spread {spread:.4f}; proxy seconds "
        f"{sum(x['seconds'] for x in p):.0f}, reference seconds "
        f"{sum(x['seconds'] for x in r):.0f}"
    )


if __name__ == "__main__":
    main()
