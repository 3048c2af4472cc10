"""The evaluation layer's import graph (read from the source, nothing imported): the metric code
(metrics, SMIYC protocol, protocol registry, results files, plots, server export) reaches no engine
module, and no module reachable from the evaluation entry points imports one that imports it back."""

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"
METRIC_MODULES = ("lib.metrics", "lib.smiyc", "lib.protocols", "lib.results", "lib.plots", "lib.submission")
ENTRY_POINTS = (
    "lib.evaluate",
    "lib.engine.testing",
    "lib.engine.evaluator",
    "lib.report",
    "lib.toy.demo_eval",
)


def _import_graph() -> dict[str, set[str]]:
    """``module -> lib modules it imports`` for every module under ``lib/``."""
    files = {}
    for path in LIB.rglob("*.py"):
        name = ".".join(path.relative_to(LIB.parent).with_suffix("").parts).removesuffix(".__init__")
        files[name] = path
    graph = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_metric_code_reaches_no_engine_module():
    graph = _import_graph()
    for module in METRIC_MODULES:
        engine = sorted(m for m in _reachable(graph, module) if m.startswith("lib.engine"))
        assert not engine, f"{module} imports engine code: {engine}"


def test_no_import_cycle_under_the_evaluation_entry_points():
    graph = _import_graph()
    modules = set(ENTRY_POINTS).union(*(_reachable(graph, m) for m in ENTRY_POINTS))
    cycles = sorted(m for m in modules if m in _reachable(graph, m))
    assert not cycles, f"modules on an import cycle: {cycles}"
