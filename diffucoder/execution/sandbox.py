"""Host side of the sandbox: isolation detection, sandboxed workers, the bounded pool and ``run_tests``.

See the package docstring (``diffucoder.execution``) for the design and what is protected against and what is
not; ``_zygote`` for the worker's processes, ``_program`` / ``_testside`` for the two ends of the channel and
``_wire`` for the plain-data codec.
"""

from __future__ import annotations

import atexit
import json
import os
import pickle
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from queue import Queue
from typing import Any, Iterable, Iterator, Sequence

from diffucoder.errors import DiffucoderError

STATUSES = ("passed", "failed", "timeout", "memory", "crashed", "syntax_error", "sandbox_error")

# Modules the worker imports once so that each forked program finds them ready: what HumanEval/MBPP code imports
# most. Kept lean on purpose: forking costs time in proportion to the worker's memory (0.6 ms bare, ~1.4 ms with
# these, ~3.7 ms with 150 modules); anything else is imported by the program itself as usual.
DEFAULT_PREIMPORT = (
    "ast", "resource", "io", "random", "math", "re", "string", "itertools", "functools", "collections", "heapq",
    "bisect", "typing", "operator", "copy", "hashlib",
)


class SandboxError(DiffucoderError, RuntimeError):
    """The sandbox itself failed (not the program under test): a worker that does not start, isolation that was
    asked for but is unavailable, a closed pool. The command line reports it as one ``error:`` line."""


@dataclass
class SandboxConfig:
    """Limits and isolation settings shared by every program a pool runs."""

    timeout_s: float = 10.0
    """Wall-clock limit for the program and all its tests; the whole job (every process it made) is killed."""
    memory_mb: int = 1024
    """Address-space limit (RLIMIT_AS) of every process of the program, in MiB."""
    max_processes: int = 16
    """Threads the program may have at once (RLIMIT_NPROC on a per-worker unprivileged uid; it cannot create
    processes at all)."""
    max_file_mb: int = 16
    """Largest file the program may write (RLIMIT_FSIZE), in MiB."""
    max_open_files: int = 64
    """Open file descriptors (RLIMIT_NOFILE)."""
    workdir_mb: int = 64
    """Size of the worker's private tmpfs holding the work directories (namespaces isolation only)."""
    output_bytes: int = 4096
    """How much of the end of stdout and of stderr is kept."""
    isolation: str = "auto"
    """"auto" (namespaces when bubblewrap works, else rlimits with a warning), "namespaces" (fail if unavailable)
    or "rlimits"."""
    preimport: tuple[str, ...] = DEFAULT_PREIMPORT
    """Standard-library modules imported once by each worker before it forks programs."""
    call_timeout_s: float | None = None
    """Wall-clock limit of each request a test makes to the program (a call, an attribute read, ...); a request
    that takes longer fails its test and ends the job (status ``timeout``). None: only the job's deadline and the
    per-test limits apply."""
    test_wall_factor: float = 10.0
    """A test with a CPU-time limit L (``Job.test_time_limits``) also fails once it has taken factor * L + 2
    seconds of wall-clock time (a program that sleeps uses no CPU); generous, so that machine load does not flip
    verdicts."""

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.memory_mb < 64:
            raise ValueError(f"memory_mb must be >= 64 (the interpreter itself needs ~30 MiB), got {self.memory_mb}")
        if self.isolation not in ("auto", "namespaces", "rlimits"):
            raise ValueError(f"isolation must be auto, namespaces or rlimits, got {self.isolation!r}")
        if self.max_processes < 1 or self.max_open_files < 8 or self.max_file_mb < 1:
            raise ValueError("max_processes must be >= 1, max_open_files >= 8 and max_file_mb >= 1")
        if self.call_timeout_s is not None and self.call_timeout_s <= 0:
            raise ValueError(f"call_timeout_s must be > 0 or None, got {self.call_timeout_s}")
        if self.test_wall_factor < 1:
            raise ValueError(f"test_wall_factor must be >= 1, got {self.test_wall_factor}")


@dataclass
class Job:
    """One program and its tests. Tests run in the test process, where the names they take from the program are
    references into the program's process. ``setup`` (trusted code, run once in the test process after the
    program's names are bound; its definitions win over the program's) and ``data`` (plain values) are added to
    the namespace every test runs in; ``timeout_s`` / ``memory_mb`` override the pool's defaults for this job."""

    program: str
    tests: list[str]
    timeout_s: float | None = None
    memory_mb: int | None = None
    setup: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    data_key: str | None = None
    """Identifies ``data`` for re-use: a worker that already holds the data under this key is not sent it again
    (large EvalPlus expected outputs, shared by every sample of a task). The key must change when the data does."""
    test_time_limits: list[float] | None = None
    """Optional per-test limits in seconds of CPU time: a test that used more counts as failed (EvalPlus's
    per-input limits, but on CPU rather than wall time so that machine load does not flip verdicts). The CPU time
    is the program process's (all its threads; it cannot fork) while the test runs. The job-wide wall-clock
    ``timeout_s`` still bounds the whole run."""
    entry_points: tuple[str, ...] = ()
    """Names the tests take from the program even where a built-in or a standard-library module has the same name
    (a task's entry point: MBPP+ has a function called ``sum``). Other names never shadow built-ins or modules."""


@dataclass
class TestOutcome:
    """What the harness recorded for one test."""

    index: int
    passed: bool
    duration_s: float
    """Wall-clock time of the test."""
    cpu_s: float = 0.0
    """CPU time the program's process (all its threads) used while the test ran."""
    error: str = ""


@dataclass
class ExecResult:
    """The verdict on one program."""

    status: str
    """passed / failed / timeout / memory / crashed / syntax_error / sandbox_error."""
    passed: bool
    """True only when the harness saw every test run and pass."""
    tests_passed: list[bool]
    """Per test, in order; a test the harness never saw finish counts as not passed."""
    tests: list[TestOutcome]
    """The records the harness wrote (tests it saw finish)."""
    wall_s: float
    error: str = ""
    stdout_tail: str = ""
    stderr_tail: str = ""
    isolation: str = ""

    @property
    def fraction_passed(self) -> float:
        return sum(self.tests_passed) / len(self.tests_passed) if self.tests_passed else 0.0


# ----------------------------------------------------------------------------------------------------------------
# Isolation detection


@dataclass
class IsolationInfo:
    """What this machine allows."""

    level: str
    """"namespaces" (bubblewrap: own mount/pid/net/ipc/uts namespaces + rlimits) or "rlimits"."""
    bwrap: str | None
    uid_drop: bool
    """Whether programs run under an unprivileged per-worker uid (needs root to set up; makes RLIMIT_NPROC bind)."""
    reason: str = ""


def _interpreter() -> tuple[str, str]:
    """The bare base interpreter (no virtualenv) and the prefix it needs."""
    exe = Path(sys.executable).resolve()
    prefix = str(Path(sys.base_prefix).resolve())
    return str(exe), prefix


def _bwrap_args(cfg: SandboxConfig, bwrap: str, root: bool) -> list[str]:
    exe, prefix = _interpreter()
    args = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv"]
    for top in ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin"):
        p = Path(top)
        if p.is_symlink():
            args += ["--symlink", os.readlink(top), top]
        elif p.is_dir():
            args += ["--ro-bind", top, top]
    if not prefix.startswith("/usr/"):
        # the directories above the interpreter (e.g. /root/.pyenv) must be traversable by the sandbox uid;
        # they are created empty, so nothing else in them is visible
        for parent in reversed(Path(prefix).parents[:-1]):
            args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", prefix, prefix]
    if not exe.startswith(prefix + "/") and not exe.startswith("/usr/"):
        args += ["--ro-bind", exe, exe]
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(cfg.workdir_mb << 20), "--tmpfs", "/tmp",
             "--chdir", "/tmp", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
             "--setenv", "LANG", "C.UTF-8"]
    if root:
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_KILL", "CAP_DAC_OVERRIDE", "CAP_FOWNER"):
            args += ["--cap-add", cap]
    return args


@lru_cache(maxsize=None)
def _probe(isolation: str) -> IsolationInfo:
    root = os.geteuid() == 0
    if isolation == "auto" and os.environ.get("DIFFUCODER_SANDBOX") == "rlimits":
        return IsolationInfo("rlimits", None, root, "DIFFUCODER_SANDBOX=rlimits")
    if isolation == "rlimits":
        return IsolationInfo("rlimits", None, root, "rlimits requested")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        reason = "bubblewrap (bwrap) is not installed: run scripts/install_sandbox.sh"
    else:
        exe, _ = _interpreter()
        cmd = _bwrap_args(SandboxConfig(), bwrap, root) + [exe, "-I", "-S", "-c", "import os; print(os.getpid())"]
        try:
            cp = subprocess.run(cmd, capture_output=True, text=True, timeout=20, env={"PATH": "/usr/bin:/bin"})
            if cp.returncode == 0 and cp.stdout.strip() in ("1", "2", "3"):
                return IsolationInfo("namespaces", bwrap, root)
            reason = f"bubblewrap failed here (rc {cp.returncode}): {cp.stderr.strip()[:200]}"
        except (OSError, subprocess.TimeoutExpired) as e:
            reason = f"bubblewrap failed here: {e}"
    if isolation == "namespaces":
        raise SandboxError(f"namespaces isolation requested but unavailable: {reason}")
    return IsolationInfo("rlimits", None, root, reason)


_warned = False


def isolation_info(isolation: str = "auto") -> IsolationInfo:
    """Detect (once per process) the strongest isolation available; warn loudly when it is resource limits only."""
    global _warned
    info = _probe(isolation)
    if info.level == "rlimits" and isolation == "auto" and not _warned:
        _warned = True
        warnings.warn(
            "diffucoder.execution: Linux namespaces unavailable, untrusted code runs under resource limits ONLY "
            f"(no network or file-system isolation). Reason: {info.reason}",
            RuntimeWarning,
            stacklevel=2,
        )
    return info


def isolation_level(isolation: str = "auto") -> str:
    """"namespaces" or "rlimits": the isolation programs get on this machine."""
    return isolation_info(isolation).level


# ----------------------------------------------------------------------------------------------------------------
# One sandboxed worker


# The worker's code: these modules' sources, sent as the first frame to a small bootstrap (argv would be too small).
_MODULES = ("_wire", "_confine", "_program", "_testside", "_zygote")
_BOOTSTRAP = r"""
import json, os, struct, sys, types
def _read(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(0, n - len(buf))
        if not chunk:
            raise SystemExit(3)
        buf += chunk
    return bytes(buf)
bundle = json.loads(_read(struct.unpack("<I", _read(4))[0]))
import builtins
own = dict(vars(builtins))  # the sandbox's modules keep their own built-ins: a program patching builtins.len
for pkg in ("diffucoder", "diffucoder.execution"):  # cannot break the server that answers for it
    m = types.ModuleType(pkg)
    m.__path__ = []
    sys.modules[pkg] = m
for name, src in bundle["modules"]:
    m = types.ModuleType(name)
    m.__file__ = "<sandbox " + name + ">"
    m.__dict__["__builtins__"] = own
    sys.modules[name] = m
    setattr(sys.modules["diffucoder.execution"], name.rsplit(".", 1)[1], m)
    exec(compile(src, m.__file__, "exec"), m.__dict__)
del bundle, own, m, name, src
sys.modules["diffucoder.execution._zygote"].main(json.loads(sys.argv[1]))
"""
_FRAME = struct.Struct("<I")


@lru_cache(maxsize=1)
def _sources() -> list[tuple[str, str]]:
    here = Path(__file__).parent
    return [(f"diffucoder.execution.{m}", (here / f"{m}.py").read_text()) for m in _MODULES]


def _bundle(token: str) -> bytes:
    """The worker's first two frames: the sources of its modules, then the secret that tags its answers (read only
    after it has forked the program zygote, so that no program ever holds it)."""
    body = json.dumps({"modules": _sources()}).encode()
    secret = json.dumps({"token": token}).encode()
    return _FRAME.pack(len(body)) + body + _FRAME.pack(len(secret)) + secret


def _fresh_uid() -> int:
    return random.SystemRandom().randrange(200_000, 2_000_000_000)


class _Worker:
    """One worker (inside its own bubblewrap sandbox when available): a supervisor that forks a test process per
    job, and a program zygote that forks a program process per job (see ``_zygote``)."""

    def __init__(self, cfg: SandboxConfig, info: IsolationInfo):
        self.cfg, self.info = cfg, info
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        exe, _ = _interpreter()
        uid_p = _fresh_uid() if self.info.uid_drop else None
        uid_t = _fresh_uid() if self.info.uid_drop else None
        while uid_t is not None and uid_t == uid_p:
            uid_t = _fresh_uid()
        namespaces = self.info.level == "namespaces"
        zcfg = {
            "preimport": list(self.cfg.preimport),
            "uid_p": uid_p,
            "uid_t": uid_t,
            "work_root": "/tmp/work" if namespaces else _host_work_root(),
        }
        cmd = [exe, "-I", "-S", "-B", "-c", _BOOTSTRAP, json.dumps(zcfg)]
        if namespaces:
            cmd = _bwrap_args(self.cfg, self.info.bwrap, self.info.uid_drop) + ["--"] + cmd
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        self.data_key: str | None = None
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, cwd="/", start_new_session=True, close_fds=True)
        self._stderr = b""
        threading.Thread(target=self._drain_stderr, args=(self.proc,), daemon=True).start()
        self.token = os.urandom(16).hex()  # tags the worker's answers: bytes from anywhere else are not results
        try:
            self.proc.stdin.write(_bundle(self.token))
            self.proc.stdin.flush()
        except OSError:
            pass
        hello = self._recv(time.monotonic() + 30)
        if not hello or not hello.get("ready"):
            err = self._stderr.decode(errors="replace")[-500:]
            self.kill()
            raise SandboxError(f"sandbox worker failed to start: {err}")
        self.in_pidns = hello["in_pidns"]
        self.uid = hello.get("uid")
        self.no_fork = bool(hello.get("no_fork"))
        if hello.get("uid_note"):
            warnings.warn(f"diffucoder.execution: {hello['uid_note']}", RuntimeWarning, stacklevel=2)

    def _drain_stderr(self, proc: subprocess.Popen) -> None:
        for line in iter(proc.stderr.readline, b""):
            self._stderr = (self._stderr + line)[-4000:]

    def _recv(self, deadline: float) -> dict | None:
        fd = self.proc.stdout.fileno()
        header = self._read(fd, 4, deadline)
        if header is None:
            return None
        (need,) = _FRAME.unpack(header)
        if need > 64 << 20:
            return None
        body = self._read(fd, need, deadline)
        if body is None:
            return None
        try:
            out = json.loads(body)
        except ValueError:
            return None
        return out if isinstance(out, dict) and out.pop("token", None) == self.token else None

    @staticmethod
    def _read(fd: int, n: int, deadline: float) -> bytearray | None:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return None
            k = os.readv(fd, [view[got:]])
            if not k:
                return None
            got += k
        return buf

    def run(self, job: dict, host_timeout: float) -> dict | None:
        """Send one job; None when the worker died or hung (it is then restarted)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        key = job.get("data_key")
        if key is not None and key == self.data_key:
            job = {**job, "data": None, "data_cached": True}
        data = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        host_timeout += len(data) / 20e6  # the worker must also unpickle the job (large EvalPlus data)
        try:
            self.proc.stdin.write(_FRAME.pack(len(data)))
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
            out = self._recv(time.monotonic() + host_timeout)
        except (BrokenPipeError, OSError):
            out = None
        if out is None or out.get("clean") is False or out.get("restart"):
            self.kill()  # a hung worker, or one that could not kill everything its job started
            self.start()
        elif key is not None:
            self.data_key = key  # the worker keeps the last keyed data
        return out

    def kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self.proc = None


def _host_work_root() -> str:
    """Rlimits mode: work dirs live in a private host temp dir, world-traversable but not listable."""
    import tempfile

    d = tempfile.mkdtemp(prefix="diffucoder-sandbox-")
    os.chmod(d, 0o711)
    atexit.register(shutil.rmtree, d, True)
    return d


# ----------------------------------------------------------------------------------------------------------------
# Verdicts


def _verdict(raw: dict | None, n_tests: int, isolation: str, wall_budget: float,
             limits: Sequence[float] | None = None) -> ExecResult:
    """The verdict from the worker's report (itself built from the test process's records only)."""
    if raw is None or "sandbox_error" in raw:
        err = "worker died or hung" if raw is None else raw["sandbox_error"]
        status = "timeout" if raw is None else "sandbox_error"
        return ExecResult(status, False, [False] * n_tests, [], wall_budget, err, isolation=isolation)
    outcomes = [TestOutcome(int(i), bool(ok), float(d), float(c), str(e)) for i, ok, d, c, e in raw["tests"]]
    if limits is not None:
        # per-test limits are on CPU time: wall time on a loaded machine would fail correct programs at random (the
        # test process already enforces them while waiting; this re-check is on the recorded figures)
        for o in outcomes:
            if o.passed and o.cpu_s > limits[o.index]:
                o.passed, o.error = False, f"too slow: {o.cpu_s:.2f} s CPU > {limits[o.index]:.2f} s"
    per_test = [False] * n_tests
    for o in outcomes:
        per_test[o.index] = o.passed
    events, error = raw["events"], raw["error"]
    load = raw["load"] or {}
    kind = load.get("kind", "")
    if "test_error" in events or "crash" in events:
        status = "sandbox_error"
    elif kind == "syntax_error":
        status = "syntax_error"
    elif raw["timed_out"] or kind == "timeout" or raw["broken"] == "timeout" or raw["p_signal"] == signal.SIGXCPU:
        status, error = "timeout", error or "time limit exceeded"
    elif "memory" in events or kind == "memory":
        status, error = "memory", error or "MemoryError"
    elif raw["done"] and load.get("ok") and len(outcomes) == n_tests and all(per_test):
        status = "passed"
    elif raw["done"] and not raw["p_early"]:
        status = "failed"
        if not error:
            first = next((o for o in outcomes if not o.passed), None)
            error = f"test {first.index}: {first.error}" if first else "no test ran"
    else:
        status = "crashed"
        if raw["p_early"]:
            sig, code = raw["p_signal"], raw["p_exit"]
            how = f"killed by signal {sig}" if sig else f"exit code {code}"
            error = f"the program's process ended before every test was answered ({how})"
            if sig == signal.SIGKILL:
                error += "; possibly out of memory"
        else:
            error = f"the test process ended early (signal {raw.get('t_signal')})"
    passed = status == "passed"
    return ExecResult(status, passed, per_test, outcomes, raw["wall_s"], error, raw["stdout"], raw["stderr"],
                      isolation)


# ----------------------------------------------------------------------------------------------------------------
# The pool


class SandboxPool:
    """A bounded set of sandboxed workers. Thread-safe; use as a context manager or call ``close()``.

    >>> with SandboxPool(workers=2) as pool:
    ...     results = pool.map([Job("def f(): return 1", ["assert f() == 1"])])
    """

    def __init__(self, workers: int | None = None, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        self.info = isolation_info(self.config.isolation)
        self.n_workers = workers or max(1, os.cpu_count() or 1)
        if self.n_workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._idle: Queue[_Worker] = Queue()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=self.n_workers, thread_name_prefix="sandbox")
        self._n_started = 0

    @property
    def isolation(self) -> str:
        return self.info.level

    def _acquire(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise SandboxError("the pool is closed")
            if self._idle.empty() and self._n_started < self.n_workers:
                self._n_started += 1
                try:
                    w = _Worker(self.config, self.info)
                except BaseException:
                    self._n_started -= 1
                    raise
                self._workers.append(w)
                return w
        return self._idle.get()

    def run(self, job: Job) -> ExecResult:
        """Run one job on the next free worker (blocks while all are busy)."""
        cfg = self.config
        timeout = float(job.timeout_s if job.timeout_s is not None else cfg.timeout_s)
        memory = int(job.memory_mb if job.memory_mb is not None else cfg.memory_mb)
        if timeout <= 0 or memory < 64:
            raise ValueError(f"bad limits: timeout_s={timeout}, memory_mb={memory}")
        if not isinstance(job.program, str) or not all(isinstance(t, str) for t in job.tests):
            raise TypeError("program must be a str and tests a list of str")
        if job.test_time_limits is not None and len(job.test_time_limits) != len(job.tests):
            raise ValueError(f"{len(job.test_time_limits)} test_time_limits for {len(job.tests)} tests")
        payload = {
            "program": job.program,
            "tests": list(job.tests),
            "setup": job.setup,
            "data": job.data,
            "data_key": job.data_key,
            "entry_points": list(job.entry_points),
            "test_time_limits": list(job.test_time_limits) if job.test_time_limits is not None else None,
            "wall_factor": cfg.test_wall_factor,
            "call_timeout": cfg.call_timeout_s,
            "limits": {"wall_s": timeout, "cpu_s": timeout + 1, "memory_mb": memory, "file_mb": cfg.max_file_mb,
                       "open_files": cfg.max_open_files, "processes": cfg.max_processes,
                       "output_bytes": cfg.output_bytes},
        }
        worker = self._acquire()
        try:
            raw = worker.run(payload, host_timeout=timeout + 15)
        finally:
            self._idle.put(worker)
        return _verdict(raw, len(job.tests), self.info.level, timeout, job.test_time_limits)

    def run_tests(self, program: str, tests: Sequence[str], timeout_s: float | None = None,
                  memory_mb: int | None = None) -> ExecResult:
        return self.run(Job(program, list(tests), timeout_s, memory_mb))

    def imap_unordered(self, jobs: Iterable[Job], progress: bool | str = False) -> Iterator[tuple[int, ExecResult]]:
        """Yield ``(index, result)`` as jobs finish (at most ``workers`` run at a time)."""
        from concurrent.futures import as_completed

        jobs = list(jobs)
        futures = {self._executor.submit(self.run, j): i for i, j in enumerate(jobs)}
        it = as_completed(futures)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(futures), desc=progress if isinstance(progress, str) else "sandbox",
                      leave=False)
        try:
            for fut in it:
                yield futures[fut], fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def map(self, jobs: Iterable[Job], progress: bool | str = False) -> list[ExecResult]:
        """Run many jobs in parallel (at most ``workers`` at a time); results in input order."""
        jobs = list(jobs)
        futures = [self._executor.submit(self.run, j) for j in jobs]
        if progress:
            from tqdm import tqdm

            desc = progress if isinstance(progress, str) else "sandbox"
            from concurrent.futures import as_completed

            for _ in tqdm(as_completed(futures), total=len(futures), desc=desc, leave=False):
                pass
        return [f.result() for f in futures]

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=True)
        for w in self._workers:
            w.kill()
        self._workers.clear()

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_default_pool: SandboxPool | None = None
_default_lock = threading.Lock()


def default_pool() -> SandboxPool:
    """A process-wide pool (created on first use, closed at exit) used by ``run_tests`` and the rewards."""
    global _default_pool
    with _default_lock:
        if _default_pool is None or _default_pool._closed:
            _default_pool = SandboxPool()
            atexit.register(_default_pool.close)
        return _default_pool


def run_tests(program: str, tests: Sequence[str], timeout_s: float = 10.0, memory_mb: int = 1024) -> ExecResult:
    """Run ``program`` then each test (usually an ``assert`` statement) in a fresh sandboxed interpreter.

    >>> run_tests("def add(a, b): return a + b", ["assert add(1, 2) == 3"]).passed
    True
    """
    return default_pool().run(Job(program, list(tests), timeout_s, memory_mb))
