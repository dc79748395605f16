"""The program's process: loads the untrusted program and answers calls over the plain-data channel.

Standard library only; runs inside the sandbox (see ``_zygote``). It is forked from a zygote that never held a
test, an expected output or anything else that decides a verdict, so nothing in this process is secret: the
program may introspect, patch or replace any of it (this module included) and only changes its own answers.

Requests (header fields, then one encoded value per segment; see ``_wire``) and what they do:

    ["look", seq, names]                   which of ``names`` the program defines: values, references, modules (the
                                           first lookup is answered with the ``ready`` message, unasked)
    ["call", seq, ref, n, kwnames, sync]   call object ``ref`` with n positional + keyword arguments; the arguments
                                           listed in ``sync`` are sent back if the call changed them
    ["attr"|"setattr"|"delattr", seq, ref, name] (+ value)
    ["item"|"setitem"|"delitem", seq, ref] (+ key, value)
    ["len"|"iter"|"next"|"bool"|"str"|"repr"|"int"|"float"|"index", seq, ref]
    ["inst", seq, ref, cls_ref]            isinstance
Replies: ``["ok", seq, out, err, changed]`` + result (+ the changed arguments), ``["err", seq, out, err, chain,
type, message]``, ``["stop", seq, out, err]`` (the end of an iteration). ``out``/``err`` are what the program
printed during the request. While answering, the program may call back into the test process (a callable the test
passed in): ``["cb", seq, n, nargs, kwnames]`` + arguments, answered by ``["ret", seq]`` + value or ``["raise",
seq, chain, type, message]``; nested requests may arrive meanwhile and are answered first.
"""

from __future__ import annotations

import builtins
import io
import os
import sys
import threading
import time

from diffucoder.execution import _wire

OUTPUT_CAP = 1 << 20  # characters of stdout/stderr kept per request (what a test that checks prints can see)
_BUILTIN_EXC = {name: obj for name, obj in vars(builtins).items()
                if isinstance(obj, type) and issubclass(obj, BaseException)}


def exception_fields(e: BaseException) -> list:
    """[chain, type name, message] of an exception: ``chain`` lists the built-in exception classes in its MRO."""
    try:
        chain = [c.__name__ for c in type(e).__mro__ if _BUILTIN_EXC.get(c.__name__) is c]
        name = str(type(e).__qualname__)[:200]
        msg = e.args[0] if len(e.args) == 1 and type(e.args[0]) is str else str(e)
        if type(msg) is not str:
            msg = ""
    except BaseException:  # an exception whose __str__ raises or lies about its type
        chain, name, msg = ["Exception"], "?", "<unprintable exception>"
    return [chain, name, msg[:2000]]


def raise_from_fields(chain, name, msg) -> BaseException:
    """An exception of the first built-in class in ``chain`` (the program sees the test's errors as built-ins)."""
    for c in chain if isinstance(chain, list) else ():
        cls = _BUILTIN_EXC.get(c) if isinstance(c, str) else None
        if cls is not None and issubclass(cls, Exception):
            try:
                return cls(msg)
            except Exception:
                continue
    return RuntimeError(f"{name}: {msg}")


class _Tee(io.TextIOBase):
    """Replaces sys.stdout / sys.stderr during a request: keeps what is written (up to OUTPUT_CAP) and passes it on
    to the real stream, so the job's output tail still shows it."""

    def __init__(self, base):
        self._base, self._parts, self._n = base, [], 0

    def write(self, s):
        if type(s) is not str:
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if self._n < OUTPUT_CAP:
            self._parts.append(s[: OUTPUT_CAP - self._n])
            self._n += len(s)
        try:
            self._base.write(s)
        except Exception:
            pass
        return len(s)

    def flush(self):
        try:
            self._base.flush()
        except Exception:
            pass

    def writable(self):
        return True

    def fileno(self):
        return self._base.fileno()

    @property
    def encoding(self):
        return getattr(self._base, "encoding", "utf-8")

    def text(self) -> str:
        return "".join(self._parts)


class Server:
    """Answers the test process's requests about the program's namespace ``g``."""

    def __init__(self, rd: int, wr: int, g: dict):
        self.reader = _wire.Reader(rd, cap=1 << 31)  # the test side is trusted
        self.wr = wr
        self.g = g
        self.objs: dict[int, object] = {}
        self.ids: dict[int, int] = {}
        self.stubs: dict[int, object] = {}
        self.seq = 0
        self.read_lock = threading.RLock()
        self.write_lock = threading.Lock()
        self.dec = _wire.decoder(handle=self._deref, callback=self._stub, builtin=self._builtin)
        # bound now: an honest program may rebind names in these modules without breaking the server
        self._send, self._join, self._split, self._stdout, self._stderr = (
            _wire.send, _wire.join, _wire.split, sys.stdout, sys.stderr)

    # -- references ---------------------------------------------------------------------------------------------
    def _ref(self, obj):
        key = id(obj)
        hid = self.ids.get(key)
        if hid is None:
            hid = len(self.objs) + 1
            self.objs[hid] = obj  # kept alive for the job, so its id cannot be reused
            self.ids[key] = hid
        try:
            tname = str(type(obj).__name__)[:100]
        except Exception:
            tname = "?"
        return {"h": [hid, tname]}

    def _deref(self, hid, _tname):
        try:
            return self.objs[hid]
        except KeyError:
            raise _wire.WireError(f"unknown reference {hid}") from None

    def _builtin(self, name):
        obj = builtins
        for part in name.split(".")[:2]:
            obj = getattr(obj, part)
        return obj

    def _stub(self, n):
        f = self.stubs.get(n)
        if f is None:
            server = self

            def callback(*args, **kwargs):
                return server.callback(n, args, kwargs)

            callback.__qualname__ = callback.__name__ = f"test_callable_{n}"
            f = self.stubs[n] = callback
        return f

    def encode(self, value) -> bytes:
        return _wire.Encoder(self._ref).dumps(value)

    # -- the loop -----------------------------------------------------------------------------------------------
    def write(self, header, segments=()):
        with self.write_lock:
            self._send(self.wr, self._join(header, segments))

    def serve_forever(self):
        while True:
            with self.read_lock:
                try:
                    body = self.reader.frame()
                except (_wire.Closed, _wire.WireError):
                    _idle()
            self.dispatch(body)

    def dispatch(self, body: bytes):
        header, segs = self._split(body)
        op = header[0]
        seq = header[1] if len(header) > 1 else 0
        if op == "look":
            self.write(*self.look(seq, header[2]))
            return
        out_tee, err_tee = _Tee(sys.stdout), _Tee(sys.stderr)
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out_tee, err_tee
        try:
            reply = self.run(op, seq, header, segs)
        finally:
            sys.stdout, sys.stderr = saved
        kind, *rest = reply
        if kind == "ok":
            result_seg, changed, changed_segs = rest
            self.write(["ok", seq, out_tee.text(), err_tee.text(), changed], [result_seg, *changed_segs])
        elif kind == "stop":
            self.write(["stop", seq, out_tee.text(), err_tee.text()])
        else:
            self.write(["err", seq, out_tee.text(), err_tee.text(), *rest[0]])

    def run(self, op, seq, header, segs):
        try:
            if op == "call":
                _, _, ref, n, kwnames, sync = header[:6]
                target = self._deref(ref, "")
                values = [self.dec(s) for s in segs]
                args, kwargs = values[:n], dict(zip(kwnames, values[n:]))
                result = target(*args, **kwargs)
                changed, changed_segs = [], []
                for pos in sync:
                    arg = args[pos] if isinstance(pos, int) else kwargs[pos]
                    seg = segs[pos] if isinstance(pos, int) else segs[n + kwnames.index(pos)]
                    try:
                        now = self.encode(arg)
                    except BaseException:
                        continue
                    if now != seg:
                        changed.append(pos)
                        changed_segs.append(now)
                return "ok", self.encode(result), changed, changed_segs
            obj = self._deref(header[2], "")
            if op == "attr":
                result = getattr(obj, header[3])
            elif op == "setattr":
                setattr(obj, header[3], self.dec(segs[0]))
                result = None
            elif op == "delattr":
                delattr(obj, header[3])
                result = None
            elif op == "item":
                result = obj[self.dec(segs[0])]
            elif op == "setitem":
                obj[self.dec(segs[0])] = self.dec(segs[1])
                result = None
            elif op == "delitem":
                del obj[self.dec(segs[0])]
                result = None
            elif op == "len":
                result = len(obj)
            elif op == "iter":
                result = iter(obj)
            elif op == "next":
                try:
                    result = next(obj)
                except StopIteration:
                    return ("stop",)
            elif op == "bool":
                result = bool(obj)
            elif op == "str":
                result = str(obj)
            elif op == "repr":
                result = repr(obj)
            elif op == "int":
                result = int(obj)
            elif op == "float":
                result = float(obj)
            elif op == "index":
                result = obj.__index__()
            elif op == "inst":
                result = isinstance(obj, self._deref(header[3], ""))
            else:
                raise ValueError(f"unknown request {op!r}")
            return "ok", self.encode(result), [], []
        except BaseException as e:  # SystemExit and KeyboardInterrupt included: they answer this request only
            return "err", exception_fields(e)

    def look(self, seq, names):
        entries, segs = [], []
        for name in names:
            if type(name) is not str or name not in self.g:
                continue
            value = self.g[name]
            if type(value) is type(sys):
                entries.append([name, "m", str(getattr(value, "__name__", ""))])
                continue
            try:
                segs.append(self.encode(value))
            except BaseException:
                continue
            entries.append([name, "v", None])
        return ["look", seq, entries], segs

    def callback(self, n, args, kwargs):
        """Call the test's callable ``n`` (it runs in the test process) and return its answer."""
        with self.read_lock:
            self.seq += 1
            seq = -self.seq  # our sequence numbers are negative: never confused with the test side's
            kwnames = list(kwargs)
            segs = [self.encode(a) for a in args] + [self.encode(kwargs[k]) for k in kwnames]
            self.write(["cb", seq, n, len(args), kwnames], segs)
            while True:
                try:
                    body = self.reader.frame()
                except (_wire.Closed, _wire.WireError):
                    _idle()
                header, rsegs = self._split(body)
                if header[0] == "ret" and header[1] == seq:
                    return self.dec(rsegs[0])
                if header[0] == "raise" and header[1] == seq:
                    raise raise_from_fields(*header[2:5])
                self.dispatch(body)  # a nested request from inside the callable


def _idle():
    """The test process is gone: wait to be killed. Exiting now would look like the program ending early (the
    zygote tells the two apart by whether the process was still alive when the job ended)."""
    while True:
        time.sleep(3600)


def load(program: str, g: dict) -> dict:
    """Compile and run the program's top level; the ``ready`` record for the test process."""
    t0 = time.perf_counter()
    try:
        code = compile(program, "program.py", "exec")
    except MemoryError:
        return {"ok": False, "kind": "memory", "error": "MemoryError while compiling"}
    except (SyntaxError, ValueError, RecursionError, OverflowError) as e:
        return {"ok": False, "kind": "syntax_error", "error": f"{type(e).__name__}: {e}"[:300]}
    try:
        exec(code, g)
    except MemoryError:
        return {"ok": False, "kind": "memory", "error": "MemoryError"}
    except BaseException as e:  # SystemExit included: ending early is an error, not a pass
        chain, name, msg = exception_fields(e)
        return {"ok": False, "kind": "program_error", "error": f"{name}: {msg}"[:300]}
    return {"ok": True, "load_s": time.perf_counter() - t0}


def serve(program: str, rd: int, wr: int, names=()) -> None:
    """Load the program, tell the test process (with the answer to the lookup of ``names``, the names the tests
    take from the program), answer its requests until the channel closes. Never returns."""
    g = {"__name__": "__main__", "__builtins__": builtins, "__file__": "program.py"}
    server = Server(rd, wr, g)
    status = load(program, g)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    entries, segs = [], []
    if status["ok"]:
        (_, _, entries), segs = server.look(0, names)
    try:
        server.write(["ready", status, entries], segs)
    except BaseException:
        _idle()
    server.serve_forever()


def child(spec: dict, fds: tuple[int, int, int, int]) -> None:
    """Entry point of the program's process (forked by the program zygote). Never returns.

    Confines itself (new session, descriptors 0-4 only, rlimits, unprivileged uid, no child processes), scrubs the
    environment, then loads and serves the program."""
    from diffucoder.execution import _confine

    req_r, rep_w, out_w, err_w = fds
    try:
        os.setsid()
        _confine.default_signals()
        devnull = os.open("/dev/null", os.O_RDONLY)
        _confine.keep_fds({0: devnull, 1: out_w, 2: err_w, 3: req_r, 4: rep_w})
        os.chdir(spec["workdir"])
        lim = spec["limits"]
        uid, gid = spec["uid"], spec["gid"]
        _confine.set_limits(int(lim["memory_mb"]) << 20, float(lim["cpu_s"]), int(lim["file_mb"]) << 20,
                            int(lim["open_files"]), int(lim["processes"]) if uid is not None else None)
        _confine.drop_to(uid, gid)
        _confine.prctl(_confine.PR_SET_DUMPABLE, 1)  # its own /proc entries are its own (nothing here is secret)
        if spec.get("no_fork") and not _confine.install_no_fork():
            raise OSError("could not install the no-fork filter")
        workdir = spec["workdir"]  # the environment was scrubbed once by the program zygote (HOME=TMPDIR=workdir)
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
            os.write(2, f"sandbox setup failed: {type(e).__name__}: {e}\n".encode())
        finally:
            os._exit(71)
    try:
        serve(spec["program"], 3, 4, spec.get("look", ()))
    finally:
        os._exit(0)
