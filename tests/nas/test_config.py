"""Config validation: every bad value is named by its field path with what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nas.config import RunConfig, load_config, parse_config
from nas.errors import ConfigError
from tests.conftest import SMALL_CONFIG, deep_update

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    assert isinstance(load_config(path), RunConfig)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"search": {"sampler": "cmaes"}},
            "search.sampler = 'cmaes': Input should be 'nsga2', 'tpe', 'random', 'gp' or 'ehvi'",
        ),
        ({"training": {"epochs": 0}}, "training.epochs = 0: Input should be greater than or equal"),
        ({"training": {"lrr": 0.1}}, "training.lrr: unknown key; allowed keys: epochs,"),
        ({"data": {"dataset": "cifar"}}, "data.dataset = 'cifar': Input should be 'fashion_mnist'"),
        (
            {"space": {"scaling": {"mode": "independent", "width": {"low": 1, "high": 0.5}}}},
            "space.scaling.width = {'low': 1, 'high': 0.5}: need low <= high",
        ),
        ({"space": {"scaling": {"mode": "sideways"}}}, "space.scaling = {'mode': 'sideways'}"),
        ({"space": {"choices": {"act": ["gelu"]}}}, "space.choices.act.0 = 'gelu'"),
        (
            {"search": {"constraints": {"max_latency_ms": -1}}},
            "search.constraints.max_latency_ms = -1: Input should be greater than 0",
        ),
        ({"name": "../escape"}, "name = '../escape': String should match pattern"),
        ({"latency": {"mode": "guessed"}}, "latency.mode = 'guessed'"),
        ({"bogus": 1}, "bogus: unknown key; allowed keys: name, seed, space"),
    ],
)
def test_errors_name_field_value_and_allowed(raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="c.yaml")
    message = str(info.value)
    assert message.startswith("c.yaml: invalid config: ")
    assert expected in message
    assert "\n" not in message


def test_parsing_leaves_seed_candidates_to_the_search() -> None:
    """Seeds are checked against the space once, when a search is prepared, not on every parse
    (see tests/nas/search/test_session.py)."""
    config = parse_config({"search": {"seed_candidates": ["nonsense"]}}, source="c")
    assert config.search.seed_candidates == ("nonsense",)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: [unclosed\n")
    with pytest.raises(ConfigError, match="line 2.*not valid YAML"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(listed)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    cfg = load_config(empty)
    assert cfg.search.sampler == "nsga2"
    assert cfg.deployment.num_classes == 1000 and cfg.deployment.channels == 3
    assert cfg.latency.device == "cpu-ort-fp32"


def test_overrides_are_validated_and_round_trip() -> None:
    cfg = parse_config({}, source="c").with_overrides(name="x1", n_trials=5, timeout=30)
    assert (cfg.name, cfg.search.n_trials, cfg.search.timeout) == ("x1", 5, 30)
    with pytest.raises(ConfigError, match="search.n_trials = 0"):
        cfg.with_overrides(n_trials=0)
    assert parse_config(yaml.safe_load(cfg.to_yaml()), source="c") == cfg


def test_config_file_yaml_roundtrip_keeps_latency_section(tmp_path: Path) -> None:
    raw = deep_update(SMALL_CONFIG, {"latency": {"mode": "hybrid", "predictor": "gbm"}})
    config = parse_config(raw, source="t")
    again = parse_config(yaml.safe_load(config.to_yaml()), source="t")
    assert again.latency == config.latency
