"""The concept catalogue: every family of synthetic task, its parameter space and how one instance is built.

A :class:`Concept` is one family of functions ("add a constant", "sum the elements that pass a test"). Its
``combos`` enumerate the *combination keys* that define what is being asked (the constant, the predicate, the
pair of composed operations); the train/test split holds out whole combination keys (see
:meth:`Concept.test_combos`), so a held-out task always asks for something no training task asks for. What is
left free inside a combination (the function name, argument names, phrasing, test inputs and, for
compositions, the constants) is drawn from the seed.

``build(combo, rng)`` returns a :class:`Draft`: the entry-point name, the arguments, the function body, the
English phrasings of what it does, a Python reference implementation (``ref``, written independently of the
source text, so that "the canonical solution passes its tests" is a real check of the rendering), and an input
sampler with the boundary inputs every test set must contain (so that off-by-one variants fail).

Three tiers:

- ``easy``: one arithmetic, comparison, string or list operation (``return x + 3``).
- ``medium``: conditionals and compositions of two or three operations (``return (x + 3) * 2``; an ``if``).
- ``hard``: small loops and list processing (accumulate over a filtered list, search, comprehensions).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from diffucoder.tasks.rng import TaskRng

TIERS = ("easy", "medium", "hard")

# operator precedence levels used to parenthesise rendered expressions
ATOM, POW, MUL, ADD = 4, 3, 2, 1


@dataclass(frozen=True)
class Arg:
    """One function argument: its name and kind (``int``, ``str`` or ``list`` of ints)."""

    name: str
    kind: str


@dataclass
class Draft:
    """One concrete function before it becomes a :class:`~diffucoder.tasks.generator.Task`."""

    name: str  # entry point
    args: tuple[Arg, ...]
    body: str  # the indented function body, ending with a newline
    descs: tuple[str, ...]  # third-person phrasings of what it does: "returns x plus 3"
    ref: Callable[..., Any]  # reference implementation, independent of ``body``
    sample: Callable[[TaskRng], tuple]  # one random argument tuple
    fixed: tuple[tuple, ...] = ()  # argument tuples every test set includes (boundaries)
    example: bool = False  # whether the question shows one worked example

    @property
    def solution(self) -> str:
        return f"def {self.name}({', '.join(a.name for a in self.args)}):\n{self.body}"


@dataclass(frozen=True)
class Concept:
    """A task family: name, tier, its combination keys and a builder for one instance."""

    name: str
    tier: str
    combos: tuple[tuple, ...]
    build: Callable[[tuple, TaskRng], Draft] = field(repr=False)
    holdout: float = 0.25  # fraction of combination keys reserved for the test split

    def test_combos(self) -> frozenset[tuple]:
        """The held-out combination keys: a fixed, seed-independent ``holdout`` fraction (at least one when the
        concept has two or more keys), chosen by ranking the keys by a SHA-256 of ``name|key``."""
        if len(self.combos) < 2 or self.holdout <= 0:
            return frozenset()
        k = min(len(self.combos) - 1, max(1, round(self.holdout * len(self.combos))))
        ranked = sorted(self.combos, key=lambda c: hashlib.sha256(f"{self.name}|{c!r}".encode()).hexdigest())
        return frozenset(ranked[:k])

    def split_combos(self, split: str) -> tuple[tuple, ...]:
        held = self.test_combos()
        if split == "test":
            return tuple(c for c in self.combos if c in held)
        if split == "train":
            return tuple(c for c in self.combos if c not in held)
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


CONCEPTS: dict[str, Concept] = {}


def _concept(name: str, tier: str, combos: Sequence[tuple], holdout: float = 0.25):
    def register(build: Callable[[tuple, TaskRng], Draft]) -> Callable[[tuple, TaskRng], Draft]:
        if name in CONCEPTS:
            raise ValueError(f"duplicate concept {name!r}")
        CONCEPTS[name] = Concept(name, tier, tuple(combos), build, holdout)
        return build

    return register


# ----------------------------------------------------------------------------------------------- helpers

INT_ARGS = ("x", "n", "num", "value")
STR_ARGS = ("s", "text", "word")
LIST_ARGS = ("nums", "values", "xs", "numbers")
PAIR_ARGS = (("a", "b"), ("x", "y"), ("m", "n"))
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _paren(src: str, needed: bool) -> str:
    return f"({src})" if needed else src


def _rand_str(rng: TaskRng, lo: int, hi: int, alphabet: str = LETTERS) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def _rand_list(rng: TaskRng, lo_len: int, hi_len: int, lo: int, hi: int) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(lo_len, hi_len))]


def _int_arg(rng: TaskRng) -> Arg:
    return Arg(rng.choice(INT_ARGS), "int")


def _str_arg(rng: TaskRng) -> Arg:
    return Arg(rng.choice(STR_ARGS), "str")


def _list_arg(rng: TaskRng) -> Arg:
    return Arg(rng.choice(LIST_ARGS), "list")


def _ret(expr: str) -> str:
    return f"    return {expr}\n"


def _fmt(descs: Sequence[str], **kw: Any) -> tuple[str, ...]:
    return tuple(d.format(**kw) for d in descs)


# ------------------------------------------------------------------------------ integer operations (shared)

OP_KINDS = ("add", "sub", "mul", "fdiv", "mod", "square")
_OP_RANGE = {"add": (1, 9), "sub": (1, 9), "mul": (2, 6), "fdiv": (2, 5), "mod": (2, 7), "square": (2, 2)}


@dataclass(frozen=True)
class IntOp:
    """One integer operation ``v -> v op k`` with its source rendering and its English phrasings."""

    kind: str
    k: int

    def apply(self, v: int) -> int:
        k = self.k
        return {"add": lambda: v + k, "sub": lambda: v - k, "mul": lambda: v * k, "fdiv": lambda: v // k,
                "mod": lambda: v % k, "square": lambda: v**2}[self.kind]()

    def render(self, src: str, prec: int = ATOM) -> tuple[str, int]:
        """Apply the operation to the expression ``src`` of precedence ``prec``: (source, its precedence)."""
        if self.kind == "square":
            return f"{_paren(src, prec <= POW)} ** 2", POW
        sym, p = {"add": ("+", ADD), "sub": ("-", ADD), "mul": ("*", MUL), "fdiv": ("//", MUL),
                  "mod": ("%", MUL)}[self.kind]
        return f"{_paren(src, prec < p)} {sym} {self.k}", p

    @property
    def step(self) -> str:  # "takes x, <step>, then <step>"
        return {"add": f"adds {self.k}", "sub": f"subtracts {self.k}", "mul": f"multiplies by {self.k}",
                "fdiv": f"divides by {self.k} rounding down", "mod": f"takes the remainder modulo {self.k}",
                "square": "squares the value"}[self.kind]

    @property
    def gerund(self) -> str:
        return {"add": f"adding {self.k}", "sub": f"subtracting {self.k}", "mul": f"multiplying by {self.k}",
                "fdiv": f"floor-dividing by {self.k}", "mod": f"taking the remainder modulo {self.k}",
                "square": "squaring"}[self.kind]

    def noun(self, of: str) -> str:  # "x plus 3"
        return {"add": f"{of} plus {self.k}", "sub": f"{of} minus {self.k}", "mul": f"{of} times {self.k}",
                "fdiv": f"{of} divided by {self.k} (rounded down)", "mod": f"{of} modulo {self.k}",
                "square": f"{of} squared"}[self.kind]


def _draw_op(kind: str, rng: TaskRng, avoid_k: int | None = None) -> IntOp:
    lo, hi = _OP_RANGE[kind]
    k = rng.randint(lo, hi)
    if avoid_k is not None and k == avoid_k and hi > lo:
        k = lo if k != lo else hi
    return IntOp(kind, k)


def _chain(ops: Sequence[IntOp], start: str) -> str:
    src, prec = start, ATOM
    for op in ops:
        src, prec = op.render(src, prec)
    return src


# --------------------------------------------------------------------------------- predicates (shared)

PRED_KINDS = ("gt", "lt", "even", "odd", "mult")


@dataclass(frozen=True)
class Pred:
    """A test on one list element ``v`` (greater than k, less than k, even, odd, divisible by k)."""

    kind: str
    k: int = 0

    def __call__(self, v: int) -> bool:
        return {"gt": lambda: v > self.k, "lt": lambda: v < self.k, "even": lambda: v % 2 == 0,
                "odd": lambda: v % 2 == 1, "mult": lambda: v % self.k == 0}[self.kind]()

    def src(self, v: str) -> str:
        return {"gt": f"{v} > {self.k}", "lt": f"{v} < {self.k}", "even": f"{v} % 2 == 0",
                "odd": f"{v} % 2 == 1", "mult": f"{v} % {self.k} == 0"}[self.kind]

    @property
    def phrase(self) -> str:  # "... that are <phrase>"
        return {"gt": f"greater than {self.k}", "lt": f"less than {self.k}", "even": "even", "odd": "odd",
                "mult": f"divisible by {self.k}"}[self.kind]

    @property
    def tag(self) -> str:  # for function names
        return {"gt": f"above_{self.k}", "lt": f"below_{self.k}", "even": "even", "odd": "odd",
                "mult": f"multiples_of_{self.k}"}[self.kind]

    def element(self, rng: TaskRng) -> int:
        if self.kind in ("gt", "lt"):
            return rng.randint(self.k - 4, self.k + 4) if rng.coin(0.75) else rng.randint(-5, 15)
        return rng.randint(-6, 15)

    def singletons(self) -> list[list[int]]:
        """One-element lists on the predicate's edge: they pin down the constant and the comparison."""
        if self.kind in ("gt", "lt"):
            return [[self.k - 1], [self.k], [self.k + 1]]
        if self.kind == "mult":
            return [[self.k], [self.k + 1], [self.k - 1], [2 * self.k + 2]]
        return [[4], [7], [10]]

    def boundary_list(self, rng: TaskRng) -> list[int]:
        """A list whose elements sit on the predicate's edge (k-1, k, k+1 for comparisons)."""
        if self.kind in ("gt", "lt"):
            vals = [self.k - 1, self.k, self.k + 1, rng.randint(-5, 15)]
        elif self.kind == "mult":
            vals = [self.k, self.k + 1, self.k - 1, 2 * self.k, 2 * self.k + 1]
        else:
            vals = [rng.randint(-6, 15) for _ in range(4)] + [0, 7]
        return rng.sample(vals, len(vals))


def _draw_pred(kind: str, rng: TaskRng) -> Pred:
    if kind in ("gt", "lt"):
        return Pred(kind, rng.randint(0, 10))
    if kind == "mult":
        return Pred(kind, rng.randint(3, 5))
    return Pred(kind)


# =========================================================================================== easy tier


@_concept("add_const", "easy", [(k,) for k in range(2, 31)])
def _add_const(combo: tuple, rng: TaskRng) -> Draft:
    (k,), x = combo, _int_arg(rng)
    return Draft(
        rng.choice([f"add_{k}", f"plus_{k}", f"increase_by_{k}"]), (x,), _ret(f"{x.name} + {k}"),
        _fmt(["returns {x} plus {k}", "returns {x} increased by {k}", "adds {k} to {x} and returns the result",
              "returns the sum of {x} and {k}"], x=x.name, k=k),
        lambda v: v + k, lambda r: (r.randint(-20, 50),))


@_concept("sub_const", "easy", [(k,) for k in range(2, 31)])
def _sub_const(combo: tuple, rng: TaskRng) -> Draft:
    (k,), x = combo, _int_arg(rng)
    return Draft(
        rng.choice([f"sub_{k}", f"minus_{k}", f"decrease_by_{k}"]), (x,), _ret(f"{x.name} - {k}"),
        _fmt(["returns {x} minus {k}", "returns {x} decreased by {k}",
              "subtracts {k} from {x} and returns the result", "returns the difference {x} - {k}"], x=x.name, k=k),
        lambda v: v - k, lambda r: (r.randint(-20, 50),))


@_concept("rsub_const", "easy", [(k,) for k in range(2, 31)])
def _rsub_const(combo: tuple, rng: TaskRng) -> Draft:
    (k,), x = combo, _int_arg(rng)
    return Draft(
        rng.choice([f"from_{k}", f"subtract_from_{k}", f"complement_{k}"]), (x,), _ret(f"{k} - {x.name}"),
        _fmt(["returns {k} minus {x}", "subtracts {x} from {k} and returns the result",
              "returns the difference {k} - {x}"], x=x.name, k=k),
        lambda v: k - v, lambda r: (r.randint(-20, 50),))


@_concept("mul_const", "easy", [(k,) for k in range(2, 13)])
def _mul_const(combo: tuple, rng: TaskRng) -> Draft:
    (k,), x = combo, _int_arg(rng)
    return Draft(
        rng.choice([f"times_{k}", f"mul_{k}", f"multiply_by_{k}"]), (x,), _ret(f"{x.name} * {k}"),
        _fmt(["returns {x} multiplied by {k}", "returns {k} times {x}", "returns the product of {x} and {k}",
              "multiplies {x} by {k} and returns the result"], x=x.name, k=k),
        lambda v: v * k, lambda r: (r.randint(-20, 50),))


@_concept("fdiv_const", "easy", [(k,) for k in range(2, 11)])
def _fdiv_const(combo: tuple, rng: TaskRng) -> Draft:
    (k,), x = combo, _int_arg(rng)
    return Draft(
        rng.choice([f"div_{k}", f"floor_div_{k}", f"divide_by_{k}"]), (x,), _ret(f"{x.name} // {k}"),
        _fmt(["returns {x} divided by {k}, rounded down", "returns the integer quotient of {x} divided by {k}",
              "divides {x} by {k} with floor division and returns the result"], x=x.name, k=k),
        lambda v: v // k, lambda r: (r.randint(-30, 90),), fixed=((k,), (k - 1,), (3 * k + 1,)))


@_concept("mod_const", "easy", [(k,) for k in range(2, 13)])
def _mod_const(combo: tuple, rng: TaskRng) -> Draft:
    (k,), x = combo, _int_arg(rng)
    return Draft(
        rng.choice([f"mod_{k}", f"remainder_{k}", f"modulo_{k}"]), (x,), _ret(f"{x.name} % {k}"),
        _fmt(["returns the remainder of {x} divided by {k}", "returns {x} modulo {k}",
              "returns the remainder when {x} is divided by {k}"], x=x.name, k=k),
        lambda v: v % k, lambda r: (r.randint(0, 90),), fixed=((k + 1,), (2 * k - 1,)))


@_concept("power", "easy", [(p,) for p in (2, 3, 4)])
def _power(combo: tuple, rng: TaskRng) -> Draft:
    (p,), x = combo, _int_arg(rng)
    special = {2: ["square", "squared"], 3: ["cube", "cubed"], 4: ["fourth_power"]}[p]
    return Draft(
        rng.choice([f"power_{p}", f"pow_{p}", *special]), (x,), _ret(f"{x.name} ** {p}"),
        _fmt(["returns {x} raised to the power {p}", "returns {x} to the power of {p}",
              "returns {x} multiplied by itself {p} times over, that is {x} ** {p}"], x=x.name, p=p),
        lambda v: v**p, lambda r: (r.randint(-6, 9),), fixed=((3,), (-2,)))


_CMP = {
    ">": (["greater_than_{k}", "above_{k}", "is_over_{k}"],
          ["returns True if {x} is greater than {k} and False otherwise", "returns whether {x} is strictly "
           "greater than {k}", "checks if {x} > {k}"]),
    "<": (["less_than_{k}", "below_{k}", "is_under_{k}"],
          ["returns True if {x} is less than {k} and False otherwise", "returns whether {x} is strictly "
           "smaller than {k}", "checks if {x} < {k}"]),
    ">=": (["at_least_{k}", "is_at_least_{k}", "not_below_{k}"],
           ["returns True if {x} is greater than or equal to {k} and False otherwise", "returns whether {x} is "
            "at least {k}", "checks if {x} >= {k}"]),
    "<=": (["at_most_{k}", "is_at_most_{k}", "not_above_{k}"],
           ["returns True if {x} is less than or equal to {k} and False otherwise", "returns whether {x} is "
            "at most {k}", "checks if {x} <= {k}"]),
}
_CMP_FN = {">": lambda a, b: a > b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
           "<=": lambda a, b: a <= b}


@_concept("compare", "easy", [(op, k) for op in _CMP for k in range(0, 21)])
def _compare(combo: tuple, rng: TaskRng) -> Draft:
    (op, k), x = combo, _int_arg(rng)
    names, descs = _CMP[op]
    fn = _CMP_FN[op]
    return Draft(
        rng.choice(names).format(k=k), (x,), _ret(f"{x.name} {op} {k}"), _fmt(descs, x=x.name, k=k),
        lambda v: fn(v, k), lambda r: (r.randint(k - 8, k + 8),), fixed=((k,), (k + 1,), (k - 1,)))


@_concept("is_multiple", "easy", [(k,) for k in range(2, 13)])
def _is_multiple(combo: tuple, rng: TaskRng) -> Draft:
    (k,), x = combo, _int_arg(rng)
    return Draft(
        rng.choice([f"is_multiple_of_{k}", f"divisible_by_{k}", f"is_divisible_by_{k}"]), (x,),
        _ret(f"{x.name} % {k} == 0"),
        _fmt(["returns True if {x} is divisible by {k} and False otherwise", "returns whether {x} is a "
              "multiple of {k}", "checks if {x} divides evenly by {k}"], x=x.name, k=k),
        lambda v: v % k == 0, lambda r: (r.randint(0, 60),), fixed=((k,), (k + 1,), (k - 1,), (2 * k,)))


_BINARY = {
    "add": ("{a} + {b}", lambda a, b: a + b, ["add", "plus", "sum_two"],
            ["returns the sum of {a} and {b}", "returns {a} plus {b}", "adds {a} and {b} and returns the result"]),
    "sub": ("{a} - {b}", lambda a, b: a - b, ["subtract", "minus", "difference"],
            ["returns {a} minus {b}", "subtracts {b} from {a} and returns the result",
             "returns the difference {a} - {b}"]),
    "mul": ("{a} * {b}", lambda a, b: a * b, ["multiply", "product", "times"],
            ["returns the product of {a} and {b}", "returns {a} times {b}",
             "multiplies {a} by {b} and returns the result"]),
    "max": ("max({a}, {b})", max, ["bigger", "maximum", "larger"],
            ["returns the larger of {a} and {b}", "returns the maximum of {a} and {b}",
             "returns whichever of {a} and {b} is bigger"]),
    "min": ("min({a}, {b})", min, ["smaller", "minimum", "lesser"],
            ["returns the smaller of {a} and {b}", "returns the minimum of {a} and {b}",
             "returns whichever of {a} and {b} is smaller"]),
}


@_concept("binary", "easy", [(op,) for op in _BINARY])
def _binary(combo: tuple, rng: TaskRng) -> Draft:
    (op,) = combo
    a, b = rng.choice(PAIR_ARGS)
    src, fn, names, descs = _BINARY[op]
    return Draft(
        rng.choice(names), (Arg(a, "int"), Arg(b, "int")), _ret(src.format(a=a, b=b)), _fmt(descs, a=a, b=b),
        fn, lambda r: (r.randint(-20, 40), r.randint(-20, 40)), fixed=((3, 7), (9, 2)))


@_concept("repeat", "easy", [(k,) for k in range(2, 7)])
def _repeat(combo: tuple, rng: TaskRng) -> Draft:
    (k,), s = combo, _str_arg(rng)
    return Draft(
        rng.choice([f"repeat_{k}", f"echo_{k}", f"repeat_{k}_times"]), (s,), _ret(f"{s.name} * {k}"),
        _fmt(["returns {s} repeated {k} times", "returns {k} copies of {s} joined together",
              "returns the string {s} written {k} times in a row"], s=s.name, k=k),
        lambda v: v * k, lambda r: (_rand_str(r, 1, 5),))


AFFIXES = ("ing", "ed", "er", "s", "!", "?", "abc", "xyz", "_x", "pre", "un", "re")


@_concept("affix", "easy", [(side, w) for side in ("suffix", "prefix") for w in AFFIXES])
def _affix(combo: tuple, rng: TaskRng) -> Draft:
    (side, w), s = combo, _str_arg(rng)
    if side == "suffix":
        names = ["add_suffix", "append_text", "with_suffix"]
        descs = ['returns {s} with "{w}" added to the end', 'appends "{w}" to {s} and returns the result',
                 'returns {s} followed by "{w}"']
        src, fn = f'{s.name} + "{w}"', lambda v: v + w
    else:
        names = ["add_prefix", "prepend_text", "with_prefix"]
        descs = ['returns {s} with "{w}" added to the front', 'prepends "{w}" to {s} and returns the result',
                 'returns "{w}" followed by {s}']
        src, fn = f'"{w}" + {s.name}', lambda v: w + v
    return Draft(rng.choice(names), (s,), _ret(src), _fmt(descs, s=s.name, w=w), fn,
                 lambda r: (_rand_str(r, 0, 6),))


@_concept("str_slice", "easy", [(side, k) for side in ("first", "last") for k in range(1, 7)])
def _str_slice(combo: tuple, rng: TaskRng) -> Draft:
    (side, k), s = combo, _str_arg(rng)
    if side == "first":
        names = [f"first_{k}", f"head_{k}", f"first_{k}_chars"]
        descs = ["returns the first {k} characters of {s}", "returns {s} cut down to its first {k} characters",
                 "returns the first {k} characters of {s} (all of {s} if it is shorter)"]
        src, fn = f"{s.name}[:{k}]", lambda v: v[:k]
    else:
        names = [f"last_{k}", f"tail_{k}", f"last_{k}_chars"]
        descs = ["returns the last {k} characters of {s}", "returns only the final {k} characters of {s}",
                 "returns the last {k} characters of {s} (all of {s} if it is shorter)"]
        src, fn = f"{s.name}[-{k}:]", lambda v: v[-k:]
    return Draft(rng.choice(names), (s,), _ret(src), _fmt(descs, s=s.name, k=k), fn,
                 lambda r: (_rand_str(r, 0, 10),), fixed=(("abcdefghij"[: k + 2],), ("zyxwvutsrq"[: k + 3],)))


@_concept("count_char", "easy", [(c,) for c in "abcdeiost"])
def _count_char(combo: tuple, rng: TaskRng) -> Draft:
    (c,), s = combo, _str_arg(rng)
    return Draft(
        rng.choice([f"count_{c}", f"count_letter_{c}", f"num_{c}"]), (s,), _ret(f'{s.name}.count("{c}")'),
        _fmt(['returns how many times the letter "{c}" appears in {s}', 'counts the occurrences of "{c}" in {s}',
              'returns the number of "{c}" characters in {s}'], s=s.name, c=c),
        lambda v: v.count(c), lambda r: (_rand_str(r, 0, 9, "abcdeiost" + c * 4),))


@_concept("replace", "easy", [(a, b) for a in "aeiost" for b in "aeiost" if a != b])
def _replace(combo: tuple, rng: TaskRng) -> Draft:
    (a, b), s = combo, _str_arg(rng)
    return Draft(
        rng.choice([f"replace_{a}_{b}", f"replace_{a}_with_{b}", f"swap_{a}_to_{b}"]), (s,),
        _ret(f'{s.name}.replace("{a}", "{b}")'),
        _fmt(['returns {s} with every "{a}" replaced by "{b}"', 'replaces each "{a}" in {s} with "{b}" and '
              'returns the result', 'returns a copy of {s} in which every "{a}" becomes "{b}"'], s=s.name, a=a, b=b),
        lambda v: v.replace(a, b), lambda r: (_rand_str(r, 1, 9, "aeiostxyz" + a * 3),))


_STR_BASIC = {
    "upper": ("{s}.upper()", str.upper, ["to_upper", "shout", "uppercase"],
              ["returns {s} converted to uppercase", "returns {s} in capital letters",
               "returns an uppercase copy of {s}"]),
    "lower": ("{s}.lower()", str.lower, ["to_lower", "lowercase", "whisper"],
              ["returns {s} converted to lowercase", "returns {s} in small letters",
               "returns a lowercase copy of {s}"]),
    "reverse": ("{s}[::-1]", lambda v: v[::-1], ["reverse", "reverse_string", "backwards"],
                ["returns {s} reversed", "returns the characters of {s} in reverse order",
                 "returns {s} read backwards"]),
    "length": ("len({s})", len, ["length", "str_len", "count_chars"],
               ["returns the number of characters in {s}", "returns the length of {s}",
                "returns how many characters {s} has"]),
    "capitalize": ("{s}.capitalize()", str.capitalize, ["capitalize", "cap_first", "capitalize_word"],
                   ["returns {s} with its first character in uppercase and the rest in lowercase",
                    "returns a capitalized copy of {s}"]),
}


@_concept("str_basic", "easy", [(m,) for m in _STR_BASIC])
def _str_basic(combo: tuple, rng: TaskRng) -> Draft:
    (m,), s = combo, _str_arg(rng)
    src, fn, names, descs = _STR_BASIC[m]
    return Draft(rng.choice(names), (s,), _ret(src.format(s=s.name)), _fmt(descs, s=s.name), fn,
                 lambda r: (_rand_str(r, 0, 8, "abcdefgxyzABCXYZ"),), fixed=(("hello",),))


_LIST_BASIC = {
    "sum": ("sum({xs})", sum, ["total", "list_sum", "sum_all"],
            ["returns the sum of the elements of {xs}", "adds up all the numbers in {xs} and returns the total"]),
    "max": ("max({xs})", max, ["largest", "max_value", "biggest"],
            ["returns the largest element of {xs}", "returns the maximum value in {xs}"]),
    "min": ("min({xs})", min, ["smallest", "min_value", "lowest"],
            ["returns the smallest element of {xs}", "returns the minimum value in {xs}"]),
    "len": ("len({xs})", len, ["count_items", "list_length", "size"],
            ["returns the number of elements in {xs}", "returns the length of {xs}"]),
    "sorted": ("sorted({xs})", sorted, ["sort_list", "sorted_copy", "ascending"],
               ["returns a new list with the elements of {xs} in ascending order",
                "returns {xs} sorted from smallest to largest"]),
    "reversed": ("{xs}[::-1]", lambda v: v[::-1], ["reverse_list", "reversed_copy", "backwards_list"],
                 ["returns a new list with the elements of {xs} in reverse order", "returns {xs} reversed"]),
    "first": ("{xs}[0]", lambda v: v[0], ["first_item", "head", "first_element"],
              ["returns the first element of {xs}", "returns the element of {xs} at index 0"]),
    "last": ("{xs}[-1]", lambda v: v[-1], ["last_item", "last_element", "final_element"],
             ["returns the last element of {xs}", "returns the final element of {xs}"]),
}


@_concept("list_basic", "easy", [(m,) for m in _LIST_BASIC])
def _list_basic(combo: tuple, rng: TaskRng) -> Draft:
    (m,), xs = combo, _list_arg(rng)
    src, fn, names, descs = _LIST_BASIC[m]
    extra = " (the list is never empty)" if m in ("max", "min", "first", "last") else ""
    return Draft(rng.choice(names), (xs,), _ret(src.format(xs=xs.name)),
                 tuple(d + extra for d in _fmt(descs, xs=xs.name)), fn,
                 lambda r: (_rand_list(r, 1, 7, -9, 20),), fixed=(([4, -2, 9],),))


@_concept("list_value", "easy", [(mode, k) for mode in ("count", "contains") for k in range(0, 13)])
def _list_value(combo: tuple, rng: TaskRng) -> Draft:
    (mode, k), xs = combo, _list_arg(rng)
    if mode == "count":
        names = [f"count_{k}", f"count_value_{k}", f"occurrences_of_{k}"]
        descs = ["returns how many times {k} appears in {xs}", "counts the elements of {xs} equal to {k}"]
        src, fn = f"{xs.name}.count({k})", lambda v: v.count(k)
    else:
        names = [f"contains_{k}", f"has_{k}", f"includes_{k}"]
        descs = ["returns True if {k} is an element of {xs} and False otherwise",
                 "returns whether {xs} contains the number {k}"]
        src, fn = f"{k} in {xs.name}", lambda v: k in v
    return Draft(rng.choice(names), (xs,), _ret(src), _fmt(descs, xs=xs.name, k=k), fn,
                 lambda r: (_rand_list(r, 0, 7, k - 2, k + 2),), fixed=(([k, k + 1, k],), ([k - 1, 5],)))


# ========================================================================================= medium tier


def _compose_combos(n: int) -> list[tuple]:
    out = []
    for kinds in itertools.product(OP_KINDS, repeat=n):
        adjacent = list(zip(kinds, kinds[1:]))
        if any(a == b or {a, b} == {"add", "sub"} for a, b in adjacent):
            continue
        out.append(kinds)
    return out


def _compose(combo: tuple, rng: TaskRng) -> Draft:
    x = _int_arg(rng)
    ops: list[IntOp] = []
    for kind in combo:
        prev = ops[-1].k if ops and ops[-1].kind in ("mul", "fdiv") and kind in ("mul", "fdiv") else None
        ops.append(_draw_op(kind, rng, avoid_k=prev))
    expr = _chain(ops, x.name)
    steps = ", then ".join(op.step for op in ops)
    gerunds = " and then ".join(op.gerund for op in ops)
    descs = (f"takes {x.name}, {steps}, and returns the result",
             f"starts from {x.name}, {steps}, and returns what it gets",
             f"returns the value obtained from {x.name} by {gerunds}",
             f"returns {expr}")
    names = ["_then_".join(combo), "_".join(combo), "transform", "compute"]

    def ref(v: int) -> int:
        for op in ops:
            v = op.apply(v)
        return v

    return Draft(rng.choice(names), (x,), _ret(expr), descs, ref, lambda r: (r.randint(-15, 40),), example=True)


CONCEPTS_COMPOSE = [
    _concept("compose2", "medium", _compose_combos(2))(_compose),
    _concept("compose3", "medium", _compose_combos(3))(_compose),
]

_BRANCH_KINDS = ("add", "sub", "mul", "square")
_CMP_WORDS = {">": "greater than", "<": "less than", ">=": "at least", "<=": "at most"}


@_concept("branch", "medium", [(op, a, b) for op in _CMP for a in _BRANCH_KINDS for b in _BRANCH_KINDS if a != b])
def _branch(combo: tuple, rng: TaskRng) -> Draft:
    (op, ka, kb), x = combo, _int_arg(rng)
    k = rng.randint(0, 15)
    a, b = _draw_op(ka, rng), _draw_op(kb, rng)
    ea, eb = _chain([a], x.name), _chain([b], x.name)
    fn = _CMP_FN[op]
    body = f"    if {x.name} {op} {k}:\n        return {ea}\n    return {eb}\n"
    w = _CMP_WORDS[op]
    descs = (f"returns {a.noun(x.name)} if {x.name} is {w} {k}, and {b.noun(x.name)} otherwise",
             f"returns {b.noun(x.name)}, except when {x.name} is {w} {k}, in which case it returns {a.noun(x.name)}",
             f"returns {ea} when {x.name} {op} {k} holds and {eb} otherwise")
    return Draft(rng.choice(["piecewise", "branch", f"step_{k}", "adjust"]), (x,), body, descs,
                 lambda v: a.apply(v) if fn(v, k) else b.apply(v), lambda r: (r.randint(-10, 30),),
                 fixed=((k,), (k + 1,), (k - 1,)), example=True)


_PARITY_KINDS = ("add", "sub", "mul", "fdiv", "square")


@_concept("parity", "medium", [(a, b) for a in _PARITY_KINDS for b in _PARITY_KINDS if a != b])
def _parity(combo: tuple, rng: TaskRng) -> Draft:
    (ka, kb), x = combo, _int_arg(rng)
    a, b = _draw_op(ka, rng), _draw_op(kb, rng)
    ea, eb = _chain([a], x.name), _chain([b], x.name)
    body = f"    if {x.name} % 2 == 0:\n        return {ea}\n    return {eb}\n"
    descs = (f"returns {a.noun(x.name)} if {x.name} is even and {b.noun(x.name)} if {x.name} is odd",
             f"returns {b.noun(x.name)} for odd {x.name} and {a.noun(x.name)} for even {x.name}",
             f"checks the parity of {x.name}: even numbers give {ea}, odd numbers give {eb}")
    r0, r1 = rng.randint(-5, 5), rng.randint(6, 15)
    return Draft(rng.choice(["by_parity", "even_odd", "parity_step", f"{ka}_or_{kb}"]), (x,), body, descs,
                 lambda v: a.apply(v) if v % 2 == 0 else b.apply(v), lambda r: (r.randint(-10, 30),),
                 fixed=((2 * r0,), (2 * r0 + 1,), (2 * r1,), (2 * r1 + 1,)), example=True)


@_concept("clamp", "medium", [(lo, w) for lo in range(0, 11) for w in (4, 6, 8, 10, 12, 15, 20)])
def _clamp(combo: tuple, rng: TaskRng) -> Draft:
    (lo, w), x = combo, _int_arg(rng)
    hi = lo + w
    n = x.name
    body = f"    if {n} < {lo}:\n        return {lo}\n    if {n} > {hi}:\n        return {hi}\n    return {n}\n"
    descs = (f"returns {lo} if {n} is below {lo}, {hi} if {n} is above {hi}, and {n} itself otherwise",
             f"clamps {n} into the range from {lo} to {hi} inclusive",
             f"returns {n} if it lies between {lo} and {hi}, otherwise the nearer of {lo} and {hi}")
    return Draft(rng.choice(["clamp", f"clamp_{lo}_{hi}", "limit", "bound"]), (x,), body, descs,
                 lambda v: min(max(v, lo), hi), lambda r: (r.randint(lo - 10, hi + 10),),
                 fixed=((lo - 1,), (lo,), (hi,), (hi + 1,)), example=True)


FIZZ_WORDS = ("Fizz", "Buzz", "Bang", "Ping", "Pop", "Zap")


@_concept("fizz", "medium", [(k,) for k in range(2, 10)])
def _fizz(combo: tuple, rng: TaskRng) -> Draft:
    (k,), x = combo, _int_arg(rng)
    word = rng.choice(FIZZ_WORDS)
    n = x.name
    body = f'    if {n} % {k} == 0:\n        return "{word}"\n    return str({n})\n'
    descs = (f'returns "{word}" if {n} is divisible by {k}, and otherwise {n} as a string',
             f'returns the string "{word}" for multiples of {k} and str({n}) for every other number',
             f'returns "{word}" when {n} % {k} == 0, else the decimal string of {n}')
    return Draft(rng.choice([f"fizz_{k}", "word_or_number", f"label_{k}", word.lower()]), (x,), body, descs,
                 lambda v: word if v % k == 0 else str(v), lambda r: (r.randint(1, 40),),
                 fixed=((k,), (k + 1,), (k - 1,), (2 * k,)), example=True)


_STR_OP_KINDS = ("upper", "reverse", "repeat", "suffix", "prefix", "first")


@dataclass(frozen=True)
class StrOp:
    """One string operation for compositions."""

    kind: str
    k: int = 0
    w: str = ""

    def apply(self, v: str) -> str:
        return {"upper": lambda: v.upper(), "reverse": lambda: v[::-1], "repeat": lambda: v * self.k,
                "suffix": lambda: v + self.w, "prefix": lambda: self.w + v, "first": lambda: v[: self.k]}[self.kind]()

    def render(self, src: str, prec: int) -> tuple[str, int]:
        if self.kind == "upper":
            return f"{_paren(src, prec < ATOM)}.upper()", ATOM
        if self.kind == "reverse":
            return f"{_paren(src, prec < ATOM)}[::-1]", ATOM
        if self.kind == "first":
            return f"{_paren(src, prec < ATOM)}[:{self.k}]", ATOM
        if self.kind == "repeat":
            return f"{_paren(src, prec < MUL)} * {self.k}", MUL
        if self.kind == "suffix":
            return f'{_paren(src, prec < ADD)} + "{self.w}"', ADD
        return f'"{self.w}" + {_paren(src, prec <= ADD)}', ADD

    @property
    def step(self) -> str:
        return {"upper": "converts it to uppercase", "reverse": "reverses it", "repeat": f"repeats it {self.k} times",
                "suffix": f'appends "{self.w}"', "prefix": f'puts "{self.w}" in front',
                "first": f"keeps only the first {self.k} characters"}[self.kind]


@_concept("str_compose", "medium", [(a, b) for a in _STR_OP_KINDS for b in _STR_OP_KINDS if a != b])
def _str_compose(combo: tuple, rng: TaskRng) -> Draft:
    s = _str_arg(rng)
    ops = []
    for kind in combo:
        ops.append(StrOp(kind, k=rng.randint(2, 3) if kind == "repeat" else rng.randint(1, 4),
                         w=rng.choice(("ing", "ed", "s", "!", "xyz", "un", "re"))))
    src, prec = s.name, ATOM
    for op in ops:
        src, prec = op.render(src, prec)
    steps = ", then ".join(op.step for op in ops)
    descs = (f"takes {s.name}, {steps}, and returns the result",
             f"starts from the string {s.name}, {steps}, and returns the new string",
             f"returns {src}")

    def ref(v: str) -> str:
        for op in ops:
            v = op.apply(v)
        return v

    return Draft(rng.choice(["_then_".join(combo), "transform_text", "process", "format_text"]), (s,), _ret(src),
                 descs, ref, lambda r: (_rand_str(r, 0, 8),), fixed=(("python",),), example=True)


_REDUCERS = {"sum": ("sum", sum, "the sum of {xs}"), "max": ("max", max, "the largest element of {xs}"),
             "min": ("min", min, "the smallest element of {xs}"), "len": ("len", len, "the length of {xs}")}


@_concept("reduce_op", "medium", [(r, o) for r in _REDUCERS for o in OP_KINDS])
def _reduce_op(combo: tuple, rng: TaskRng) -> Draft:
    (rk, ok), xs = combo, _list_arg(rng)
    fname, rfn, rnoun = _REDUCERS[rk]
    op = _draw_op(ok, rng)
    noun = rnoun.format(xs=xs.name)
    expr = _chain([op], f"{fname}({xs.name})")
    descs = (f"returns {op.noun(noun)}", f"computes {noun}, then {op.step}, and returns the result",
             f"returns {expr} (the list is never empty)")
    return Draft(rng.choice([f"{rk}_{ok}", f"{rk}_then_{ok}", "list_score", "summarize"]), (xs,), _ret(expr),
                 descs, lambda v: op.apply(rfn(v)), lambda r: (_rand_list(r, 1, 10, -9, 25),), example=True)


@_concept("truncate", "medium", [(k,) for k in range(3, 11)])
def _truncate(combo: tuple, rng: TaskRng) -> Draft:
    (k,), s = combo, _str_arg(rng)
    n = s.name
    body = f'    if len({n}) > {k}:\n        return {n}[:{k}] + "..."\n    return {n}\n'
    descs = (f'returns {n} unchanged if it has at most {k} characters, and otherwise its first {k} characters '
             f'followed by "..."',
             f'shortens {n} to its first {k} characters plus "..." when it is longer than {k} characters, and '
             f'returns it as it is otherwise')
    return Draft(rng.choice(["truncate", "shorten", f"truncate_{k}", "clip_text"]), (s,), body, descs,
                 lambda v: v[:k] + "..." if len(v) > k else v, lambda r: (_rand_str(r, 0, k + 6),),
                 fixed=(("abcdefghijklmnop"[: k - 1],), ("qrstuvwxyzabcdef"[:k],), ("bcdefghijklmnopq"[: k + 1],)),
                 example=True)


# =========================================================================================== hard tier

_AGGS = {
    "sum": ("total", "0", "total += v", "sum", "the sum of", " (0 if there are none)"),
    "count": ("count", "0", "count += 1", "count", "the number of", ""),
    "sumsq": ("total", "0", "total += v * v", "sum_squares", "the sum of the squares of", " (0 if there are none)"),
    "product": ("product", "1", "product *= v", "product", "the product of", " (1 if there are none)"),
}
_AGG_FN = {"sum": lambda vs: sum(vs), "count": lambda vs: len(vs), "sumsq": lambda vs: sum(v * v for v in vs),
           "product": lambda vs: _prod(vs)}


def _prod(vs: Sequence[int]) -> int:
    out = 1
    for v in vs:
        out *= v
    return out


def _pred_fixed(pred: Pred, rng: TaskRng) -> tuple[tuple, ...]:
    return (([],), *((s,) for s in pred.singletons()), (pred.boundary_list(rng),))


def _pred_list_sampler(pred: Pred, lo_len: int = 0, hi_len: int = 7) -> Callable[[TaskRng], tuple]:
    return lambda r: ([pred.element(r) for _ in range(r.randint(lo_len, hi_len))],)


@_concept("aggregate", "hard", [(a, p) for a in _AGGS for p in PRED_KINDS])
def _aggregate(combo: tuple, rng: TaskRng) -> Draft:
    (ak, pk), xs = combo, _list_arg(rng)
    pred = _draw_pred(pk, rng)
    var, init, update, aname, aphrase, empty = _AGGS[ak]
    body = (f"    {var} = {init}\n    for v in {xs.name}:\n        if {pred.src('v')}:\n"
            f"            {update}\n    return {var}\n")
    descs = (f"returns {aphrase} the elements of {xs.name} that are {pred.phrase}{empty}",
             f"loops over {xs.name} and returns {aphrase} the elements that are {pred.phrase}{empty}")
    agg = _AGG_FN[ak]
    return Draft(rng.choice([f"{aname}_{pred.tag}", f"{aname}_if_{pred.tag}", "aggregate", "scan_list"]), (xs,),
                 body, descs, lambda v: agg([e for e in v if pred(e)]), _pred_list_sampler(pred),
                 fixed=_pred_fixed(pred, rng), example=True)


_MAPS = {"add": ("v + {k}", "each increased by {k}", "add_{k}"), "sub": ("v - {k}", "each decreased by {k}", "sub_{k}"),
         "mul": ("v * {k}", "each multiplied by {k}", "times_{k}"), "square": ("v * v", "each squared", "squares"),
         "identity": ("v", "", "keep")}


@_concept("map_filter", "hard",
          [(m, p) for m in _MAPS for p in (*PRED_KINDS, "none") if not (m == "identity" and p == "none")])
def _map_filter(combo: tuple, rng: TaskRng) -> Draft:
    (mk, pk), xs = combo, _list_arg(rng)
    k = rng.randint(2, 5)
    msrc, mphrase, mtag = (t.format(k=k) for t in _MAPS[mk])
    mfn = {"add": lambda v: v + k, "sub": lambda v: v - k, "mul": lambda v: v * k, "square": lambda v: v * v,
           "identity": lambda v: v}[mk]
    if pk == "none":
        pred = None
        expr = f"[{msrc} for v in {xs.name}]"
        descs = (f"returns a new list with the elements of {xs.name} {mphrase}, in the same order",
                 f"returns a list containing {msrc} for every element v of {xs.name}")
        names = [f"{mtag}_all", f"map_{mtag}", "transform_list"]
    else:
        pred = _draw_pred(pk, rng)
        expr = f"[{msrc} for v in {xs.name} if {pred.src('v')}]"
        tail = f", {mphrase}" if mphrase else ""
        descs = (f"returns a new list with the elements of {xs.name} that are {pred.phrase}{tail}, in the "
                 f"original order",
                 f"returns a list containing {msrc} for every element v of {xs.name} that is {pred.phrase}")
        names = [f"{mtag}_{pred.tag}", f"select_{pred.tag}" if mk == "identity" else f"{mtag}_if_{pred.tag}",
                 "filter_map"]

    def ref(v: list[int]) -> list[int]:
        return [mfn(e) for e in v if pred is None or pred(e)]

    sampler = _pred_list_sampler(pred) if pred else (lambda r: (_rand_list(r, 0, 6, -8, 15),))
    fixed = _pred_fixed(pred, rng) if pred else (([],), ([3, -1, 8],))
    return Draft(rng.choice(names), (xs,), _ret(expr), descs, ref, sampler, fixed=fixed, example=True)


_TERMS = {"i": ("i", "i"), "sq": ("i * i", "i * i"), "mul": ("i * {k}", "i * {k}"), "add": ("i + {k}", "i + {k}")}


@_concept("range_agg", "hard",
          [("sum", t, s) for t in _TERMS for s in (0, 1)] + [("product", t, 1) for t in _TERMS])
def _range_agg(combo: tuple, rng: TaskRng) -> Draft:
    (agg, tk, start), n = combo, Arg(rng.choice(("n", "m", "limit")), "int")
    k = rng.randint(2, 5) if tk == "mul" else rng.randint(1, 4)
    term = _TERMS[tk][0].format(k=k)
    tfn = {"i": lambda i: i, "sq": lambda i: i * i, "mul": lambda i: i * k, "add": lambda i: i + k}[tk]
    rng_src = f"range({n.name} + 1)" if start == 0 else f"range(1, {n.name} + 1)"
    if agg == "sum":
        body = f"    total = 0\n    for i in {rng_src}:\n        total += {term}\n    return total\n"
        what, empty, names = "the sum", "0", [f"sum_{tk}_terms", "series_sum", "accumulate"]
    else:
        body = f"    result = 1\n    for i in {rng_src}:\n        result *= {term}\n    return result\n"
        what, empty, names = "the product", "1", [f"product_{tk}_terms", "series_product", "multiply_up"]
    descs = (f"returns {what} of {term} for every integer i from {start} to {n.name} inclusive ({empty} when "
             f"{n.name} is below {start})",
             f"loops i over {start}, {start + 1}, ..., {n.name} and returns {what} of {term}")

    def ref(m: int) -> int:
        vals = [tfn(i) for i in range(start, m + 1)]
        return sum(vals) if agg == "sum" else _prod(vals)

    return Draft(rng.choice(names), (n,), body, descs, ref, lambda r: (r.randint(0, 8),),
                 fixed=((0,), (1,), (2,), (4,)), example=True)


_CHARSETS = {"aeiou": ("vowels", "vowels (a, e, i, o, u)"), "xyz": ("xyz", 'letters "x", "y" or "z"'),
             "0123456789": ("digits", "digits"), "abc": ("abc", 'letters "a", "b" or "c"'),
             " ": ("spaces", "spaces")}


@_concept("char_loop", "hard", [(m, c) for m in ("count", "remove", "keep") for c in _CHARSETS])
def _char_loop(combo: tuple, rng: TaskRng) -> Draft:
    (mode, cs), s = combo, _str_arg(rng)
    tag, noun = _CHARSETS[cs]
    n = s.name
    if mode == "count":
        body = (f'    count = 0\n    for c in {n}:\n        if c in "{cs}":\n            count += 1\n'
                f"    return count\n")
        descs = (f"returns how many characters of {n} are {noun}", f"counts the {noun} in {n}")
        fn = lambda v: sum(1 for c in v if c in cs)  # noqa: E731
    else:
        test = "in" if mode == "keep" else "not in"
        body = (f'    result = ""\n    for c in {n}:\n        if c {test} "{cs}":\n            result += c\n'
                f"    return result\n")
        if mode == "keep":
            descs = (f"returns only the {noun} of {n}, in their original order",
                     f"builds a new string from the characters of {n} that are {noun}")
            fn = lambda v: "".join(c for c in v if c in cs)  # noqa: E731
        else:
            descs = (f"returns {n} with all {noun} removed", f"deletes every one of the {noun} from {n}")
            fn = lambda v: "".join(c for c in v if c not in cs)  # noqa: E731
    alphabet = "abcdexyzio0123 " + cs * 2
    return Draft(rng.choice([f"{mode}_{tag}", f"{mode}_{tag}_chars", "filter_text", "scan_text"]), (s,), body,
                 descs, fn, lambda r: (_rand_str(r, 0, 10, alphabet),), fixed=(("",), (f"a{cs}b{cs[0]}q",)),
                 example=True)


@_concept("find_first", "hard", [(w, p) for w in ("index", "value") for p in PRED_KINDS])
def _find_first(combo: tuple, rng: TaskRng) -> Draft:
    (what, pk), xs = combo, _list_arg(rng)
    pred = _draw_pred(pk, rng)
    if what == "index":
        body = (f"    for i, v in enumerate({xs.name}):\n        if {pred.src('v')}:\n            return i\n"
                f"    return -1\n")
        descs = (f"returns the index of the first element of {xs.name} that is {pred.phrase}, or -1 if there "
                 f"is none", f"scans {xs.name} from the left and returns the position of the first element that "
                 f"is {pred.phrase} (-1 when no element is)")
        names = [f"index_of_first_{pred.tag}", f"first_{pred.tag}_index", "find_index"]

        def ref(v: list[int]) -> int:
            return next((i for i, e in enumerate(v) if pred(e)), -1)
    else:
        body = f"    for v in {xs.name}:\n        if {pred.src('v')}:\n            return v\n    return None\n"
        descs = (f"returns the first element of {xs.name} that is {pred.phrase}, or None if there is none",
                 f"scans {xs.name} from the left and returns the first element that is {pred.phrase} (None "
                 f"when no element is)")
        names = [f"first_{pred.tag}", f"find_first_{pred.tag}", "find_value"]

        def ref(v: list[int]) -> int | None:
            return next((e for e in v if pred(e)), None)

    return Draft(rng.choice(names), (xs,), body, descs, ref, _pred_list_sampler(pred),
                 fixed=_pred_fixed(pred, rng), example=True)


@_concept("all_any", "hard", [(q, p) for q in ("all", "any") for p in PRED_KINDS])
def _all_any(combo: tuple, rng: TaskRng) -> Draft:
    (q, pk), xs = combo, _list_arg(rng)
    pred = _draw_pred(pk, rng)
    if q == "all":
        descs = (f"returns True if every element of {xs.name} is {pred.phrase} (True for an empty list)",
                 f"checks whether all elements of {xs.name} are {pred.phrase}")
    else:
        descs = (f"returns True if at least one element of {xs.name} is {pred.phrase} (False for an empty list)",
                 f"checks whether any element of {xs.name} is {pred.phrase}")
    fn = all if q == "all" else any
    edge = pred.boundary_list(rng)
    # mixed lists where exactly one element decides: all pass but one / none passes but one
    passing = [e for e in range(-6, 16) if pred(e)]
    failing = [e for e in range(-6, 16) if not pred(e)]
    one_off = rng.sample(passing, 2) + [rng.choice(failing)] if q == "all" else \
        rng.sample(failing, 2) + [rng.choice(passing)]
    one_off = rng.sample(one_off, 3)
    return Draft(rng.choice([f"{q}_{pred.tag}", f"{q}_are_{pred.tag}" if q == "all" else f"any_is_{pred.tag}",
                             f"check_{q}"]), (xs,), _ret(f"{q}({pred.src('v')} for v in {xs.name})"), descs,
                 lambda v: fn(pred(e) for e in v), _pred_list_sampler(pred, 0, 5),
                 fixed=(([],), *((s,) for s in pred.singletons()), (edge,), (one_off,)), example=True)


def check_tiers(tiers: str | Sequence[str]) -> tuple[str, ...]:
    """``tiers`` as a tuple (a single name allowed), or a ValueError naming the unknown ones (repeats are kept:
    callers weight tiers by repeating them)."""
    tiers = (tiers,) if isinstance(tiers, str) else tuple(tiers)
    bad = [t for t in tiers if t not in TIERS]
    if bad or not tiers:
        what = f"unknown tier(s) {bad}" if bad else "none given"
        raise ValueError(f"tiers {tiers!r}: {what}; choose from {TIERS}")
    return tiers


def concepts_for(tier: str) -> list[Concept]:
    """The concepts of one tier, in catalogue order."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; expected one of {TIERS}")
    return [c for c in CONCEPTS.values() if c.tier == tier]
