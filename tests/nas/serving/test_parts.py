"""The serving parts that need no Ray: the deployment config, request decoding, the store."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nas.errors import ConfigError
from nas.serving.config import load_deploy_config, parse_deploy_config
from nas.serving.runtime import (
    InputError,
    VariantSpec,
    decode_image,
    decode_json_input,
    decode_npy,
)
from nas.serving.store import Exposure, Store, sqlite_url
from tests.conftest import REPO

BASE = {"name": "d", "variants": [{"name": "a", "export": "x"}, {"name": "b", "export": "y"}]}


@pytest.mark.parametrize(
    "change, words",
    [
        ({"variants": [{"name": "a", "export": "x"}, {"name": "a", "export": "y"}]}, "unique"),
        ({"traffic": {"c": 1}}, "traffic names unknown variants ['c']"),
        ({"ramp": {"candidate": "a"}}, "ramp.candidate 'a' is the control"),
        ({"ramp": {"candidate": "b", "steps": [5, 5]}}, "ramp.steps"),
        ({"batching": {"max_batch_size": 0}}, "batching.max_batch_size = 0"),
        (
            {"batching": {"max_wait": 1}},
            "batching.max_wait: unknown key; allowed keys: max_batch_size, max_wait_ms, max_queue",
        ),
        ({"guardrails": {"alpha": 0.7}}, "guardrails.alpha = 0.7"),
        (
            {
                "variants": [
                    {
                        "name": "a",
                        "export": "x",
                        "autoscaling": {"min_replicas": 3, "max_replicas": 2},
                    }
                ]
            },
            "variants.0.autoscaling",
        ),
    ],
)
def test_a_bad_deployment_config_is_one_error_naming_the_field(change, words):
    with pytest.raises(ConfigError) as e:
        parse_deploy_config({**BASE, **change}, source="d.yaml")
    assert words in str(e.value) and str(e.value).startswith("d.yaml: invalid deployment config")
    assert "\n" not in str(e.value)


def test_a_good_config_gives_absolute_exports_and_traffic_in_percent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "d.yaml"
    path.write_text(
        "name: d\nvariants: [{name: a, export: x}, {name: b, export: y}]\ntraffic: {a: 3, b: 1}\n"
    )
    config = load_deploy_config(path)
    assert config.variants[0].export == tmp_path / "x"
    assert config.starting_traffic() == {"a": 75.0, "b": 25.0}
    assert config.control_name == "a"
    with pytest.raises(ConfigError, match="not found"):
        load_deploy_config(tmp_path / "missing.yaml")


SPEC = VariantSpec(
    name="a",
    path=Path("m.onnx"),
    runtime="onnxruntime",
    precision="fp32",
    threads=1,
    shape=(1, 8, 8),
    dynamic_batch=True,
    mean=(0.5,),
    std=(0.25,),
    classes=tuple(str(i) for i in range(10)),
)


def _image(fmt: str, mode: str = "L", size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), "white").save(buf, fmt)
    return buf.getvalue()


def test_images_are_resized_and_normalised_as_the_card_says():
    for fmt in ("PNG", "JPEG"):
        x = decode_image(SPEC, _image(fmt, "RGB"))
        assert x.shape == (1, 1, 8, 8) and x.dtype == np.float32
        assert np.allclose(x, (1.0 - 0.5) / 0.25, atol=0.05)


@pytest.mark.parametrize(
    "call, status, words",
    [
        (lambda: decode_image(SPEC, b"not an image"), 400, "not a readable PNG or JPEG"),
        (lambda: decode_image(SPEC, _image("GIF", "P")), 415, "GIF not served"),
        (lambda: decode_json_input(SPEC, {"inputs": [[1, 2], [3]]}), 422, "not a rectangular"),
        (
            lambda: decode_json_input(SPEC, {"inputs": np.zeros((2, 8, 8)).tolist()}),
            422,
            "shape (1, 2, 8, 8) is not",
        ),
        (
            lambda: decode_json_input(SPEC, {"inputs": np.zeros((65, 1, 8, 8)).tolist()}),
            422,
            "65 rows",
        ),
        (lambda: decode_json_input(SPEC, {"image": "***"}), 422, "not valid base64"),
        (lambda: decode_json_input(SPEC, {"x": 1}), 422, "needs 'inputs'"),
        (lambda: decode_npy(SPEC, pickle.dumps(np.zeros((1, 8, 8)))), 400, "without pickle"),
        (lambda: decode_npy(SPEC, _npy(np.array([["a"]]))), 422, "dtype str32 not served"),
        (lambda: decode_npy(SPEC, _npy(np.full((1, 8, 8), np.nan, np.float32))), 422, "NaN"),
        (lambda: decode_npy(SPEC, _npy(np.zeros((1, 8, 8), object))), 400, "without pickle"),
    ],
)
def test_bad_input_is_refused_with_a_status_and_one_message(call, status, words):
    with pytest.raises(InputError) as e:
        call()
    assert e.value.status == status and words in str(e.value), str(e.value)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def test_npy_and_json_inputs_round_trip():
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    assert np.array_equal(decode_npy(SPEC, _npy(x)), x)
    assert np.allclose(decode_json_input(SPEC, {"inputs": x[0].tolist()}), x[:1])


def _exercise(store: Store) -> None:
    rows = [
        Exposure(
            f"r{i}",
            store.deployment,
            100.0 + i,
            f"u{i % 3}",
            "a" if i % 2 else "b",
            200,
            latency_ms=1.0 + i,
            batch_size=2,
            predicted=i % 10,
        )
        for i in range(6)
    ]
    store.record(rows)
    assert store.add_feedback("r1", 1) == "added"
    assert store.add_feedback("r1", 1) == "same"
    assert store.add_feedback("r1", 2) == "conflict"
    assert store.add_feedback("nope", 1) == "unknown"
    store.set_traffic({"a": 90.0, "b": 10.0}, "start", "ramp started", {"status": "ramping"})
    store.set_traffic({"a": 100.0, "b": 0.0}, "rollback", "rolled back", {"status": "rb"})
    df = store.exposures(since=102.0)
    assert list(df["request_id"]) == ["r2", "r3", "r4", "r5"]
    assert store.exposures()["label"].notna().sum() == 1


def _check_compare_and_set(store: Store) -> None:
    _, _, read_at = store.state()
    assert store.set_traffic({"a": 50.0, "b": 50.0}, "manual", "by hand", None)
    # A ramp check that read the state before the hand-set split does not overwrite it.
    assert not store.set_traffic({"a": 0.0, "b": 100.0}, "promote", "late", {}, expect=read_at)
    traffic, ramp, now = store.state()
    assert traffic == {"a": 50.0, "b": 50.0} and ramp is None
    assert store.set_traffic(
        {"a": 100.0, "b": 0.0}, "rollback", "rolled back", {"status": "rb"}, expect=now
    )


def _check_reopened(store: Store) -> None:
    traffic, ramp, _ = store.state()
    assert traffic == {"a": 100.0, "b": 0.0} and ramp == {"status": "rb"}
    assert [e.kind for e in store.events()] == ["start", "rollback", "manual", "rollback"]
    assert store.counts() == {"requests": 6, "feedback": 1}


def test_the_sqlite_store_keeps_everything_across_reopening(tmp_path):
    url = sqlite_url(tmp_path / "serving.db")
    _exercise(Store(url, "d"))
    _check_compare_and_set(Store(url, "d"))
    _check_reopened(Store(url, "d"))
    assert Store(url, "other").state() is None  # deployments share a file, not rows


def test_the_postgresql_store_keeps_everything_across_reopening(postgres):
    _exercise(Store(postgres.url, "pgdep"))
    _check_compare_and_set(Store(postgres.url, "pgdep"))
    _check_reopened(Store(postgres.url, "pgdep"))


@pytest.mark.parametrize(
    "path", sorted((REPO / "configs" / "deploy").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_deployment_configs_are_valid(path: Path) -> None:
    config = load_deploy_config(path)
    assert config.ramp is None or config.ramp.candidate in {v.name for v in config.variants}


def test_a_bad_deployment_is_refused_in_one_line_and_writes_nothing(tmp_path):
    from tests.conftest import run_cli

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: x\nvariants: [{{name: a, export: {tmp_path}}}]\n")
    runs = tmp_path / "runs"
    for args, words in (
        ((bad,), "variant a: " + str(tmp_path) + " has no model_card.json"),
        ((tmp_path / "missing.yaml",), "not found"),
        (("status", "ghost"), "no deployment 'ghost'"),
        (("set-traffic", "ghost", "a=1"), "no deployment 'ghost'"),
    ):
        proc = run_cli("deploy", *args, "--runs-dir", runs)
        assert proc.returncode == 2, proc.stderr
        assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (runs / "deployments" / "x").exists()
