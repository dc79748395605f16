"""Simple wrong variants ("mutants") of a solution, to check that a task's tests are strong enough.

Each mutant changes one thing in the source: an integer constant by +-1, an arithmetic operator (``+`` to
``-`` and so on, in expressions and augmented assignments), a comparison (``>`` to ``>=`` or ``<``, ``==`` to
``!=``, ``in`` to ``not in``), ``max``/``min`` and ``all``/``any`` swapped, ``upper``/``lower`` swapped.
Some mutants compute the same function as the original (``x < 0`` vs ``x <= 0`` when both branches agree at
0); a checker should tell those apart by probing many inputs before requiring the tests to reject a mutant.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable

_BINOP_SWAPS: dict[type, tuple[type, ...]] = {
    ast.Add: (ast.Sub, ast.Mult), ast.Sub: (ast.Add,), ast.Mult: (ast.Add, ast.FloorDiv),
    ast.FloorDiv: (ast.Mult, ast.Mod), ast.Mod: (ast.FloorDiv,), ast.Pow: (ast.Mult,),
}
_CMP_SWAPS: dict[type, tuple[type, ...]] = {
    ast.Gt: (ast.GtE, ast.Lt), ast.GtE: (ast.Gt,), ast.Lt: (ast.LtE, ast.Gt), ast.LtE: (ast.Lt,),
    ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,), ast.In: (ast.NotIn,), ast.NotIn: (ast.In,),
}
_NAME_SWAPS = {"max": "min", "min": "max", "all": "any", "any": "all"}
_ATTR_SWAPS = {"upper": "lower", "lower": "upper"}


def _edits(node: ast.AST) -> list[Callable[[ast.AST], None]]:
    """The one-step changes that apply to ``node`` (each a function mutating a copy of it in place)."""
    out: list[Callable[[ast.AST], None]] = []
    if isinstance(node, ast.Constant) and type(node.value) is int:
        for d in (1, -1):
            out.append(lambda n, d=d: setattr(n, "value", n.value + d))
    elif isinstance(node, (ast.BinOp, ast.AugAssign)):
        for new in _BINOP_SWAPS.get(type(node.op), ()):
            out.append(lambda n, new=new: setattr(n, "op", new()))
    elif isinstance(node, ast.Compare) and len(node.ops) == 1:
        for new in _CMP_SWAPS.get(type(node.ops[0]), ()):
            out.append(lambda n, new=new: setattr(n, "ops", [new()]))
    elif isinstance(node, ast.Name) and node.id in _NAME_SWAPS:
        out.append(lambda n: setattr(n, "id", _NAME_SWAPS[n.id]))
    elif isinstance(node, ast.Attribute) and node.attr in _ATTR_SWAPS:
        out.append(lambda n: setattr(n, "attr", _ATTR_SWAPS[n.attr]))
    return out


def mutants(solution: str) -> list[str]:
    """All one-step mutants of ``solution`` (source text, deduplicated, the original excluded), in a fixed
    order. Raises ``SyntaxError`` when the solution does not parse."""
    tree = ast.parse(solution)
    original = ast.unparse(tree)
    n_nodes = sum(1 for _ in ast.walk(tree))
    seen, out = {original}, []
    for index in range(n_nodes):
        node = list(ast.walk(tree))[index]
        for k in range(len(_edits(node))):
            clone = copy.deepcopy(tree)
            target = list(ast.walk(clone))[index]
            _edits(target)[k](target)
            src = ast.unparse(ast.fix_missing_locations(clone))
            if src not in seen:
                seen.add(src)
                out.append(src + "\n")
    return out
