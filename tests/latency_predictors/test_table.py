"""Latency tables: profiling (with resume), loading, and every way a table can be wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hwnas_base.errors import LatencyError, TableError
from latency_predictors.deployment import Deployment
from latency_predictors.devices import measurement_backend
from latency_predictors.predictors import LookupTablePredictor
from latency_predictors.profile import partial_path, profile_space
from latency_predictors.sources import check_table_device, table_predictor
from latency_predictors.table import COLUMNS, load_table
from search_spaces import get_space
from search_spaces.efficientnet import EfficientNetSpaceConfig
from tests.conftest import SMALL_CONFIG, SMALL_DEPLOYMENT, deep_update, run_cli, small_space


def copy_table(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def test_profiled_table_covers_the_space_and_loads(small_table: Path) -> None:
    table = load_table(small_table)
    space = small_space()
    assert table.device.name == "cpu-ort-fp32"
    assert table.device.runtime == "onnxruntime"
    assert list(table.frame.columns) == list(COLUMNS)
    assert len(table.calibration) == 8
    assert (table.frame["p50_ms"] > 0).all()
    # Every operator of random candidates is in the table, each exactly once.
    rng = np.random.default_rng(3)
    for _ in range(20):
        cand = space.sample(rng)
        keys = [op.key for op in space.operators(cand, 10, 3)]
        assert table.missing(keys) == []
    assert not table.frame.duplicated(
        ["op", "input_size", "cin", "cout", "kernel", "stride", "expansion", "se", "act"]
    ).any()
    # The table matches the device and shape it was profiled for.
    check_table_device(table, device="cpu-ort-fp32", threads=1, deployment=SMALL_DEPLOYMENT)
    predictor, _ = table_predictor(
        small_table, space, SMALL_DEPLOYMENT, device="cpu-ort-fp32", threads=1
    )
    assert predictor.n_fit_ == 8


class CountingBackend:
    """The real ONNX Runtime backend, counting its calls and interrupting after `stop_after`."""

    def __init__(self, stop_after: int | None) -> None:
        self.inner = measurement_backend(
            "cpu-ort-fp32", threads=1, warmup=0, repeats=3, batch_size=1
        )
        self.device = self.inner.device
        self.calls = 0
        self.stop_after = stop_after

    def measure(self, path: Path, shape: tuple[int, ...]):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        return self.inner.measure(path, shape)


def test_interrupted_profile_resumes_without_measuring_twice(tmp_path: Path) -> None:
    narrow = deep_update(SMALL_CONFIG["space"], {"scaling": {"width": [0.25], "resolution": [32]}})
    space = get_space("efficientnet", EfficientNetSpaceConfig.model_validate(narrow))
    out = tmp_path / "t.csv"
    kwargs = {"num_classes": 10, "in_chans": 3, "space_config": {}, "calibration": 2}
    for _ in range(2):  # stopped before its first measurement, twice: the header only
        with pytest.raises(KeyboardInterrupt):
            profile_space(space, CountingBackend(stop_after=0), out, **kwargs)
    assert len(partial_path(out).read_text().splitlines()) == 1
    first = CountingBackend(stop_after=7)
    with pytest.raises(KeyboardInterrupt):
        profile_space(space, first, out, **kwargs)
    assert not out.exists() and partial_path(out).is_file()
    second = CountingBackend(stop_after=None)
    profile_space(space, second, out, **kwargs)
    table = load_table(out)
    assert first.calls == 7
    assert second.calls == len(table) + 2 - 7  # operators + calibration, minus the first 7
    assert not partial_path(out).exists()


def _broken(small_table: Path, tmp_path: Path, edit) -> Path:
    path = copy_table(small_table, tmp_path)
    frame = pd.read_csv(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    result = edit(frame, meta)
    if isinstance(result, str):
        path.write_text(result)
    else:
        (result if isinstance(result, pd.DataFrame) else frame).to_csv(path, index=False)
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda f, m: f.drop(columns=["p90_ms"]), "missing columns ['p90_ms']"),
        (lambda f, m: f.rename(columns={"mean_ms": "mean_us"}), "not in ms"),
        (lambda f, m: f.loc.__setitem__((3, "p50_ms"), float("nan")), "row 5: p50_ms"),
        (lambda f, m: f.loc.__setitem__((0, "p50_ms"), -1.0), "must be positive"),
        (lambda f, m: m.__setitem__("unit", "us"), "unit 'us' unsupported"),
        (lambda f, m: m.pop("device"), "device identity"),
        (lambda f, m: f.to_csv(index=False)[:-40] + '\n"unterminated', "not a readable CSV"),
    ],
)
def test_bad_tables_fail_with_file_and_problem(
    small_table: Path,
    tmp_path: Path,
    edit,
    expected: str,
) -> None:
    path = _broken(small_table, tmp_path, edit)
    with pytest.raises(TableError) as info:
        load_table(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_missing_side_file_and_missing_operator(small_table: Path, tmp_path: Path) -> None:
    path = copy_table(small_table, tmp_path)
    path.with_suffix(".json").unlink()
    with pytest.raises(TableError, match="side file"):
        load_table(path)

    path = _broken(small_table, tmp_path, lambda f, m: f.drop(index=[f.index[-1]]))
    space = small_space()
    predictor = LookupTablePredictor(load_table(path), space, SMALL_DEPLOYMENT)
    with pytest.raises(TableError, match="lacks 1 operator"):
        predictor.check_space(list(space.covering_candidates()))


def test_table_for_another_device_or_shape_is_refused(small_table: Path, tmp_path: Path) -> None:
    table = load_table(small_table)
    asked = {"device": "cpu-ort-fp32", "threads": 1, "deployment": SMALL_DEPLOYMENT}
    with pytest.raises(TableError, match="1 threads, the config asks for 2"):
        check_table_device(table, **{**asked, "threads": 2})
    with pytest.raises(
        TableError, match="device 'cpu-ort-fp32', the config asks for 'cpu-ov-fp32'"
    ):
        check_table_device(table, **{**asked, "device": "cpu-ov-fp32"})
    with pytest.raises(TableError, match="classes"):
        check_table_device(table, **{**asked, "deployment": Deployment(num_classes=5)})
    with pytest.raises(TableError, match="batch size 1, the config deploys at 4"):
        check_table_device(table, **{**asked, "deployment": Deployment(4, 3, 10)})


def test_cli_refuses_bad_table_and_unknown_device(
    small_table: Path, tmp_path: Path, write_config
) -> None:
    bad = _broken(small_table, tmp_path, lambda f, m: f.loc.__setitem__((2, "std_ms"), -3.0))
    config = write_config({"latency": {"mode": "predicted", "table": str(bad)}})
    runs = tmp_path / "runs"
    proc = run_cli("search", config, "--runs-dir", runs)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "std_ms" in proc.stderr and str(bad) in proc.stderr
    assert not (runs / "small").exists()

    proc = run_cli(
        "latency",
        "profile",
        "--device",
        "tpu-v9",
        "--space",
        "efficientnet",
        "--out",
        tmp_path / "x.csv",
    )
    assert proc.returncode == 2
    assert "tpu-v9" in proc.stderr and "cpu-ort-fp32" in proc.stderr
    assert not (tmp_path / "x.csv").exists()


def test_tensorrt_without_a_gpu_says_what_is_missing() -> None:
    from latency_predictors.backends.tensorrt import gpu_unavailable_reason

    reason = gpu_unavailable_reason()
    if reason is None:
        pytest.skip("a GPU with TensorRT is present; the GPU test covers this device")
    with pytest.raises(LatencyError, match="gpu-trt-fp16.*cannot be measured here"):
        measurement_backend("gpu-trt-fp16", threads=1, warmup=1, repeats=3, batch_size=1)
