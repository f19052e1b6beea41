"""Every benchmark script imports, so a move in the library cannot break one silently.

The benchmarks take minutes and are run by hand (see their docstrings); importing one runs
nothing but its imports and definitions, as each has a ``__main__`` guard.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_"))


def test_there_are_benchmarks() -> None:
    assert len(SCRIPTS) >= 8


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_imports_and_has_a_main_guard(script: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(script.parent))  # as when run: its helpers beside it
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
    assert 'if __name__ == "__main__":' in script.read_text()


def test_a_benchmark_runs_as_a_script() -> None:
    """Run from anywhere, as the README shows: `python benchmarks/NAME.py --help`."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "proxy_ranking.py"), "--help"],
        cwd=REPO.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


def test_proxy_ranking_names_the_traits_a_ranking_follows(monkeypatch, capsys) -> None:
    """A scorer that is the candidates' resolution follows resolution exactly (rho +1), and
    one that is its reverse, exactly the other way (rho -1)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import proxy_ranking

    from nas.config import load_config
    from search_spaces import get_space

    config = load_config(REPO / "configs" / "supernet.yaml")
    space = get_space(config.space.name, config.space)
    candidates = proxy_ranking.sample(space, 12, seed=0)
    resolutions = [float(space.resolution(c)) for c in candidates]
    assert len(set(resolutions)) > 1
    proxy_ranking.ranks_by(
        space, candidates, {"follows": resolutions, "reverses": [-r for r in resolutions]}
    )
    lines = capsys.readouterr().out.splitlines()
    header = lines[1].split()
    assert header[:2] == ["resolution", "params"] and {"width", "depth"} <= set(header)
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows["follows"][0] == "+1.00" and rows["reverses"][0] == "-1.00"


@pytest.mark.parametrize("flag", [["--supernet-repeat"], ["--throughput", "5"]])
def test_proxy_ranking_refuses_supernet_options_without_the_supernet(flag: list[str]) -> None:
    script = str(REPO / "benchmarks" / "proxy_ranking.py")
    proc = subprocess.run(
        [sys.executable, script, "configs/supernet.yaml", *flag],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert f"{flag[0]} scores with the supernet: add --supernet" in proc.stderr
    assert proc.stdout == ""


def test_proxy_ranking_reports_how_the_reference_repeats(monkeypatch, capsys) -> None:
    """Two reference runs that swap two neighbouring pairs agree at rho 0.8, their differences
    are printed beside the candidates' spread, and a scorer equal to the mean of both runs ranks
    at +1 against that mean."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import proxy_ranking

    ref = [0.800, 0.810, 0.820, 0.830, 0.840]
    again = [0.812, 0.804, 0.822, 0.846, 0.833]  # ranks 2 1 3 5 4
    mean = [(a + b) / 2 for a, b in zip(ref, again, strict=True)]
    proxy_ranking.repeat_ref(ref, again, [{"val": v} for v in mean], None)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("reference (next seed) vs reference:")
    assert "Spearman rho 0.800" in out[0]
    diffs = [b - a for a, b in zip(ref, again, strict=True)]
    assert f"std {np.std(diffs):.4f}" in out[1] and "spread: std 0.0141" in out[1]
    assert out[2].startswith("proxy (validation) vs reference (next seed):")
    assert "Spearman rho 0.900" in out[2]  # the mean swaps one of the two pairs of `again`
    assert out[3].startswith("proxy (validation) vs mean of both references:")
    assert "Spearman rho 1.000" in out[3] and len(out) == 4


def test_supernet_search_counts_a_repeated_candidate_once(
    write_config, tmp_path: Path, monkeypatch
) -> None:
    """Three trials over a space of two candidates: at least one repeat, which reuses an
    earlier trial's results and so is not a candidate evaluated."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import supernet_search

    from nas import api

    one_choice = {"kernel": [3], "expansion": [3], "se": [0.0], "act": ["relu6"]}
    cfg = write_config(
        {
            "space": {
                "choices": {**one_choice, "repeats_delta": [0]},
                "stem_head_act": ["relu6"],
                "scaling": {"width": [0.25, 0.5], "resolution": 32},
            }
        }
    )
    result = api.search(api.SearchOptions(config=cfg, runs_dir=tmp_path / "runs"))
    seconds, trials, distinct = supernet_search.trial_seconds(result.run.root)
    table = pd.read_csv(result.run.root / "trials.csv")
    repeats = int(table["duplicate_of"].notna().sum())
    assert repeats >= 1
    assert (trials, distinct) == (len(table), len(table) - repeats)
    assert distinct == table["candidate"].nunique()
    assert seconds > 0


def test_supernet_search_says_which_proxy_members_no_supernet_member_covers(
    monkeypatch, capsys
) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import supernet_search

    def front(points: list[tuple[float, float]]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "number": range(len(points)),
                "accuracy": [a for a, _ in points],
                "test_accuracy": [a for a, _ in points],
                "latency_ms": [ms for _, ms in points],
                "candidate": [f"c{i}" for i in range(len(points))],
            }
        )

    # Covered (matched, then dominated), short by 0.5 points, and faster than every member.
    proxy = front([(0.80, 1.0), (0.83, 3.0), (0.84, 2.0), (0.81, 0.2)])
    supernet = front([(0.80, 1.0), (0.835, 1.5), (0.82, 2.5)])
    supernet_search.compare({"proxy": proxy, "supernet": supernet})
    out = capsys.readouterr().out
    assert "2 of 4 proxy-front members are dominated or matched" in out
    assert "not covered: 0.8400 at 2.000 ms; the best supernet member at no more latency " in out
    assert "reaches 0.8350 at 1.500 ms (0.50 points lower)" in out
    assert "not covered: 0.8100 at 0.200 ms; no supernet member is as fast" in out
