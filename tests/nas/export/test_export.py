"""Full-fidelity training and export in every format this machine runs, checked on the files."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from latency_predictors.backends.openvino import bf16_unavailable_reason
from nas.config import parse_config
from nas.export.compare import CompareOptions, compare
from nas.train.data import load_dataset, make_splits
from nas.train.proxy import train_proxy
from search_spaces import get_space
from tests.conftest import SMALL_CONFIG, deep_update, run_cli

# Trained long enough on digits that top-1 means something (about 0.85 validation accuracy).
GOOD = {
    "name": "good",
    "training": {"epochs": 6, "optimizer": "adamw", "lr": 0.005, "weight_decay": 0.01},
    "search": {"n_trials": 2},
}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good")
    config = root / "good.yaml"
    config.write_text(yaml.safe_dump(deep_update(SMALL_CONFIG, GOOD)))
    proc = run_cli("search", config, "--runs-dir", root / "runs")
    assert proc.returncode == 0, proc.stderr
    return root / "runs" / "good"


def test_checkpointed_training_resumes_to_the_same_result(tmp_path):
    config = parse_config(deep_update(SMALL_CONFIG, GOOD), source="test")
    space = get_space("efficientnet", config.space)
    splits = make_splits(load_dataset(config.data), config.data, 0)
    cand = space.sample(__import__("numpy").random.default_rng(0))
    recipe = config.training.model_copy(update={"epochs": 3})

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return space.build(cand, 10, 1, input_size=8)

    whole = fresh()
    straight = train_proxy(whole, splits, recipe, seed=0)

    class Stop(Exception):
        pass

    def stop_after_first(epoch: int, *_: object) -> None:
        if epoch == 1:
            raise Stop

    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Stop):
        train_proxy(fresh(), splits, recipe, seed=0, checkpoint=ckpt, on_epoch=stop_after_first)
    assert ckpt.is_file()
    resumed_model = fresh()
    resumed = train_proxy(resumed_model, splits, recipe, seed=0, checkpoint=ckpt)
    assert resumed.epoch_accuracy == straight.epoch_accuracy
    for a, b in zip(whole.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_train_uses_all_the_data_and_export_picks_it_up(good_run, tmp_path):
    proc = run_cli("train", good_run, "--trial", "0", "--epochs", "3")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((good_run / "trained" / "00000" / "train.json").read_text())
    assert record["train_images"] == 1797 - 300  # digits minus the validation images
    assert record["val_images"] == 300 and len(record["epoch_accuracy"]) == 3
    assert not (good_run / "trained" / "00000" / "checkpoint.pt").exists()
    again = run_cli("train", good_run, "--trial", "0", "--epochs", "3")
    assert again.returncode == 0 and f"{record['accuracy']:.4f}" in again.stdout  # kept

    out = tmp_path / "onnx"
    proc = run_cli("export", good_run, "--trial", "0", "--out", out)
    assert proc.returncode == 0, proc.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["fidelity"] == "full (nas train)"
    assert card["training"]["train_images"] == 1497
    assert card["exported_accuracy"]["value"] == pytest.approx(record["accuracy"], abs=1 / 300)
    assert [b["batch_size"] for b in card["batch_sweep"]["batches"]] == [1, 8, 32]
    assert all(b["images_per_s"] > 0 for b in card["batch_sweep"]["batches"])
    assert card["exported_latency"]["p50_ms"] > 0
    md = (out / "MODEL_CARD.md").read_text()
    assert f"{card['exported_accuracy']['value']:.4f}" in md and "Batch sweep" in md
    example = subprocess.run(
        [sys.executable, str(out / "example.py")], capture_output=True, text=True, check=False
    )
    assert example.returncode == 0, example.stderr
    assert example.stdout.strip() in card["inputs"]["classes"]
    searched = run_cli(
        "export", good_run, "--trial", "0", "--out", tmp_path / "s", "--weights", "search"
    )
    assert searched.returncode == 0, searched.stderr
    card = json.loads((tmp_path / "s" / "model_card.json").read_text())
    assert card["training"]["fidelity"] == "proxy (the search's weights)"
    bad_size = run_cli("train", good_run, "--trial", "0", "--train-size", "5000")
    assert bad_size.returncode == 2 and "allowed 1..1497" in bad_size.stderr


@pytest.mark.parametrize(
    ("fmt", "precision", "suffix"),
    [
        ("onnx-fp16", None, ".onnx"),
        ("openvino", "fp32", ".xml"),
        ("openvino", "bf16", ".xml"),
        ("torchscript", None, ".pt"),
        ("pt2", None, ".pt2"),
    ],
)
def test_every_format_is_checked_and_measured_on_its_file(
    good_run, tmp_path, fmt, precision, suffix
):
    out = tmp_path / fmt
    args = [
        "export",
        good_run,
        "--trial",
        "1",
        "--out",
        out,
        "--format",
        fmt,
        "--weights",
        "search",
    ]
    if precision:
        args += ["--precision", precision]
    proc = run_cli(*args)
    if precision == "bf16" and bf16_unavailable_reason() is not None:
        # A CPU without bf16 kernels: refused in one line before anything is written.
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "openvino at bf16 cannot run here" in lines[0]
        assert not out.exists()
        return
    assert proc.returncode == 0, proc.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["format"]["name"] == fmt and (out / f"model_proxy{suffix}").is_file()
    proxy = card["files"][f"model_proxy{suffix}"]["parity"]
    assert proxy["passed"] and proxy["enforced"]
    if fmt in ("torchscript", "pt2") or precision == "fp32":
        assert proxy["max_rel_diff"] <= 1e-4
    search_acc = json.loads(json.dumps(card["accuracy"]))["value"]
    assert abs(card["exported_accuracy"]["value"] - search_acc) <= 0.02
    if suffix == ".xml":
        assert (out / "model_proxy.bin").is_file()


def test_quantized_export_below_the_agreement_floor_fails_with_the_numbers(good_run, tmp_path):
    out = tmp_path / "int8"

    def export(floor: str):
        return run_cli(
            "export", good_run, "--trial", "1", "--out", out, "--format", "onnx-int8",
            "--weights", "search", "--min-agreement", floor,
        )  # fmt: skip

    proc = export("1.0")
    if proc.returncode == 0:  # every validation image agreed: nothing to refuse
        assert (
            json.loads((out / "model_card.json").read_text())["files"]["model_proxy.onnx"][
                "parity"
            ]["top1_agreement"]
            == 1.0
        )
        return
    assert proc.returncode == 2
    assert "parity failed: top-1 agrees with torch on" in proc.stderr
    assert "needs 100%" in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".int8.*"))  # nothing half-written
    ok = export("0.8")
    assert ok.returncode == 0, ok.stderr
    files = json.loads((out / "model_card.json").read_text())["files"]
    assert files["model_proxy.onnx"]["parity"]["top1_agreement"] >= 0.8


def test_export_refusals_are_one_line(good_run, tmp_path):
    cases = [
        (["--format", "tensorrt"], "format tensorrt needs the 'tensorrt' package"),
        (["--format", "openvino", "--precision", "fp16"], "format openvino has no precision fp16"),
        (["--weights", "trained", "--trial", "1"], "trial 1 has no full-fidelity weights"),
        (["--min-agreement", "1.5"], "--min-agreement 1.5"),
        (["--out", good_run / "trials", "--force"], "overlaps the run directory"),
        (["--out", good_run.parent, "--force"], "overlaps the run directory"),
    ]
    for extra, message in cases:
        args = ["export", good_run, *extra]
        if "--out" not in extra:
            args += ["--out", tmp_path / "x"]
        if "--trial" not in extra:
            args += ["--trial", "1"]
        proc = run_cli(*args)
        assert proc.returncode == 2, (extra, proc.stderr)
        assert message in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def two_exports(good_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    for name, extra in (("onnx", []), ("ov", ["--format", "openvino", "--precision", "fp32"])):
        proc = run_cli(
            "export", good_run, "--trial", "1", "--out", root / name, "--weights", "search", *extra
        )
        assert proc.returncode == 0, proc.stderr
    return root / "onnx", root / "ov"


def test_profile_breaks_latency_down_by_layer(two_exports):
    for folder in two_exports:
        proc = run_cli("profile", folder, "--runs", "5")
        assert proc.returncode == 0, proc.stderr
        layers = pd.read_csv(folder / "profile.csv")
        assert len(layers) > 10 and (layers["us"] >= 0).all()
        assert layers["share"].sum() == pytest.approx(1.0)
        assert layers["us"].is_monotonic_decreasing
        assert "Conv" in " ".join(layers["op_type"])  # ONNX Conv, OpenVINO Convolution
        assert "<html>" in (folder / "profile.html").read_text()[:200].lower()
    bad = run_cli("profile", two_exports[0].parent)
    assert bad.returncode == 2 and "no model_card.json" in bad.stderr


def test_compare_tests_latency_and_accuracy_of_paired_variants(two_exports, tmp_path):
    onnx, ov = two_exports
    table = compare(CompareOptions(variants=(onnx, onnx, ov), rounds=2, repeats=5))
    assert list(table["variant"]) == ["onnx", "onnx", "ov", "timm efficientnet_b0 (fp32 ONNX)"]
    same = table.iloc[1]
    # The same file against itself: identical predictions, McNemar p = 1, interval around 1.
    assert same["accuracy_diff"] == 0 and same["mcnemar_p"] == 1.0
    assert same["ratio_ci_low"] <= same["ratio"] <= same["ratio_ci_high"]
    assert table.iloc[2]["accuracy"] == pytest.approx(table.iloc[0]["accuracy"], abs=0.01)
    b0 = table.iloc[3]
    assert math.isnan(b0["accuracy"]) and b0["size_mb"] > 10  # 5.3 M fp32 parameters
    assert b0["latency"] == "slower"  # B0 at the same shape against a tiny digits network
    assert (table["peak_rss_mb"] > table["model_rss_mb"]).all()
    report = tmp_path / "ab.html"
    proc = run_cli("compare", onnx, ov, "--rounds", "2", "--repeats", "5", "--report", report)
    assert proc.returncode == 0, proc.stderr
    assert "McNemar" in proc.stdout and report.is_file()
    lonely = run_cli("compare", onnx, "--no-baseline")
    assert lonely.returncode == 2 and "at least two variants" in lonely.stderr


def test_tensorrt_engine_export_where_a_gpu_is_present(good_run, tmp_path):
    from latency_predictors.backends.tensorrt import gpu_unavailable_reason

    reason = gpu_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path / "trt"
    proc = run_cli(
        "export",
        good_run,
        "--trial",
        "1",
        "--out",
        out,
        "--format",
        "tensorrt",
        "--precision",
        "fp16",
        "--weights",
        "search",
    )
    assert proc.returncode == 0, proc.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["format"]["runtime"] == "tensorrt" and (out / "model.engine").is_file()
    assert card["files"]["model_proxy.engine"]["parity"]["passed"]
