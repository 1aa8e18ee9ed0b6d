"""The layering holds: no import cycle between hiddencost modules counting every import (function-
local ones included), and every function-local import of a hiddencost module says why.

`lint-imports` (run by `make test`) checks the layer contracts of pyproject.toml; this test checks
what import-linter does not: cycles inside a layer and unexplained lazy imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "hiddencost"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in (SRC / PACKAGE).rglob("*.py")}


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        return [origin] + [f"{origin}.{a.name}" for a in node.names]
    return []


def _owner(name: str, known: set[str]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, int]]]:
    """Module → imported modules (every import statement), and the function-local imports of
    hiddencost modules as (module, line)."""
    files = _modules()
    known = set(files)
    edges: dict[str, set[str]] = {m: set() for m in known}
    local: list[tuple[str, int]] = []
    for module, path in files.items():
        tree = ast.parse(path.read_text())
        in_function = {id(n) for f in ast.walk(tree)
                       if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                       for n in ast.walk(f)}
        for node in ast.walk(tree):
            hits = {_owner(t, known) for t in _targets(node, module, path.name == "__init__.py")
                    if t.split(".")[0] == PACKAGE} - {None, module}
            edges[module] |= hits  # type: ignore[arg-type]
            if hits and id(node) in in_function:
                local.append((module, node.lineno))
    return edges, local


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def test_cycle_finder_finds_a_known_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_hiddencost_modules():
    edges, _ = _graph()
    assert len(edges) > 50  # the walk saw the package
    assert _cycles(edges) == []


def test_function_local_imports_say_why():
    _, local = _graph()
    files = _modules()
    unexplained = []
    for module, line in local:
        lines = files[module].read_text().splitlines()
        here, above = lines[line - 1], lines[line - 2] if line > 1 else ""
        if "#" not in here and not above.strip().startswith("#"):
            unexplained.append(f"{module}:{line}")
    assert unexplained == []


@pytest.mark.parametrize("name", ["cli", "quickstart"])
def test_nothing_in_the_library_imports_the_top_layers(name):
    edges, _ = _graph()
    top = f"{PACKAGE}.{name}"
    importers = sorted(m for m, targets in edges.items()
                       if any(t == top or t.startswith(top + ".") for t in targets)
                       and not (m == top or m.startswith(top + ".")))
    allowed = {"cli": [f"{PACKAGE}.__main__"], "quickstart": [f"{PACKAGE}.cli"]}[name]
    assert [m for m in importers if not any(m.startswith(a) for a in allowed)] == []
