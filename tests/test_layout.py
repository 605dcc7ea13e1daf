"""The package's shape: no module reaches into another's private names, no import cycle hidden inside
functions, and README's layout section names every module."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
PACKAGE = PROJECT / "selfinstruct_utils"

#: Private names still imported across modules, each waiting for its owner's module to switch.
_PENDING = {
    ("novelty.py", "rouge", "_f1"),  # the novelty filter's move out of rouge.py
    ("novelty.py", "rouge", "_lengths"),
}


@functools.cache
def _modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(PACKAGE)): ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(rel: str, node: ast.ImportFrom) -> str:
    """The dotted module (relative to the package) an ``from . import`` names."""
    parts = Path(rel).with_suffix("").parts[:-1]
    base = list(parts[: len(parts) - (node.level - 1)]) if node.level else []
    return ".".join([*base, *(node.module.split(".") if node.module else [])])


def test_no_module_imports_another_modules_private_names():
    found = set()
    for rel, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.add((rel, _imported(rel, node), alias.name))
    assert sorted(found - _PENDING) == []


def test_no_import_cycle_even_through_function_level_imports():
    """Every ``from .x import`` (top level or inside a function) is an edge; the graph has no cycle."""
    edges: dict[str, set[str]] = {}
    names = {rel[:-3].replace("/", ".").removesuffix(".__init__") for rel in _modules()}
    for rel, tree in _modules().items():
        me = rel[:-3].replace("/", ".").removesuffix(".__init__")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                target = _imported(rel, node)
                for alias in node.names:  # "from . import plots" names a module
                    sub = f"{target}.{alias.name}" if target else alias.name
                    dest = sub if sub in names else target
                    if dest in names and dest != me and not me.startswith(dest + ".") and dest != "__init__":
                        edges.setdefault(me, set()).add(dest)
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_readme_layout_names_every_module():
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    named = set(re.findall(r"\b(\w+)\.py\b", block))
    modules = {p.stem for p in PACKAGE.rglob("*.py") if p.stem != "__init__"}
    assert sorted(modules - named) == [] and sorted(named - modules) == []
