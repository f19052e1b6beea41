"""Few-shot latency prediction on NAS-Bench-201, one held-out device at a time.

For each of the benchmark's 21 device columns: the other devices are the reference, 10 random
architectures of the held-out device are "measured", and the few-shot predictor predicts all
15,625; the figure is Spearman's rho between prediction and the device's real latencies, averaged
over repeated draws of the 10. Printed beside it: FLOPs alone (the same for every draw), and a
stricter hold-out where every batch size of the same GPU is removed from the reference too.
Published reference (HELP, NeurIPS 2021, on its own set of unseen devices): 0.932 with 10
samples; FLOPs 0.787.

    .venv/bin/python benchmarks/fewshot_nb201.py [--table ../shared/bench/nb201/nb201.csv.gz]
        [--samples 10] [--draws 20]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from latency_predictors.fewshot import FewShotPredictor
from search_spaces import get_space
from search_spaces.nb201 import NB201Space

DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "shared" / "bench" / "nb201" / "nb201.csv.gz"
HELP_SPEARMAN = 0.932


def hardware(device: str) -> str:
    """The GPU a batch-size column belongs to (``titanx_256`` -> ``titanx``)."""
    head, _, tail = device.rpartition("_")
    return head if tail in ("1", "32", "256") and head not in ("essential_ph",) else device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--table", type=Path, default=Path(os.environ.get("NB201_TABLE", DEFAULT_TABLE))
    )
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--draws", type=int, default=20)
    args = parser.parse_args()
    if not args.table.is_file():
        raise SystemExit(f"NAS-Bench-201 table {args.table} not found; pass --table")

    table = pd.read_csv(args.table)
    space = cast(NB201Space, get_space("nb201"))  # registered as NB201Space
    cells = [space.decode(s) for s in table["arch_str"]]
    flops = [float(space.flops(c)) for c in cells]
    devices = [c for c in table.columns if c not in ("index", "arch_str") and "_acc" not in c]
    latency = table.set_index("arch_str")[devices]
    print(
        f"NAS-Bench-201: {len(table)} architectures, {len(devices)} devices; {args.samples} "
        f"measured architectures per held-out device, {args.draws} draws"
    )
    print(f"{'device':<16}{'FLOPs':>8}{'few-shot':>10}{'+-std':>8}{'no same GPU':>13}")
    rows = []
    for device in devices:
        truth = latency[device].to_numpy()
        results: dict[str, list[float]] = {"loo": [], "strict": []}
        for draw in range(args.draws):
            rng = np.random.default_rng(draw)
            picked = latency.index[rng.choice(len(latency), args.samples, replace=False)]
            for mode in results:
                ref = [
                    d
                    for d in devices
                    if d != device and (mode == "loo" or hardware(d) != hardware(device))
                ]
                model = FewShotPredictor(latency[ref], flops).fit(
                    list(picked), latency.loc[picked, device].to_numpy()
                )
                pred = model.predict(list(latency.index))
                results[mode].append(spearmanr(pred, truth).statistic)
        row = {
            "device": device,
            "flops": spearmanr(flops, truth).statistic,
            "fewshot": float(np.mean(results["loo"])),
            "fewshot_std": float(np.std(results["loo"])),
            "strict": float(np.mean(results["strict"])),
        }
        rows.append(row)
        print(
            f"{device:<16}{row['flops']:>8.3f}{row['fewshot']:>10.3f}{row['fewshot_std']:>8.3f}"
            f"{row['strict']:>13.3f}"
        )
    df = pd.DataFrame(rows)
    print(
        f"{'mean':<16}{df['flops'].mean():>8.3f}{df['fewshot'].mean():>10.3f}{'':>8}"
        f"{df['strict'].mean():>13.3f}"
    )
    print(
        f"few-shot mean Spearman {df['fewshot'].mean():.4f} vs HELP {HELP_SPEARMAN} "
        f"(ratio {df['fewshot'].mean() / HELP_SPEARMAN:.3f}); FLOPs {df['flops'].mean():.4f}; "
        f"without the same GPU's other batch sizes {df['strict'].mean():.4f}"
    )


if __name__ == "__main__":
    main()
