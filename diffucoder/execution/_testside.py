"""The test side: runs the trusted tests with the program's names bound to references into its process.

Standard library only; runs inside the sandbox, in the worker's supervisor (see ``_zygote``): its own
unprivileged uid (when we are root), non-dumpable, ignoring catchable signals, unable to fork. It never executes
a line of the program: every name the tests take from the program is a ``RemoteObject`` whose use becomes a
request to the program's process (``_program``), and every answer arrives as plain data (``_wire``).

What a test can do with the program's objects (and what it cannot):

- call them, read and set their attributes and items, take ``len``, iterate, ask ``bool``/``str``/``repr``/
  ``int``/``float``, ``isinstance`` against the program's classes: each is a question the program answers
  without seeing anything of the test but the arguments the test chose to pass. Returned data is plain data
  (built-in types, plus the standard-library value types listed in ``_wire``); anything else comes back as
  another reference.
- never compare them: ``==`` between a reference and anything else is identity (a reference is equal to no
  value, not even another reference to the same object: the program chooses reference ids), and ordering,
  hashing by value, arithmetic and ``in`` on a reference are not forwarded (``x in ref`` iterates the reference
  and compares here). So an object that claims to equal everything, or a float whose ``__sub__`` lies, never
  reaches a comparison: the program can only return data, and data compares honestly.
- arguments cross as copies; when the program changed a mutable argument (a list it sorted in place), the new
  contents are written back into the test's object. Callables of the test passed as arguments (a ``key=``
  lambda) stay here and are called back; Python's built-ins go by name.
- what the program prints during a call is replayed into this process's ``sys.stdout`` / ``sys.stderr``, so a
  test that captures output (``contextlib.redirect_stdout``) sees it; files the program wrote are in the shared
  work directory, which is this process's working directory (never on its import path).
"""

from __future__ import annotations

import builtins
import os
import signal
import sys
import threading
import time
import traceback

from diffucoder.execution import _wire
from diffucoder.execution._program import OUTPUT_CAP, exception_fields

_link = None  # the one Link of this process (set by ``main``)
_BUILTINS = vars(builtins)
_FORBIDDEN_EXC = frozenset({"StopIteration", "StopAsyncIteration", "GeneratorExit", "KeyboardInterrupt",
                            "SystemExit", "BaseException", "BaseExceptionGroup", "ExceptionGroup"})
_DENY_MODULES = frozenset({"this", "antigravity", "__hello__", "__phello__", "idlelib", "turtle", "turtledemo",
                           "tkinter", "webbrowser", "site", "ensurepip", "venv", "test", "pdb"})
_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ())) - _DENY_MODULES
_MUTABLE = (list, dict, set, bytearray)


class Broken(BaseException):
    """The channel to the program can no longer be used (its process ended, it was too slow, or it broke the
    protocol). A BaseException so that ``except Exception`` in a test does not swallow it; the test fails anyway."""


class RemoteObject(_wire.Remote):
    """A reference to an object in the program's process. See the module docstring for what it supports."""

    __slots__ = ("_dc_h", "_dc_t")

    def __init__(self, hid: int, tname: str = ""):
        object.__setattr__(self, "_dc_h", hid)
        object.__setattr__(self, "_dc_t", tname)

    def __getattr__(self, name):
        if name.startswith("_dc_"):
            raise AttributeError(name)
        return _link.ask("attr", self, extra=[name])

    def __setattr__(self, name, value):
        _link.ask("setattr", self, [value], extra=[name])

    def __delattr__(self, name):
        _link.ask("delattr", self, extra=[name])

    def __call__(self, *args, **kwargs):
        return _link.call(self, args, kwargs)

    def __getitem__(self, key):
        return _link.ask("item", self, [key])

    def __setitem__(self, key, value):
        _link.ask("setitem", self, [key, value])

    def __delitem__(self, key):
        _link.ask("delitem", self, [key])

    def __len__(self):
        return _typed(_link.ask("len", self), int, "len")

    def __iter__(self):
        it = _link.ask("iter", self)
        return it if isinstance(it, RemoteObject) else iter(it)

    def __next__(self):
        return _link.ask("next", self)

    def __bool__(self):
        return _typed(_link.ask("bool", self), bool, "bool")

    def __str__(self):
        return _typed(_link.ask("str", self), str, "str")

    def __repr__(self):
        return _typed(_link.ask("repr", self), str, "repr")

    def __int__(self):
        return _typed(_link.ask("int", self), int, "int")

    def __float__(self):
        return _typed(_link.ask("float", self), float, "float")

    def __index__(self):
        return _typed(_link.ask("index", self), int, "__index__")

    def __instancecheck__(self, obj):
        if not isinstance(obj, RemoteObject):
            return False
        return _typed(_link.ask("inst", obj, extra=[self._dc_h]), bool, "isinstance")

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce_ex__(self, protocol):
        raise TypeError("a reference to the program's object cannot be pickled")

    def __dir__(self):
        return []


def _typed(value, kind, what):
    if type(value) is not kind or (kind is int and value < 0 and what == "len"):
        raise TypeError(f"the program's {what}() answered with {type(value).__name__}")
    return value


def _program_exception(chain, name, msg) -> BaseException:
    """The program's exception as a built-in exception of this process (the first usable class in its MRO)."""
    if not isinstance(chain, list) or not isinstance(name, str) or not isinstance(msg, str):
        return TypeError("the program sent a malformed error")
    for c in chain:
        if not isinstance(c, str) or c in _FORBIDDEN_EXC:
            if c in ("StopIteration", "StopAsyncIteration", "GeneratorExit", "KeyboardInterrupt", "SystemExit"):
                return RuntimeError(f"the program raised {c}: {msg}"[:2000])
            continue
        cls = _BUILTINS.get(c)
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                return cls(msg)
            except Exception:
                continue
    return RuntimeError(f"{name}: {msg}"[:2000])


def _safe_builtin(name: str):
    if name in _wire.SAFE_BUILTINS:
        return type(None) if name == "NoneType" else _BUILTINS[name]
    raise _wire.WireError(f"the program may not name {name[:40]!r}")


def _builtin_name(obj) -> str | None:
    """The name under which the program's process finds the same built-in (``len``, ``str.upper``)."""
    name = getattr(obj, "__name__", None)
    if not isinstance(name, str):
        return None
    if _BUILTINS.get(name) is obj:
        return name
    owner = getattr(obj, "__objclass__", None)
    if isinstance(owner, type) and _BUILTINS.get(owner.__name__) is owner and getattr(owner, name, None) is obj:
        return f"{owner.__name__}.{name}"
    return None


def _sync(orig, new, depth=0):
    """Write the program's changes to a mutable argument back into the test's object, keeping the identity of
    the objects inside it where their type did not change (aliases the test holds stay valid)."""
    if depth > 100:
        return
    t = type(orig)
    if isinstance(orig, list) and type(new) is list:
        for i in range(min(len(orig), len(new))):
            if type(orig[i]) is type(new[i]) and isinstance(orig[i], (*_MUTABLE, tuple)):
                if isinstance(orig[i], tuple):
                    if orig[i] != new[i]:
                        orig[i] = new[i]
                else:
                    _sync(orig[i], new[i], depth + 1)
            elif not (type(orig[i]) is type(new[i]) and orig[i] == new[i]):
                orig[i] = new[i]
        del orig[len(new):]
        orig.extend(new[len(orig):])
    elif isinstance(orig, dict) and isinstance(new, dict):
        values = {}
        for k, v in new.items():
            old = orig.get(k, _sync) if k in orig else _sync
            if old is not _sync and type(old) is type(v) and isinstance(old, _MUTABLE):
                _sync(old, v, depth + 1)
                values[k] = old
            else:
                values[k] = v
        if list(orig) == list(values):
            for k, v in values.items():
                if orig[k] is not v:
                    orig[k] = v
        else:
            orig.clear()
            orig.update(values)
    elif isinstance(orig, set) and isinstance(new, set):
        if orig != new:
            orig.clear()
            orig.update(new)
    elif t is bytearray and type(new) is bytearray:
        orig[:] = new
    elif isinstance(orig, tuple) and isinstance(new, tuple) and len(orig) == len(new):
        for a, b in zip(orig, new):
            if type(a) is type(b) and isinstance(a, _MUTABLE):
                _sync(a, b, depth + 1)
    else:
        # the deque / OrderedDict / Counter / defaultdict cases are covered above through their bases; anything
        # else cannot have been changed in place
        pass


def _holds_mutable(x) -> bool:
    return isinstance(x, _MUTABLE) or (type(x) is tuple and any(isinstance(v, _MUTABLE) for v in x)) or (
        type(x).__name__ == "deque" and type(x).__module__ == "collections")


class Link:
    """The test side of the channel: sends requests, waits (with deadlines and the per-test CPU limit), turns
    answers into values or exceptions, and runs the test's callables the program calls back."""

    def __init__(self, wr: int, rd: int, cap: int, deadline: float, program_pid, side: dict | None = None,
                 call_timeout: float | None = None):
        self.wr = wr
        os.set_blocking(wr, False)
        self.side = side or {}
        self.reader = _wire.Reader(rd, cap, self.side)
        self.program_pid = program_pid  # -> the program's pid, as the program zygote reported it (never the program)
        self.clk = None
        self.last_cpu = 0.0
        self.deadline = deadline
        self.test_deadline = deadline
        self.call_timeout = call_timeout  # seconds of wall-clock time per request (None: the deadlines only)
        self.limit: float | None = None
        self.cpu0 = 0.0
        self.seq = 0
        self.requests = 0
        self.broken: str | None = None
        self.broken_kind = ""
        self.memory = False
        self.callbacks: list = []
        self._cb_ids: dict[int, int] = {}
        self._lock = threading.RLock()  # tests that call the program from several threads take turns
        self.dec = _wire.decoder(handle=RemoteObject, builtin=_safe_builtin)

    # -- time ---------------------------------------------------------------------------------------------------
    def cpu(self) -> float:
        """CPU time of the program's process so far (all its threads; it cannot fork)."""
        if self.clk is None:
            pid = self.program_pid()
            if pid is None:
                self.break_("timeout", "time limit exceeded")
            self.clk = ((~pid) << 3) | 2  # that process's CPU clock
        try:
            self.last_cpu = time.clock_gettime(self.clk)
        except OSError:  # the process has been reaped
            pass
        return self.last_cpu

    def begin_test(self, limit: float | None, wall_factor: float) -> None:
        self.limit = limit
        self.cpu0 = self.cpu()
        now = time.monotonic()
        self.test_deadline = self.deadline if limit is None else min(self.deadline,
                                                                     now + wall_factor * limit + 2.0)

    def _poll(self):
        if self.limit is not None and self.cpu() - self.cpu0 > self.limit:
            raise _TooSlow

    def break_(self, kind: str, why: str):
        if self.broken is None:
            self.broken, self.broken_kind = why, kind
        raise Broken(self.broken)

    # -- the exchange -------------------------------------------------------------------------------------------
    def read(self, deadline: float) -> tuple[list, list]:
        poll_every = 3600.0 if self.limit is None else max(0.005, min(0.05, self.limit / 10))
        try:
            body = self.reader.frame(deadline, self._poll, poll_every)
        except _wire.Closed:
            self.break_("died", "the program's process ended")
        except _wire.Deadline:
            self.break_("timeout", "time limit exceeded")
        except _TooSlow:
            self.break_("slow", f"too slow: more than {self.limit:.2f} s CPU")
        except _wire.WireError as e:
            self.break_("protocol", f"the program broke the protocol: {e}")
        try:
            return _wire.split(body)
        except _wire.WireError:
            self.break_("protocol", "the program sent a malformed message")

    def exchange(self, header: list, segs: list[bytes]) -> tuple[list, list]:
        with self._lock:
            return self._exchange(header, segs)

    def _exchange(self, header: list, segs: list[bytes]) -> tuple[list, list]:
        if self.broken is not None:
            raise Broken(self.broken)
        self.requests += 1
        seq = header[1]
        deadline = self.test_deadline
        if self.call_timeout is not None:
            deadline = min(deadline, time.monotonic() + self.call_timeout)
        try:
            _wire.send(self.wr, _wire.join(header, segs), deadline, self.side)
        except _wire.Closed:
            self.break_("died", "the program's process ended")
        except _wire.Deadline:
            self.break_("timeout", "time limit exceeded")
        while True:
            rh, rsegs = self.read(deadline)
            if rh[0] == "cb":
                self._callback(rh, rsegs)
                continue
            if len(rh) < 2 or rh[1] != seq:
                self.break_("protocol", "the program answered out of turn")
            return rh, rsegs

    def _encoder(self):
        return _wire.Encoder(self._other)

    def _other(self, obj):
        if isinstance(obj, RemoteObject):
            return {"h": [obj._dc_h, ""]}
        name = _builtin_name(obj)
        if name is not None:
            return {"bn": name}
        if callable(obj):
            key = id(obj)
            n = self._cb_ids.get(key)
            if n is None:
                n = self._cb_ids[key] = len(self.callbacks)
                self.callbacks.append(obj)  # kept alive: the id stays unique
            return {"cb": n}
        raise _wire.WireError(f"cannot pass an object of type {type(obj).__name__} to the program")

    def _encode_all(self, values, sync_names=None):
        segs, sync = [], []
        for key, v in values:
            enc = self._encoder()
            try:
                segs.append(enc.dumps(v))
            except _wire.WireError as e:
                raise TypeError(str(e)) from None
            if sync_names is not None and enc.plain and _holds_mutable(v):
                sync.append(key)
        return segs, sync

    def _answer(self, rh, rsegs, op, args=(), kwargs=None):
        kind = rh[0]
        if kind in ("ok", "err", "stop"):
            out, err = (rh[2], rh[3]) if len(rh) >= 4 else (None, None)
            if type(out) is not str or type(err) is not str:
                self.break_("protocol", "the program sent a malformed answer")
            for text, stream in ((out, sys.stdout), (err, sys.stderr)):
                if text:
                    try:
                        stream.write(text[:OUTPUT_CAP])
                    except Exception:
                        pass
        if kind == "ok":
            changed = rh[4] if len(rh) == 5 else None
            if type(changed) is not list or len(rsegs) != 1 + len(changed):
                self.break_("protocol", "the program sent a malformed answer")
            value = self._decode(rsegs[0])
            for pos, seg in zip(changed, rsegs[1:]):
                if type(pos) is int and 0 <= pos < len(args):
                    target = args[pos]
                elif type(pos) is str and kwargs is not None and pos in kwargs:
                    target = kwargs[pos]
                else:
                    continue
                _sync(target, self._decode(seg))
            return value
        if kind == "err" and len(rh) == 7:
            e = _program_exception(*rh[4:7])
            if isinstance(e, MemoryError):
                self.memory = True
            raise e
        if kind == "stop" and op == "next":
            raise StopIteration
        self.break_("protocol", "the program sent a malformed answer")

    def _decode(self, seg: bytes):
        try:
            return self.dec(seg)
        except _wire.WireError as e:
            raise TypeError(f"the program's answer is not data: {e}") from None
        except MemoryError:
            self.memory = True
            raise MemoryError("the program's answer does not fit in memory") from None

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def call(self, ref: RemoteObject, args, kwargs, sync: bool = True):
        kwnames = list(kwargs)
        items = list(enumerate(args)) + [(k, kwargs[k]) for k in kwnames]
        segs, to_sync = self._encode_all(items, sync_names=True if sync else None)
        rh, rsegs = self.exchange(["call", self._next_seq(), ref._dc_h, len(args), kwnames, to_sync], segs)
        return self._answer(rh, rsegs, "call", args, kwargs)

    def ask(self, op: str, ref: RemoteObject, values=(), extra=()):
        segs, _ = self._encode_all(list(enumerate(values)))
        rh, rsegs = self.exchange([op, self._next_seq(), ref._dc_h, *extra], segs)
        return self._answer(rh, rsegs, op)

    def look(self, names: list[str]) -> list[tuple[str, str, object]]:
        rh, rsegs = self.exchange(["look", self._next_seq(), names], [])
        if len(rh) != 3 or rh[0] != "look":
            self.break_("protocol", "the program sent a malformed answer")
        return self._entries(rh[2], rsegs)

    def _entries(self, entries, rsegs) -> list[tuple[str, str, object]]:
        if type(entries) is not list:
            self.break_("protocol", "the program sent a malformed answer")
        out, segs = [], iter(rsegs)
        for e in entries:
            if type(e) is not list or len(e) != 3 or type(e[0]) is not str:
                self.break_("protocol", "the program sent a malformed answer")
            name, kind, extra = e
            if kind == "m" and type(extra) is str:
                out.append((name, "m", extra))
            elif kind == "v":
                seg = next(segs, None)
                if seg is None:
                    self.break_("protocol", "the program sent a malformed answer")
                try:
                    out.append((name, "v", self.dec(seg)))
                except _wire.WireError:
                    continue
        return out

    def _callback(self, rh, rsegs):
        """The program calls a callable of the test (it runs here, on plain data)."""
        try:
            _, pseq, n, nargs, kwnames = rh
            ok = (type(pseq) is int and type(n) is int and 0 <= n < len(self.callbacks) and type(nargs) is int
                  and type(kwnames) is list and all(type(k) is str for k in kwnames)
                  and len(rsegs) == nargs + len(kwnames))
        except ValueError:
            ok = False
        if not ok:
            self.break_("protocol", "the program sent a malformed callback")
        try:
            values = [self._decode(s) for s in rsegs]
            result = self.callbacks[n](*values[:nargs], **dict(zip(kwnames, values[nargs:])))
            try:
                seg = self._encoder().dumps(result)
            except _wire.WireError as e:
                raise TypeError(f"the test's callable returned something that cannot be sent: {e}") from None
            reply, segs = ["ret", pseq], [seg]
        except Broken:
            raise
        except BaseException as e:
            reply, segs = ["raise", pseq, *exception_fields(e)], []
        try:
            _wire.send(self.wr, _wire.join(reply, segs), self.test_deadline, self.side)
        except _wire.Closed:
            self.break_("died", "the program's process ended")
        except _wire.Deadline:
            self.break_("timeout", "time limit exceeded")

    def wait_ready(self) -> tuple[dict, list]:
        """The program's load status and its answer to the first lookup (sent with it)."""
        try:
            rh, rsegs = self.read(self.deadline)
        except Broken:
            if self.broken_kind == "died":
                return {"ok": False, "kind": "died", "error": "the program's process ended while loading"}, []
            if self.broken_kind == "timeout":
                return {"ok": False, "kind": "timeout", "error": "time limit exceeded while loading the program"}, []
            return {"ok": False, "kind": "program_error", "error": self.broken}, []
        info = rh[1] if len(rh) == 3 and rh[0] == "ready" and type(rh[1]) is dict else None
        if info is None or type(info.get("ok")) is not bool:
            self.broken, self.broken_kind = "the program broke the protocol", "protocol"
            return {"ok": False, "kind": "program_error", "error": self.broken}, []
        if info["ok"]:
            try:
                return {"ok": True}, self._entries(rh[2], rsegs)
            except Broken:
                return {"ok": False, "kind": "program_error", "error": self.broken}, []
        kind = info.get("kind") if info.get("kind") in ("syntax_error", "program_error", "memory") else "program_error"
        return {"ok": False, "kind": kind, "error": str(info.get("error", ""))[:300]}, []


class _TooSlow(Exception):
    pass


# ----------------------------------------------------------------------------------------------------------------
# Helpers available to trusted test code (EvalPlus checks, ``Job.setup``)


def _eq(a, b) -> bool:
    try:
        r = a == b
        return r if type(r) is bool else bool(r)
    except Exception:
        return False


def _safe(x, depth=0) -> bool:
    """True when x is plain data all the way down (no reference to a program object inside)."""
    t = type(x)
    if t in (type(None), bool, int, float, complex, str, bytes):
        return True
    if depth > 200 or isinstance(x, _wire.Remote):
        return False
    if isinstance(x, dict):
        return all(_safe(k, depth + 1) and _safe(v, depth + 1) for k, v in x.items())
    if isinstance(x, (list, tuple, set, frozenset)):
        return all(_safe(v, depth + 1) for v in x)
    return not callable(x)  # a trusted value type (Decimal, datetime, ...)


_NUMBERS = (bool, int, float)


def _close(out, exp, atol, rtol=1e-7, top=True) -> bool:
    """EvalPlus's float check: the same type at the top level (as its ``type(out) == type(exp)``), then
    numpy.allclose-like element-wise comparison of numbers (|out - exp| <= atol + rtol * |exp|)."""
    to, te = type(out), type(exp)
    if top and to is not te:
        return False
    if to in _NUMBERS and te in _NUMBERS:
        if out == exp:
            return True
        d = out - exp
        return (d if d >= 0 else -d) <= atol + rtol * (exp if exp >= 0 else -exp)
    if to is not te or te not in (list, tuple) or len(out) != len(exp):
        return False
    return all(_close(o, e, atol, rtol, False) for o, e in zip(out, exp))


def _call(fn, args, kwargs=None):
    """Call ``fn`` without writing the program's changes to the arguments back (the arguments are trusted data
    that later checks read, e.g. EvalPlus inputs)."""
    if isinstance(fn, RemoteObject):
        return _link.call(fn, tuple(args), dict(kwargs or {}), sync=False)
    return fn(*args, **(kwargs or {}))


HELPERS = {"__dc_eq__": _eq, "__dc_safe__": _safe, "__dc_close__": _close, "__dc_call__": _call}


# ----------------------------------------------------------------------------------------------------------------
# The test run


def free_names(code) -> set[str]:
    """Every name a compiled test (and the functions it defines) may look up (an over-approximation: attribute
    names are included; those the program does not define are simply not bound)."""
    out, stack = set(), [code]
    while stack:
        c = stack.pop()
        out.update(c.co_names)
        stack.extend(k for k in c.co_consts if hasattr(k, "co_names"))
    return out


def attribute_bases(src: str) -> set[str]:
    """Names whose attributes a test reads (``math`` in ``math.isclose(...)``): where such a name is also a
    standard-library module, the test means the module."""
    import ast

    return {n.value.id for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name)}


def import_std(name: str):
    """A standard-library module of this process by (dotted) name, or None."""
    parts = name.split(".")
    if not name or parts[0] not in _STDLIB or not all(p.isidentifier() for p in parts):
        return None
    import importlib

    try:
        return importlib.import_module(name)
    except Exception:
        return None


class Records(list):
    """What the tests did, in order: the verdict is built from these records only. With ``fd``, each record is
    also written there at once as a JSON line (the supervisor reads them: what was recorded before the test
    process was killed at the deadline still counts)."""

    def __init__(self, fd: int | None = None):
        super().__init__()
        self.fd = fd

    def __call__(self, **rec):
        self.append(rec)
        if self.fd is not None:
            import json

            data = memoryview(json.dumps(rec).encode() + b"\n")
            while data:
                data = data[os.write(self.fd, data):]


def _describe(e: BaseException) -> str:
    try:
        name = type(e).__name__
        text = e.args[0] if (type(e.args) is tuple and len(e.args) == 1 and type(e.args[0]) is str) else ""
        return f"{name}: {text}"[:300]
    except BaseException:
        return "<unprintable exception>"


def wanted_names(names: set[str], data: dict, entry_points) -> list[str]:
    """The names to look up in the program: those the tests use that are not the job's own (data, helpers) and,
    unless they are entry points, not built-ins."""
    return sorted(n for n in names if n not in data and n not in HELPERS and n != "__builtins__"
                  and (n in entry_points or n not in _BUILTINS))


def bind_program_names(entries, base: dict, wanted: list[str], entry_points: frozenset,
                       module_like: set[str]) -> None:
    """Bind the names the program defines. A name the tests use like a module (``math.isclose``) that is a
    standard-library module name means this process's own module, whatever the program bound to it; a module the
    program imported is re-imported here by name; built-ins were never asked for."""
    allowed = set(wanted)
    for name, kind, value in entries:
        if name not in allowed:
            continue
        if name not in entry_points and name in _STDLIB and name in module_like:
            mod = import_std(name)
            if mod is not None:
                base[name] = mod
            continue
        if kind == "m":
            mod = import_std(value)
            if mod is not None:
                base[name] = mod
            continue
        base[name] = value


def run(job: dict, link: Link, record: Records) -> None:
    ready, entries = link.wait_ready()
    try:
        link.cpu()  # learn the program's pid now (and enter the work directory)
    except Broken:
        pass
    record(k="load", **ready)
    codes, setup_code, names, module_like = job["compiled"]
    if not ready["ok"]:
        record(k="done", n=len(codes))
        return
    base = {"__name__": "__main__", "__builtins__": builtins}
    base.update(HELPERS)
    base.update(job.get("data") or {})
    entry = frozenset(job.get("entry_points") or ())
    bind_program_names(entries, base, job["wanted"], entry, module_like)
    # an entry point named like a built-in or a module is bound in each test's namespace only: the trusted setup's
    # helpers (their globals are `base`) keep meaning Python's `sum`
    shadowing = {n: base.pop(n) for n in list(base) if n in entry and (n in _BUILTINS or n in _STDLIB)}
    if setup_code is not None:
        before = link.requests
        try:
            exec(setup_code, base)
        except BaseException as e:
            if link.requests > before or isinstance(e, NameError) or link.broken:
                record(k="setup_failed", err="test setup failed: " + _describe(e))
            else:
                record(k="test_error", err="test setup failed: " + _describe(e))
            record(k="done", n=len(codes))
            return
    limits = job.get("test_time_limits")
    factor = float(job.get("wall_factor", 10.0))
    for i, code in enumerate(codes):
        if link.broken is not None:
            break
        g = dict(base)
        g.update(shadowing)
        link.begin_test(None if limits is None else float(limits[i]), factor)
        c0, t0 = link.cpu0, time.perf_counter()
        try:
            exec(code, g)
            ok, err = True, ""
        except Broken:
            ok, err = False, ""
        except MemoryError:
            ok, err = False, "MemoryError"
            link.memory = True
        except BaseException as e:
            ok, err = False, _describe(e)
        wall, cpu = time.perf_counter() - t0, link.cpu() - c0
        link.limit = None
        if link.broken is not None:
            ok, err = False, link.broken
        record(k="test", i=i, ok=ok, wall=wall, cpu=cpu, err=err)
        if link.memory:
            record(k="memory")
            link.memory = False
    if link.broken is not None:
        record(k="broken", kind=link.broken_kind, err=link.broken)
    record(k="done", n=len(codes))


class _Sink:
    """Where the tests' own prints (and the program's, replayed) go unless a test redirects them."""

    encoding = "utf-8"

    def write(self, s):
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return False


def run_here(job: dict, link: Link, record: Records | None = None) -> Records:
    """Run one job's tests in this process (the job's test process) against the program behind ``link``.

    A SIGALRM at the job's deadline interrupts what the link's own deadlines cannot: a test blocked in a system
    call (e.g. opening a FIFO the program left in the work directory) or looping over the program's answers. The
    supervisor kills the test process a little later in any case (a test stuck in C code)."""
    import io

    global _link
    _link = link
    record = Records() if record is None else record
    saved = sys.stdout, sys.stderr, sys.stdin, sys.getrecursionlimit()
    sys.stdout, sys.stderr, sys.stdin = _Sink(), _Sink(), io.StringIO("")
    sys.setrecursionlimit(max(saved[3], 4000))  # deeply nested answers decode and compare
    armed = [True]

    def on_alarm(signum, frame):
        if armed[0]:
            if link.broken is None:
                link.broken, link.broken_kind = "time limit exceeded", "timeout"
            raise Broken(link.broken)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, link.deadline + 0.25 - time.monotonic()))
    try:
        run(job, link, record)
    except Broken:
        record(k="broken", kind=link.broken_kind, err=link.broken)
        record(k="done", n=len(job["compiled"][0]))
    except BaseException:  # a bug of ours or of the dataset's tests: never a verdict
        record(k="crash", err=traceback.format_exc()[-1500:])
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        sys.stdout, sys.stderr, sys.stdin = saved[:3]
        sys.setrecursionlimit(saved[3])
        _link = None
    return record
