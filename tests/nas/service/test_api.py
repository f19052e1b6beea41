"""The JSON API against a real `nas serve` on 127.0.0.1, through a real HTTP client: a digits
search from submission to export and download, tables, cancel and resume, every error path."""

from __future__ import annotations

import io
import json
import shutil
import stat
import zipfile
from pathlib import Path

import optuna
import pandas as pd

from nas.storage import is_finished
from tests.nas.service.conftest import Served, follow_events, search_config

LONG = {"data": {"train_size": 1400}, "training": {"epochs": 4}, "search": {"n_trials": 4}}


def test_health_needs_nothing_and_everything_else_a_token(served: Served) -> None:
    with served.client(token=None) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        for path in ("/api/searches", "/api/devices", "/api/exports", "/metrics", "/openapi.json"):
            response = anonymous.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer" in response.json()["detail"]
        page = anonymous.get("/searches/x", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/searches/x"
        assert anonymous.post("/login", data={"token": "wrong"}).status_code == 401
        login = anonymous.post(
            "/login", data={"token": served.token, "next": "//evil.example"}, follow_redirects=False
        )
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
    with served.client(token="not-the-token") as wrong:
        assert wrong.get("/api/searches").status_code == 401
    mode = stat.S_IMODE((served.runs / ".service" / "token").stat().st_mode)
    assert mode == 0o600


def test_a_search_from_submission_to_a_downloaded_export(served: Served) -> None:
    with served.client() as client:
        created = client.post("/api/searches", json={"config": search_config("api")})
        assert created.status_code == 201, created.text
        assert created.json()["state"] in ("queued", "running")
        events = follow_events(client, "api")
        assert events[-1]["state"] == "finished" and events[-1]["progress"]["done"] == 3
        dones = [e["progress"]["done"] for e in events if e["progress"]]
        assert dones == sorted(dones)  # pushed as it went, never backwards

        listed = {s["name"]: s for s in client.get("/api/searches").json()}
        assert listed["api"]["progress"]["total"] == 3
        detail = client.get("/api/searches/api").json()
        assert detail["config"]["name"] == "api" and detail["config"]["search"]["n_trials"] == 3

        page = client.get(
            "/api/searches/api/trials", params={"limit": 2, "sort": "accuracy", "order": "desc"}
        ).json()
        assert page["total"] == 3 and len(page["trials"]) == 2
        assert page["trials"][0]["accuracy"] >= page["trials"][1]["accuracy"]
        csv = client.get("/api/searches/api/trials", params={"format": "csv"})
        assert csv.headers["content-type"].startswith("text/csv")
        table = pd.read_csv(io.StringIO(csv.text))
        assert len(table) == 3 and table["accuracy"].notna().all()

        trial = client.get("/api/searches/api/trials/0").json()
        assert trial["row"]["number"] == 0 and len(trial["attrs"]["epoch_accuracy"]) == 1
        front = client.get("/api/searches/api/front").json()
        best = max(front["trials"], key=lambda t: t["accuracy"])
        budget = max(t["latency_p50_ms"] for t in front["trials"]) * 1.001
        pick = client.get("/api/searches/api/pick", params={"max_latency_ms": budget}).json()
        assert pick["trial"]["number"] == best["number"]
        none = client.get("/api/searches/api/pick", params={"max_latency_ms": 1e-6}).json()
        assert none["trial"] is None and "no completed feasible trial" in none["message"]
        pair = client.get("/api/searches/api/compare", params={"a": 0, "b": 1}).json()
        assert pair["a"]["number"] == 0 and pair["b"]["number"] == 1
        assert pair["difference"]["latency_ratio"] > 0
        plot = client.get("/api/searches/api/plot").json()
        assert plot["data"] and "accuracy vs latency" in plot["layout"]["title"]["text"]

        _export_and_download(client, best["number"], served)

        metrics = client.get("/metrics").text
        assert 'nas_searches{state="finished"}' in metrics
        assert 'nas_trials{state="complete"}' in metrics
        assert (
            "nas_http_requests_total{" in metrics
            and 'route="/api/searches/{name}/front"' in metrics
        )


def _export_and_download(client, number: int, served: Served) -> None:
    started = client.post("/api/searches/api/exports", json={"trial": number, "format": "onnx"})
    assert started.status_code == 202, started.text
    export_id = started.json()["id"]
    events = follow_events(client, "api")  # ends once the search and its exports have
    assert any(e["id"] == export_id and e["state"] == "finished" for e in events[-1]["exports"])
    view = client.get(f"/api/exports/{export_id}").json()
    assert view["state"] == "finished" and view["card"]["trial"] == number
    archive = client.get(f"/api/exports/{export_id}/archive")
    assert archive.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    assert {"model.onnx", "model_proxy.onnx", "model_card.json", "MODEL_CARD.md"} <= set(names)
    card = client.get(f"/api/exports/{export_id}/card")
    assert card.headers["content-type"].startswith("text/markdown") and "Model card" in card.text
    assert export_id in [e["id"] for e in client.get("/api/exports").json()]


def test_bad_requests_get_one_clear_message_and_create_nothing(served: Served) -> None:
    with served.client() as client:
        before = sorted(p.name for p in served.runs.iterdir())
        jobs = client.get("/api/searches").json()
        cases = [
            (
                {"config": "search: {sampler: cmaes}"},
                422,
                "search.sampler = 'cmaes': Input should be 'nsga2'",
            ),
            ({"config": "search: [unclosed"}, 422, "not valid YAML"),
            ({"config": search_config("x", data={"dataset": "npz"})}, 422, "data.path is not set"),
            ({"config": search_config("x"), "name": "../escape"}, 422, "name = '../escape'"),
            ({"config": search_config("x"), "n_trials": 0}, 422, "n_trials = 0"),
            (
                {"config": search_config("x", search={"seed_candidates": ["nonsense"]})},
                422,
                "seed_candidates[0]",
            ),
        ]
        for body, status, message in cases:
            response = client.post("/api/searches", json=body)
            assert response.status_code == status, (body, response.text)
            assert message in response.json()["detail"] and "\n" not in response.json()["detail"]
        assert sorted(p.name for p in served.runs.iterdir()) == before
        assert client.get("/api/searches").json() == jobs

        for path, status, message in [
            ("/api/searches/missing", 404, "no search 'missing'"),
            ("/api/searches/api/trials/99", 404, "trial 99 not in run"),
            ("/api/searches/api/trials?sort=bogus", 422, "allowed: number, state"),
            ("/api/searches/api/trials?limit=0", 422, "limit = '0'"),
            ("/api/searches/api/pick?max_latency_ms=-1", 422, "max_latency_ms"),
            ("/api/searches/api/compare?a=0&b=99", 404, "trial 99 not in search api"),
            ("/api/searches/..%2F..%2Fetc/trials", 404, ""),
            ("/api/searches/%2E%2E/trials", 422, ""),
            ("/api/exports/xnotanid", 422, "export_id"),
            ("/api/exports/x000000000000", 404, "no export x000000000000"),
        ]:
            response = client.get(path)
            assert response.status_code == status, (path, response.text)
            assert message in response.json()["detail"], path
        again = client.post("/api/searches", json={"config": search_config("api")})
        assert again.status_code == 409 and "exists (finished)" in again.json()["detail"]
        bad_export = client.post("/api/searches/api/exports", json={"trial": 0, "format": "keras"})
        assert bad_export.status_code == 422
        missing_trial = client.post("/api/searches/api/exports", json={"trial": 42})
        assert missing_trial.status_code == 404 and "trial 42" in missing_trial.json()["detail"]
        assert client.post("/api/searches/api/cancel").status_code == 409


def test_tables_are_checked_before_they_are_added(
    served: Served, small_table: Path, tmp_path: Path
) -> None:
    tables = served.runs / "tables"
    with served.client() as client:
        frame = pd.read_csv(small_table).drop(columns=["p90_ms"])
        bad = client.post(
            "/api/devices/tables",
            files={
                "table": ("t.csv", frame.to_csv(index=False)),
                "metadata": ("t.json", small_table.with_suffix(".json").read_bytes()),
            },
        )
        assert bad.status_code == 422 and "missing columns ['p90_ms']" in bad.json()["detail"]
        assert not tables.exists() or not any(tables.iterdir())
        meta = json.loads(small_table.with_suffix(".json").read_text())
        meta["device"].update(name="phone-x", hardware="Snapdragon 8", runtime="tflite")
        files = {
            "table": ("../../evil.csv", small_table.read_bytes()),
            "metadata": ("x.json", json.dumps(meta).encode()),
        }
        added = client.post("/api/devices/tables", files=files)
        assert added.status_code == 201, added.text
        assert added.json()["device"] == "phone-x"
        installed = sorted(p.name for p in tables.iterdir())
        assert len(installed) == 2 and all(n.startswith("phone-x__") for n in installed)
        assert not (served.runs.parent / "evil.csv").exists()
        devices = {d["device"]: d for d in client.get("/api/devices").json()}
        assert "phone-x" in devices and devices["phone-x"]["source"].startswith("table ")
        twice = client.post("/api/devices/tables", files=files)
        assert twice.status_code == 422 and "exists" in twice.json()["detail"]
        huge = client.post(
            "/api/devices/tables",
            files={"table": ("t.csv", b"x" * (17 * 2**20)), "metadata": ("t.json", b"{}")},
        )
        assert huge.status_code == 413 and "MiB" in huge.json()["detail"]
        renamed = dict(meta, device=dict(meta["device"], name="../../etc"))
        escape = client.post(
            "/api/devices/tables",
            files={
                "table": ("t.csv", small_table.read_bytes()),
                "metadata": ("t.json", json.dumps(renamed).encode()),
            },
        )
        assert escape.status_code == 422 and "device name" in escape.json()["detail"]
    assert sorted(p.name for p in tables.iterdir()) == installed
    shutil.rmtree(tables)


def test_cancel_stops_cleanly_and_resume_reaches_the_exact_count(served: Served) -> None:
    with served.client() as client:
        assert (
            client.post("/api/searches", json={"config": search_config("stop", **LONG)}).status_code
            == 201
        )
        from tests.services import wait_for

        def second_trial_running() -> bool:
            progress = client.get("/api/searches/stop").json().get("progress") or {}
            return progress.get("done", 0) >= 1 and progress.get("running", 0) >= 1

        # Cancelled between two trials, the search would leave nothing to interrupt: wait until
        # the second trial trains.
        wait_for(second_trial_running, 300, "a finished trial and a running one", interval=0.2)
        assert client.post("/api/searches/stop/cancel").status_code == 202
        follow_events(client, "stop")
        view = client.get("/api/searches/stop").json()
        assert view["state"] == "cancelled", view
        assert client.post("/api/searches/stop/resume").status_code == 202
        follow_events(client, "stop")
        assert client.get("/api/searches/stop").json()["state"] == "finished"
    study = optuna.load_study(
        study_name="stop", storage=f"sqlite:///{served.runs / 'stop' / 'study.db'}"
    )
    trials = study.get_trials()
    logs = "\n".join(p.read_text() for p in (served.runs / ".service" / "jobs").glob("*/log.txt"))
    told = [(t.number, t.state.name, t.user_attrs.get("failure_reason")) for t in trials]
    assert sum(is_finished(t) for t in trials) == 4, (told, logs)
    # The trial in progress was interrupted, and ran again on resume.
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1, (told, logs)
    retried = [t for t in trials if t.user_attrs.get("retry_of") == interrupted[0].number]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE", (told, logs)
