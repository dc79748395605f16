"""Turn raw model output into a program: extract the code, keep the definitions and imports it needs.

``sanitize(text, entry_point)``:
1. code: the fenced blocks if there are any (the first block that defines ``entry_point``; else the longest
   block that parses), else the raw text;
2. if that does not parse, the longest run of lines that does (base models often trail off mid-statement);
3. keep, in their original order, every import and the top-level functions, classes and simple assignments that
   ``entry_point`` reaches through the names it uses (all of them when no entry point is given); drop top-level
   statements such as prints, example calls, ``if __name__ == "__main__":`` blocks and test asserts.
The result is source text (the original lines, not re-generated), or "" when nothing usable is found.
"""

from __future__ import annotations

import ast
import re

_FENCED = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False


def code_blocks(text: str) -> list[str]:
    """Bodies of fenced code blocks (python/py/unlabelled), in order; an unclosed last block runs to the end."""
    return [body for lang, body in _FENCED.findall(text) if lang.lower() in ("", "python", "py", "python3")]


def _defines(code: str, name: str) -> bool:
    return bool(re.search(rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b", code, re.MULTILINE))


def _longest_parsing_run(code: str) -> str:
    """The longest contiguous run of lines that parses (counting non-blank lines), preferring earlier runs."""
    lines = code.split("\n")
    n = len(lines)
    best, best_len = "", 0
    # Quick path: longest parsing prefix (covers output cut off mid-statement).
    for end in range(n, 0, -1):
        chunk = "\n".join(lines[:end])
        if _parses(chunk):
            best, best_len = chunk, sum(1 for x in lines[:end] if x.strip())
            break
    if best_len == sum(1 for x in lines if x.strip()):
        return best
    budget = 2000  # parse attempts: bounds the time spent on pathological outputs
    for start in range(1, n):
        if not lines[start].strip() or lines[start][0].isspace():
            continue
        for end in range(n, start, -1):
            size = sum(1 for x in lines[start:end] if x.strip())
            if size <= best_len or budget <= 0:
                break
            budget -= 1
            chunk = "\n".join(lines[start:end])
            if _parses(chunk):
                best, best_len = chunk, size
                break
    return best


def extract_code(text: str, entry_point: str | None = None) -> str:
    """Step 1-2 of ``sanitize``: the code the model meant, as text that parses (maybe "")."""
    blocks = code_blocks(text)
    if blocks:
        parsing = [b for b in blocks if _parses(b)]
        if entry_point:
            with_entry = [b for b in parsing if _defines(b, entry_point)]
            if with_entry:
                return with_entry[0]
        if parsing:
            return max(parsing, key=len)
        return max((_longest_parsing_run(b) for b in blocks), key=len)
    if _parses(text):
        return text
    return _longest_parsing_run(text)


def _names_used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.value.id for n in ast.walk(node) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}


def _defined_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def sanitize(text: str, entry_point: str | None = None) -> str:
    """Extract and prune model output to the program that defines ``entry_point`` (see the module docstring)."""
    code = extract_code(text, entry_point)
    if not code.strip():
        return ""
    tree = ast.parse(code)
    lines = code.split("\n")
    imports, defs = [], {}
    order: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(node)
            order.append(node)
        elif names := _defined_names(node):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and _calls_anything(node):
                continue  # an assignment that runs code (e.g. result = solve(input())) is not a definition
            for name in names:
                defs[name] = node
            order.append(node)
    if entry_point and entry_point in defs:
        keep: set[int] = set()
        stack = [entry_point]
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if name in seen or name not in defs:
                continue
            seen.add(name)
            node = defs[name]
            keep.add(id(node))
            stack.extend(_names_used(node))
        kept = [n for n in order if id(n) in keep or isinstance(n, (ast.Import, ast.ImportFrom))]
    else:
        kept = order
    out = []
    for node in kept:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        out.append("\n".join(lines[start:node.end_lineno]))
    return "\n".join(_join(out)).rstrip() + "\n" if out else ""


def _calls_anything(node: ast.stmt) -> bool:
    value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
    if value is None:
        return False
    for n in ast.walk(value):
        if isinstance(n, ast.Call):
            func = n.func
            # constructors of built-in containers / typing helpers are fine (e.g. MEMO = dict(), T = TypeVar("T"))
            if isinstance(func, ast.Name) and func.id in ("dict", "set", "list", "tuple", "frozenset", "TypeVar",
                                                           "namedtuple", "defaultdict", "range", "int", "float",
                                                           "str", "object", "compile"):
                continue
            if isinstance(func, ast.Attribute) and func.attr in ("compile", "namedtuple", "defaultdict"):
                continue
            return True
    return False


def _join(chunks: list[str]) -> list[str]:
    out: list[str] = []
    for c in chunks:
        if out and ("def " in c.split("\n")[0] or "class " in c.split("\n")[0] or c.startswith("@")):
            out.append("")
        out.append(c)
    return out
