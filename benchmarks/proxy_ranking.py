"""How well does a proxy-training recipe rank candidates, compared with longer training?

Samples N candidates from a run config's space, trains each with the config's proxy recipe and
with a longer reference recipe (more images, more epochs; same held-out validation images), and
prints both accuracies with Kendall's tau and Spearman's rho between them. Results are cached in a
JSON file keyed by candidate and recipe, so trying another proxy recipe reuses the reference runs.

    .venv/bin/python benchmarks/proxy_ranking.py configs/quickstart.yaml --candidates 10 \\
        --reference-train-size 20000 --reference-epochs 6 [--set training.epochs=3 ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.stats import kendalltau, spearmanr

from nas.config import RunConfig, load_config, parse_config
from nas.data import load_dataset, make_splits
from nas.metrics import count_params
from nas.training import train_proxy
from search_spaces import get_space


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
    config: RunConfig, candidates: list[Any], cache: dict[str, Any], cache_path: Path, label: str
) -> list[float]:
    space = get_space(config.space.name, config.space)
    dataset = load_dataset(config.data)
    splits = make_splits(dataset, config.data, config.seed)
    key = recipe_key(config)
    out = []
    for i, cand in enumerate(candidates):
        entry = f"{space.encode(cand)}|{key}"
        if entry not in cache:
            import torch

            size = space.proxy_input_size(cand, splits.image_size)
            torch.manual_seed(config.seed)
            model = space.build(cand, splits.num_classes, splits.channels, input_size=size)
            start = time.perf_counter()
            result = train_proxy(model, splits.resized(size), config.training, seed=config.seed)
            cache[entry] = {"accuracy": result.accuracy, "seconds": time.perf_counter() - start}
            cache_path.write_text(json.dumps(cache, indent=1))
            print(
                f"  {label} {i + 1}/{len(candidates)}: acc {result.accuracy:.4f} in "
                f"{cache[entry]['seconds']:.0f} s",
                flush=True,
            )
        out.append(cache[entry]["accuracy"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="candidate sampling seed")
    parser.add_argument("--reference-train-size", type=int, default=20000)
    parser.add_argument("--reference-epochs", type=int, default=6)
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
    candidates = []
    while len(candidates) < args.candidates:
        c = space.sample(rng)
        if c not in candidates:
            candidates.append(c)
    cache = json.loads(args.cache.read_text()) if args.cache.is_file() else {}
    args.cache.parent.mkdir(parents=True, exist_ok=True)

    print(
        f"proxy: {proxy.data.train_size} images x {proxy.training.epochs} epochs; reference: "
        f"{reference.data.train_size} images x {reference.training.epochs} epochs; "
        f"validation: {base.data.val_size} held-out images"
    )
    proxy_acc = score(proxy, candidates, cache, args.cache, "proxy")
    ref_acc = score(reference, candidates, cache, args.cache, "reference")

    print(f"{'#':>2} {'params M':>8} {'proxy acc':>9} {'ref acc':>8}  candidate")
    for i, cand in enumerate(candidates):
        params = count_params(space.build(cand, 10, 1)) / 1e6
        print(
            f"{i:>2} {params:>8.2f} {proxy_acc[i]:>9.4f} {ref_acc[i]:>8.4f}  {space.encode(cand)}"
        )
    tau = kendalltau(proxy_acc, ref_acc)
    rho = spearmanr(proxy_acc, ref_acc)
    print(
        f"Kendall tau {tau.statistic:.3f} (p={tau.pvalue:.3f}), Spearman rho "
        f"{rho.statistic:.3f} (p={rho.pvalue:.3f}) over {len(candidates)} candidates"
    )


if __name__ == "__main__":
    main()
