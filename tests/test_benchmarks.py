"""Every benchmark script imports, so a move in the library cannot break one silently.

The benchmarks take minutes and are run by hand (see their docstrings); importing one runs
nothing but its imports and definitions, as each has a ``__main__`` guard.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

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
