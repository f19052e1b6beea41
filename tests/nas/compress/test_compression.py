"""Compression: pruning, int8 quantization, and searches scored on the artifacts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from latency_predictors.backends.base import is_quantized
from latency_predictors.devices import measurement_backend, precision_device
from latency_predictors.onnx_export import export_onnx
from nas.compress.compressor import Compressor
from nas.compress.pruning import channel_signature, prune
from nas.compress.quantization import quantize_artifact, runtime_accuracy
from nas.compress.space import Compression, CompressionSpace
from nas.config import CompressionConfig, PruningConfig, QuantizationConfig
from nas.errors import CompressionError, LatencyError
from nas.train.proxy import train_proxy
from nas.train.weights import history_path, load_history, replay
from tests.conftest import SMALL_ARCH, SMALL_CONFIG, deep_update, run_cli

COMPRESSION = {
    "pruning": {"ratios": [0.5], "finetune_epochs": 1},
    "quantization": {"precisions": ["fp32", "int8"], "calibration_batches": 2},
}


def _convs(model: torch.nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def test_pruning_makes_the_network_physically_smaller_and_replays_on_the_deployment_shape(small):
    _, space, splits = small
    cand = space.decode(SMALL_ARCH)
    torch.manual_seed(0)
    proxy = space.build(cand, 10, 1, input_size=8)
    before = sum(p.numel() for p in proxy.parameters())
    history = prune(proxy, splits.train_x[:2], (0.5,), PruningConfig(ratios=(0.5,)))
    after = sum(p.numel() for p in proxy.parameters())
    assert 0.15 < after / before < 0.5  # channels in and out of most layers halve
    assert proxy(splits.val_x[:4]).shape == (4, 10)
    # The SE block's gate still multiplies channel for channel: inference ran above; the
    # exported graph holds the narrower weights.
    deploy = space.build(cand, 1000, 3)
    replay(deploy, torch.zeros(1, 3, 32, 32), history)
    assert _convs(deploy)[1:] == _convs(proxy)[1:]
    assert channel_signature(deploy) != channel_signature(space.build(cand, 1000, 3))
    assert deploy(torch.zeros(1, 3, 32, 32)).shape == (1, 1000)


def test_per_stage_ratios_leave_unpruned_stages_whole(small):
    _, space, splits = small
    cand = space.decode(SMALL_ARCH)
    whole = space.build(cand, 10, 1, input_size=8)
    cut = space.build(cand, 10, 1, input_size=8)
    ratios = (0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0)
    prune(cut, splits.train_x[:2], ratios, PruningConfig(ratios=(0.5,), per_stage=True))
    whole_dw = [b.conv_dw.out_channels for s in whole.blocks for b in s]
    cut_dw = [b.conv_dw.out_channels for s in cut.blocks for b in s]
    stage = [i for i, s in enumerate(whole.blocks) for _ in s]
    assert all(w == c for w, c, i in zip(whole_dw, cut_dw, stage, strict=True) if i != 2)
    assert all(c < w for w, c, i in zip(whole_dw, cut_dw, stage, strict=True) if i == 2)


def test_gradual_pruning_calls_back_between_steps(small):
    _, space, splits = small
    model = space.build(space.decode(SMALL_ARCH), 10, 1, input_size=8)
    widths = []
    cfg = PruningConfig(ratios=(0.5,), iterative_steps=3, finetune_epochs=3)
    prune(
        model,
        splits.train_x[:2],
        (0.5,),
        cfg,
        between_steps=lambda s, k: widths.append(model.conv_head.out_channels),
    )
    assert len(widths) == 3 and widths[0] > widths[1] > widths[2]


def test_int8_artifact_is_quantized_and_scored_by_the_runtime(small, tmp_path):
    config, space, splits = small
    torch.manual_seed(0)
    model = space.build(space.decode(SMALL_ARCH), 10, 1, input_size=8)
    recipe = {"epochs": 8, "optimizer": "adamw", "lr": 0.005, "weight_decay": 0.01}
    train_proxy(model, splits, config.training.model_copy(update=recipe), seed=0)
    fp32 = export_onnx(model, (1, 1, 8, 8), tmp_path / "m.onnx", dynamic_batch=True)
    q = QuantizationConfig(precisions=("fp32", "int8"), calibration_batches=4)
    int8 = quantize_artifact(fp32, tmp_path / "q.onnx", splits.train_x[:128], q)
    assert is_quantized(int8) and not is_quantized(fp32)
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    ort = measurement_backend("cpu-ort-fp32", threads=1, warmup=1, repeats=3, batch_size=1)
    acc32 = runtime_accuracy(ort, fp32, splits.val_x, splits.val_y)
    acc8 = runtime_accuracy(ort, int8, splits.val_x, splits.val_y)
    with torch.no_grad():
        torch_acc = float((model(splits.val_x).argmax(1) == splits.val_y).float().mean())
    assert acc32 == pytest.approx(torch_acc, abs=1 / len(splits.val_y))
    assert acc32 > 0.5  # trained: far above chance (0.1)
    assert abs(acc8 - acc32) < 0.1  # int8 keeps most of it, and it is not the fp32 number
    ov = measurement_backend("cpu-ov-int8", threads=1, warmup=1, repeats=3, batch_size=1)
    assert abs(runtime_accuracy(ov, int8, splits.val_x, splits.val_y) - acc8) < 0.05


def test_quantization_failure_names_the_step(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(CompressionError, match="int8 pre-processing failed"):
        quantize_artifact(bad, tmp_path / "q.onnx", torch.zeros(4, 1, 8, 8), QuantizationConfig())


def test_int8_devices_time_a_quantized_model_as_is(small, tmp_path):
    _, space, _ = small
    model = space.build(space.decode(SMALL_ARCH), 10, 3)
    path = export_onnx(model, (1, 3, 32, 32), tmp_path / "m.onnx")
    backend = measurement_backend("cpu-ort-int8", threads=1, warmup=1, repeats=3, batch_size=1)
    result = backend.measure(path, (1, 3, 32, 32))
    assert result.ok and result.device.precision == "int8" and result.p50_ms > 0


def test_precision_devices_follow_the_runtime():
    assert precision_device("cpu-ort-fp32", "int8") == "cpu-ort-int8"
    assert precision_device("cpu-ov-fp32", "bf16") == "cpu-ov-bf16"
    assert precision_device("gpu-trt-fp32", "fp16") == "gpu-trt-fp16"
    with pytest.raises(LatencyError, match="precision fp16 cannot run on onnxruntime.*fp32, int8"):
        precision_device("cpu-ort-fp32", "fp16")


def test_compression_space_round_trips_and_rejects_what_it_cannot_draw():
    cfg = CompressionConfig.model_validate(COMPRESSION)
    space = CompressionSpace(cfg, n_stages=7)
    assert [d.name for d in space.dimensions()] == ["prune_ratio", "precision"]
    c = Compression((0.5,), "int8")
    assert space.from_params(space.to_params(c)) == c
    assert Compression.decode(c.encode()) == c
    for text, match in (
        ("p0.3_int8", "prune ratio 0.3 not in"),
        ("p0.5_bf16", "precision not in"),
        ("int8", "expected p<ratio>_<precision>"),
    ):
        with pytest.raises(ValueError, match=match):
            space.to_params(Compression.decode(text))
    per_stage = CompressionSpace(
        CompressionConfig.model_validate({"pruning": {"ratios": [0.25], "per_stage": True}}), 7
    )
    assert [d.name for d in per_stage.dimensions()] == [f"s{i}_prune_ratio" for i in range(7)]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"compression": {"pruning": {"ratios": [0.5, 1.0]}}},
            "compression.pruning.ratios = [0.5, 1.0]: [1.0] outside (0, 1)",
        ),
        (
            {"compression": {"pruning": {"ratios": [0.0]}}},
            "compression.pruning.ratios = [0.0]: [0.0] outside (0, 1)",
        ),
        (
            {"compression": {"quantization": {"precisions": ["fp32", "fp16"]}}},
            "precision fp16 cannot run on onnxruntime (device cpu-ort-fp32); onnxruntime runs: "
            "fp32, int8",
        ),
        (
            {"compression": COMPRESSION, "latency": {"mode": "predicted"}},
            "set latency.mode: measured",
        ),
        (
            {
                "compression": COMPRESSION,
                "search": {"seed_candidates": [SMALL_ARCH + "|p0.3_int8"]},
            },
            "prune ratio 0.3 not in (0.0, 0.5)",
        ),
        (
            {"compression": {**COMPRESSION, "distillation": {"teacher": "timm:no_such_net"}}},
            "timm has no model 'no_such_net'",
        ),
    ],
)
def test_bad_compression_settings_fail_before_any_training(
    write_config, tmp_path, changes, message
):
    runs = tmp_path / "runs"
    proc = run_cli("search", write_config(changes), "--runs-dir", runs)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (runs / "small").exists()


def test_calibration_images_of_the_wrong_shape_fail_before_training(write_config, tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.zeros((16, 3, 8, 8), dtype=np.uint8))  # digits are 1 x 8 x 8
    changes = {
        "compression": deep_update(COMPRESSION, {"quantization": {"calibration_path": str(calib)}})
    }
    runs = tmp_path / "runs"
    proc = run_cli("search", write_config(changes), "--runs-dir", runs)
    assert proc.returncode == 2
    assert "images are uint8 (16, 3, 8, 8); need uint8 (N, 1, 8, 8)" in proc.stderr
    assert not (runs / "small").exists()


@pytest.fixture(scope="module")
def compressed_run(tmp_path_factory):
    """A 3-trial search over architecture x pruning x precision with distillation, seeded so
    that a pruned int8, an unpruned int8 and an unpruned fp32 trial are all evaluated."""
    import yaml

    root = tmp_path_factory.mktemp("compressed")
    changes = {
        "name": "comp",
        "compression": {
            **COMPRESSION,
            "distillation": {"teacher": "timm:resnet18", "teacher_epochs": 1},
        },
        "search": {
            "n_trials": 3,
            "seed_candidates": [
                SMALL_ARCH + "|p0.5_int8",
                SMALL_ARCH + "|p0.0_int8",
                SMALL_ARCH + "|p0.0_fp32",
            ],
        },
    }
    config = root / "comp.yaml"
    config.write_text(yaml.safe_dump(deep_update(SMALL_CONFIG, changes)))
    proc = run_cli("search", config, "--runs-dir", root / "runs")
    assert proc.returncode == 0, proc.stderr
    return root / "runs" / "comp", proc.stdout + proc.stderr


def test_compressed_search_scores_the_artifacts(compressed_run):
    run, stdout = compressed_run
    df = pd.read_csv(run / "trials.csv").set_index("number")
    assert list(df["state"]) == ["COMPLETE"] * 3
    pruned8, whole8, whole32 = df.loc[0], df.loc[1], df.loc[2]
    assert (pruned8["prune_ratio"], pruned8["precision"]) == (0.5, "int8")
    assert (whole8["prune_ratio"], whole8["precision"]) == (0.0, "int8")
    assert pruned8["device"] == "cpu-ort-int8" and whole32["device"] == "cpu-ort-fp32"
    # The same architecture and training: the parents agree, the artifacts do not.
    assert pruned8["accuracy_trained"] == whole8["accuracy_trained"] == whole32["accuracy_trained"]
    assert pruned8["params"] < 0.5 * pruned8["params_parent"]
    assert whole8["params"] == whole8["params_parent"]
    assert not math.isnan(pruned8["accuracy_pruned"]) and math.isnan(whole8["accuracy_pruned"])
    # Unpruned candidates fine-tune for as long as pruned ones; int8 scores its own artifact.
    assert whole8["accuracy_finetuned"] == whole32["accuracy_finetuned"]
    assert whole32["accuracy"] == pytest.approx(whole32["accuracy_finetuned"], abs=0.004)
    assert whole32["latency_p50_ms"] == whole32["latency_parent_ms"]
    for row in (pruned8, whole8):
        assert row["speedup_vs_parent"] == pytest.approx(
            row["latency_parent_ms"] / row["latency_p50_ms"]
        )
        assert bool(row["slower_than_parent"]) == (row["speedup_vs_parent"] < 1)
        if row["slower_than_parent"]:
            assert "SLOWER than its fp32 parent" in stdout
    html = (run / "pareto.html").read_text()
    assert "fp32 parent" in html
    teacher = json.loads((run / "teacher.json").read_text())
    assert teacher["identity"]["teacher"] == "timm:resnet18" and 0 <= teacher["accuracy"] <= 1
    assert history_path(run / "trials" / "00000" / "weights.pt").is_file()  # pruned
    assert not history_path(run / "trials" / "00001" / "weights.pt").exists()  # unpruned


def test_a_pruned_int8_trial_exports_with_its_channels(compressed_run, tmp_path):
    run, _ = compressed_run
    out = tmp_path / "export"
    # The trial's precision picks the format (onnx-int8); a 1-epoch digits network agrees with
    # its fp32 self on too few images for the default floor, which is tested elsewhere.
    proc = run_cli("export", run, "--trial", "0", "--out", out, "--min-agreement", "0.5")
    assert proc.returncode == 0, proc.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["format"]["name"] == "onnx-int8"
    assert card["compression"]["precision"] == "int8"
    assert card["compression"]["prune_ratio"] == 0.5
    assert is_quantized(out / "model.onnx") and is_quantized(out / "model_proxy.onnx")
    assert card["files"]["model_proxy.onnx"]["parity"]["top1_agreement"] >= 0.5
    history = load_history(history_path(run / "trials" / "00000" / "weights.pt"))
    assert history and all(isinstance(i, list) for _, _, i in history)
    # The exported network has the pruned channels: far fewer weights than the same
    # architecture, unpruned, at the same precision (trial 1).
    unpruned = tmp_path / "unpruned"
    proc = run_cli("export", run, "--trial", "1", "--out", unpruned, "--min-agreement", "0.5")
    assert proc.returncode == 0, proc.stderr

    def weights(path: Path) -> int:
        graph = onnx.load(str(path)).graph
        return sum(int(np.prod(t.dims)) for t in graph.initializer if len(t.dims) == 4)

    assert weights(out / "model.onnx") < 0.5 * weights(unpruned / "model.onnx")


def test_openvino_int8_through_nncf_is_an_ir_scored_by_openvino(small, tmp_path):
    config, space, splits = small
    cfg = CompressionConfig.model_validate(
        {"quantization": {"precisions": ["fp32", "int8"], "openvino_int8": "nncf"}}
    )
    backends = {
        p: measurement_backend(f"cpu-ov-{p}", threads=1, warmup=1, repeats=3, batch_size=1)
        for p in ("fp32", "int8")
    }
    comp = Compressor(
        config=cfg,
        space=space,
        deployment=config.deployment.target(),
        backends=backends,
        calibration=splits.train_x[:64],
    )
    torch.manual_seed(0)
    model = space.build(space.decode(SMALL_ARCH), 10, 1, input_size=8)
    recipe = {"epochs": 6, "optimizer": "adamw", "lr": 0.005, "weight_decay": 0.01}
    train_proxy(model, splits, config.training.model_copy(update=recipe), seed=0)
    path = comp.artifact(model, (1, 1, 8, 8), "int8", tmp_path / "proxy", dynamic=True)
    assert path.suffix == ".xml" and is_quantized(path)
    acc8 = comp.artifact_accuracy(model, splits, "int8", tmp_path)
    acc32 = comp.artifact_accuracy(model, splits, "fp32", tmp_path)
    assert acc32 > 0.5 and abs(acc8 - acc32) < 0.1
    result = backends["int8"].measure(path, (1, 1, 8, 8))
    assert result.ok and result.device.precision == "int8"
