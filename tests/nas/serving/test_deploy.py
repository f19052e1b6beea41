"""A live deployment on Ray Serve, driven through the CLI and real HTTP clients on loopback:
requests in every form, sticky assignment, bad input, feedback, overload, a killed replica, a
restart, traffic changes, the report, and Prometheus reading the metrics back."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from nas.serving.loadgen import LoadResult, run_load, simulated_feedback
from tests.conftest import REPO
from tests.services import free_port, wait_for


def _replicas(deployed, variant: str, state: str = "ALIVE") -> list[int]:
    from ray.util.state import list_actors

    address = f"http://127.0.0.1:{deployed.ray()['dashboard_port']}"
    actors = list_actors(
        address=address,
        filters=[("class_name", "=", f"ServeReplica:{deployed.name}:variant-{variant}")],
        limit=1000,
        raise_on_missing_output=False,
    )
    return [a.pid for a in actors if a.state == state]


def test_answers_json_png_and_npy_with_the_variant_and_a_request_id(deployed, http, digits_png):
    images, _ = digits_png
    r = http.post(
        f"{deployed.url}/predict", content=images[0], headers={"content-type": "image/png"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["variant"] in ("control", "candidate") and len(body["request_id"]) == 32
    assert r.headers["x-variant"] == body["variant"]
    assert len(body["scores"]) == 10 and abs(sum(body["scores"]) - 1) < 1e-3
    assert body["class"] == int(np.argmax(body["scores"])) and body["batch_size"] >= 1
    assert set(body["timing_ms"]) == {"total", "queue", "inference"}
    shape = http.get(f"{deployed.url}/status").json()["variants"]["control"]["shape"]
    x = np.random.default_rng(0).standard_normal((3, *shape)).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, x)
    r = http.post(
        f"{deployed.url}/predict",
        content=buf.getvalue(),
        headers={"content-type": "application/x-npy", "x-variant": "control"},
    )
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3
    r = http.post(
        f"{deployed.url}/predict",
        json={"image": base64.b64encode(images[1]).decode(), "variant": "candidate"},
    )
    assert r.status_code == 200 and r.json()["variant"] == "candidate"
    r2 = http.post(f"{deployed.url}/predict", json={"inputs": x[0].tolist(), "variant": "control"})
    r3 = http.post(
        f"{deployed.url}/predict", json={"inputs": x[0].tolist(), "variant": "candidate"}
    )
    # Both runtimes run the same trained network: same class, close scores.
    assert r2.json()["class"] == r3.json()["class"]
    assert np.allclose(r2.json()["scores"], r3.json()["scores"], atol=1e-3)


def test_a_unit_id_sticks_to_one_variant_and_units_spread_over_both(deployed, http, digits_png):
    images, _ = digits_png
    seen: dict[str, set[str]] = {}
    for i in range(60):
        unit = f"user-{i % 12}"
        r = http.post(
            f"{deployed.url}/predict",
            content=images[i],
            headers={"content-type": "image/png", "x-unit-id": unit},
        )
        assert r.status_code == 200
        seen.setdefault(unit, set()).add(r.json()["variant"])
    assert all(len(v) == 1 for v in seen.values())
    assert {next(iter(v)) for v in seen.values()} == {"control", "candidate"}


BAD = [
    (b"not an image", "image/png", 400, "not a readable PNG or JPEG"),
    (b"{", "application/json", 400, "not valid JSON"),
    (b'{"inputs": [[1, 2], [3]]}', "application/json", 422, "not a rectangular array"),
    (b'{"inputs": [1, 2, 3]}', "application/json", 422, "is not (C, H, W)"),
    (b'{"inputs": [[[1]]], "variant": "nope"}', "application/json", 404, "unknown variant"),
    (b"\x93NUMPY garbage", "application/x-npy", 400, "not a .npy array"),
    (b"hello", "text/plain", 415, "not served"),
    (b"x" * 5_000_000, "image/png", 413, "at most"),
]


def test_bad_input_gets_a_4xx_with_one_message_and_no_replica_dies(deployed, http):
    before = {v: _replicas(deployed, v) for v in ("control", "candidate")}
    for body, kind, status, words in BAD:
        r = http.post(f"{deployed.url}/predict", content=body, headers={"content-type": kind})
        assert r.status_code == status, (kind, r.text)
        assert words in r.json()["detail"] and "\n" not in r.json()["detail"]
    r = http.post(f"{deployed.url}/predict", json={"inputs": [[[[0.0]]]]})
    assert r.status_code == 422
    after = {v: _replicas(deployed, v) for v in ("control", "candidate")}
    assert after == before
    assert not _replicas(deployed, "control", "DEAD")


def test_feedback_labels_an_answered_request_once(deployed, http, digits_png):
    images, labels = digits_png
    r = http.post(
        f"{deployed.url}/predict", content=images[5], headers={"content-type": "image/png"}
    )
    rid = r.json()["request_id"]
    fb = f"{deployed.url}/feedback"
    assert (
        http.post(fb, json={"request_id": rid, "label": int(labels[5])}).json()["status"] == "added"
    )
    assert (
        http.post(fb, json={"request_id": rid, "label": int(labels[5])}).json()["status"] == "same"
    )
    assert (
        http.post(fb, json={"request_id": rid, "label": (int(labels[5]) + 1) % 10}).status_code
        == 409
    )
    assert http.post(fb, json={"request_id": "f" * 32, "label": 1}).status_code == 404
    r = http.post(fb, json={"request_id": rid, "label": 10})
    assert r.status_code == 422 and "allowed 0..9" in r.json()["detail"]
    assert (
        http.post(fb, content=b"[", headers={"content-type": "application/json"}).status_code == 400
    )


def _load(deployed, images, **kw: Any) -> LoadResult:
    return asyncio.run(run_load(deployed.url, images, None, **kw))


def _burst(deployed, images: list[bytes], n: int, variant: str) -> list[httpx.Response]:
    """`n` requests at once, all forced onto `variant`."""

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as c:
            return await asyncio.gather(
                *(
                    c.post(
                        f"{deployed.url}/predict",
                        content=images[i % 50],
                        headers={"content-type": "image/png", "x-variant": variant},
                    )
                    for i in range(n)
                )
            )

    return asyncio.run(burst())


def test_overload_is_a_503_with_retry_after_at_once_and_every_request_is_answered(
    deployed, digits_png
):
    """The `narrow` variant takes one request at a time and queues one more; a burst of 200
    requests (64 at once) forced onto it is answered or refused, none hangs."""
    images, _ = digits_png
    answers = _burst(deployed, images, 200, "narrow")
    codes = [a.status_code for a in answers]
    assert len(codes) == 200 and set(codes) <= {200, 503}
    assert codes.count(503) > 0 and codes.count(200) > 0
    refused = next(a for a in answers if a.status_code == 503)
    assert refused.headers["retry-after"] == "1" and "queue limit" in refused.json()["detail"]


def test_a_killed_replica_is_replaced_and_every_request_is_accounted_for(deployed, digits_png):
    images, _ = digits_png
    (victim,) = _replicas(deployed, "control")
    result: dict[str, LoadResult] = {}
    load = threading.Thread(
        target=lambda: result.setdefault("r", _load(deployed, images, requests=600, concurrency=8))
    )
    load.start()
    wait_for(lambda: deployed.status()["requests"] > 0, 60, "requests flowing")
    os.kill(victim, signal.SIGKILL)
    load.join(timeout=300)
    assert not load.is_alive(), "the load generator hung"
    r = result["r"]
    assert r.sent == 600 and r.transport_errors == 0
    assert r.answered + r.rejected == r.sent and set(r.codes) <= {200, 503}
    replaced = wait_for(
        lambda: [p for p in _replicas(deployed, "control") if p != victim],
        120,
        "a new control replica",
    )
    assert replaced and victim not in replaced
    wait_for(lambda: deployed.status()["serve"]["status"] == "RUNNING", 120, "app running")


def test_set_traffic_moves_new_requests_and_is_an_event(deployed, http, digits_png):
    images, _ = digits_png
    proc = deployed.cli("deploy", "set-traffic", deployed.name, "control=0", "candidate=100")
    assert proc.returncode == 0, proc.stderr
    assert "candidate 100 %" in proc.stdout

    def all_candidate() -> bool:
        variants = {
            http.post(
                f"{deployed.url}/predict", content=images[i], headers={"content-type": "image/png"}
            ).json()["variant"]
            for i in range(10)
        }
        return variants == {"candidate"}

    wait_for(all_candidate, 30, "traffic on the candidate")
    events = deployed.status()["events"]
    assert events[-1]["kind"] == "manual" and events[-1]["traffic"]["candidate"] == 100
    bad = deployed.cli("deploy", "set-traffic", deployed.name, "ghost=5")
    assert bad.returncode == 2 and "unknown variants ['ghost']" in bad.stderr
    bad = deployed.cli("deploy", "set-traffic", deployed.name, "control")
    assert bad.returncode == 2 and "VARIANT=WEIGHT" in bad.stderr


def test_a_restart_keeps_the_log_the_feedback_and_the_traffic(deployed, http, digits_png):
    images, _ = digits_png
    r = http.post(
        f"{deployed.url}/predict", content=images[0], headers={"content-type": "image/png"}
    )
    http.post(f"{deployed.url}/feedback", json={"request_id": r.json()["request_id"], "label": 0})
    wait_for(lambda: deployed.status()["feedback"] > 0, 30, "feedback stored")
    before = deployed.status()
    proc = deployed.cli("deploy", "stop", deployed.name, "--keep-ray")
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(httpx.HTTPError):
        http.post(
            f"{deployed.url}/predict", content=images[0], headers={"content-type": "image/png"}
        ).raise_for_status()
    proc = deployed.cli("deploy", deployed.config)
    assert proc.returncode == 0, proc.stderr
    after = deployed.status()
    assert (after["requests"], after["feedback"]) == (before["requests"], before["feedback"])
    assert after["traffic"] == before["traffic"]
    r = http.post(
        f"{deployed.url}/predict", content=images[0], headers={"content-type": "image/png"}
    )
    assert r.status_code == 200 and r.json()["variant"] == "candidate"


def test_the_report_compares_each_variant_with_the_control(deployed):
    proc = deployed.cli("deploy", "report", deployed.name, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["variant"]: r for r in json.loads(proc.stdout)}
    assert rows["control"]["role"] == "control" and rows["candidate"]["answered"] > 0
    assert rows["narrow"]["rejected_503"] > 0
    assert "p99_ratio_ci" in rows["candidate"] and "accuracy_verdict" in rows["candidate"]
    table = deployed.cli("deploy", "report", deployed.name)
    assert table.returncode == 0 and "p99_ratio" in table.stdout
    missing = deployed.cli("deploy", "report", "ghost")
    assert missing.returncode == 2 and "no deployment 'ghost'" in missing.stderr


PROMETHEUS_CONFIG = """
# A scrape of Ray's metrics agent takes ~0.1 s on a quiet machine and can take seconds on a
# busy one; a generous timeout keeps the test about the metrics, not about the host's load.
global: {{scrape_interval: 2s, scrape_timeout: 2s, evaluation_interval: 2s}}
scrape_configs:
  - job_name: ray
    static_configs: [{{targets: ['127.0.0.1:{port}']}}]
"""


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is needed")
def test_prometheus_reads_per_variant_p99_and_error_rate_back(deployed, digits_png):
    images, _ = digits_png
    root = Path(tempfile.mkdtemp(prefix="nas-prom-"))
    (root / "prometheus.yml").write_text(
        PROMETHEUS_CONFIG.format(port=deployed.ray()["metrics_port"])
    )
    port = free_port()
    server = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        api = f"http://127.0.0.1:{port}/api/v1/query"
        proc = deployed.cli("deploy", "set-traffic", deployed.name, "control=50", "candidate=50")
        assert proc.returncode == 0, proc.stderr

        def query(promql: str) -> dict[str, float]:
            r = httpx.get(api, params={"query": promql}, timeout=10).json()
            return {
                s["metric"].get("variant", ""): float(s["value"][1]) for s in r["data"]["result"]
            }

        sel = f'deployment="{deployed.name}"'
        # Prometheus counts a series' increase from its first scrape on, and Ray exports a
        # worker's metrics every few seconds: keep traffic flowing (both variants, and refusals
        # on the narrow one) until the rates are there to read.
        p99_query = (
            "histogram_quantile(0.99, sum by (le, variant) "
            f"(increase(ray_nas_serving_request_duration_seconds_bucket{{{sel}}}[5m])))"
        )
        errors_query = (
            f'sum by (variant) (increase(ray_nas_serving_requests_total{{{sel},code=~"5.."}}[5m]))'
            f" / sum by (variant) (increase(ray_nas_serving_requests_total{{{sel}}}[5m]))"
        )

        def readable() -> tuple[dict[str, float], dict[str, float]] | None:
            _load(deployed, images, requests=60, concurrency=4)
            assert 503 in {r.status_code for r in _burst(deployed, images, 100, "narrow")}
            p99 = {k: v for k, v in query(p99_query).items() if v == v}  # NaN: no data yet
            errors = query(errors_query)
            if {"control", "candidate"} <= p99.keys() and errors.get("narrow", 0) > 0:
                return p99, errors
            return None

        try:
            p99, errors = wait_for(readable, 240, "per-variant p99 and errors in Prometheus")
        except AssertionError:
            targets = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=10).json()
            raise AssertionError(
                f"no per-variant p99 and error rate; p99 {query(p99_query)}, errors "
                f"{query(errors_query)}, scrape targets: {targets['data']['activeTargets']}"
            ) from None
        assert all(0 < p99[v] < 10 for v in ("control", "candidate"))
        assert errors["narrow"] > 0
        assert (
            query(f"max by (variant) (ray_nas_serving_replica_resident_memory_bytes{{{sel}}})").get(
                "control", 0
            )
            > 1e6
        )
        assert query(f"sum by (variant) (ray_nas_serving_batch_size_count{{{sel}}})")
        # Every query of the shipped Grafana dashboard is valid PromQL with data behind it.
        dashboard = json.loads((REPO / "grafana" / "serving.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$deployment", deployed.name)
                r = httpx.get(
                    api, params={"query": expr.replace("$__rate_interval", "5m")}, timeout=10
                ).json()
                assert r["status"] == "success", (panel["title"], r)
                assert r["data"]["result"], f"no data for panel {panel['title']!r}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def _ramp(
    deployed, exported, digits, tmp_path, name: str, p_correct: dict[str, float], steps: list[float]
) -> dict[str, Any]:
    port = int(deployed.url.split(":")[2].split("/")[0])
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "variants": [
                    {"name": "control", "export": str(exported["onnx"])},
                    {"name": "candidate", "export": str(exported["onnx"])},
                ],
                "ramp": {
                    "candidate": "candidate",
                    "steps": steps,
                    "min_requests": 100,
                    "check_interval_s": 0.5,
                },
                "guardrails": {"max_p99_ratio": 5},
                "http": {"port": port},
            }
        )
    )
    proc = deployed.cli("deploy", config)
    assert proc.returncode == 0, proc.stderr
    images, labels = digits
    url = f"http://127.0.0.1:{port}/{name}"
    asyncio.run(
        run_load(
            url,
            images,
            labels,
            requests=1000,
            concurrency=8,
            label_of=simulated_feedback(p_correct),
        )
    )
    proc = deployed.cli("deploy", "status", name, "--json")
    assert proc.returncode == 0, proc.stderr
    status = dict(json.loads(proc.stdout))
    assert deployed.cli("deploy", "stop", name, "--keep-ray").returncode == 0
    return status


def test_a_worse_candidate_is_rolled_back_with_the_reason(deployed, exported, digits_png, tmp_path):
    """The candidate answers right 60 % of the time on feedback, the control 95 %: the ramp
    rolls it back before the 1,000 requests sent are through."""
    status = _ramp(
        deployed,
        exported,
        digits_png,
        tmp_path,
        "ab-bad",
        {"control": 0.95, "candidate": 0.6},
        [10, 50],
    )
    assert status["ramp"]["status"] == "rolled_back", status["ramp"]
    assert "accuracy" in status["ramp"]["reason"]
    assert status["traffic"]["candidate"] == 0
    rollback = [e for e in status["events"] if e["kind"] == "rollback"]
    assert len(rollback) == 1 and rollback[0]["reason"].startswith("rolled back at ")


@pytest.mark.slow  # every ramp step waits out its window; the rollback test covers the ramp
def test_an_a_a_ramp_is_promoted_step_by_step(deployed, exported, digits_png, tmp_path):
    status = _ramp(
        deployed,
        exported,
        digits_png,
        tmp_path,
        "ab-aa",
        {"control": 0.9, "candidate": 0.9},
        [20, 50],
    )
    assert status["ramp"]["status"] == "promoted", status["ramp"]
    assert [e["kind"] for e in status["events"]] == ["start", "step", "promote"]
    assert status["traffic"] == {"control": 0.0, "candidate": 100.0}
