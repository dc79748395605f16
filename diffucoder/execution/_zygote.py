"""The sandbox worker ("zygote"): a long-lived, pre-imported interpreter that forks one fresh child per program.

This file is NOT imported by the host. Its source is passed to a bare interpreter (``python -I -S -B -c``), inside
bubblewrap when available, so it must depend on the standard library only. The host talks to it over its
stdin/stdout with length-prefixed frames: the host sends a pickled job (the host is trusted), the worker answers
with JSON (the worker shares a sandbox with untrusted code, so the host never unpickles what it sends back).

Per job the zygote:
  1. creates a private work directory owned by the sandbox uid, a record pipe, two output pipes;
  2. forks; the child starts a new session, closes every inherited descriptor, points stdin at /dev/null, sets
     resource limits, drops to an unprivileged uid (when the zygote is root), installs an audit hook that refuses
     frame/gc/ctypes/trace introspection, executes the program, then each test, writing one nonce-tagged record
     per test to the record pipe (the verdict channel);
  3. meanwhile enforces the wall-clock deadline, keeps only a capped tail of stdout/stderr, and afterwards kills
     every process the job left behind (kill(-1) as the sandbox uid; the zygote is also a child subreaper) and
     reaps them, then deletes the work directory.
The verdict is built here from the records alone: a test passed only if its record says so; the job passed only
if every test has exactly one passing record and the harness reported completion.
"""

import ast
import gc
import itertools
import json
import operator
import os
import pickle
import select
import shutil
import signal
import struct
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
RECORD_LIMIT = 8 << 20  # bytes of verdict records accepted per job
SAFE_SCALARS = (bool, int, float, complex, str, bytes, type(None))

try:  # ctypes is used only by the trusted zygote, before any untrusted code runs
    import ctypes

    _libc = ctypes.CDLL(None, use_errno=True)
    _prctl = _libc.prctl
except Exception:  # pragma: no cover - platform without ctypes
    _prctl = None


def _read_exact(fd, n):
    buf = bytearray(n)  # filled in place: appending chunks to bytes would be quadratic for large jobs
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if not k:
            raise EOFError
        got += k
    return buf


def _send(fd, obj):
    data = json.dumps(obj).encode()
    os.write(fd, struct.pack("<I", len(data)))
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# ----------------------------------------------------------------------------------------------------------------
# Test rewriting: comparisons inside `assert` statements go through type-strict helpers, so an object that claims
# to equal everything (or to be smaller than everything) does not satisfy a test that expects a built-in value.


class _AssertRewriter(ast.NodeTransformer):
    OPS = {ast.Eq: "eq", ast.NotEq: "ne", ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge",
           ast.In: "in", ast.NotIn: "notin"}

    def visit_Assert(self, node):
        node.test = _CompareRewriter().visit(node.test)
        if not isinstance(node.test, (ast.Compare, ast.UnaryOp, ast.BoolOp, ast.Call)) or (
            isinstance(node.test, ast.Call) and not _is_helper(node.test)
        ):
            node.test = ast.Call(ast.Name("__dc_truth__", ast.Load()), [node.test], [])
        return node


def _is_helper(node):
    return isinstance(node.func, ast.Name) and node.func.id.startswith("__dc_")


class _CompareRewriter(ast.NodeTransformer):
    def visit_Compare(self, node):
        self.generic_visit(node)
        if len(node.ops) != 1 or type(node.ops[0]) not in _AssertRewriter.OPS:
            return node
        op = _AssertRewriter.OPS[type(node.ops[0])]
        return ast.Call(ast.Name("__dc_cmp__", ast.Load()), [ast.Constant(op), node.left, node.comparators[0]], [])

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.Not) and not isinstance(node.operand, (ast.Call, ast.Compare, ast.BoolOp)):
            node.operand = ast.Call(ast.Name("__dc_truth__", ast.Load()), [node.operand], [])
        elif isinstance(node.op, ast.Not) and isinstance(node.operand, ast.Call) and not _is_helper(node.operand):
            node.operand = ast.Call(ast.Name("__dc_truth__", ast.Load()), [node.operand], [])
        return node

    # comparisons inside nested functions / lambdas are left alone: only the assertion's own expression is checked
    def visit_Lambda(self, node):
        return node


def _all_types():
    """ids of every class that exists now (in the zygote, before any untrusted code): trusted library types."""
    seen, stack = {}, [object]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen[id(t)] = t
        try:
            stack.extend(type.__subclasses__(t))
        except TypeError:
            pass
    _KEEP_ALIVE.extend(seen.values())  # an id is only unique while its object lives: a freed class's id could be
    return frozenset(seen)              # reused by a class the program creates


TRUSTED_TYPES = frozenset()
_KEEP_ALIVE = []


# Methods whose override makes a subclass of a built-in behave differently from it in our checks.
_WATCHED = ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__", "__bool__", "__len__", "__iter__",
            "__getitem__", "__contains__", "__reversed__", "items", "keys", "values", "__class__", "__getattribute__")


def _make_helpers(pristine, trusted_types):
    """Type-strict comparison helpers for test assertions and EvalPlus checks.

    Each value gets a *kind*: its built-in type; or, for a subclass of a built-in, that built-in when the class is
    a library class that existed before the program ran (``defaultdict``, ``OrderedDict``, ``Counter``) or when it
    overrides none of the comparison / container methods (a ``namedtuple`` behaves as a tuple); otherwise the
    class itself. Values of different kinds are never equal (bool/int/float compare by value), so an object that
    claims to equal everything does not satisfy a test expecting a built-in value. The helpers close over pristine
    built-ins and slot getters taken before the program ran.
    """
    _type, _len, _zip, _all, _any, _bool, _id, _map = (
        pristine["type"], pristine["len"], pristine["zip"], pristine["all"], pristine["any"], pristine["bool"],
        pristine["id"], pristine["map"])
    _hasattr = pristine["hasattr"]
    mro_of = type.__dict__["__mro__"].__get__
    dict_of = type.__dict__["__dict__"].__get__
    dict_items = dict.items
    numbers = (bool, int, float)
    containers = (list, tuple, set, frozenset, dict)
    scalars = SAFE_SCALARS
    bases = (bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset)
    _next, _iter = pristine["next"], pristine["iter"]
    _is, _repeat = operator.is_, itertools.repeat
    watched = _WATCHED

    def one_of(t, types):
        # identity only: `t in types` would call a metaclass's __eq__
        for s in types:
            if t is s:
                return True
        return False

    def trusted(t):
        return _id(t) in trusted_types

    def kind(x):
        t = _type(x)
        if one_of(t, scalars) or one_of(t, containers):
            return t
        mro = mro_of(t)
        base = None
        for k in mro:
            if one_of(k, bases):
                base = k
                break
        if base is None:
            return t
        if trusted(t):
            return base
        for k in mro:
            if k is base:
                return base
            d = dict_of(k)
            for name in watched:
                if name in d:
                    return t
        return base

    def flat_scalars(x):
        """True when every element has the same built-in scalar type (checked by identity, in C: neither a
        metaclass's __eq__ nor the audit hook that id() would trigger is involved)."""
        if not _len(x):
            return True
        t0 = _type(_next(_iter(x)))
        return one_of(t0, scalars) and _all(_map(_is, _map(_type, x), _repeat(t0)))

    def safe(x, depth=0):
        k = kind(x)
        if one_of(k, scalars):
            return True
        if depth > 100:
            return False
        if one_of(k, (list, tuple, set, frozenset)):
            return flat_scalars(x) or _all(safe(v, depth + 1) for v in x)
        if k is dict:
            return _all(safe(a, depth + 1) and safe(b, depth + 1) for a, b in dict_items(x))
        return False

    def eq(a, b, depth=0):
        ka, kb = kind(a), kind(b)
        if one_of(ka, numbers) and one_of(kb, numbers):
            return a == b
        if ka is not kb:
            return False
        if one_of(ka, scalars):
            return a == b
        if depth > 200:
            return False
        if one_of(ka, (list, tuple)):
            if _len(a) != _len(b):
                return False
            if flat_scalars(a) and flat_scalars(b):
                return a == b  # built-in elements only: the built-in comparison is safe (and fast)
            return _all(eq(x, y, depth + 1) for x, y in _zip(a, b))
        if one_of(ka, (set, frozenset, dict)):
            return safe(a) and safe(b) and a == b
        # the same non-built-in type on both sides (the test built the expected value from it): its equality decides
        r = a == b
        if _type(r) is bool:
            return r
        try:
            return _bool(r.all()) if _hasattr(r, "all") else _bool(r)
        except Exception:
            return False

    def cmp(op, a, b):
        if op == "eq":
            return eq(a, b)
        if op == "ne":
            return not eq(a, b)
        if op == "in" or op == "notin":
            kb = kind(b)
            if one_of(kb, (list, tuple)):
                found = _any(eq(a, x) for x in b)
            elif one_of(kb, (str, bytes)):
                found = kind(a) is kb and a in b
            elif one_of(kb, (set, frozenset, dict)):
                found = safe(a) and safe(b) and a in b
            elif trusted(_type(b)) and not one_of(kb, scalars):
                found = safe(a) and a in b  # a library container (a deque, a range) probed with a built-in value
            else:
                found = False
            return found if op == "in" else not found
        # ordering: both sides must be plain built-in values
        if not (safe(a) and safe(b)):
            return False
        if op == "lt":
            return a < b
        if op == "le":
            return a <= b
        if op == "gt":
            return a > b
        return a >= b

    def truth(x):
        k = kind(x)
        if one_of(k, scalars) or one_of(k, containers):
            return _bool(x)
        if trusted(_type(x)):
            return _bool(x)  # a library object, e.g. a re.Match
        return False  # a class the program made that overrides what truth or comparison means

    def close(out, exp, atol, rtol=1e-7, top=True):
        """EvalPlus's float check: the same kind at the top level (as its ``type(out) == type(exp)``), then
        numpy.allclose-like element-wise comparison of built-in numbers (|out - exp| <= atol + rtol * |exp|)."""
        ko, ke = kind(out), kind(exp)
        if top and ko is not ke:
            return False
        if one_of(ko, numbers) and one_of(ke, numbers):
            if out == exp:
                return True
            d = out - exp
            return (d if d >= 0 else -d) <= atol + rtol * (exp if exp >= 0 else -exp)
        if ko is not ke or not one_of(ke, (list, tuple)) or _len(out) != _len(exp):
            return False
        return _all(close(o, e, atol, rtol, False) for o, e in _zip(out, exp))

    return {"__dc_cmp__": cmp, "__dc_eq__": eq, "__dc_truth__": truth, "__dc_close__": close, "__dc_safe__": safe}


def _compile_test(src, index, cache):
    code = cache.get(src)
    if code is None:
        tree = _AssertRewriter().visit(ast.parse(src, f"<test {index}>", "exec"))
        ast.fix_missing_locations(tree)
        code = compile(tree, f"<test {index}>", "exec")
        if len(cache) > 5000:
            cache.clear()
        cache[src] = code
    return code


# ----------------------------------------------------------------------------------------------------------------
# The child: everything below runs after fork, in the process that executes untrusted code.

_CTYPES_REFS = []  # (namespace dict, key) pairs holding a ctypes module, found once in the zygote


def _find_ctypes_refs():
    for mod in list(sys.modules.values()):
        d = getattr(mod, "__dict__", None)
        if isinstance(d, dict):
            for k, v in list(d.items()):
                if type(v).__name__ == "module" and str(getattr(v, "__name__", "")).split(".")[0] in ("ctypes",
                                                                                                    "_ctypes"):
                    _CTYPES_REFS.append((d, k))


def _drop_ctypes():
    """Remove every route to ctypes (its foreign functions, e.g. memmove, raise no audit event): unload it from
    sys.modules and drop the references found at start-up. Done in the zygote once it has made its prctl calls;
    children inherit the result and their audit hook refuses re-imports."""
    for d, k in _CTYPES_REFS:
        d[k] = None
    globals()["_libc"] = globals()["_prctl"] = None
    for name in [n for n in sys.modules if n == "ctypes" or n == "_ctypes" or n.startswith("ctypes.")]:
        del sys.modules[name]


def _make_audit_hook():
    """The child's audit hook. Everything it uses is bound as a default argument, so patching module globals or
    built-ins cannot disarm it, and audit hooks cannot be removed once added."""

    def hook(event, args, _blocked=("sys._getframe", "sys._current_frames", "sys.settrace", "sys.setprofile",
                                    "gc.get_objects", "gc.get_referrers", "gc.get_referents"),
             _frame_attrs=("tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "f_locals", "f_globals",
                           "f_trace", "f_lineno"),
             _func_attrs=("__code__", "__defaults__", "__kwdefaults__", "__closure__", "cell_contents"),
             _str=str, _bytes=bytes, _len=len, _isinstance=isinstance, _fsdecode=os.fsdecode,
             _ValueError=ValueError, _PermissionError=PermissionError, _AttributeError=AttributeError,
             _ImportError=ImportError):
        if event in _blocked:
            # ValueError is what sys._getframe raises for a too-deep frame; library code (collections.namedtuple,
            # enum, typing) already tolerates it
            raise _ValueError("sandbox: " + event + " is not allowed")
        if event[:7] == "ctypes.":
            raise _PermissionError("sandbox: " + event + " is not allowed")
        if event == "import" and args and _isinstance(args[0], _str) and (
                args[0] == "ctypes" or args[0] == "_ctypes" or args[0][:7] == "ctypes."):
            raise _ImportError("sandbox: importing ctypes is not allowed")
        if event == "object.__getattr__" and _len(args) > 1 and args[1] in _frame_attrs:
            raise _AttributeError("sandbox: frame introspection is not allowed")
        if event == "object.__setattr__" and _len(args) > 1 and (args[1] in _frame_attrs or args[1] in _func_attrs):
            raise _AttributeError("sandbox: tampering with code objects is not allowed")
        if event == "open" and args and _isinstance(args[0], (_str, _bytes)):
            p = _fsdecode(args[0])
            if p[:6] == "/proc/" and (p[-4:] == "/mem" or "/fd/" in p or p[-8:] == "/environ" or "/map_files/" in p):
                raise _PermissionError("sandbox: opening " + p + " is not allowed")

    return hook


def _child(job, fds, nonce, workdir, ident):
    """Runs in the forked child. Never returns: ends with os._exit."""
    _write = os.write
    _exit = os._exit
    _perf = time.perf_counter
    rec_fd_src, out_w, err_w = fds
    try:
        os.setsid()
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        rec_fd = 3 + int.from_bytes(os.urandom(2), "little") % 900
        os.dup2(rec_fd_src, rec_fd)
        os.closerange(3, rec_fd)
        os.closerange(rec_fd + 1, 65536)
        os.chdir(workdir)
        import resource

        limits = job["limits"]
        mem = int(limits["memory_mb"]) << 20
        cpu = max(1, int(limits["cpu_s"] + 0.999))
        for what, soft, hard in (
            (resource.RLIMIT_AS, mem, mem),
            (resource.RLIMIT_DATA, mem, mem),
            (resource.RLIMIT_CPU, cpu, cpu + 1),
            (resource.RLIMIT_FSIZE, int(limits["file_mb"]) << 20, int(limits["file_mb"]) << 20),
            (resource.RLIMIT_NOFILE, int(limits["open_files"]), int(limits["open_files"])),
            (resource.RLIMIT_CORE, 0, 0),
            (resource.RLIMIT_NPROC, int(limits["processes"]), int(limits["processes"])),
        ):
            resource.setrlimit(what, (soft, hard))
        uid, gid = ident
        if uid is not None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
                           "PYTHONIOENCODING": "utf-8"})
        import io
        import random

        random.seed()  # a fresh interpreter would not share the zygote's random state
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                                      line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                      errors="backslashreplace", line_buffering=True)
        sys.argv = ["program.py"]
        sys.path[:] = [p for p in sys.path if p and os.path.isabs(p)] + [workdir]
    except BaseException as e:  # the sandbox could not be set up: never run the program
        try:
            os.write(err_w, f"sandbox setup failed: {type(e).__name__}: {e}\n".encode())
            os.write(rec_fd_src, b"%s setup_error\n" % nonce)
        finally:
            _exit(71)

    def record(line):
        _write(rec_fd, nonce + b" " + line + b"\n")

    import builtins

    # Everything the harness uses after the program has run is bound here, before it runs: the program may
    # replace anything in `builtins` (exec, repr, int, ...) or in modules, but not these local references.
    pristine = dict(builtins.__dict__)
    _exec, _repr, _int, _dict, _enumerate, _len, _type, _str = (
        pristine["exec"], pristine["repr"], pristine["int"], pristine["dict"], pristine["enumerate"],
        pristine["len"], pristine["type"], pristine["str"])
    _cpu = time.process_time
    _BaseException, _MemoryError = BaseException, MemoryError

    def describe(e):
        try:
            name = _type(e).__name__
            text = e.args[0] if (_type(e.args) is tuple and _len(e.args) == 1 and _type(e.args[0]) is _str) else ""
            out = (name if _type(name) is _str else "?") + ": " + text
            return out[:300] if _type(out) is _str else "?"
        except _BaseException:
            return "<unprintable exception>"

    def quote(text):
        return _repr(_str(text)[:300]).encode()

    helpers = _make_helpers(pristine, TRUSTED_TYPES)
    codes, setup_code = job["compiled"]
    if isinstance(codes, str):  # the tests did not compile (in the zygote)
        record(b"test_error " + quote(codes))
        _exit(0)
    data = job.get("data") or {}
    try:
        program_code = compile(job["program"], "program.py", "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        record(b"syntax_error " + quote(f"{type(e).__name__}: {e}"))
        _exit(0)
    our_stdout, our_stderr = sys.stdout, sys.stderr
    sys.addaudithook(_make_audit_hook())
    program_globals = {"__name__": "__main__", "__builtins__": builtins, "__file__": "program.py"}
    record(b"started")
    t0 = _perf()
    try:
        _exec(program_code, program_globals)
    except _MemoryError:
        record(b"memory")
        _exit(0)
    except _BaseException as e:  # SystemExit included: ending early is an error, not a pass
        record(b"program_error " + quote(describe(e)))
        _exit(0)
    record(b"program_ok %d" % _int((_perf() - t0) * 1e6))
    base = _dict(program_globals)
    base["__builtins__"] = pristine
    if setup_code is not None:
        setup_ns = {"__builtins__": pristine}
        setup_ns.update(data)
        setup_ns.update(helpers)
        try:
            _exec(setup_code, setup_ns)
        except _BaseException as e:
            record(b"test_error " + quote("test setup failed: " + describe(e)))
            _exit(0)
        for k, v in setup_ns.items():
            if k != "__builtins__":
                base[k] = v
    for k, v in data.items():
        base[k] = v
    for k, v in helpers.items():
        base[k] = v
    for i, code in _enumerate(codes):
        g = _dict(base)
        c0 = _cpu()
        t0 = _perf()
        try:
            _exec(code, g)
            ok, err = 1, ""
        except _MemoryError:
            record(b"memory")
            _exit(0)
        except _BaseException as e:
            ok, err = 0, describe(e)
        wall_us, cpu_us = _int((_perf() - t0) * 1e6), _int((_cpu() - c0) * 1e6)
        record(b"test %d %d %d %d %s" % (i, ok, wall_us, cpu_us, quote(err)))
    record(b"done %d" % _len(codes))
    for stream in (our_stdout, our_stderr):  # our own wrappers (the program may have replaced sys.stdout)
        try:
            stream.flush()
        except _BaseException:
            pass
    _exit(0)


# ----------------------------------------------------------------------------------------------------------------
# The zygote side of one job.


class _Tail:
    """Keeps the last `cap` bytes of a stream and counts the total."""

    def __init__(self, cap):
        self.cap, self.buf, self.total = cap, b"", 0

    def add(self, data):
        self.total += len(data)
        self.buf = (self.buf + data)[-self.cap:]


def _parse_records(raw, nonce, n_tests):
    info = {"started": False, "program_ok": False, "done": False, "forged": 0, "tests": {}, "duplicates": 0,
            "events": [], "error": ""}
    for line in raw.split(b"\n"):
        if not line:
            continue
        parts = line.split(b" ", 1)
        if parts[0] != nonce or len(parts) < 2:
            info["forged"] += 1
            continue
        body = parts[1]
        kind, _, rest = body.partition(b" ")
        kind = kind.decode("ascii", "replace")
        if kind == "test":
            f = rest.split(b" ", 4)
            try:
                idx, ok, us, cpu_us = int(f[0]), int(f[1]), int(f[2]), int(f[3])
                err = ast.literal_eval(f[4].decode()) if len(f) > 4 else ""
            except Exception:
                info["forged"] += 1
                continue
            if idx in info["tests"] or not 0 <= idx < n_tests:
                info["duplicates"] += 1
                continue
            info["tests"][idx] = (bool(ok), us / 1e6, cpu_us / 1e6, err)
        elif kind == "started":
            info["started"] = True
        elif kind == "program_ok":
            info["program_ok"] = True
        elif kind == "done":
            info["done"] = rest.strip() == str(n_tests).encode()
        elif kind in ("syntax_error", "program_error", "test_error", "setup_error", "memory"):
            info["events"].append(kind)
            if rest:
                try:
                    info["error"] = ast.literal_eval(rest.decode())
                except Exception:
                    info["error"] = rest.decode("utf-8", "replace")[:300]
        else:
            info["forged"] += 1
    return info


def _kill_leftovers(child_pid, ident, in_pidns):
    """Kill every process the job left behind and reap what we can."""
    uid, _ = ident
    deadline = time.monotonic() + 2.0
    delay = 0.001
    while True:
        try:
            os.killpg(child_pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if in_pidns:
            # in our own pid namespace everything except init (bwrap) and ourselves belongs to the job
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif uid is not None:
            helper = os.fork()
            if helper == 0:
                try:
                    os.setgid(ident[1])
                    os.setuid(uid)
                    os.kill(-1, signal.SIGKILL)
                except BaseException:
                    pass
                os._exit(0)
            os.waitpid(helper, 0)
        else:
            for pid in _descendants(os.getpid()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        _reap()
        if not _descendants(os.getpid()) and (in_pidns or uid is None or not _uid_procs(uid)):
            return True
        if time.monotonic() > deadline:
            return False  # the host restarts this worker (and with it, everything in its namespace)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _proc_table():
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
            uid = os.stat(f"/proc/{name}").st_uid
        except (OSError, ValueError):
            continue
        table[int(name)] = (ppid, uid)
    return table


def _descendants(root):
    table = _proc_table()
    out, frontier = [], {root}
    while frontier:
        nxt = {pid for pid, (ppid, _) in table.items() if ppid in frontier and pid not in out}
        out.extend(nxt)
        frontier = nxt
    return out


def _uid_procs(uid):
    return [pid for pid, (_, u) in _proc_table().items() if u == uid]


_TEST_CACHE = {}  # test source -> code object, kept across jobs (tests are trusted; RL repeats them G times)


def _compile_job(job):
    try:
        codes = [_compile_test(t, i, _TEST_CACHE) for i, t in enumerate(job["tests"])]
        setup = job.get("setup")
        setup_code = _compile_test_setup(setup) if setup else None
        return codes, setup_code
    except SyntaxError as e:
        return f"test does not compile: {e}", None


def _compile_test_setup(src):
    code = _TEST_CACHE.get(("setup", src))
    if code is None:
        code = compile(src, "<test setup>", "exec")
        _TEST_CACHE[("setup", src)] = code
    return code


def run_job(job, state):
    job["compiled"] = _compile_job(job)
    nonce = os.urandom(12).hex().encode()
    n_tests = len(job["tests"])
    limits = job["limits"]
    ident = state["ident"]
    state["count"] += 1
    workdir = os.path.join(state["work_root"], f"job{state['count']}")
    os.mkdir(workdir, 0o700)
    if ident[0] is not None:
        os.chown(workdir, ident[0], ident[1])
    rec_r, rec_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    t_start = time.monotonic()
    gc.freeze()  # the child's collector then never walks (and so never copies) the pages of our objects
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rec_r), os.close(out_r), os.close(err_r)
            _child(job, (rec_w, out_w, err_w), nonce, workdir, ident)
        finally:
            os._exit(72)
    gc.unfreeze()  # (only the child needs its inherited objects frozen)
    for fd in (rec_w, out_w, err_w):
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    deadline = t_start + float(limits["wall_s"])
    cap = int(limits["output_bytes"])
    out, err = _Tail(cap), _Tail(cap)
    records, rec_overflow = bytearray(), False
    streams = {rec_r: None, out_r: out, err_r: err}
    timed_out = exited = False
    status_code = None
    while True:
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            break
        ready, _, _ = select.select(list(streams) + [pidfd], [], [], deadline - now)
        for fd in ready:
            if fd == pidfd:
                exited = True
                continue
            data = os.read(fd, 65536)
            if not data:
                del streams[fd]
                os.close(fd)
            elif streams[fd] is None:
                if len(records) + len(data) > RECORD_LIMIT:
                    rec_overflow = True
                else:
                    records += data
            else:
                streams[fd].add(data)
        if rec_overflow:
            break
        if exited:
            _, status_code = os.waitpid(pid, 0)
            break
    wall = time.monotonic() - t_start
    clean = _kill_leftovers(pid, ident, state["in_pidns"])
    if status_code is None:
        try:
            _, status_code = os.waitpid(pid, 0)
        except ChildProcessError:
            status_code = None
    os.close(pidfd)
    # whatever is still buffered in the pipes now that every writer is dead
    for fd in list(streams):
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                break
            if streams[fd] is None:
                if len(records) + len(data) <= RECORD_LIMIT:
                    records += data
            else:
                streams[fd].add(data)
        os.close(fd)
    try:
        os.rmdir(workdir)  # usually empty
    except OSError:
        shutil.rmtree(workdir, ignore_errors=True)
    info = _parse_records(bytes(records), nonce, n_tests)
    signal_no = os.WTERMSIG(status_code) if status_code is not None and os.WIFSIGNALED(status_code) else None
    exit_code = os.WEXITSTATUS(status_code) if status_code is not None and os.WIFEXITED(status_code) else None
    return {
        "tests": [[i, *info["tests"][i]] for i in sorted(info["tests"])],
        "started": info["started"],
        "program_ok": info["program_ok"],
        "done": info["done"],
        "forged": info["forged"],
        "duplicates": info["duplicates"],
        "events": info["events"],
        "error": info["error"],
        "timed_out": timed_out,
        "record_overflow": rec_overflow,
        "signal": signal_no,
        "exit_code": exit_code,
        "wall_s": wall,
        "stdout": out.buf.decode("utf-8", "replace"),
        "stderr": err.buf.decode("utf-8", "replace"),
        "stdout_bytes": out.total,
        "stderr_bytes": err.total,
        "clean": clean,
    }


def _stdlib_readable_as(uid, gid):
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.listdir(os.path.dirname(os.__file__))
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def main():
    cfg = json.loads(sys.argv[1])
    ctrl_in, ctrl_out = os.dup(0), os.dup(1)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if _prctl is not None:
        _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        # inherited by every child: no privilege gain through execve (setuid binaries, file capabilities)
        _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    for name in cfg["preimport"]:
        try:
            __import__(name)
        except Exception:
            pass
    _find_ctypes_refs()
    _drop_ctypes()  # once, here: children then have no route to ctypes, and the audit hook refuses re-imports
    global TRUSTED_TYPES
    TRUSTED_TYPES = _all_types()
    uid = cfg.get("uid")
    uid_note = ""
    if uid is not None and not _stdlib_readable_as(uid, cfg.get("gid", uid)):
        # e.g. an interpreter under /root (0700) without namespaces. Safety first: keep the unprivileged uid (it is
        # what bounds fork bombs when we are root); programs can then import only the pre-imported modules.
        uid_note = ("the interpreter's files are not readable by the sandbox's unprivileged uid: programs can import "
                    "only the pre-imported modules (install bubblewrap: scripts/install_sandbox.sh)")
    state = {
        "ident": (uid, cfg.get("gid", uid)) if uid is not None else (None, None),
        "work_root": cfg["work_root"],
        "in_pidns": bool(cfg["in_pidns"]) and os.getpid() <= 3,
        "count": 0,
    }
    os.makedirs(state["work_root"], exist_ok=True)
    os.chmod(state["work_root"], 0o711)
    _send(ctrl_out, {"ready": True, "pid": os.getpid(), "in_pidns": state["in_pidns"], "uid": uid, "uid_note": uid_note,
                     "python": sys.version.split()[0]})
    while True:
        try:
            (n,) = struct.unpack("<I", _read_exact(ctrl_in, 4))
            job = pickle.loads(_read_exact(ctrl_in, n))
        except EOFError:
            return
        try:
            key = job.get("data_key")
            if job.get("data_cached"):
                cached_key, cached = state.get("data_cache", (None, None))
                if cached_key != key:
                    raise RuntimeError(f"data cache miss for {key!r}")
                job["data"] = cached
            elif key is not None:
                state["data_cache"] = (key, job.get("data"))
            result = run_job(job, state)
        except Exception as e:  # a bug on our side: report it rather than die silently
            result = {"sandbox_error": f"{type(e).__name__}: {e}"}
        _send(ctrl_out, result)


if __name__ == "__main__":
    main()
