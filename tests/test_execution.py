"""The sandbox's API: results, limits plumbing, setup/data, per-test CPU limits, ordering, validation."""

from __future__ import annotations

import warnings

import pytest

from diffucoder.execution import (
    STATUSES,
    Job,
    SandboxConfig,
    SandboxPool,
    isolation_info,
    isolation_level,
    run_tests,
)


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2, config=SandboxConfig(timeout_s=5)) as p:
        yield p


def test_isolation_is_detected_and_reported():
    info = isolation_info()
    assert info.level in ("namespaces", "rlimits") and isolation_level() == info.level
    if info.level == "namespaces":
        assert info.bwrap
    else:
        assert info.reason  # says why (e.g. bubblewrap missing)


def test_rlimits_only_warns_loudly(monkeypatch):
    import diffucoder.execution.sandbox as sb

    monkeypatch.setattr(sb, "_warned", False)
    monkeypatch.setattr(sb, "_probe", lambda isolation: sb.IsolationInfo("rlimits", None, False, "no bwrap (test)"))
    with pytest.warns(RuntimeWarning, match="resource limits ONLY"):
        assert sb.isolation_level() == "rlimits"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb.isolation_level()  # once per process


def test_run_tests_convenience_and_result_fields():
    r = run_tests("def sq(x):\n    print('hello')\n    return x * x\n", ["assert sq(3) == 9", "assert sq(2) == 5"],
                  timeout_s=5, memory_mb=256)
    assert r.status == "failed" and not r.passed and r.tests_passed == [True, False]
    assert r.fraction_passed == 0.5 and r.stdout_tail.startswith("hello") and r.wall_s > 0
    assert [t.index for t in r.tests] == [0, 1] and r.tests[1].error.startswith("AssertionError")
    assert r.status in STATUSES and r.isolation == isolation_level()


def test_stderr_tail_and_program_errors(pool):
    r = pool.run_tests("import sys\nsys.stderr.write('oops\\n')\nraise KeyError('k')\n", ["assert True"])
    assert r.status == "failed" and "KeyError" in r.error and r.stderr_tail == "oops\n"


def test_setup_and_data_reach_tests_only(pool):
    job = Job("def f(x):\n    return x + 1\nseen = 'LIMIT' in globals()\n",
              ["assert check(f, 1)", "assert check(f, 41)", "assert seen is False"],
              setup="def check(fn, i):\n    return fn(i) == LIMIT[i]\n", data={"LIMIT": {1: 2, 41: 42}})
    r = pool.run(job)
    assert r.passed, r.error


def test_per_test_cpu_limits(pool):
    prog = "def spin(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s\n"
    job = Job(prog, ["assert spin(10) == 45", "assert spin(3_000_000) > 0"], test_time_limits=[1.0, 0.01])
    r = pool.run(job)
    assert r.tests_passed == [True, False] and "too slow" in r.tests[1].error and r.tests[1].cpu_s > 0.01
    with pytest.raises(ValueError, match="test_time_limits"):
        pool.run(Job(prog, ["assert True"], test_time_limits=[1.0, 2.0]))


def test_map_keeps_order_and_imap_yields_everything(pool):
    jobs = [Job(f"X = {i}\n", [f"assert X == {i}" if i % 3 else "assert False"]) for i in range(30)]
    assert [r.passed for r in pool.map(jobs)] == [i % 3 != 0 for i in range(30)]
    got = dict(pool.imap_unordered(jobs))
    assert sorted(got) == list(range(30)) and all(got[i].passed == (i % 3 != 0) for i in range(30))


def test_each_job_gets_fresh_randomness(pool):
    jobs = [Job("import random\nx = random.random()\nprint(x)\n", ["assert True"]) for _ in range(4)]
    outs = {r.stdout_tail for r in pool.map(jobs)}
    assert len(outs) == 4


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxConfig(timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxConfig(memory_mb=10)
    with pytest.raises(ValueError, match="isolation"):
        SandboxConfig(isolation="vm")
    with pytest.raises(ValueError, match="workers"):
        SandboxPool(workers=-1)


def test_bad_job_types(pool):
    with pytest.raises(TypeError, match="program must be a str"):
        pool.run(Job(b"x = 1", ["assert True"]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bad limits"):
        pool.run(Job("x = 1", ["assert True"], timeout_s=-1))


def test_closed_pool_refuses_work():
    p = SandboxPool(workers=1)
    p.close()
    with pytest.raises(Exception, match="closed|shutdown"):
        p.run_tests("x = 1", ["assert x == 1"])


def test_a_program_with_no_tests_passes_when_it_runs_cleanly(pool):
    assert pool.run_tests("x = 1\n", []).passed
    assert not pool.run_tests("raise SystemExit(0)\n", []).passed


def test_keyed_data_is_sent_to_a_worker_once():
    with SandboxPool(workers=1) as p:
        big = {"BIG": list(range(200_000))}
        job = Job("def f(i):\n    return i\n", ["assert f(BIG[-1]) == BIG[-1] == 199999"], data=big, data_key="k1")
        assert p.run(job).passed
        w = p._workers[0]
        assert w.data_key == "k1"
        sent = []
        orig = w.proc.stdin.write
        w.proc.stdin.write = lambda b: (sent.append(len(b)), orig(b))[1]
        assert p.run(job).passed  # the worker re-uses what it holds
        assert sent and max(sent) < 10_000
        other = Job("x = 1\n", ["assert SMALL == 2"], data={"SMALL": 2}, data_key="k2")
        assert p.run(other).passed and w.data_key == "k2"


# the split design: what the tests see of the program ----------------------------------------------------------

def test_entry_points_may_shadow_builtins_other_program_names_may_not(pool):
    prog = "def sum(a, b):\n    return a * b\ndef len(x):\n    return 0\n"
    assert pool.run(Job(prog, ["assert sum(2, 3) == 6"], entry_points=("sum",))).passed
    # ... in the tests only: the trusted setup's helpers still mean Python's sum
    helper = "def total(xs):\n    return sum(xs)\n"
    assert pool.run(Job(prog, ["assert total([2, 3]) == 5 and sum(2, 3) == 6"], setup=helper,
                        entry_points=("sum",))).passed
    r = pool.run(Job(prog, ["assert sum([2, 3]) == 5", "assert len([1]) == 1"]))
    assert r.passed, r.error  # without being named an entry point, `sum` and `len` are Python's


def test_setup_runs_in_the_test_process_and_sees_the_programs_names(pool):
    prog = "class Box:\n    def __init__(self, v):\n        self.v = v\ndef unbox(b):\n    return b.v\n"
    assert pool.run(Job(prog, ["assert unbox(B) == 3"], setup="B = Box(3)")).passed
    # setup failing because of the program is the program's failure; failing on its own is the dataset's
    r = pool.run(Job("x = 1\n", ["assert True"], setup="B = Box(3)"))
    assert r.status == "failed" and "setup" in r.error
    r = pool.run(Job("x = 1\n", ["assert True"], setup="raise ValueError('broken dataset')"))
    assert r.status == "sandbox_error" and "broken dataset" in r.error


def test_references_compare_by_identity_only(pool):
    prog = ("class P:\n    def __init__(self, x):\n        self.x = x\n    def __eq__(self, o):\n        return True\n"
            "def same(p):\n    return p\n")
    tests = ["p = P(1)\nassert same(p) is not p and same(p) != p", "assert P(1) != P(1)",
             "assert same(P(1)).x == 1", "assert isinstance(P(1), P)", "assert P(2) not in [P(2)]"]
    r = pool.run(Job(prog, tests))
    assert r.passed, [t.error for t in r.tests]


def test_program_exceptions_arrive_as_builtins_with_their_message(pool):
    prog = ("class Mine(KeyError):\n    pass\ndef f(k):\n    raise Mine(k)\ndef g():\n    return [][1]\n"
            "def h():\n    raise StopIteration\n")
    tests = ["try:\n    f('k')\nexcept KeyError as e:\n    assert \"'k'\" in str(e)\nelse:\n    assert False",
             "try:\n    g()\nexcept IndexError as e:\n    assert 'out of range' in str(e)",
             "try:\n    h()\nexcept RuntimeError as e:\n    assert 'StopIteration' in str(e)"]
    r = pool.run(Job(prog, tests))
    assert r.passed, [t.error for t in r.tests]


def test_prints_during_calls_are_replayed_to_the_tests(pool):
    prog = "def hello(n):\n    for i in range(n):\n        print('hi', i)\n"
    test = ("import io, contextlib\nbuf = io.StringIO()\nwith contextlib.redirect_stdout(buf):\n    hello(2)\n"
            "assert buf.getvalue() == 'hi 0\\nhi 1\\n'")
    r = pool.run(Job(prog, [test]))
    assert r.passed and r.stdout_tail == "hi 0\nhi 1\n", (r.error, r.stdout_tail)


def test_a_sleeping_call_is_cut_by_the_per_test_wall_limit():
    with SandboxPool(workers=1, config=SandboxConfig(timeout_s=30, test_wall_factor=1.0)) as p:
        r = p.run(Job("import time\ndef f():\n    time.sleep(60)\n", ["f()"], test_time_limits=[0.5]))
    assert not r.passed and r.status == "timeout" and r.wall_s < 10


def test_programs_cannot_fork_here(pool):
    from diffucoder.execution import _confine

    if not _confine.no_fork_available():
        pytest.skip("seccomp filters are unavailable here")
    assert pool.run(Job("x = 1\n", [])).passed and pool._workers and all(w.no_fork for w in pool._workers)


def test_a_call_over_its_wall_clock_limit_ends_the_job_and_the_worker_goes_on():
    import time

    prog = "import time\ndef slow(x):\n    time.sleep(30)\n    return x\ndef fast(x):\n    return x\n"
    with SandboxPool(workers=1, config=SandboxConfig(call_timeout_s=0.5)) as p:
        t0 = time.monotonic()
        r = p.run(Job(prog, ["assert fast(1) == 1", "assert slow(1) == 1"], timeout_s=20))
        assert time.monotonic() - t0 < 10, "the call limit, not the 20 s deadline, ended the job"
        assert r.status == "timeout" and not r.passed and r.tests_passed[:1] == [True]
        assert p.run(Job(prog, ["assert fast(2) == 2"], timeout_s=20)).passed


def test_trusted_tests_stuck_on_an_answer_are_cut_off_at_the_deadline():
    import time

    # the loop is the test's own code (the program only answers one call), so only the test process can stop it
    with SandboxPool(workers=1) as p:
        t0 = time.monotonic()
        r = p.run(Job("def f():\n    return 1\n", ["x = f()\nwhile x: pass", "assert f() == 1"], timeout_s=2))
        assert r.status == "timeout" and not r.passed and time.monotonic() - t0 < 15
        assert p.run(Job("def f():\n    return 1\n", ["assert f() == 1"], timeout_s=5)).passed
