"""Latency you can trust: the measurement protocol's repeatability and the predictors' error on
this host, side by side, in one run.

1. A table of this host (`--table-here`, or profiled now and timed) and a table of another host
   of the same device kind (`--table-other`, default: the one shipped in
   `latency_predictors/tables/`; a table made here by an older protocol works too).
2. --test + 60 fixed random candidates of the config's space, each timed twice on
   `cpu-ort-fp32` with the protocol (interleaved groups of 25); the first 60 are the pool that
   few-shot samples are drawn from, the others are held out.
3. Per predictor, against the first measurement of the held-out candidates: share within +-5 %
   and +-10 %, MAPE, Spearman; beside them the second measurement (the host's own limit):
   - `lut`, this host's table with its own correction; the other host's with its own
     correction, and after `nas latency calibrate` on --samples candidates (the command's own
     code, on a copy of the table); FLOPs fitted on the same samples;
   - on `cpu-ov-fp32` (measured the same way): this host's ONNX Runtime table with the
     correction fitted on K OpenVINO samples (K = --samples and 30), the few-shot predictor on
     both tables and FLOPs, and FLOPs; means over 10 draws of the K from the pool.

Targets: protocol >= 98 % within +-10 % between passes; `lut` here >= 99 % within +-10 %, >= 80 %
within +-5 %, Spearman >= 0.99; the other host's table after calibration >= 95 % within +-10 %;
OpenVINO >= 90 % within +-10 %.

    .venv/bin/python benchmarks/latency_trust.py [configs/quickstart.yaml] [--table-here T]
        [--table-other T] [--test 200] [--samples 10]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from latency_predictors.devices import TABLES_DIR, measurement_backend
from latency_predictors.fewshot import FewShotRegressor
from latency_predictors.measure import measure_together
from latency_predictors.predictors import FlopsPredictor, LookupTablePredictor, accuracy_report
from latency_predictors.sources import table_predictor
from latency_predictors.table import find_tables, load_table
from nas import api
from nas.config import load_config
from nas.devices.check import fixed_candidates
from search_spaces import get_space

POOL = 60


def line(name: str, fit: str, r: dict[str, float]) -> str:
    return (
        f"{name:<52}{fit:>7}{r['within_5']:>8.1%}{r['within_10']:>8.1%}{r['mape']:>8.1%}"
        f"{r['spearman']:>10.4f}"
    )


def mean_report(reports: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in reports])) for k in reports[0]}


def measure_twice(space: Any, cands: list[Any], device: str, config: Any) -> np.ndarray:
    """(2, n) latencies: two passes of the protocol."""
    backend = measurement_backend(
        device, threads=1, warmup=10, repeats=50, batch_size=1, protocol=config.latency.protocol()
    )
    dep = config.deployment.target()
    passes = []
    for p in range(2):
        start = time.perf_counter()
        passes.append([r.p50_ms for r in measure_together(space, cands, backend, dep)])
        print(f"  {device} pass {p + 1}: {time.perf_counter() - start:.0f} s", flush=True)
    return np.array(passes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, nargs="?", default=Path("configs/quickstart.yaml"))
    parser.add_argument("--table-here", type=Path)
    parser.add_argument("--table-other", type=Path)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--no-openvino", action="store_true")
    args = parser.parse_args()
    config = load_config(args.config)
    space: Any = get_space(config.space.name, config.space)
    dep = config.deployment.target()
    with tempfile.TemporaryDirectory() as tmp:
        here = args.table_here or profile_here(args.config, Path(tmp))
        other = Path(tmp) / "other.csv"
        source = args.table_other or find_tables(TABLES_DIR)[0]
        shutil.copy(source, other)
        shutil.copy(source.with_suffix(".json"), other.with_suffix(".json"))
        cands = fixed_candidates(space, POOL + args.test, seed=77)
        print(f"measuring {len(cands)} candidates twice ...", flush=True)
        ort = measure_twice(space, cands, "cpu-ort-fp32", config)
        ov = None if args.no_openvino else measure_twice(space, cands, "cpu-ov-fp32", config)
        print("calibrating the other host's table ...", flush=True)
        cal = api.calibrate_table(
            api.CalibrateOptions(
                device="cpu-ort-fp32",
                table=other,
                samples=args.samples,
                config=args.config,
                runs_dir=Path(tmp) / "runs",
            )
        )
        test = cands[POOL:]
        lut_here = LookupTablePredictor(load_table(here), space, dep).fit_calibration()
        own_other = LookupTablePredictor(load_table(other), space, dep).fit_calibration()
        calibrated, _ = table_predictor(other, space, dep, device="cpu-ort-fp32", threads=1)
        flops = FlopsPredictor(space, dep)
        f_all = flops.flops(cands)
        truth = ort[0, POOL:]
        print(
            f"\ncpu-ort-fp32, {len(test)} held-out candidates ({truth.min():.2f}-"
            f"{truth.max():.2f} ms); tables: here {here.name}, other host {source.name}"
        )
        print(f"{'':<52}{'fit on':>7}{'+-5 %':>8}{'+-10 %':>8}{'MAPE':>8}{'Spearman':>10}")
        rows = {
            "second measurement": ("-", accuracy_report(ort[1, POOL:], truth)),
            "lut, this host's table": (
                str(lut_here.n_fit_),
                accuracy_report(np.asarray(lut_here.predict(test)), truth),
            ),
            "lut, other host's table, its own correction": (
                str(own_other.n_fit_),
                accuracy_report(np.asarray(own_other.predict(test)), truth),
            ),
            "lut, other host's table, calibrated here": (
                str(calibrated.n_fit_),
                accuracy_report(np.asarray(calibrated.predict(test)), truth),
            ),
        }
        names, measured = _calibration_samples(cal)
        u = flops.flops([space.decode(c) for c in names]) / measured
        k = float(np.sum(u) / np.sum(u**2))
        rows["flops, fitted on the same samples"] = (
            str(len(names)),
            accuracy_report(k * f_all[POOL:], truth),
        )
        for name, (fit, r) in rows.items():
            print(line(name, fit, r))
        if ov is not None:
            openvino(space, dep, cands, ov, lut_here, own_other, f_all, args.samples)
        summary(rows, ort, ov)


def _calibration_samples(report: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """The candidates `nas latency calibrate` timed, and their latency here."""
    import json

    samples = json.loads(Path(report["calibration"]).read_text())["samples"]
    return [s["candidate"] for s in samples], np.array([s["p50_ms"] for s in samples])


def profile_here(config: Path, tmp: Path) -> Path:
    print("profiling this host's table ...", flush=True)
    start = time.perf_counter()
    path = api.profile_device(
        api.ProfileOptions(device="cpu-ort-fp32", config=config, out=tmp / "here.csv")
    )
    print(f"  profiled in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return path


def openvino(
    space: Any,
    dep: Any,
    cands: list[Any],
    ov: np.ndarray,
    lut_here: LookupTablePredictor,
    lut_other: LookupTablePredictor,
    f_all: np.ndarray,
    samples: int,
) -> None:
    """OpenVINO fp32 predicted from ONNX Runtime tables and K OpenVINO samples."""
    truth = ov[0, POOL:]
    test = cands[POOL:]
    inputs = np.column_stack(
        [np.asarray(lut_here.predict(cands)), np.asarray(lut_other.predict(cands)), f_all]
    )
    print(f"\ncpu-ov-fp32, the same {len(test)} held-out candidates; K OpenVINO samples, 10 draws")
    print(line("second measurement", "-", accuracy_report(ov[1, POOL:], truth)))
    rng = np.random.default_rng(0)
    for k in (samples, 30):
        found: dict[str, list[dict[str, float]]] = {"corr": [], "few": [], "flops": []}
        for _ in range(10):
            idx = rng.choice(POOL, k, replace=False)
            picked, y = [cands[i] for i in idx], ov[0, idx]
            corr = LookupTablePredictor(lut_here.table, space, dep).fit(picked, y)
            found["corr"].append(accuracy_report(np.asarray(corr.predict(test)), truth))
            few = FewShotRegressor().fit(inputs[idx], y)
            found["few"].append(accuracy_report(few.predict(inputs[POOL:]), truth))
            u = f_all[idx] / y
            scale = float(np.sum(u) / np.sum(u**2))
            found["flops"].append(accuracy_report(scale * f_all[POOL:], truth))
        print(line("ONNX Runtime table here + correction on K", str(k), mean_report(found["corr"])))
        print(line("few-shot on both tables and FLOPs", str(k), mean_report(found["few"])))
        print(line("flops", str(k), mean_report(found["flops"])))


def summary(rows: dict[str, Any], ort: np.ndarray, ov: np.ndarray | None) -> None:
    rep = rows["second measurement"][1]
    here = rows["lut, this host's table"][1]
    cal = rows["lut, other host's table, calibrated here"][1]
    print(
        f"\nprotocol repeatability {rep['within_10']:.1%} within +-10 % (target 98 %); lut here "
        f"{here['within_10']:.1%} within +-10 % (target 99 %), {here['within_5']:.1%} within "
        f"+-5 % (target 80 %), Spearman {here['spearman']:.4f} (target 0.99); other host's "
        f"table calibrated {cal['within_10']:.1%} within +-10 % (target 95 %)"
    )
    if ov is not None:
        second = accuracy_report(ov[1, POOL:], ov[0, POOL:])
        print(f"OpenVINO: a second measurement agrees {second['within_10']:.1%} within +-10 %")


if __name__ == "__main__":
    main()
