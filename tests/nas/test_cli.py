"""The `nas` command end to end, in real subprocesses on the digits dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pandas as pd
import pytest
import torch

from nas.config import load_config
from search_spaces import get_space
from tests.conftest import run_cli


def test_search_writes_every_output(finished_run: Path) -> None:
    for name in (
        "config.yaml",
        "study.db",
        "trials.csv",
        "pareto.csv",
        "pareto.html",
        "search.log",
    ):
        assert (finished_run / name).is_file(), name
    trials = pd.read_csv(finished_run / "trials.csv")
    assert len(trials) == 3 and set(trials["state"]) == {"COMPLETE"}
    for col in (
        "candidate",
        "accuracy",
        "latency_p50_ms",
        "latency_p90_ms",
        "latency_std_ms",
        "params",
        "flops",
        "duration_s",
        "failure_reason",
        "feasible",
        "on_front",
    ):
        assert col in trials.columns
    assert (trials["accuracy"].between(0, 1)).all() and (trials["latency_p50_ms"] > 0).all()
    assert (trials["latency_p90_ms"] >= trials["latency_p50_ms"]).all()
    front = pd.read_csv(finished_run / "pareto.csv")
    assert 1 <= len(front) <= 3
    assert set(front["number"]) == set(trials.loc[trials["on_front"], "number"])
    html = (finished_run / "pareto.html").read_text()
    assert "plotly" in html and "Pareto front" in html and trials["candidate"][0] in html
    study = optuna.load_study(study_name="small", storage=f"sqlite:///{finished_run / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert study.user_attrs["data"]["dataset"] == "digits"
    cfg = load_config(finished_run / "config.yaml")
    assert cfg.search.n_trials == 3 and cfg.data.dataset == "digits"


def test_pareto_command_formats(finished_run: Path) -> None:
    table = run_cli("pareto", finished_run)
    assert table.returncode == 0, table.stderr
    assert "Pareto front" in table.stdout
    records = json.loads(run_cli("pareto", finished_run, "--format", "json").stdout)
    csv = run_cli("pareto", finished_run, "-f", "csv").stdout
    front = pd.read_csv(finished_run / "pareto.csv")
    assert [r["number"] for r in records] == front["number"].tolist()
    assert csv.splitlines()[0].startswith("number,state,feasible,on_front,candidate")
    for r in records:
        assert r["candidate"] in table.stdout  # whole strings, copyable


def test_export_matches_torch_in_onnxruntime(finished_run: Path, tmp_path: Path) -> None:
    front = pd.read_csv(finished_run / "pareto.csv")
    number = int(front["number"][0])
    out = tmp_path / "export"
    proc = run_cli("export", finished_run, "--trial", number, "--out", out)
    assert proc.returncode == 0, proc.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["candidate"] == front["candidate"][0]
    assert card["latency"]["device"]["runtime"] == "onnxruntime"
    assert card["config"]["data"]["dataset"] == "digits"
    assert card["accuracy"]["value"] == pytest.approx(front["accuracy"][0])

    # The proxy-shape export must reproduce the trial's trained network exactly.
    cfg = load_config(finished_run / "config.yaml")
    space = get_space("efficientnet", cfg.space)
    cand = space.decode(card["candidate"])
    side = card["files"]["model_proxy.onnx"]["input_shape"][-1]
    model = space.build(cand, 10, 1, input_size=side).eval()
    weights = finished_run / "trials" / f"{number:05d}" / "weights.pt"
    model.load_state_dict(torch.load(weights, weights_only=True))
    x = np.random.default_rng(1).standard_normal((1, 1, side, side)).astype(np.float32)
    sess = ort.InferenceSession(str(out / "model_proxy.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()

    deploy = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    shape = card["files"]["model.onnx"]["input_shape"]
    assert shape == [1, 3, cand.resolution, cand.resolution]
    assert deploy.run(None, {"input": np.zeros(shape, np.float32)})[0].shape == (1, 10)
    for info in card["files"].values():
        assert info["parity"]["passed"] and info["parity"]["max_rel_diff"] <= 1e-4

    again = run_cli("export", finished_run, "--trial", number, "--out", out)
    assert again.returncode == 2 and "pass --force" in again.stderr
    by_string = run_cli(
        "export", finished_run, "--candidate", card["candidate"], "--out", out, "--force"
    )
    assert by_string.returncode == 0, by_string.stderr


def _one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"search": {"sampler": "annealing"}}, ["search.sampler = 'annealing'", "'nsga2'"]),
        ({"training": {"epochs": -1}}, ["training.epochs = -1"]),
        (
            {"data": {"dataset": "npz", "path": "/nonexistent/d.npz"}},
            ["/nonexistent/d.npz not found"],
        ),
        (
            {"data": {"dataset": "fashion_mnist", "path": "/nonexistent"}},
            ["apt-get install dataset-fashion-mnist"],
        ),
        ({"data": {"train_size": 5000}}, ["exceeds the 1797 images of digits"]),
    ],
)
def test_bad_config_fails_before_writing(write_config, tmp_path: Path, changes, fragments) -> None:
    runs = tmp_path / "runs"
    proc = run_cli("search", write_config(changes), "--runs-dir", runs)
    _one_line_error(proc, *fragments)
    assert not runs.exists()


def test_empty_dataset_fails_before_writing(write_config, tmp_path: Path) -> None:
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, np.int64))
    runs = tmp_path / "runs"
    cfg = write_config({"data": {"dataset": "npz", "path": str(tmp_path / "empty.npz")}})
    _one_line_error(run_cli("search", cfg, "--runs-dir", runs), "empty")
    assert not runs.exists()


def test_missing_config_and_bad_options(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _one_line_error(
        run_cli("search", tmp_path / "nope.yaml", "--runs-dir", runs), "nope.yaml not found"
    )
    assert not runs.exists()
    bad_trials = run_cli("search", tmp_path / "nope.yaml", "--trials", "many")
    assert bad_trials.returncode == 2


def test_bad_run_and_trial(finished_run: Path, tmp_path: Path) -> None:
    _one_line_error(
        run_cli("export", finished_run, "--trial", "99", "--out", tmp_path / "x"),
        "trial 99 not in run",
    )
    _one_line_error(
        run_cli("export", finished_run, "--candidate", "w1", "--out", tmp_path / "x"),
        "no completed trial has candidate",
    )
    _one_line_error(run_cli("pareto", tmp_path / "nowhere"), "not found")
    _one_line_error(
        run_cli("export", finished_run, "--out", tmp_path / "x"),
        "exactly one of a trial number or a candidate",
    )
    assert not (tmp_path / "x").exists()


def test_resume_reaches_exact_count_and_refuses_changed_config(
    write_config, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    config = write_config()
    first = run_cli("search", config, "--trials", "2", "--runs-dir", runs)
    assert first.returncode == 0, first.stderr
    second = run_cli("search", config, "--trials", "4", "--runs-dir", runs)
    assert second.returncode == 0, second.stderr
    study = optuna.load_study(study_name="small", storage=f"sqlite:///{runs / 'small/study.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE"] * 4
    first_two = [t.user_attrs["candidate"] for t in study.trials[:2]]
    assert len(pd.read_csv(runs / "small" / "trials.csv")) == 4
    # The second invocation resumed: its first trial is new, not a replay of trial 0.
    assert study.trials[2].user_attrs["candidate"] not in first_two
    third = run_cli("search", config, "--trials", "4", "--runs-dir", runs)
    assert (
        third.returncode == 0
        and len(
            optuna.load_study(
                study_name="small", storage=f"sqlite:///{runs / 'small/study.db'}"
            ).trials
        )
        == 4
    )

    changed = write_config({"training": {"epochs": 2}}, name="changed.yaml")
    _one_line_error(
        run_cli("search", changed, "--name", "small", "--runs-dir", runs),
        "different config (training.epochs differ)",
    )
