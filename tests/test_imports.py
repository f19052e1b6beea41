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
    loaded = _loaded_after(
        "import nas.api, nas.search.session, nas.export.exporter, nas.devices.evaluation, "
        "latency_predictors.sources"
    )
    assert not loaded & {"ray", "tensorrt", "openvino", "plotly"}


def test_standalone_packages_load_nothing_of_nas() -> None:
    """A user who only wants a search space or a latency predictor needs no `nas`."""
    code = (
        "import sys, hwnas_base, search_spaces, latency_predictors; "
        "import latency_predictors.sources, latency_predictors.profile, "
        "latency_predictors.predictors, latency_predictors.quantize, search_spaces.flops; "
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [m for m in out if m == "nas" or m.startswith("nas.")]
