"""The project's import graph, read from the source (nothing imported): the library (``lib/``)
imports neither the generation package nor the demo; no module of ``lib/``, ``generation/`` or
``demo/`` is on an import cycle (no two modules import each other, directly or around a loop); and
the metric code (metrics, SMIYC protocol, protocol registry, results files, plots, server export)
reaches no engine module."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lib", "generation", "demo")
METRIC_MODULES = ("lib.metrics", "lib.smiyc", "lib.protocols", "lib.results", "lib.plots", "lib.submission")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name ``path`` imports, anywhere in the file: ``import a.b`` gives ``a.b``;
    ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be a module); relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            found |= {base, *(f"{base}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def _imports() -> dict[str, set[str]]:
    """``module -> every dotted name it imports`` for every module of the project's packages."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {name: _imported_names(name, path) for name, path in files.items()}


def _import_graph() -> dict[str, set[str]]:
    """``module -> project modules it imports``."""
    imports = _imports()
    return {name: {m for m in found if m in imports and m != name} for name, found in imports.items()}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def _in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def test_the_graph_sees_every_kind_of_import():
    """The parser itself: absolute, from-, relative and in-function imports all count."""
    graph = _import_graph()
    assert "lib.toy.scenes" in graph["lib.toy.render"]  # import lib.toy.scenes as S
    assert "lib.registry" in graph["generation.backends"]  # from lib.registry import Registry
    assert "generation.runner" in graph["generation"]  # imported inside a function
    assert {"lib.toy.writers", "generation"} <= graph["demo.stages"]
    assert {"demo.stages", "lib.cli_errors"} <= graph["demo.__main__"]


@pytest.mark.parametrize("outside", ["generation", "demo"])
def test_lib_imports_neither_generation_nor_the_demo(outside):
    offenders = {
        name: sorted(m for m in found if _in_package(m, outside))
        for name, found in _imports().items()
        if _in_package(name, "lib")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"lib modules importing {outside}: {offenders}"


def test_no_import_cycle():
    graph = _import_graph()
    cycles = sorted(m for m in graph if m in _reachable(graph, m))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_metric_code_reaches_no_engine_module():
    graph = _import_graph()
    for module in METRIC_MODULES:
        engine = sorted(m for m in _reachable(graph, module) if _in_package(m, "lib.engine"))
        assert not engine, f"{module} imports engine code: {engine}"
