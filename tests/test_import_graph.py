"""Data flows one way: the packages of diffucoder import each other without a circle.

Every import counts, also those inside functions and under ``TYPE_CHECKING`` (a lazy import is still a
dependency). ``model`` exposes Dream's ``diffusion_generate`` by calling ``sampling`` (as transformers' models
inherit GenerationMixin), so ``sampling`` must never import ``model``: it works on any ``DiffusionLM``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "diffucoder"


def _unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "diffucoder":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for f in ROOT.rglob("*.py"):
        rel = f.relative_to(ROOT.parent).with_suffix("")
        src = _unit(".".join(rel.parts))
        for node in ast.walk(ast.parse(f.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                dst = _unit(name)
                if dst and dst != src:
                    edges[src].add(dst)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_package_imports_have_no_circle():
    edges = _graph()
    assert edges["model"], "the graph was not read"
    assert _cycle(edges) is None, f"import circle: {' -> '.join(_cycle(edges))}"


def test_layers_point_one_way():
    edges = _graph()
    assert "model" not in edges["sampling"], "sampling must not import the model package"
    assert not edges["execution"] - {"errors"}, f"execution knows nothing of the rest: {edges['execution']}"
    assert not any("cli" in deps for unit, deps in edges.items() if unit != "cli"), "nothing imports cli"
