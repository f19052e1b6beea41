"""Serving on Ray Serve: dynamic batching against none and against the offline limit, the
serving overhead per request, p99 under load, a killed replica under load, and the A/B
machinery (time to roll back a worse candidate, false verdicts in A/A tests).

Run:  python benchmarks/serving.py --control EXPORT_DIR [--candidate EXPORT_DIR]
Export folders come from `nas export ... --dynamic-batch`; without --control a small digits
search is run and exported first. Everything listens on 127.0.0.1; the load is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from _digits import NAS, digits_search

from nas.serving.config import GuardrailConfig, RampConfig
from nas.serving.loadgen import LoadResult, png_bytes, run_load, simulated_feedback
from nas.serving.ramp import Observations, check_guardrails
from nas.serving.runtime import load_runner, variant_spec
from nas.serving.stats import compare_rates, msprt_p_values

FASHION = Path("/usr/share/datasets/fashion-mnist")


def nas(*args: str | Path, runs: Path) -> str:
    proc = subprocess.run(
        [*NAS, *map(str, args), "--runs-dir", str(runs)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"nas {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def digits_exports(root: Path) -> tuple[Path, Path]:
    config = root / "digits.yaml"
    config.write_text(yaml.safe_dump(digits_search("serving", search={"n_trials": 2})))
    subprocess.run(
        [*NAS, "search", str(config), "--runs-dir", str(root / "runs")],
        check=True,
        capture_output=True,
    )
    run = root / "runs" / "serving"
    nas("export", run, "--trial", "0", "--out", root / "fp32", "--dynamic-batch", runs=root)
    nas(
        "export",
        run,
        "--trial",
        "0",
        "--out",
        root / "int8",
        "--format",
        "onnx-int8",
        "--dynamic-batch",
        "--min-agreement",
        "0.5",
        runs=root,
    )
    return root / "fp32", root / "int8"


def images_for(shape: tuple[int, ...]) -> tuple[list[bytes], np.ndarray]:
    """Real test images as PNG: Fashion-MNIST for a 1-channel model (the quickstart), else
    scikit-learn's digits."""
    if shape[0] == 1 and (FASHION / "t10k-images-idx3-ubyte.gz").is_file():
        raw = gzip.decompress((FASHION / "t10k-images-idx3-ubyte.gz").read_bytes())
        x = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:1000]
        raw = gzip.decompress((FASHION / "t10k-labels-idx1-ubyte.gz").read_bytes())
        y = np.frombuffer(raw, np.uint8, offset=8)[:1000]
        return [png_bytes(i) for i in x], y.astype(int)
    from sklearn.datasets import load_digits

    d = load_digits()
    return [png_bytes((i * 255 / 16).astype(np.uint8)) for i in d.images[:1000]], d.target[:1000]


def offline(folder: Path) -> dict[str, Any]:
    """The runtime's own figures for the served file: batch-1 p50 and batch-32 images/s."""
    spec = variant_spec("offline", folder, "model_proxy", None)
    run = load_runner(spec)
    x1 = np.zeros((1, *spec.shape), np.float32)
    x32 = np.zeros((32, *spec.shape), np.float32)
    for _ in range(20):
        run(x1)
    t1 = []
    for _ in range(300):
        t = time.perf_counter()
        run(x1)
        t1.append(time.perf_counter() - t)
    t32 = []
    for _ in range(30):
        t = time.perf_counter()
        run(x32)
        t32.append(time.perf_counter() - t)
    return {
        "p50_ms_b1": 1000 * float(np.median(t1)),
        "ips_b32": 32 / float(np.median(t32)),
        "shape": spec.shape,
    }


def deploy(root: Path, name: str, port: int, variants: list[dict[str, Any]], **extra: Any) -> str:
    config = {"name": name, "variants": variants, "http": {"port": port}, **extra}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    nas("deploy", path, runs=root / "runs")
    return f"http://127.0.0.1:{port}/{name}"


def load(
    url: str,
    images: list[bytes],
    requests: int,
    concurrency: int,
    variant: str | None = None,
    **kw: Any,
) -> LoadResult:
    return asyncio.run(
        run_load(
            url,
            images,
            kw.pop("labels", None),
            requests=requests,
            concurrency=concurrency,
            variant=variant,
            **kw,
        )
    )


def batching(url: str, images: list[bytes], requests: int, budget_ms: float) -> dict[str, Any]:
    """Throughput of each variant at rising concurrency; the best within the p99 budget."""
    out: dict[str, Any] = {}
    for variant in ("batched", "single"):
        levels = []
        for conc in (1, 4, 16, 32, 64):
            r = load(url, images, requests, conc, variant)
            levels.append(
                {
                    "concurrency": conc,
                    "rps": r.throughput,
                    "p50": r.percentile(50),
                    "p99": r.percentile(99),
                    "batch": float(np.mean(r.batch_sizes)),
                    "rejected": r.rejected,
                }
            )
            print(
                f"  {variant:8s} concurrency {conc:3d}: {r.throughput:7.1f} req/s, p50 "
                f"{r.percentile(50):6.1f} ms, p99 {r.percentile(99):6.1f} ms, mean batch "
                f"{np.mean(r.batch_sizes):4.1f}, refused {r.rejected}",
                flush=True,
            )
        ok = [lv for lv in levels if lv["p99"] <= budget_ms and lv["rejected"] == 0]
        out[variant] = {"levels": levels, "best": max(ok, key=lambda lv: lv["rps"]) if ok else None}
    return out


def cpu_by_process(
    url: str, images: list[bytes], requests: int, concurrency: int
) -> dict[str, float]:
    """CPU seconds per request spent by each process on the path (the load generator, Ray
    Serve's HTTP proxy, the endpoint, the variant's replica) during one load level."""
    import psutil

    def snapshot() -> dict[str, float]:
        out: dict[str, float] = {}
        for p in psutil.process_iter(["cmdline"]):
            title = " ".join(p.info["cmdline"] or [])
            key = (
                "proxy"
                if "ProxyActor" in title
                else "endpoint"
                if "bench:Ingress" in title
                else "replica"
                if "bench:variant-batched" in title
                else "load generator"
                if p.pid == os.getpid()
                else None
            )
            if key:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    out[key] = out.get(key, 0.0) + t.user + t.system
        return out

    before = snapshot()
    r = load(url, images, requests, concurrency, "batched")
    after = snapshot()
    return {k: (after[k] - before.get(k, 0.0)) / max(r.answered, 1) for k in after}


def killed_replica(root: Path, url: str, images: list[bytes]) -> dict[str, Any]:
    from ray.util.state import list_actors

    ray_rec = json.loads((root / "runs" / "deployments" / "ray.json").read_text())
    actors = list_actors(
        address=f"http://127.0.0.1:{ray_rec['dashboard_port']}",
        filters=[("class_name", "=", "ServeReplica:bench:variant-batched")],
        raise_on_missing_output=False,
    )
    victim = next(int(a.pid) for a in actors if a.state == "ALIVE" and a.pid)
    result: dict[str, LoadResult] = {}
    t = threading.Thread(
        target=lambda: result.setdefault("r", load(url, images, 2000, 16, "batched"))
    )
    t.start()
    time.sleep(1.0)  # a benchmark: let the load reach steady state before the kill
    os.kill(victim, signal.SIGKILL)
    t.join()
    r = result["r"]
    return {
        "sent": r.sent,
        "answered": r.answered,
        "rejected": r.rejected,
        "codes": dict(r.codes),
        "transport_errors": r.transport_errors,
        "p99": r.percentile(99),
    }


def live_ramp(
    root: Path,
    name: str,
    port: int,
    control: Path,
    candidate: Path,
    images: list[bytes],
    p_correct: dict[str, float],
    requests: int,
) -> dict[str, Any]:
    url = deploy(
        root,
        name,
        port,
        [
            {"name": "control", "export": str(control)},
            {"name": "candidate", "export": str(candidate)},
        ],
        ramp={
            "candidate": "candidate",
            "steps": [10, 25, 50],
            "min_requests": 150,
            "check_interval_s": 0.5,
        },
    )
    start = time.time()
    labels = np.zeros(len(images), int)
    load(
        url,
        images,
        requests,
        8,
        labels=labels,
        unit_ids=0,
        label_of=simulated_feedback(p_correct, 1),
    )
    status = json.loads(nas("deploy", "status", name, "--json", runs=root / "runs"))
    end = next((e for e in status["events"] if e["kind"] in ("rollback", "promote")), None)
    from nas.serving.store import Store

    df = Store(status["store"], name).exposures()
    before = df[df["ts"] <= end["ts"]] if end else df
    nas("deploy", "stop", name, "--keep-ray", runs=root / "runs")
    return {
        "outcome": end["kind"] if end else status["ramp"]["status"],
        "reason": end["reason"] if end else status["ramp"]["reason"],
        "requests_until": len(before),
        "candidate_requests_until": int((before["variant"] == "candidate").sum()),
        "seconds_until": (end["ts"] - start) if end else float("nan"),
    }


def simulate_guardrails(runs: int, n: int, acc: float, seed: int) -> dict[str, float]:
    """A/A ramps without a server: how often guardrails or the report's verdict fire falsely."""
    rng = np.random.default_rng(seed)
    g = GuardrailConfig()
    alarms = verdicts = 0
    for _ in range(runs):
        arm = rng.random(n) < 0.3
        correct = rng.random(n) < acc
        lat = rng.lognormal(0, 0.3, n)
        obs = Observations(
            latency_arm=arm,
            latency_ms=lat,
            error_arm=arm,
            error=np.zeros(n, bool),
            feedback_arm=arm,
            correct=correct,
        )
        alarms += bool(check_guardrails(g, obs))
        verdicts += compare_rates(arm, correct).p_value < g.alpha
    return {"guardrail_fpr": alarms / runs, "verdict_fpr": verdicts / runs}


def simulate_detection(runs: int, acc: tuple[float, float], share: float, seed: int) -> list[int]:
    """Requests until the accuracy guardrail fires (as `check_guardrails` decides it, read
    after every request) for a candidate known to be worse, at a fixed traffic share."""
    rng = np.random.default_rng(seed)
    g = GuardrailConfig()
    n = 20000
    out = []
    for _ in range(runs):
        arm = rng.random(n) < share
        correct = np.where(arm, rng.random(n) < acc[1], rng.random(n) < acc[0])
        p = msprt_p_values(arm, correct, null=-g.max_accuracy_drop)
        n1, n0 = np.maximum(np.cumsum(arm), 1), np.maximum(np.cumsum(~arm), 1)
        diff = np.cumsum(correct & arm) / n1 - np.cumsum(correct & ~arm) / n0
        hit = np.nonzero((p < g.alpha / 3) & (diff < -g.max_accuracy_drop))[0]
        out.append(int(hit[0]) + 1 if len(hit) else n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--control", type=Path, help="export folder (dynamic batch) to serve")
    ap.add_argument("--candidate", type=Path, help="a second export folder (e.g. int8)")
    ap.add_argument("--requests", type=int, default=1500, help="requests per load level")
    ap.add_argument("--budget-ms", type=float, default=100.0, help="p99 budget for throughput")
    ap.add_argument("--aa-runs", type=int, default=500, help="simulated A/A ramps")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nas-bench-serving-"))
    if args.control is None:
        print("exporting a small digits search (no --control given) ...", flush=True)
        args.control, default_candidate = digits_exports(root)
        args.candidate = args.candidate or default_candidate
    candidate = args.candidate or args.control
    off = offline(args.control)
    images, _ = images_for(tuple(off["shape"]))
    print(
        f"offline ({args.control.name}): batch-1 p50 {off['p50_ms_b1']:.3f} ms, batch-32 "
        f"{off['ips_b32']:.0f} images/s",
        flush=True,
    )
    port = int(os.environ.get("BENCH_PORT", "8931"))
    url = deploy(
        root,
        "bench",
        port,
        [
            {
                "name": "batched",
                "export": str(args.control),
                "batching": {"max_batch_size": 32, "max_wait_ms": 2, "max_queue": 1024},
            },
            {
                "name": "single",
                "export": str(args.control),
                "batching": {"max_batch_size": 1, "max_wait_ms": 0, "max_queue": 1024},
            },
        ],
    )
    try:
        print("load (bounded, loopback):", flush=True)
        b = batching(url, images, args.requests, args.budget_ms)
        one = load(url, images, 500, 1, "single")
        cpu = cpu_by_process(url, images, args.requests, 16)
        print(
            "CPU per request at 16 clients: "
            + ", ".join(f"{k} {1000 * v:.2f} ms" for k, v in cpu.items()),
            flush=True,
        )
        kill = killed_replica(root, url, images)
        nas("deploy", "stop", "bench", "--keep-ray", runs=root / "runs")
        bad = live_ramp(
            root,
            "ab-bad",
            port,
            args.control,
            candidate,
            images,
            {"control": 0.9, "candidate": 0.75},
            3000,
        )
        aa = live_ramp(
            root,
            "ab-aa",
            port,
            args.control,
            args.control,
            images,
            {"control": 0.9, "candidate": 0.9},
            1500,
        )
    finally:
        subprocess.run(
            [*NAS, "deploy", "stop", "bench", "--runs-dir", str(root / "runs")],
            capture_output=True,
            check=False,
        )
    sim = simulate_guardrails(args.aa_runs, 3000, 0.9, 0)
    det = simulate_detection(200, (0.9, 0.75), 0.1, 0)
    report(off, b, one, kill, bad, aa, sim, det, args.budget_ms)


def report(
    off: dict[str, Any],
    b: dict[str, Any],
    one: LoadResult,
    kill: dict[str, Any],
    bad: dict[str, Any],
    aa: dict[str, Any],
    sim: dict[str, float],
    det: list[int],
    budget: float,
) -> None:
    best_b, best_s = b["batched"]["best"], b["single"]["best"]
    print("\n== serving figures ==")
    if best_b and best_s:
        print(
            f"throughput at p99 <= {budget:g} ms: batched {best_b['rps']:.0f} req/s "
            f"(mean batch {best_b['batch']:.1f}), unbatched {best_s['rps']:.0f} req/s: "
            f"{best_b['rps'] / best_s['rps']:.2f}x"
        )
        print(
            f"offline batch-32 limit {off['ips_b32']:.0f} images/s: served batched is "
            f"{best_b['rps'] / off['ips_b32']:.2f}x of it"
        )
    else:
        print(f"no load level met p99 <= {budget:g} ms (batched {best_b}, unbatched {best_s})")
    overhead = one.percentile(50) - off["p50_ms_b1"]
    print(
        f"serving overhead per request: end-to-end p50 {one.percentile(50):.2f} ms - runtime "
        f"p50 {off['p50_ms_b1']:.3f} ms = {overhead:.2f} ms (concurrency 1)"
    )
    worst = max(b["batched"]["levels"], key=lambda lv: lv["concurrency"])
    print(
        f"p99 under load (batched, concurrency {worst['concurrency']}): {worst['p99']:.1f} ms "
        f"at {worst['rps']:.0f} req/s"
    )
    print(
        f"killed replica under load: sent {kill['sent']} = answered {kill['answered']} + "
        f"rejected {kill['rejected']} (codes {kill['codes']}, transport errors "
        f"{kill['transport_errors']})"
    )
    print(
        f"worse candidate (90 % vs 75 % right on feedback): {bad['outcome']} after "
        f"{bad['requests_until']} requests ({bad['candidate_requests_until']} on the candidate, "
        f"{bad['seconds_until']:.1f} s): {bad['reason']}"
    )
    print(f"A/A ramp (same file twice): {aa['outcome']}: {aa['reason']}")
    print(
        f"A/A false positives in {len(det) and sim and 'simulation'}: guardrails "
        f"{sim['guardrail_fpr']:.1%}, report verdict {sim['verdict_fpr']:.1%} "
        f"(alpha {GuardrailConfig().alpha:g}, read after every request)"
    )
    print(
        f"requests to detect the worse candidate at 10 % traffic (simulated, 200 runs): "
        f"median {int(np.median(det))}, p90 {int(np.percentile(det, 90))}"
    )
    _ = RampConfig  # the ramp's defaults are what the live runs above override


if __name__ == "__main__":
    main()
