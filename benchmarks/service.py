"""What the service costs, measured side by side in one run.

Part 1, overhead: the same small search (digits, a few epochs) run by `nas search` and through
the service (submitted over HTTP, followed through its server-sent events until it ends). Wall
time of each, and their ratio (target: at most 1.05).

Part 2, the API under load: a run of 1,000 trials (written straight into a study, with the
attributes a real search records), and `--clients` concurrent HTTP clients on loopback reading
the search list, pages of trials and the front for `--seconds` seconds: requests per second,
p50 and p99 latency, errors (target: none).

Part 3, the page of that 1,000-trial search: its HTML and the four requests its script makes
(plot, front, first page of trials, events), cold (first read of the study) and warm; and, with
Debian's Chromium, the time until the plot is drawn in a real browser (target: under 1 s).

Every service is a real `nas serve` subprocess on 127.0.0.1.

    .venv/bin/python benchmarks/service.py [--trials 8] [--epochs 3] [--clients 32] [--seconds 30]
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import optuna
import yaml
from _digits import NAS, digits_search

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """A `nas serve` subprocess and a client holding its token."""

    def __init__(self, runs: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.runs = runs
        self.process = subprocess.Popen(
            [*NAS, "serve", "--port", str(self.port), "--runs-dir", str(runs)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"nas serve ended: {self.process.communicate()[1]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)  # not listening yet
        token = (runs / ".service" / "token").read_text().strip()
        self.headers = {"Authorization": f"Bearer {token}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=120)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def config(name: str, trials: int, epochs: int) -> dict[str, Any]:
    return digits_search(name, search={"n_trials": trials}, training={"epochs": epochs})


def follow(client: httpx.Client, name: str) -> None:
    with client.stream("GET", f"/api/searches/{name}/events", timeout=3600) as response:
        for line in response.iter_lines():
            if line == "event: end":
                return
    raise SystemExit(f"the events of {name} ended without an end event")


def overhead(tmp: Path, trials: int, epochs: int) -> None:
    print(f"\n== Overhead: one search of {trials} digits trials, {epochs} epochs each ==")
    rows = []
    for attempt in range(2):  # interleaved, so both see the same host
        path = tmp / f"cli-{attempt}.yaml"
        path.write_text(yaml.safe_dump(config(f"cli{attempt}", trials, epochs)))
        began = time.monotonic()
        cli = [*NAS, "search", str(path), "--runs-dir", str(tmp / "cli")]
        done = subprocess.run(cli, cwd=REPO, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(done.stderr)
        direct = time.monotonic() - began
        service = Service(tmp / f"served{attempt}")
        try:
            with service.client() as client:
                began = time.monotonic()
                text = yaml.safe_dump(config(f"svc{attempt}", trials, epochs))
                created = client.post("/api/searches", json={"config": text})
                if created.status_code != 201:
                    raise SystemExit(created.text)
                follow(client, f"svc{attempt}")
                served = time.monotonic() - began
        finally:
            service.stop()
        rows.append((direct, served))
        print(
            f"round {attempt + 1}: nas search {direct:6.1f} s, through the service "
            f"{served:6.1f} s, ratio {served / direct:.3f}"
        )
    direct, served = (statistics.median(c) for c in zip(*rows, strict=True))
    print(
        f"median: nas search {direct:.1f} s, service {served:.1f} s, ratio {served / direct:.3f} "
        "(target <= 1.05)"
    )


def big_run(runs: Path, n: int) -> str:
    """A run of `n` completed trials written straight into its study, as a search records them."""
    from nas.config import parse_config
    from nas.search.study import distributions
    from search_spaces import get_space

    name = "big"
    cfg = parse_config(config(name, n, 1), source="benchmark")
    folder = runs / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(cfg.to_yaml())
    storage = f"sqlite:///{folder / 'study.db'}"
    study = optuna.create_study(
        study_name=name, storage=storage, directions=["maximize", "minimize"]
    )
    space = get_space("efficientnet", cfg.space)
    rng = np.random.default_rng(0)
    device = {
        "name": "cpu-ort-fp32",
        "hardware": "bench",
        "runtime": "onnxruntime",
        "runtime_version": "x",
        "precision": "fp32",
        "batch_size": 1,
        "threads": 1,
    }
    dists = distributions(space.dimensions())
    trials = []
    for _ in range(n):
        cand = space.sample(rng)
        latency = float(rng.uniform(0.2, 3.0))
        accuracy = float(np.clip(0.5 + 0.1 * np.log(latency) + rng.normal(0, 0.03), 0, 1))
        attrs = {
            "candidate": space.encode(cand),
            "accuracy": accuracy,
            "latency_p50_ms": latency,
            "latency_p90_ms": latency * 1.05,
            "latency_mean_ms": latency,
            "latency_std_ms": 0.01,
            "latency_n_runs": 10,
            "latency_cached": False,
            "latency_source": "measured",
            "latency_predicted_ms": None,
            "latency_uncertainty": None,
            "device": device,
            "params": int(rng.integers(100_000, 3_000_000)),
            "flops": int(rng.integers(1_000_000, 100_000_000)),
            "proxy_input_size": 8,
            "epoch_accuracy": [accuracy],
            "train_seconds": 5.0,
            "eval_seconds": 6.0,
            "accuracy_trained": accuracy,
        }
        trials.append(
            optuna.trial.create_trial(
                params=space.to_params(cand),
                distributions=dists,
                values=[accuracy, latency],
                user_attrs=attrs,
                state=optuna.trial.TrialState.COMPLETE,
            )
        )
    study.add_trials(trials)
    return name


def load(service: Service, name: str, clients: int, seconds: float) -> None:
    print(
        f"\n== The API under load: {clients} clients for {seconds:.0f} s, a run of 1,000 trials =="
    )
    paths = ["/api/searches", f"/api/searches/{name}/front"] + [
        f"/api/searches/{name}/trials?limit=50&offset={o}&sort=accuracy&order=desc"
        for o in range(0, 1000, 50)
    ]
    with service.client() as warm:
        for p in paths[:3]:
            warm.get(p)  # the first read of the study is part 3's cold figure
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(seed: int) -> None:
        pick = random.Random(seed)
        with httpx.Client(base_url=service.url, headers=service.headers, timeout=60) as client:
            while time.monotonic() < stop:
                path = pick.choice(paths)
                began = time.perf_counter()
                try:
                    status = client.get(path).status_code
                    problem = "" if status == 200 else f"HTTP {status}"
                except httpx.HTTPError as e:
                    problem = f"{type(e).__name__}: {e}"
                took = time.perf_counter() - began
                with lock:
                    latencies.append(took)
                    if problem:
                        errors.append(f"{path}: {problem}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ms = np.array(latencies) * 1000
    print(
        f"{len(ms)} requests in {seconds:.0f} s: {len(ms) / seconds:.0f} requests/s, "
        f"p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
        f"errors {len(errors)}" + (f" (first: {errors[0]})" if errors else "")
    )


def page(service: Service, name: str) -> None:
    print("\n== The page of a 1,000-trial search ==")
    requests = [
        f"/searches/{name}",
        f"/api/searches/{name}/plot",
        f"/api/searches/{name}/front",
        f"/api/searches/{name}/trials?offset=0&limit=25&sort=number&order=asc",
    ]
    for label in ("cold", "warm"):
        if label == "cold":
            service.stop()  # a fresh service: nothing cached
            service.__init__(service.runs)  # type: ignore[misc]
        with service.client() as client:
            began = time.perf_counter()
            sizes = [len(client.get(r, follow_redirects=False).content) for r in requests]
            took = time.perf_counter() - began
        print(
            f"{label}: HTML and its {len(requests) - 1} API requests in {took * 1000:.0f} ms "
            f"({sum(sizes) / 1024:.0f} KiB)"
        )
    browser_load(service, name)


def browser_load(service: Service, name: str) -> None:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        print("browser: skipped (Debian's chromium and chromium-driver are not installed)")
        return
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=DriverService(executable_path=driver_path))
    try:
        browser.get(f"{service.url}/login")
        browser.add_cookie(
            {"name": "nas_token", "value": service.headers["Authorization"].split()[1]}
        )
        times = []
        for _ in range(3):
            began = time.perf_counter()
            browser.get(f"{service.url}/searches/{name}")
            WebDriverWait(browser, 60).until(
                seen.presence_of_element_located((By.CSS_SELECTOR, "#plot .point"))
            )
            WebDriverWait(browser, 60).until(
                seen.presence_of_element_located((By.CSS_SELECTOR, "#trials tbody tr"))
            )
            times.append(time.perf_counter() - began)
        print(
            f"browser (Chromium, 1280x800): page to plot and trials drawn in "
            f"{', '.join(f'{t * 1000:.0f}' for t in times)} ms (target: under 1,000 ms)"
        )
    finally:
        browser.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nas-bench-service-") as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_overhead:
            overhead(tmp, args.trials, args.epochs)
        runs = tmp / "loaded"
        name = big_run(runs, 1000)
        service = Service(runs)
        try:
            load(service, name, args.clients, args.seconds)
            page(service, name)
        finally:
            service.stop()


if __name__ == "__main__":
    main()
