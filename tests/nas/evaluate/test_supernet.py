"""`nas supernet train` and `nas supernet evaluate` end to end, in real subprocesses."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from nas.config import load_config
from search_spaces import get_space
from tests.conftest import REPO, SMALL_CONFIG, SUPERNET_SETTINGS, deep_update, run_cli
from tests.services import wait_for

SUPERNET_CONFIG = deep_update(
    SMALL_CONFIG,
    {
        "name": "sn",
        "supernet": SUPERNET_SETTINGS["supernet"],
        "space": SUPERNET_SETTINGS["space"],
        "data": {"train_size": 300},
    },
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("supernet")
    config = root / "sn.yaml"
    config.write_text(yaml.safe_dump(SUPERNET_CONFIG))
    proc = run_cli("supernet", "train", config, "--runs-dir", root / "runs")
    assert proc.returncode == 0, proc.stderr
    assert "supernet: 1 epochs on 300 images" in proc.stdout
    return root / "runs" / "sn"


def test_train_writes_the_run_and_resumes_without_training_again(trained: Path) -> None:
    for name in ("config.yaml", "supernet/supernet.pt", "supernet/supernet.json"):
        assert (trained / name).is_file(), name
    record = json.loads((trained / "supernet" / "supernet.json").read_text())
    assert len(record["history"]["largest_accuracy"]) == 1
    before = (trained / "supernet" / "supernet.pt").read_bytes()
    again = run_cli("supernet", "train", trained / "config.yaml", "--runs-dir", trained.parent)
    assert again.returncode == 0, again.stderr
    assert (trained / "supernet" / "supernet.pt").read_bytes() == before
    assert (
        json.loads((trained / "supernet" / "supernet.json").read_text())["history"]
        == (record["history"])
    )


def test_evaluate_scores_candidates_with_inherited_weights_and_their_latency(
    trained: Path,
) -> None:
    config = load_config(trained / "config.yaml")
    space = get_space("efficientnet", config.space)
    largest = space.largest().encode()
    smallest = space.smallest().encode()
    proc = run_cli("supernet", "evaluate", trained, largest, smallest, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["candidate"] for r in rows] == [largest, smallest]
    assert all(0 <= r["accuracy"] <= 1 and r["latency_ms"] > 0 for r in rows)
    assert rows[0]["latency_source"] == "measured"
    history = json.loads((trained / "supernet" / "supernet.json").read_text())["history"]
    # Scoring is deterministic: the same batches re-estimate BatchNorm as after training.
    assert rows[0]["accuracy"] == history["largest_accuracy"][-1]
    assert rows[1]["accuracy"] == history["smallest_accuracy"][-1]
    table = run_cli("supernet", "evaluate", trained, smallest)
    assert table.returncode == 0 and smallest[:20] in table.stdout


def test_bad_input_is_one_line_and_exit_code_2(trained: Path, tmp_path: Path) -> None:
    config = load_config(trained / "config.yaml")
    largest = get_space("efficientnet", config.space).largest()
    wide_kernel = replace(
        largest, stages=(replace(largest.stages[0], kernel=7), *largest.stages[1:])
    ).encode()
    cases = [
        (("supernet", "evaluate", trained, wide_kernel), "outside the supernet's space"),
        (("supernet", "evaluate", trained, "w0.5_nonsense"), "candidate 'w0.5_nonsense'"),
        (("supernet", "evaluate", tmp_path, largest.encode()), "no config.yaml"),
    ]
    corrupt = tmp_path / "corrupt"
    (corrupt / "supernet").mkdir(parents=True)
    (corrupt / "config.yaml").write_text((trained / "config.yaml").read_text())
    (corrupt / "supernet" / "supernet.pt").write_bytes(b"not a checkpoint")
    cases.append(
        (("supernet", "evaluate", corrupt, largest.encode()), "not a readable supernet file")
    )
    unfinished = tmp_path / "unfinished"
    shutil.copytree(trained, unfinished)
    longer = yaml.safe_load((trained / "config.yaml").read_text())
    longer["supernet"]["epochs"] = 2
    (unfinished / "config.yaml").write_text(yaml.safe_dump(longer))
    cases.append(
        (("supernet", "evaluate", unfinished, largest.encode()), "trained for 1 of 2 epochs")
    )
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(deep_update(SUPERNET_CONFIG, {"seed": 1})))
    cases.append(
        (
            ("supernet", "train", changed, "--runs-dir", trained.parent),
            "was started with a different config (seed differ)",
        )
    )
    nb201 = tmp_path / "nb201.yaml"
    nb201.write_text(yaml.safe_dump({**SUPERNET_CONFIG, "space": {"name": "nb201"}}))
    cases.append((("supernet", "train", nb201, "--runs-dir", tmp_path / "runs"), "has no supernet"))
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(
        yaml.safe_dump({**SUPERNET_CONFIG, "name": "mixed", "space": SMALL_CONFIG["space"]})
    )
    cases.append(
        (
            ("supernet", "train", mixed, "--runs-dir", tmp_path / "runs"),
            "supernet: needs one activation per supernet, space.choices.act lists 2",
        )
    )
    for args, message in cases:
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, proc.stderr)
    assert not (tmp_path / "runs").exists()  # refused before anything is written


# Searches with evaluation: supernet


def search_config(tmp_path: Path, name: str, **changes: object) -> Path:
    """SUPERNET_CONFIG as a supernet search; a `space` given replaces the space whole."""
    config = tmp_path / f"{name}.yaml"
    space = changes.pop("space", SUPERNET_CONFIG["space"])
    raw = deep_update(SUPERNET_CONFIG, {"name": name, "evaluation": "supernet", **changes})
    config.write_text(yaml.safe_dump({**raw, "space": space}))
    return config


def test_a_search_scores_with_a_given_supernet_and_its_front_exports_and_trains(
    trained: Path, tmp_path: Path
) -> None:
    config = load_config(trained / "config.yaml")
    largest = get_space("efficientnet", config.space).largest().encode()
    path = trained / "supernet" / "supernet.pt"
    search = search_config(
        tmp_path,
        "given",
        supernet={"path": str(path)},
        search={"n_trials": 4, "seed_candidates": [largest]},
    )
    runs = tmp_path / "runs"
    proc = run_cli("search", search, "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    run = runs / "given"
    assert not (run / "supernet").exists()  # the given supernet is used, none trained
    trials = pd.read_csv(run / "trials.csv")
    assert len(trials) == 4 and set(trials["accuracy_source"]) == {"supernet"}
    # The same sub-network, the same BatchNorm batches: the score `nas supernet evaluate` and
    # the supernet's own history give.
    history = json.loads((trained / "supernet" / "supernet.json").read_text())["history"]
    assert trials.loc[0, "accuracy"] == history["largest_accuracy"][-1]

    out = tmp_path / "export"
    exported = run_cli("export", run, "--trial", 0, "--out", out)
    assert exported.returncode == 0, exported.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["accuracy"]["source"] == "supernet"
    assert "inherited from the run's supernet" in card["training"]["fidelity"]
    assert "(supernet)" in (out / "MODEL_CARD.md").read_text()
    tuned = run_cli("train", run, "--trial", 0, "--epochs", 1)  # fine-tunes the inherited weights
    assert tuned.returncode == 0, tuned.stderr
    assert (run / "trained" / "00000" / "train.json").is_file()


def test_a_search_trains_its_supernet_once_and_compresses_the_subnets(tmp_path: Path) -> None:
    search = search_config(
        tmp_path,
        "own",
        search={"n_trials": 3},
        compression={
            "pruning": {"ratios": [0.5], "finetune_epochs": 1},
            "quantization": {"precisions": ["fp32", "int8"], "calibration_batches": 2},
        },
    )
    runs = tmp_path / "runs"
    proc = run_cli("search", search, "--runs-dir", runs)
    assert proc.returncode == 0, proc.stderr
    run = runs / "own"
    record = json.loads((run / "supernet" / "supernet.json").read_text())
    assert len(record["history"]["largest_accuracy"]) == 1
    trials = pd.read_csv(run / "trials.csv")
    assert set(trials["accuracy_source"]) == {"supernet"}
    assert set(trials["precision"]) <= {"fp32", "int8"} and trials["prune_ratio"].notna().all()
    weights = (run / "supernet" / "supernet.pt").read_bytes()
    more = run_cli("search", search, "--runs-dir", runs, "--trials", 4)
    assert more.returncode == 0, more.stderr
    assert (run / "supernet" / "supernet.pt").read_bytes() == weights  # not trained again
    assert len(pd.read_csv(run / "trials.csv")) == 4


def test_a_supernet_search_refuses_what_it_cannot_use(trained: Path, tmp_path: Path) -> None:
    saved = torch.load(trained / "supernet" / "supernet.pt", weights_only=True)
    unfinished = tmp_path / "unfinished.pt"
    torch.save({**saved, "finished": False}, unfinished)
    cases = [
        ({"supernet": {"path": str(tmp_path / "none.pt")}}, "no such file"),
        ({"supernet": {"path": str(unfinished)}}, "its training has not finished"),
        (
            {"search": {"early_stopping": {"enabled": True}}},
            "evaluation: supernet trains no candidate",
        ),
        ({"space": {"name": "nb201"}}, "needs space.name: efficientnet"),
        (
            {"space": SMALL_CONFIG["space"]},  # relu6 and hswish
            "needs one activation per supernet, space.choices.act lists 2 (relu6, hswish)",
        ),
    ]
    for i, (changes, message) in enumerate(cases):
        search = search_config(tmp_path, f"bad{i}", **changes)
        proc = run_cli("search", search, "--runs-dir", tmp_path / "runs")
        assert proc.returncode == 2, (changes, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (changes, proc.stderr)
        assert not (tmp_path / "runs" / f"bad{i}").exists()


def test_sigterm_while_the_supernet_trains_stops_with_the_resume_command(tmp_path: Path) -> None:
    """Before the first trial, a supernet search trains its supernet: SIGTERM (`kill`,
    `timeout`) there ends it as between trials, with the command that resumes it; the rerun
    goes on from the epoch checkpoint and searches."""
    # An epoch of 300 images takes about a second: nine more leave the signal time to land.
    search = search_config(tmp_path, "term", supernet={"epochs": 10}, search={"n_trials": 2})
    runs = tmp_path / "runs"
    checkpoint = runs / "term" / "supernet" / "supernet.pt"
    stderr = tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "nas.cli", "search", str(search), "--runs-dir", str(runs)]
    with stderr.open("w") as err:
        proc = subprocess.Popen(command, cwd=REPO, stdout=err, stderr=err)
    try:
        wait_for(checkpoint.is_file, 300, "the first epoch's checkpoint", interval=0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 2, stderr.read_text()
    finally:
        proc.kill()
    last = stderr.read_text().strip().splitlines()[-1]
    hint = f"nas search {search} --name term --runs-dir {runs}"
    assert last == f"error: search interrupted; resume with: {hint}", last
    assert not (checkpoint.parent / "supernet.json").exists()  # written once it is trained
    assert not (runs / "term" / "trials.csv").exists()

    again = run_cli("search", search, "--runs-dir", runs)
    assert again.returncode == 0, again.stderr
    record = json.loads((checkpoint.parent / "supernet.json").read_text())
    assert len(record["history"]["largest_accuracy"]) == 10
    assert len(pd.read_csv(runs / "term" / "trials.csv")) == 2
