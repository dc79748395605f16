"""Reward hacks against the split sandbox: each attack program tries to get a pass it has not earned.

One section per attack class of issue 15 (which got passes against the single-process design), then attacks of
our own on the new parts: the channel, the decoder, the supervisor that now runs the tests. Every attack program
here is wrong on purpose (it returns something other than the expected answer) unless noted, so any pass is a
sandbox defect; most also print what they managed to see, and the tests check that too.
"""

from __future__ import annotations

import os
import textwrap
import time

import pytest

from diffucoder.execution import Job, SandboxConfig, SandboxPool, _confine

ROOT = os.geteuid() == 0
needs_no_fork = pytest.mark.skipif(not _confine.no_fork_available(), reason="seccomp filters are unavailable here")


def src(s: str) -> str:
    return textwrap.dedent(s).strip() + "\n"


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2, config=SandboxConfig(timeout_s=5.0, memory_mb=512)) as p:
        yield p


def fails(r, *, statuses=("failed", "crashed", "timeout", "memory")):
    assert not r.passed and r.status in statuses and not any(r.tests_passed), r
    return r


# A search of everything the program's process can reach for a value that only the tests know: its own objects
# and frames, its own memory, other processes' memory, descriptors and environment. Prints what it found.
SEARCH = src("""
    import gc, os, sys, re
    def _search(prefix=b"EXPECTED_", pat=rb"EXPECTED_[0-9a-f]{4}"):
        hits = set()
        for o in gc.get_objects():
            try:
                items = [o] if isinstance(o, (str, bytes)) else list(o) if isinstance(o, (list, tuple, dict)) else []
                for s in items:
                    b = s.encode() if isinstance(s, str) else s
                    if isinstance(b, bytes):
                        hits |= set(re.findall(pat, b))
            except Exception:
                pass
        f = sys._getframe()
        while f is not None:
            for v in list(f.f_locals.values()) + list(f.f_globals.values()):
                if isinstance(v, str):
                    hits |= set(re.findall(pat, v.encode(errors="ignore")))
            f = f.f_back
        for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
            for name in ("mem", "environ", "cmdline"):
                try:
                    with open(f"/proc/{pid}/{name}", "rb") as fh:
                        if name == "mem":
                            with open(f"/proc/{pid}/maps") as m:
                                for line in m:
                                    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                                    if "rw" in line.split()[1] and hi - lo < 1 << 26:
                                        try:
                                            fh.seek(lo)
                                            hits |= set(re.findall(pat, fh.read(hi - lo)))
                                        except OSError:
                                            pass
                        else:
                            hits |= set(re.findall(pat, fh.read()))
                except OSError:
                    pass
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    try:
                        with open(f"/proc/{pid}/fd/{fd}", "rb") as fh:
                            os.set_blocking(fh.fileno(), False)
                            hits |= set(re.findall(pat, fh.read(1 << 16) or b""))
                    except (OSError, TypeError):
                        pass
            except OSError:
                pass
        hits.discard(prefix)
        return sorted(h.decode() for h in hits)
""")


# 1. frames via signal handlers and f_back ---------------------------------------------------------------------

def test_signal_handler_frames_reach_nothing_of_the_tests(pool):
    prog = SEARCH + src("""
        import signal, time
        seen = []
        def handler(sig, frame):
            f = frame
            while f is not None:
                # replace any compiled code and any list of strings it can find (the old attack)
                for k, v in list(f.f_locals.items()):
                    if isinstance(v, list) and v and type(v[0]).__name__ == "code":
                        v[:] = [compile("pass", "t", "exec")] * len(v)
                        seen.append(k)
                f = f.f_back
        signal.signal(signal.SIGALRM, handler)
        def f(x):
            signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
            t = time.time()
            while time.time() - t < 0.05:
                pass
            signal.setitimer(signal.ITIMER_REAL, 0)
            print("SAW", _search(), seen)
            return 0
    """)
    r = fails(pool.run(Job(prog, ["assert f(2) == 'EXPECTED_c3b1'", "assert f(3) == 4"])))
    assert "SAW [] []" in r.stdout_tail


# 2. descriptors: fstat, swapping the channel, forging records -------------------------------------------------

def test_forged_frames_and_swapped_descriptors_do_not_pass(pool):
    prog = src("""
        import json, os, stat, struct
        fds = []
        for fd in range(1024):
            try:
                fds.append((fd, os.fstat(fd)))
            except OSError:
                pass
        def frame(obj, *segs):
            body = b"\\n".join([json.dumps(obj).encode(), *segs])
            return struct.pack("<I", len(body)) + body
        forged = [frame(["ready", {"ok": True}, []])]
        forged += [frame(["ok", seq, "", "", []], b"true") for seq in range(-5, 30)]
        forged += [frame({"k": "test", "i": 0, "ok": True}), frame({"k": "done", "n": 1}), b"x test 0 1 0 ''\\n"]
        for fd, st in fds:
            for data in forged:
                try:
                    os.write(fd, data)
                except OSError:
                    pass
        r, w = os.pipe()
        for fd, st in fds:
            if stat.S_ISFIFO(st.st_mode) and fd not in (r, w):
                os.dup2(r if fd % 2 else w, fd)  # swap in pipes of its own
        def f(x):
            return False
    """)
    fails(pool.run(Job(prog, ["assert f(1) is True", "assert f(2) == 3"], timeout_s=2)))


def test_a_thread_writing_answers_ahead_does_not_pass(pool):
    prog = src("""
        import json, os, struct, threading, time
        def frame(obj, *segs):
            body = b"\\n".join([json.dumps(obj).encode(), *segs])
            return struct.pack("<I", len(body)) + body
        def spam():
            time.sleep(0.02)
            for seq in range(1, 50):
                try:
                    os.write(4, frame(["ok", seq, "", "", []], b"true"))
                except OSError:
                    return
                time.sleep(0.001)
        threading.Thread(target=spam, daemon=True).start()
        def f(x):
            time.sleep(0.05)
            return None
    """)
    fails(pool.run(Job(prog, [f"assert f({i}) == {i * 7}" for i in range(5)], timeout_s=3)))


# 3. reading the tests or the expected values from memory ------------------------------------------------------

def test_expected_values_are_not_in_any_memory_the_program_can_read(pool):
    prog = SEARCH + "def f():\n    found = _search()\n    print('SAW', found)\n    return found[0] if found else None\n"
    jobs = [
        Job(prog, ["assert f() == 'EXPECTED_' + '7d1f'"]),
        Job(prog, ["assert f() == SECRET"], data={"SECRET": "EXPECTED_" + "9a3c"}, data_key="attack-secret"),
        Job(prog, ["assert f() == SECRET2"], setup="SECRET2 = 'EXPECTED_' + '5b2e'"),
        Job(prog, ["assert check(f)"], setup="def check(fn):\n    return fn() == 'EXPECTED_' + 'e0a4'"),
    ]
    for r in pool.map(jobs):
        fails(r)
        assert "SAW []" in r.stdout_tail, r.stdout_tail


def test_other_processes_cannot_be_traced_read_or_written(pool):
    prog = src("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        class iovec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
        buf = ctypes.create_string_buffer(64)
        local = iovec(ctypes.cast(buf, ctypes.c_void_p), 64)
        me = os.getpid()
        ok = []
        for pid in [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me]:
            if libc.ptrace(16, pid, 0, 0) == 0:  # PTRACE_ATTACH
                ok.append(("ptrace", pid))
            remote = iovec(0x400000, 64)
            if libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) > 0:
                ok.append(("read", pid))
            if libc.process_vm_writev(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) > 0:
                ok.append(("write", pid))
        def f():
            return ok
    """)
    r = pool.run(Job(prog, ["assert f() == []", "assert f() == 'x'"]))
    assert r.tests_passed == [True, False], (r.error, r.tests)


# 4. shadowing built-ins at module level -----------------------------------------------------------------------

def test_module_level_builtins_do_not_reach_the_tests(pool):
    prog = src("""
        abs = lambda x: 0
        len = lambda x: 3
        sorted = lambda x, **k: [1, 2, 3]
        isinstance = lambda *a: True
        all = any = lambda it: True
        set = lambda *a: {1}
        round = lambda *a, **k: 4
        str = lambda x: 'EXPECTED'
        type = lambda x: int
        def f(x):
            return 'nonsense'
    """)
    tests = ["assert abs(f(5) - 1) < 1e-9", "assert len(f([1])) == 3", "assert sorted(f([3, 1])) == [1, 2, 3]",
             "assert isinstance(f(1), int) and f(1) + 0 == 1", "assert all(f(x) == x for x in range(3))",
             "assert set(f(1)) == {1}", "assert round(f(1.5)) == 4", "assert str(f(2)) == 'EXPECTED'",
             "assert type(f(1)) is int"]
    fails(pool.run(Job(prog, tests)))


# 5. patching imported modules, hijacking imports --------------------------------------------------------------

def test_patched_and_hijacked_modules_stay_in_the_program(pool):
    prog = src("""
        import math, sys, types, json
        math.isclose = lambda *a, **k: True
        math.sqrt = lambda x: 2.0
        json.loads = lambda s: {'a': 1}
        fake = types.ModuleType('statistics')
        fake.mean = lambda xs: 2.5
        sys.modules['statistics'] = fake
        statistics = fake
        class FakeOperator:
            def eq(self, a, b):
                return True
        operator = FakeOperator()
        for name in ('fractions', 'collections', 'copy', 'heapq', 'random', 're', 'string'):
            with open(name + '.py', 'w') as fh:
                fh.write('def __getattr__(n):\\n    return lambda *a, **k: True\\n')
        def f(x):
            return -1
    """)
    tests = ["assert math.isclose(f(1), 0.5)", "assert math.sqrt(f(4)) == 2.0",
             "import json\nassert json.loads(f('x')) == {'a': 1}", "assert statistics.mean(f([1, 4])) == 2.5",
             "import statistics\nassert statistics.mean(f([1, 4])) == 2.5", "assert operator.eq(f(1), 7)",
             "import fractions\nassert fractions.Fraction(f(1)) == 3",
             "import random\nassert random.choice([f(1)]) == 2",
             "import copy\nassert copy.deepcopy(f(1)) == 9"]
    fails(pool.run(Job(prog, tests)))


# 6. patching library classes the comparisons trust; id reuse after gc -----------------------------------------

def test_patched_library_classes_and_recycled_ids_do_not_pass(pool):
    prog = src("""
        import collections, gc, re
        collections.Counter.__eq__ = lambda s, o: True
        collections.OrderedDict.__eq__ = lambda s, o: True
        collections.UserList.__contains__ = lambda s, x: True
        collections.UserDict.__eq__ = lambda s, o: True
        re.RegexFlag.__eq__ = lambda s, o: True
        def counter():
            return collections.Counter('zz')
        def ordered():
            return collections.OrderedDict(z=9)
        def userlist():
            return collections.UserList([0])
        def userdict():
            return collections.UserDict(q=1)
        def flag():
            return re.I
        class Trusted(int):
            pass
        target = id(Trusted)
        del Trusted
        liar = None
        for _ in range(2000):
            gc.collect()
            L = type('Liar', (int,), {'__eq__': lambda s, o: True, '__hash__': int.__hash__})
            if id(L) == target:
                liar = L
                break
        def recycled():
            return (liar or type('Liar', (), {'__eq__': lambda s, o: True}))(0)
    """)
    tests = ["import collections\nassert counter() == collections.Counter('ab')",
             "import collections\nassert ordered() == collections.OrderedDict(a=1)", "assert 5 in userlist()",
             "import collections\nassert userdict() == {'a': 2}", "import re\nassert flag() == re.M",
             "assert recycled() == 4"]
    fails(pool.run(Job(prog, tests)))


# 7. ctypes (reached through type.__subclasses__) --------------------------------------------------------------

def test_ctypes_memory_writes_only_change_the_programs_own_answers(pool):
    prog = src("""
        import sys
        cdll = next(c for c in object.__subclasses__()[0].__subclasses__() if False) if False else None
        names = {c.__name__: c for c in type.__subclasses__(type) + object.__subclasses__()}
        ctypes = sys.modules.get('ctypes') or __import__('ctypes')
        # overwrite the memory of objects in our own process: the small int 4 now reads as 5 here
        four = 4
        ctypes.memmove(id(four) + 24, ctypes.byref(ctypes.c_long(5)), 4)
        def f():
            return 2 + 2 == 5, [c for c in names if 'CFuncPtr' in c or 'CDLL' in c]
    """)
    r = pool.run(Job(prog, ["assert f()[0] is False", "assert f() == 'x'"]))
    assert not r.passed  # whatever it did to its own objects, the verdict is computed elsewhere


# 8. always-equal objects: chained comparisons, lambdas, containers --------------------------------------------

ALWAYS_EQUAL = [
    "class A:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"
    "    __lt__ = __le__ = __gt__ = __ge__ = __eq__\n    def __hash__(self): return hash(4)\n"
    "    def __bool__(self): return True\ndef f(x): return A()",
    "class A(int):\n    def __eq__(self, o): return True\n    __le__ = __ge__ = __eq__\n"
    "    __hash__ = int.__hash__\ndef f(x): return A(0)",
    "class M(type):\n    def __eq__(cls, o): return True\n    __hash__ = type.__hash__\n"
    "class A(metaclass=M):\n    def __eq__(self, o): return True\ndef f(x): return A()",
    "class A:\n    __class__ = int\n    def __eq__(self, o): return True\ndef f(x): return A()",
    "class A(str):\n    def __eq__(self, o): return True\n    __hash__ = str.__hash__\ndef f(x): return A('no')",
]
CHAINED = ["assert 4 <= f(2) <= 4", "assert (lambda: f(2) == 4)()", "assert any(f(2) == x for x in [4])",
           "assert [f(2)] == [4]", "assert f(2) in [4]", "assert {f(2): 1} == {4: 1}", "assert (f(2),) == (4,)",
           "assert not f(2) != 4", "assert f(2) == 4 == f(2)", "assert sorted([f(2), 4])[0] == 4",
           "assert {f(2)} == {4}", "assert list(map(lambda v: v == 4, [f(2)])) == [True]",
           "assert [v for v in [f(2)] if v == 4]", "assert f(2).__eq__(4) is True or f(2) == 4"]


@pytest.mark.parametrize("cheat", ALWAYS_EQUAL, ids=range(len(ALWAYS_EQUAL)))
def test_always_equal_objects_never_satisfy_a_comparison(pool, cheat):
    r = pool.run(Job(cheat + "\n", CHAINED))
    assert not r.passed and not any(r.tests_passed[:-1]), [t.error for t in r.tests]


# 9. a float whose arithmetic lies, through EvalPlus's closeness check -----------------------------------------

def test_lying_float_arithmetic_does_not_pass_closeness_checks(pool):
    from diffucoder.evaluation.datasets import _CHECK_SETUP

    prog = src("""
        class F(float):
            def __sub__(self, o): return F(0.0)
            __rsub__ = __sub__
            def __abs__(self): return F(0.0)
            def __eq__(self, o): return True
            __hash__ = float.__hash__
            def __lt__(self, o): return True
            __le__ = __lt__
            def __float__(self): return 2.0
        def f(x):
            return F(123.0)
        def g(x):
            return [F(123.0), F(5.0)]
    """)
    data = {"__inputs__": [[1], [1]], "__expected__": [2.0, [2.0, 5.0]], "__atols__": [1e-6, 1e-6],
            "__entry__": "f", "__family__": "humaneval", "__set_eq__": (), "__not_none__": ()}
    tests = ["__dc_check__(0, f)", "__dc_check__(1, g)", "assert abs(f(1) - 2.0) < 1e-6",
             "import math\nassert math.isclose(f(1), 2.0)", "assert f(1) == 2.0", "assert float(f(1)) == 2.0"]
    r = pool.run(Job(prog, tests, setup=_CHECK_SETUP, data=data))
    assert not r.passed and not any(r.tests_passed[:-1]), [t.error for t in r.tests]


# 10. dodging CPU limits in a forked child ---------------------------------------------------------------------

@needs_no_fork
def test_no_way_to_start_a_process(pool):
    prog = src("""
        import ctypes, os, subprocess, multiprocessing
        libc = ctypes.CDLL(None, use_errno=True)
        started = []
        def pid_of(start):
            pid = start()
            if pid == 0:
                os._exit(0)  # a child: must never happen
            return pid > 0
        attempts = {
            'fork': lambda: pid_of(os.fork),
            'forkpty': lambda: pid_of(lambda: os.forkpty()[0]),
            'posix_spawn': lambda: pid_of(lambda: os.posix_spawn('/bin/true', ['true'], {})),
            'subprocess': lambda: subprocess.Popen(['/bin/true']).pid > 0,
            'system': lambda: os.system('/bin/true') == 0,
            'multiprocessing': lambda: multiprocessing.Process(target=print).start() or True,
            'libc_fork': lambda: pid_of(libc.fork),
            'syscall_fork': lambda: pid_of(lambda: libc.syscall(57)),
            'syscall_vfork': lambda: pid_of(lambda: libc.syscall(58)),
            'syscall_clone': lambda: pid_of(lambda: libc.syscall(56, 17, 0, 0, 0, 0)),
            'syscall_clone3': lambda: pid_of(lambda: libc.syscall(435, 0, 0)),
        }
        for name, start in attempts.items():
            try:
                if start():
                    started.append(name)
            except OSError:
                pass
        def f():
            return started
    """)
    r = pool.run(Job(prog, ["assert f() == []"]))
    assert r.passed, (r.error, r.stdout_tail)


def test_cpu_in_threads_counts_and_the_limit_cuts_the_call_short(pool):
    prog = src("""
        import threading
        def burn(seconds_of_work):
            def spin():
                n = 0
                for _ in range(seconds_of_work * 20_000_000):
                    n += 1
            ts = [threading.Thread(target=spin) for _ in range(4)]
            for t in ts: t.start()
            for t in ts: t.join()
            return 1
    """)
    t0 = time.monotonic()
    r = pool.run(Job(prog, ["assert burn(1) == 1", "assert burn(0) == 1"], timeout_s=30, test_time_limits=[0.3, 1.0]))
    assert not r.passed and r.tests_passed == [False, False] and "too slow" in r.error
    assert time.monotonic() - t0 < 10  # cut at the limit (with poll slack), not after the 30 s of work


# Our own: the channel, the decoder, the supervisor ------------------------------------------------------------

def test_oversized_deep_and_slow_to_decode_answers_fail_cleanly(pool):
    prog = src("""
        import json, os, struct
        def raw(body):
            os.write(4, struct.pack('<I', len(body)) + body)
        def oversized():
            os.write(4, struct.pack('<I', 2 ** 31))
            return 1
        def nested():
            x = []
            for _ in range(100_000):
                x = [x]
            return x
        def collide(seq):
            # answer the request ourselves with a set of ints that all hash alike (quadratic to build)
            raw(json.dumps(["ok", seq, "", "", []]).encode() + b"\\n" +
                json.dumps({"s": [k * (2 ** 61 - 1) for k in range(60_000)]}).encode())
            import time
            time.sleep(30)
        def digits(seq):
            raw(json.dumps(["ok", seq, "", "", []]).encode() + b"\\n" + b"7" * 100_000)
            import time
            time.sleep(30)
    """)
    t0 = time.monotonic()
    rs = pool.map([Job(prog, ["assert nested() == []"]), Job(prog, ["assert oversized() == 1"]),
                   Job(prog, ["assert collide(1) == {1}"]), Job(prog, ["assert digits(1) == 7"])])
    for r in rs:
        fails(r)
    assert time.monotonic() - t0 < 20
    assert pool.run(Job("def f():\n    return 1\n", ["assert f() == 1"])).passed  # the workers are fine


def test_lying_about_names_and_calling_back_what_was_never_passed(pool):
    prog = src("""
        import json, os, struct
        def raw(obj, *segs):
            body = b"\\n".join([json.dumps(obj).encode(), *segs])
            os.write(4, struct.pack('<I', len(body)) + body)
        # a forged ready message: it claims built-ins and modules for itself
        raw(["ready", {"ok": True}, [["abs", "v", None], ["len", "v", None], ["math", "v", None], ["f", "v", None]]],
            b'{"h":[1,"function"]}', b'{"h":[1,"function"]}', b'{"h":[1,"function"]}', b'{"h":[1,"function"]}')
        def f(x):
            raw(["cb", -1, 99, 0, []])  # call back a callable the tests never passed
            return 0
    """)
    fails(pool.run(Job(prog, ["assert abs(f(1)) == 5", "assert len(f(1)) == 2"], timeout_s=2)))


def test_exceptions_that_end_iteration_are_not_forwarded(pool):
    prog = src("""
        def f(x):
            raise StopIteration
        def g(x):
            raise SystemExit(0)
        def h(x):
            raise KeyboardInterrupt
        def k(x):
            raise GeneratorExit
    """)
    tests = ["assert all(map(lambda c: f(c) == c, [1, 2]))", "assert list(map(f, [1, 2])) == []",
             "assert all(map(lambda c: g(c) == c, [1]))", "assert all(map(lambda c: h(c) == c, [1]))",
             "assert all(map(lambda c: k(c) == c, [1]))", "assert not any(f(c) for c in [1])"]
    fails(pool.run(Job(prog, tests)))


def test_answers_that_name_unsafe_builtins_are_refused(pool):
    prog = src("""
        import json, os, struct
        def f(seq):
            body = json.dumps(["ok", seq, "", "", []]).encode() + b"\\n" + b'{"bn":"exec"}'
            os.write(4, struct.pack('<I', len(body)) + body)
            import time
            time.sleep(10)
    """)
    fails(pool.run(Job(prog, ["g = f(1)\ng('raise SystemExit')\nassert False"], timeout_s=2)))


def test_sleeping_in_del_and_flooding_stdout(pool):
    sleeper = src("""
        import gc, time
        class Slow:
            def __del__(self):
                time.sleep(100)
        def f(x):
            a = Slow()
            a.self = a  # a cycle: only the collector frees it
            del a
            gc.collect()
            return x
    """)
    t0 = time.monotonic()
    r = fails(pool.run(Job(sleeper, ["assert f(1) == 1"], timeout_s=1)), statuses=("timeout",))
    assert time.monotonic() - t0 < 6 and r.wall_s < 3
    flood = src("""
        import sys
        def f(x):
            for _ in range(500):
                sys.stdout.write('x' * 100_000 + '\\n')
            print('END')
            return x * 2
    """)
    r = pool.run(Job(flood, ["assert f(2) == 4", "assert f(3) == 6"], timeout_s=20))
    assert r.passed, r.error
    assert len(r.stdout_tail) <= pool.config.output_bytes and r.stdout_tail.endswith("END\n")


def test_signals_sent_to_every_process_do_not_change_verdicts(pool):
    prog = src("""
        import os, signal
        sent = 0
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGALRM, signal.SIGCONT,
                    signal.SIGSTOP, signal.SIGKILL):
            for pid in [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]:
                try:
                    os.kill(pid, sig)
                    sent += 1
                except OSError:
                    pass
        def add(a, b):
            return a + b
    """)
    honest = pool.run(Job(prog, ["assert add(1, 2) == 3"]))
    wrong = pool.run(Job(prog.replace("a + b", "a - b"), ["assert add(1, 2) == 3"]))
    assert not wrong.passed
    if ROOT:  # another uid: nothing reached the tests, so the honest program still passes
        assert honest.passed, honest.error
    assert pool.run(Job("def f():\n    return 1\n", ["assert f() == 1"])).passed


@needs_no_fork
def test_traps_in_the_work_directory(pool):
    prog = src("""
        import os
        links = []
        for target in ('/proc/self/fd/1', '/proc/self/fd/3', '/dev/zero'):
            try:
                os.symlink(target, 'out%d.txt' % len(links))
                links.append(target)
            except OSError:
                pass
        try:
            os.link('/proc/self/cmdline', 'hard.txt')
            links.append('hard')
        except OSError:
            pass
        os.mkfifo('fifo.txt')
        def made():
            return links
        def f():
            return 'wrong'
    """)
    r = pool.run(Job(prog, ["assert made() == []"]))
    assert r.passed, r.error  # no links could be made
    t0 = time.monotonic()
    r = fails(pool.run(Job(prog, ["assert open('fifo.txt').read() == f()"], timeout_s=1)), statuses=("timeout",))
    assert time.monotonic() - t0 < 8  # the blocked open is interrupted at the deadline


def test_always_true_truthiness_gains_nothing_a_plain_true_would_not(pool):
    prog = "class A:\n    def __bool__(self): return True\ndef f(x): return A()\n"
    r = pool.run(Job(prog, ["assert f(1)", "assert f(1) == True", "assert f(1) is True", "assert bool(f(1)) is True"]))
    # truth is the program's own answer, as returning True would be; identity and equality are not
    assert r.tests_passed == [True, False, False, True]


@pytest.mark.skipif(not ROOT, reason="the two processes run under different uids only as root")
def test_the_program_runs_under_its_own_uid(pool):
    prog = src("""
        import os
        def ids():
            return os.getuid(), [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('Uid')]
    """)
    r = pool.run(Job(prog, ["uid, _ = ids()\nimport os\nassert uid != 0 and uid != os.getuid()"]))
    assert r.passed, r.error
