"""The shape of the house: imports point down only, no cycles, leaf packages stand alone,
functions stay short.

Every module of the project is parsed (imports inside functions and under TYPE_CHECKING
included, since either can close a cycle that a reader does not see). The order, top to bottom:

    nas.cli
    nas.service (`nas serve` starts it)
    nas.api
    nas.cluster | nas.export | nas.devices | nas.serving
    nas.search
    nas.evaluate | nas.report
    nas.compress
    nas.train
    nas (the top-level modules: errors, config, run, storage, pareto, record, progress)
    latency_predictors
    search_spaces
    hwnas_base

A module may import its own room (package) and any room below it; rooms side by side do not
import each other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("hwnas_base", "search_spaces", "latency_predictors", "nas")
LEAVES = ("hwnas_base", "search_spaces", "latency_predictors")
LAYERS: tuple[tuple[str, ...], ...] = (
    ("nas.cli",),
    ("nas.service",),
    ("nas.api",),
    ("nas.cluster", "nas.export", "nas.devices", "nas.serving"),
    ("nas.search",),
    ("nas.evaluate", "nas.report"),
    ("nas.compress",),
    ("nas.train",),
    ("nas",),
    ("latency_predictors",),
    ("search_spaces",),
    ("hwnas_base",),
)
MAX_FUNCTION_LINES = 80


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def find_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Module name -> file, for every .py file under the packages."""
    return {module_name(root, p): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            # `from pkg import module` names the module; `from module import name` the module.
            targets = [t for t in targets if t in modules][:1] or [base]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    modules = find_modules(root, packages)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def room(module: str) -> tuple[str, int]:
    """(the room a module belongs to, the room's layer: 0 is the top)."""
    best: tuple[str, int] | None = None
    for layer, rooms in enumerate(LAYERS):
        for r in rooms:
            if (module == r or module.startswith(r + ".")) and (
                best is None or len(r) > len(best[0])
            ):
                best = (r, layer)
    if best is None:
        raise ValueError(f"module {module} is in no room of the layer order; add it to LAYERS")
    return best


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import against the order: upward, sideways, or from a leaf into `nas`."""
    found = []
    for importer, targets in sorted(graph.items()):
        a, la = room(importer)
        for target in sorted(targets):
            b, lb = room(target)
            if a.split(".")[0] in LEAVES and b.split(".")[0] == "nas":
                found.append(f"{importer} imports {target}: {a} must not import nas")
            elif a != b and lb < la:
                found.append(f"{importer} imports {target}: upward, {b} is above {a}")
            elif a != b and lb == la:
                found.append(f"{importer} imports {target}: sideways, {a} and {b} are siblings")
    return found


def long_functions(root: Path, packages: Iterable[str]) -> list[str]:
    found = []
    for name, path in find_modules(root, packages).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{name}.{node.name}: {lines} lines")
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(REPO, PACKAGES)


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_imports_follow_the_layer_order(graph: dict[str, set[str]]) -> None:
    assert violations(graph) == []


def test_functions_stay_under_80_lines() -> None:
    assert long_functions(REPO, PACKAGES) == []


def test_every_folder_of_code_is_a_package() -> None:
    """A folder without __init__.py imports here but is left out of an installed wheel."""
    missing = [
        str(folder.relative_to(REPO))
        for pkg in PACKAGES
        for folder in [REPO / pkg, *(REPO / pkg).rglob("*")]
        if folder.is_dir() and any(folder.glob("*.py")) and not (folder / "__init__.py").is_file()
    ]
    assert missing == []


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """A leaf importing nas, a sideways import, an upward one, a cycle hidden in a function and
    a long function are each reported, so the tests above cannot pass by seeing nothing."""
    files = {
        "hwnas_base/__init__.py": "",
        "search_spaces/__init__.py": "",
        "latency_predictors/__init__.py": "",
        "latency_predictors/table.py": "from nas.config import RunConfig\n",
        "nas/__init__.py": "",
        "nas/config.py": "def f():\n    from nas.run import Run\n",
        "nas/run.py": "from . import config\n",
        "nas/search/__init__.py": "",
        "nas/search/loop.py": "from nas.api import search\n",
        "nas/report/__init__.py": "",
        "nas/report/tables.py": "from nas.evaluate.evaluator import Outcome\n",
        "nas/evaluate/__init__.py": "",
        "nas/evaluate/evaluator.py": "def g():\n" + "    x = 1\n" * 85,
        "nas/api.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = import_graph(tmp_path, PACKAGES)
    assert cycles(found) == [["nas.config", "nas.run"]]
    assert violations(found) == [
        "latency_predictors.table imports nas.config: latency_predictors must not import nas",
        "nas.report.tables imports nas.evaluate.evaluator: sideways, nas.report and "
        "nas.evaluate are siblings",
        "nas.search.loop imports nas.api: upward, nas.api is above nas.search",
    ]
    assert long_functions(tmp_path, PACKAGES) == ["nas.evaluate.evaluator.g: 86 lines"]
