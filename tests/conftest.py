"""Shared fixtures: small real configs on the digits dataset and the CLI as a subprocess."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from latency_predictors.deployment import Deployment
from search_spaces import SearchSpace, get_space
from search_spaces.efficientnet import EfficientNetSpaceConfig

REPO = Path(__file__).resolve().parents[1]

# A search that runs in seconds: digits (8x8), 1 epoch, a narrow space, a small deployment shape.
SMALL_CONFIG: dict[str, Any] = {
    "name": "small",
    "seed": 0,
    "space": {
        "scaling": {
            "mode": "independent",
            "width": [0.25, 0.5],
            "depth": 0.5,
            "resolution": [32, 48],
        },
        "base_resolution": 32,
        "min_feature_size": 2,
        "choices": {"kernel": [3, 5], "expansion": [3, 6], "act": ["relu6", "hswish"]},
    },
    "data": {"dataset": "digits", "train_size": 600, "val_size": 300},
    "training": {"epochs": 1, "batch_size": 64, "threads": 1},
    "deployment": {"num_classes": 10},
    "latency": {"warmup": 1, "repeats": 3},
    "search": {"n_trials": 3, "sampler": "random"},
}


# SMALL_CONFIG's changes for a supernet search: a short supernet training, one activation.
SUPERNET_SETTINGS: dict[str, Any] = {
    "evaluation": "supernet",
    "supernet": {"epochs": 1, "random_subnets": 1},
    "space": {"choices": {"act": ["relu6"]}},
}

# Every choice of the EfficientNet space with two values: the supernet tests slice all of them.
ELASTIC_CHOICES: dict[str, list[Any]] = {
    "kernel": [3, 5],
    "expansion": [3, 6],
    "se": [0.0, 0.25],
    "act": ["relu6", "hswish"],
    "repeats_delta": [-1, 0],
}

# A candidate of SMALL_CONFIG's space with SE, every activation and both block types.
SMALL_ARCH = (
    "w0.5_d0.5_r32_st32_hd1280_nsw-ds_r1_k3_s1_e1_c16_se0.25_nr6-ir_r2_k3_s2_e6_c24_nr6-"
    "ir_r2_k5_s2_e6_c40_se0.25_nhs-ir_r3_k3_s2_e6_c80_nhs-ir_r3_k5_s1_e6_c112_se0.25_nr6-"
    "ir_r4_k5_s2_e6_c192_se0.25_nhs-ir_r1_k3_s1_e6_c320_nr6"
)

# SMALL_CONFIG's space and deployment shape as the plain values the standalone packages take.
SMALL_DEPLOYMENT = Deployment(batch_size=1, channels=3, num_classes=10)


def small_space() -> SearchSpace:
    return get_space("efficientnet", EfficientNetSpaceConfig.model_validate(SMALL_CONFIG["space"]))


def deep_update(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


# Test files that start Ray (a local instance or the loopback cluster). `ray stop --force` ends
# every Ray process on the machine, so under pytest-xdist these files run one after another in
# one test process, as if they were one file. A test file that takes the `cluster` fixture
# belongs here.
RAY_TESTS = ("tests/nas/cluster/", "tests/nas/serving/", "tests/nas/service/test_ray_jobs.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile` (scripts/test's): each file whole in one test process, so its
    module-scoped fixtures are built once, and the Ray test files together in one."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class RayTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "ray" if path.startswith(RAY_TESTS) else path

    return RayTogether(config, log)


@pytest.fixture
def write_config(tmp_path: Path):
    """write_config(changes=None, name="config.yaml") -> path of a small config with changes."""

    def write(changes: dict[str, Any] | None = None, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(deep_update(SMALL_CONFIG, changes or {})))
        return path

    return write


def run_cli(
    *args: str | Path, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run `nas ARGS` in a real subprocess and capture its output."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "nas.cli", *map(str, args)],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed 3-trial search on digits, shared by the tests that read runs."""
    root = tmp_path_factory.mktemp("finished")
    config = root / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL_CONFIG))
    proc = run_cli("search", config, "--runs-dir", root / "runs")
    assert proc.returncode == 0, proc.stderr
    return root / "runs" / "small"


@pytest.fixture(scope="session")
def small_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A latency table of SMALL_CONFIG's space on cpu-ort-fp32, profiled through the CLI."""
    root = tmp_path_factory.mktemp("table")
    config = root / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL_CONFIG))
    out = root / "small.csv"
    proc = run_cli(
        "latency",
        "profile",
        "--device",
        "cpu-ort-fp32",
        "--config",
        config,
        "--out",
        out,
        "--calibration",
        "8",
    )
    assert proc.returncode == 0, proc.stderr
    return out
