"""`import nas` stays light: optional and heavy dependencies load only when used."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("ray", "tensorrt", "openvino", "plotly", "torch", "optuna", "timm")


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    return {m.split(".")[0] for m in out}


def test_import_nas_loads_no_heavy_dependency() -> None:
    assert not _loaded_after("import nas, nas.errors") & set(HEAVY)


def test_cli_module_loads_no_heavy_dependency() -> None:
    assert not _loaded_after("import nas.cli") & set(HEAVY)


def test_core_search_path_never_imports_optional_runtimes() -> None:
    loaded = _loaded_after("import nas.api, nas.search, nas.export, latency_predictors")
    assert not loaded & {"ray", "tensorrt", "openvino", "plotly"}
