"""The sandbox worker: a supervisor that runs the tests, and a program zygote that forks a process per program.

This module is NOT imported by the host. The host starts a bare interpreter (``python -I -S -B -c`` with
``sandbox._BOOTSTRAP``), inside bubblewrap when available, and sends it the sources of ``_wire``, ``_confine``,
``_program``, ``_testside`` and this module (and a secret token) as the first frame on its stdin; after that,
stdin/stdout carry length-prefixed frames: the host sends a pickled job (the host is trusted), the worker answers
with JSON tagged with the token (the worker's sandbox also holds untrusted code, so the host never unpickles what
it sends back, and ignores answers without the token).

Processes of one worker (all in one bubblewrap sandbox; distinct uids only when the host is root):

    supervisor (uid T)        holds the tests, the data, the compiled-test cache; runs the tests; non-dumpable,
                              ignores catchable signals, cannot create processes once the zygote is forked
    +- program zygote (root)  forked at start-up, before any job: it has never held a test or an expected value
       +- program (uid P)     per job: rlimits, new session, descriptors 0-4, no child processes, no links

Per job the supervisor creates the channel (two pipes) and the program's stdout/stderr pipes and hands the
program's ends to the program zygote (SCM_RIGHTS), which makes a fresh work directory and forks the program. The
supervisor runs the tests (``_testside``) while keeping a capped tail of the program's output; when they are done
the program zygote kills and reaps the program (it cannot have children; where seccomp is unavailable every
descendant and every process of uid P is killed) and deletes the work directory. The verdict is built from the
supervisor's test records only.
"""

import gc
import json
import os
import pickle
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import time
import traceback

from diffucoder.execution import _confine, _program, _testside


_FRAME = struct.Struct("<I")


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


_TOKEN = ""  # a secret shared with the host (sent on stdin, never on the command line): it tags every result


def _send_json(fd, obj):
    data = json.dumps({**obj, "token": _TOKEN}).encode()
    os.write(fd, _FRAME.pack(len(data)))
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class _Control:
    """The supervisor <-> program zygote connection: JSON messages, descriptors passed with SCM_RIGHTS."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def send(self, msg, fds=()):
        data = json.dumps(msg).encode()
        head = _FRAME.pack(len(data))
        if fds:
            socket.send_fds(self.sock, [head], list(fds))
            self.sock.sendall(data)
        else:
            self.sock.sendall(head + data)

    def recv(self, timeout=None):
        if timeout is not None:
            r, _, _ = select.select([self.sock], [], [], timeout)
            if not r:
                raise TimeoutError
        head, fds, _, _ = socket.recv_fds(self.sock, 4, 8)
        while len(head) < 4:
            more = self.sock.recv(4 - len(head))
            if not more:
                raise EOFError
            head += more
        (n,) = _FRAME.unpack(head)
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return json.loads(data), fds


# ----------------------------------------------------------------------------------------------------------------
# The program zygote


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


def _reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _kill_everything(uid, gid):
    """Fallback cleanup when programs could fork (no seccomp): every descendant of the program zygote (it is a
    child subreaper, so orphans land here) and, as root, every process of the program's uid."""
    deadline = time.monotonic() + 2.0
    delay = 0.001
    while True:
        for pid in _descendants(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if uid is not None:
            helper = os.fork()
            if helper == 0:
                try:
                    os.setgroups([])
                    os.setgid(gid)
                    os.setuid(uid)
                    os.kill(-1, signal.SIGKILL)
                except BaseException:
                    pass
                os._exit(0)
            os.waitpid(helper, 0)
        _reap()
        if not _descendants(os.getpid()) and (uid is None or not _uid_procs(uid)):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _fresh_workdir(workdir, uid):
    if os.path.lexists(workdir):
        shutil.rmtree(workdir, ignore_errors=True)
    os.mkdir(workdir, 0o700)
    if uid is not None:
        os.chown(workdir, uid, uid)
    os.chmod(workdir, 0o1777)  # the program writes here; the tests (another uid) read and may write here too


def _program_zygote(sock: socket.socket, no_fork: bool, workdir: str) -> None:
    """Forks the program's process for each job, then kills and reaps it (and deletes its work directory) when
    told the job is over. It stays root (when we are) to drop each program to the program uid."""
    ctl = _Control(sock)
    os.environ.clear()  # what every program sees (its work directory always has this path)
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
                       "PYTHONIOENCODING": "utf-8"})
    _confine.prctl(_confine.PR_SET_DUMPABLE, 0)
    _confine.prctl(_confine.PR_SET_CHILD_SUBREAPER, 1)
    _confine.ignore_signals()
    while True:
        try:
            msg, fds = ctl.recv()
        except (EOFError, OSError):
            os._exit(0)
        if msg[0] != "run" or len(fds) != 4:
            for fd in fds:
                os.close(fd)
            ctl.send(["error", "bad request"])
            continue
        spec = msg[1]
        _fresh_workdir(workdir, spec["uid"])
        gc.freeze()  # the child's collector then never walks (and so never copies) the pages of our objects
        pid = os.fork()
        if pid == 0:
            try:
                sock.close()
                _program.child(spec, tuple(fds))
            finally:
                os._exit(72)
        gc.unfreeze()
        for fd in fds:
            os.close(fd)
        ctl.send(["started", pid])
        try:
            msg, _ = ctl.recv()  # ["kill", grace]: the job is over
        except (EOFError, OSError):
            os.kill(pid, signal.SIGKILL)
            os._exit(0)
        grace = float(msg[1]) if len(msg) > 1 else 0.0
        if grace > 0:  # the program's channel closed: give its exit a moment to complete, to report how it ended
            pidfd = os.pidfd_open(pid)
            select.select([pidfd], [], [], grace)
            os.close(pidfd)
        try:
            early = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            early = True
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status, ru = os.wait4(pid, 0)
        clean = True
        if not no_fork:
            clean = _kill_everything(spec["uid"], spec["gid"])
        shutil.rmtree(workdir, ignore_errors=True)
        ctl.send(["exited", {
            "early": early,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "cpu": ru.ru_utime + ru.ru_stime,
            "clean": clean,
        }])


# ----------------------------------------------------------------------------------------------------------------
# The supervisor side of one job


class _Tail:
    """Keeps the last `cap` bytes of a stream and counts the total."""

    def __init__(self, cap):
        self.cap, self.buf, self.total = cap, b"", 0

    def add(self, data):
        self.total += len(data)
        self.buf = (self.buf + data)[-self.cap:]


_TEST_CACHE = {}  # test source -> (code, names), kept across jobs (tests are trusted; RL repeats them G times)


def _compile(src, filename):
    hit = _TEST_CACHE.get((filename[:6], src))
    if hit is None:
        code = compile(src, filename, "exec")
        hit = (code, _testside.free_names(code), _testside.attribute_bases(src))
        if len(_TEST_CACHE) > 5000:
            _TEST_CACHE.clear()
        _TEST_CACHE[(filename[:6], src)] = hit
    return hit


def _compile_job(job):
    try:
        compiled = [_compile(t, f"<test {i}>") for i, t in enumerate(job["tests"])]
        setup = job.get("setup")
        setup_code, setup_names, setup_attrs = _compile(setup, "<test setup>") if setup else (None, set(), set())
    except (SyntaxError, ValueError) as e:
        return f"test does not compile: {e}"
    names, module_like = set(setup_names), set(setup_attrs)
    for _, n, a in compiled:
        names |= n
        module_like |= a
    return [c for c, _, _ in compiled], setup_code, names, module_like


def _finish_previous(state):
    """Collect the program zygote's report on the previous job's program (killed asynchronously). Raises when it
    does not answer (the worker is then restarted)."""
    if state.pop("pending", False):
        msg, _ = state["pz"].recv(timeout=10)
        if msg[0] != "exited":
            raise RuntimeError("the program zygote is out of step")


_EMPTY_P = {"early": False, "signal": None, "exit": None, "cpu": 0.0, "clean": True}


def _program_started(pz):
    """The program's pid, as the program zygote reports it after forking (None when it does not answer)."""
    try:
        msg, _ = pz.recv(timeout=30)
        if msg[0] == "started":
            return int(msg[1])
    except (TimeoutError, EOFError, OSError, ValueError, IndexError, TypeError):
        pass
    return None


def _test_process(tjob, fds, pid, deadline, cap, limits, state):
    """The test process of one job (forked by the supervisor; never returns): runs the tests against the program
    behind the channel and streams its records to the supervisor, one JSON line each."""
    try:
        req_w, rep_r, rec_w = fds
        devnull = os.open("/dev/null", os.O_RDWR)
        _confine.keep_fds({0: devnull, 1: devnull, 2: 2, 3: req_w, 4: rep_r, 5: rec_w})
        os.chdir(state["workdir"])  # created by the program zygote before it forked the program
        # its memory, its files and its own CPU time are bounded (the supervisor kills it at the deadline anyway)
        want = _confine.vm_bytes() + 3 * cap + (512 << 20)
        cpu = int(float(limits["wall_s"])) + 5
        for r, v in ((resource.RLIMIT_AS, want), (resource.RLIMIT_FSIZE, int(limits["file_mb"]) << 20),
                     (resource.RLIMIT_CPU, cpu)):
            soft, hard = resource.getrlimit(r)
            resource.setrlimit(r, (v if hard == resource.RLIM_INFINITY else min(v, hard), hard))
        _confine.prctl(_confine.PR_SET_DUMPABLE, 0)
        if state["no_fork"] and not _confine.install_no_fork():
            raise OSError("could not install the no-fork filter")
        link = _testside.Link(3, 4, cap, deadline, lambda: pid, call_timeout=tjob.get("call_timeout"))
        _testside.run_here(tjob, link, _testside.Records(5))
    except BaseException:
        try:
            os.write(2, ("test process: " + traceback.format_exc()[-1000:]).encode())
        except BaseException:
            pass
    finally:
        os._exit(0)


def _collect(rec_r, tpid, outputs, deadline):
    """Read the test process's records until it is done (or the deadline has passed: it is then killed), serving
    the program's output pipes meanwhile. Returns (records, timed out, the signal that ended the test process)."""
    recs, buf, timed_out = [], bytearray(), False
    live = {rec_r, *outputs}
    while rec_r in live:
        left = deadline + 1.0 - time.monotonic()  # the test process interrupts itself at deadline + 0.25 s
        if left <= 0:
            timed_out = True
            break
        r, _, _ = select.select(list(live), [], [], left)
        for fd in r:
            try:
                data = os.read(fd, 1 << 20)
            except OSError:
                data = b""
            if not data:
                live.discard(fd)
            elif fd == rec_r:
                buf += data
                *lines, rest = bytes(buf).split(b"\n")
                buf = bytearray(rest)
                for line in lines:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(rec, dict):
                        recs.append(rec)
            else:
                outputs[fd].add(data)
    try:
        os.kill(tpid, signal.SIGKILL)  # done or late: nothing of it may outlive the job
    except ProcessLookupError:
        pass
    _, status = os.waitpid(tpid, 0)
    os.close(rec_r)
    t_signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    if any(r.get("k") == "done" for r in recs):
        t_signal = None  # killed after it had finished
    return recs, timed_out, t_signal


def run_job(job, state):
    _finish_previous(state)
    compiled = _compile_job(job)
    n_tests = len(job["tests"])
    limits = job["limits"]
    if isinstance(compiled, str):
        return _summarize([{"k": "test_error", "err": compiled}, {"k": "done"}], n_tests, False, _EMPTY_P, 0.0,
                          _Tail(1), _Tail(1))
    codes, setup_code, names, module_like = compiled
    data = job.get("data") or {}
    entry = job.get("entry_points") or ()
    wanted = _testside.wanted_names(names, data, entry)
    t_start = time.monotonic()
    deadline = t_start + float(limits["wall_s"])
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    spec = {"program": job["program"], "limits": limits, "workdir": state["workdir"], "uid": state["uid_p"],
            "gid": state["uid_p"], "no_fork": state["no_fork"], "look": wanted}
    pz = state["pz"]
    pz.send(["run", spec], [req_r, rep_w, out_w, err_w])
    for fd in (req_r, rep_w, out_w, err_w):
        os.close(fd)
    pid = _program_started(pz)
    if pid is None:
        raise RuntimeError("the program zygote did not start the program")
    out, err = _Tail(int(limits["output_bytes"])), _Tail(int(limits["output_bytes"]))
    outputs = {out_r: out, err_r: err}
    cap = min(int(limits["memory_mb"]), 1024) << 20
    tjob = {"compiled": (codes, setup_code, names, module_like), "wanted": wanted, "data": data,
            "entry_points": entry, "test_time_limits": job.get("test_time_limits"),
            "wall_factor": job.get("wall_factor", 10.0), "call_timeout": job.get("call_timeout")}
    rec_r, rec_w = os.pipe()
    gc.freeze()  # the test process's collector then never walks (and so never copies) the cached data
    tpid = os.fork()
    if tpid == 0:
        _test_process(tjob, (req_w, rep_r, rec_w), pid, deadline, cap, limits, state)
    gc.unfreeze()
    for fd in (req_w, rep_r, rec_w):
        os.close(fd)
    recs, killed, t_signal = _collect(rec_r, tpid, outputs, deadline)
    wall_s = time.monotonic() - t_start
    try:
        ppidfd = os.pidfd_open(pid)
        early = bool(select.select([ppidfd], [], [], 0)[0])  # the program's process had already ended
        os.close(ppidfd)
    except ProcessLookupError:
        early = True
    early = early or any(r.get("kind") == "died" for r in recs)
    pz.send(["kill", 0.5 if early else 0.0])
    if early or not state["no_fork"]:
        # why it ended matters (crashed, killed by a signal), or leftovers must be accounted for: wait for the report
        msg, _ = pz.recv(timeout=10)
        pinfo = msg[1]
        _drain(outputs)
    else:
        # the usual case: the program was alive when the tests finished. It cannot have children, so one SIGKILL
        # (from the program zygote) ends everything it started; its report is collected with the next job
        pinfo = dict(_EMPTY_P)
        state["pending"] = True
        _drain(outputs, wait=False)
    timed_out = killed or (time.monotonic() > deadline + 0.5 and not any(r.get("k") == "done" for r in recs))
    result = _summarize(recs, n_tests, timed_out, pinfo, wall_s, out, err)
    result["t_signal"] = t_signal
    return result


def _drain(outputs, wait=True):
    """Read what is still buffered in the program's output pipes (without waiting when it may still be alive)."""
    for fd, tail in outputs.items():
        if not wait:
            os.set_blocking(fd, False)
        while True:
            try:
                data = os.read(fd, 1 << 20)
            except OSError:
                break
            if not data:
                break
            tail.add(data)
        os.close(fd)


def _summarize(recs, n_tests, timed_out, pinfo, wall_s, out, err):
    tests, events, error, load, done, broken = {}, [], "", None, False, None
    for r in recs:
        k = r.get("k")
        if k == "test":
            i = r["i"]
            if 0 <= i < n_tests and i not in tests:
                tests[i] = [i, bool(r["ok"]), float(r["wall"]), float(r["cpu"]), str(r["err"])]
        elif k == "load":
            load = {"ok": r["ok"], "kind": r.get("kind", ""), "error": r.get("error", "")}
            if not r["ok"]:
                error = r.get("error", "")
        elif k == "done":
            done = True
        elif k == "memory":
            events.append("memory")
        elif k in ("test_error", "setup_failed", "crash"):
            events.append(k)
            error = r.get("err", "")
        elif k == "broken":
            broken = r.get("kind")
    return {
        "tests": [tests[i] for i in sorted(tests)],
        "load": load,
        "done": done,
        "events": events,
        "error": error,
        "timed_out": timed_out,
        "broken": broken,
        "p_signal": pinfo.get("signal"),
        "p_exit": pinfo.get("exit"),
        "p_early": bool(pinfo.get("early")),
        "p_cpu": float(pinfo.get("cpu") or 0.0),
        "wall_s": wall_s,
        "stdout": out.buf.decode("utf-8", "replace"),
        "stderr": err.buf.decode("utf-8", "replace"),
        "stdout_bytes": out.total,
        "stderr_bytes": err.total,
        "clean": bool(pinfo.get("clean", True)),
    }


def _readable_as(uid, gid):
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


def main(cfg):
    global _TOKEN
    ctrl_in, ctrl_out = os.dup(0), os.dup(1)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    _confine.prctl(_confine.PR_SET_CHILD_SUBREAPER, 1)
    # inherited by every child: no privilege gain through execve (setuid binaries, file capabilities)
    _confine.prctl(_confine.PR_SET_NO_NEW_PRIVS, 1)
    for name in cfg["preimport"]:
        try:
            __import__(name)
        except Exception:
            pass
    uid_p, uid_t = cfg.get("uid_p"), cfg.get("uid_t")
    uid_note = ""
    if uid_p is not None and not _readable_as(uid_p, uid_p):
        # e.g. an interpreter under /root (0700) without namespaces. Safety first: keep the unprivileged uid (it is
        # what bounds thread storms when we are root); programs can then import only the pre-imported modules.
        uid_note = ("the interpreter's files are not readable by the sandbox's unprivileged uid: programs can import "
                    "only the pre-imported modules (install bubblewrap: scripts/install_sandbox.sh)")
    no_fork = _confine.no_fork_available()
    if not no_fork:
        uid_note = (uid_note + "; " if uid_note else "") + (
            "seccomp is unavailable here: programs may fork, and a child's CPU time escapes the per-test limits")
    os.makedirs(cfg["work_root"], exist_ok=True)
    os.chmod(cfg["work_root"], 0o711)
    workdir = os.path.join(cfg["work_root"], "job")
    zs, ps = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    gc.collect()
    pz_pid = os.fork()
    if pz_pid == 0:  # the program zygote: forked before any job, so it never holds a test or its data
        try:
            zs.close()
            _confine.keep_fds({0: devnull, 1: devnull, 2: 2, 3: ps.detach()})
            sock = socket.socket(fileno=3)
            _program_zygote(sock, no_fork, workdir)
        finally:
            os._exit(0)
    ps.close()
    # the secret that tags our results is read only now: the program zygote (and so every program) never held it
    (n,) = struct.unpack("<I", _read_exact(ctrl_in, 4))
    _TOKEN = json.loads(_read_exact(ctrl_in, n))["token"]
    # From here on this process is the supervisor: it gives up root (when the interpreter stays readable), cannot
    # be traced or read by others (non-dumpable) and ignores catchable signals; its test processes inherit that.
    if uid_t is not None and _readable_as(uid_t, uid_t):
        _confine.drop_to(uid_t, uid_t)
    _confine.prctl(_confine.PR_SET_DUMPABLE, 0)
    _confine.ignore_signals()
    state = {
        "uid_p": uid_p,
        "workdir": workdir,
        "no_fork": no_fork,
        "pz": _Control(zs),
    }
    _send_json(ctrl_out, {"ready": True, "pid": os.getpid(), "in_pidns": os.getpid() <= 3, "uid": uid_p, "uid_t": uid_t,
                          "uid_note": uid_note, "no_fork": no_fork, "python": sys.version.split()[0]})
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
            result = {"sandbox_error": f"{type(e).__name__}: {e}", "restart": True}
        _send_json(ctrl_out, result)
