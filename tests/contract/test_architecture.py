"""The package's shape, checked: no import cycle between replearn's modules (function-level imports
counted, so none can hide one), every function readable on one screen, no public function with more
than 8 parameters."""
from __future__ import annotations

import ast
from pathlib import Path
from helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "replearn"
MAX_LINES = 60
MAX_PARAMS = 8
# numeric kernels that read best whole (none at present: fit_softmax_regression was split into named steps)
LONG_KERNELS: set[str] = set()


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Edges module → replearn module it imports, at any level of the file (TYPE_CHECKING blocks excluded)."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom):
                target = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else (node.module or "")
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    graph[name].add(sub if sub in mods else target)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names)
    for name, targets in graph.items():  # importing a.b.c runs a and a.b first
        for target in list(targets):
            parts = target.split(".")
            graph[name].update(".".join(parts[:i]) for i in range(1, len(parts)))
        graph[name] = {t for t in graph[name] if t in mods and t != name and not name.startswith(t + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_import_graph_has_no_cycle_even_through_function_level_imports():
    cycles = _cycles(_import_graph(_modules()))
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(PACKAGE.parent), node


def test_every_function_fits_on_one_screen():
    long = [f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, node in _functions()
            if node.end_lineno - node.lineno + 1 > MAX_LINES and node.name not in LONG_KERNELS]
    assert not long, long


def test_no_public_function_takes_more_than_eight_parameters():
    wide = []
    for path, node in _functions():
        args = node.args
        names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
        if not node.name.startswith("_") and len(names) > MAX_PARAMS:
            wide.append(f"{path}:{node.lineno} {node.name} ({len(names)} parameters)")
    assert not wide, wide
