"""Process confinement used inside the sandbox: no child processes (seccomp), rlimits, uid drop, descriptors.

Standard library only (``ctypes`` for prctl/seccomp; it is imported by the trusted zygote, before any untrusted
code runs). Why "no child processes": limits must hold over everything a program starts, and a forked child is
invisible to the parent's RLIMIT_CPU / RLIMIT_AS and, once reparented or auto-reaped, to any CPU accounting read
from ``/proc``. cgroups would account a whole tree but are unavailable (or read-only) in most containers. So the
program's process may create threads (same process: its CPU clock and address space count them) but no processes:
a seccomp filter makes fork, vfork, clone without CLONE_THREAD, clone3 (glibc then falls back to clone) and
io_uring_setup fail with EPERM, and refuses every syscall of a foreign ABI (x32, int 0x80). It also refuses
creating hard or symbolic links and anonymous memory files (memfd_create; see ``_filter``). Where seccomp is not
available, ``install_no_fork`` returns False and the caller falls back to RLIMIT_NPROC and killing leftovers.
"""

from __future__ import annotations

import errno
import os
import platform
import resource
import struct

PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2

_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_LD_ABS_W, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_CLONE_THREAD = 0x00010000
# arch -> (AUDIT_ARCH, syscall numbers)
_ARCHES = {
    "x86_64": (0xC000003E, {"clone": 56, "fork": 57, "vfork": 58, "clone3": 435, "io_uring_setup": 425,
                            "link": 86, "symlink": 88, "linkat": 265, "symlinkat": 266, "memfd_create": 319}),
    "aarch64": (0xC00000B7, {"clone": 220, "clone3": 435, "io_uring_setup": 425, "linkat": 37, "symlinkat": 36,
                            "memfd_create": 279}),
}

try:
    import ctypes

    _libc = ctypes.CDLL(None, use_errno=True)
    _prctl = _libc.prctl
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

    class _FProg(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
except Exception:  # pragma: no cover - no ctypes
    ctypes = None
    _prctl = None


def prctl(option: int, arg: int = 0) -> bool:
    return _prctl is not None and _prctl(option, arg, 0, 0, 0) == 0


def _filter() -> bytes | None:
    arch = _ARCHES.get(platform.machine())
    if arch is None:
        return None
    audit, nr = arch
    deny = _RET_ERRNO | errno.EPERM
    prog = [
        (_LD_ABS_W, 0, 0, 4),              # seccomp_data.arch
        (_JEQ, 1, 0, audit),
        (_RET, 0, 0, deny),                # a foreign ABI: nothing
        (_LD_ABS_W, 0, 0, 0),              # seccomp_data.nr
        (_JGE, 0, 1, 0x40000000),
        (_RET, 0, 0, deny),                # x32 numbers
        (_JEQ, 0, 4, nr["clone"]),
        (_LD_ABS_W, 0, 0, 16),             # args[0] (flags), low 32 bits
        (_JSET, 0, 1, _CLONE_THREAD),
        (_RET, 0, 0, _RET_ALLOW),          # a thread
        (_RET, 0, 0, deny),                # a process
    ]
    # links too: a symlink in the work directory could point a test that opens a file at one of the test
    # process's own descriptors (/proc/self/fd/N); and memfd_create: anonymous files hold memory that RLIMIT_AS
    # does not count (each up to RLIMIT_FSIZE, one per descriptor)
    for name in ("fork", "vfork", "io_uring_setup", "link", "symlink", "linkat", "symlinkat", "memfd_create"):
        if name in nr:
            prog += [(_JEQ, 0, 1, nr[name]), (_RET, 0, 0, deny)]
    prog += [(_JEQ, 0, 1, nr["clone3"]), (_RET, 0, 0, _RET_ERRNO | errno.ENOSYS),
             (_RET, 0, 0, _RET_ALLOW)]
    return b"".join(struct.pack("<HBBI", *ins) for ins in prog)


_FILTER = _filter()


_AVAILABLE: bool | None = None


def no_fork_available() -> bool:
    """Whether the no-fork filter can be installed here (probed once, in a child)."""
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = _FILTER is not None and _prctl is not None and _probe_no_fork()
    return _AVAILABLE


def _probe_no_fork() -> bool:
    """Whether the filter installs here (a kernel without seccomp filters, or a container that forbids them)."""
    pid = os.fork()
    if pid == 0:
        if not install_no_fork():
            os._exit(1)
        try:
            child = os.fork()
        except OSError:
            os._exit(0)  # refused: the filter works
        if child == 0:
            os._exit(0)
        os._exit(2)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


_PROG = None
if _FILTER is not None and _prctl is not None:  # built once, in the zygote: a child only makes the prctl call
    _BUF = ctypes.create_string_buffer(_FILTER, len(_FILTER))
    _PROG = _FProg(len(_FILTER) // 8, ctypes.cast(_BUF, ctypes.c_void_p))
    _PROG_ADDR = ctypes.addressof(_PROG)


def install_no_fork() -> bool:
    """Forbid new processes for this process and everything it execs (threads stay allowed). False when seccomp
    is unavailable here."""
    if _PROG is None:
        return False
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    return _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, _PROG_ADDR, 0, 0) == 0


_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGPIPE", "SIGTSTP",
            "SIGTTIN", "SIGTTOU", "SIGVTALRM", "SIGPROF", "SIGXFSZ", "SIGWINCH", "SIGURG", "SIGIO", "SIGTRAP",
            "SIGCONT", "SIGPWR", "SIGSYS")


def ignore_signals() -> None:
    """Ignore every catchable signal a program could send (as the same uid, without root): the supervisor and the
    program zygote. SIGKILL / SIGSTOP still end or stop them: a crash or timeout, never a pass."""
    import signal

    for name in _SIGNALS:
        if hasattr(signal, name):
            try:
                signal.signal(getattr(signal, name), signal.SIG_IGN)
            except (OSError, ValueError, RuntimeError):
                pass


def default_signals() -> None:
    """What a fresh interpreter has (the program's process inherits the zygote's ignored signals otherwise)."""
    import signal

    for name in _SIGNALS:
        if hasattr(signal, name):
            sig = getattr(signal, name)
            handler = signal.default_int_handler if name == "SIGINT" else (
                signal.SIG_IGN if name in ("SIGPIPE", "SIGXFSZ") else signal.SIG_DFL)
            try:
                signal.signal(sig, handler)
            except (OSError, ValueError, RuntimeError):
                pass


def set_limits(memory_bytes: int | None, cpu_s: float, file_bytes: int, open_files: int,
               processes: int | None) -> None:
    cpu = max(1, int(cpu_s + 0.999))
    lims = [
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_FSIZE, file_bytes, file_bytes),
        (resource.RLIMIT_NOFILE, open_files, open_files),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if memory_bytes is not None:
        lims += [(resource.RLIMIT_AS, memory_bytes, memory_bytes), (resource.RLIMIT_DATA, memory_bytes, memory_bytes)]
    if processes is not None:
        lims.append((resource.RLIMIT_NPROC, processes, processes))
    for what, soft, hard in lims:
        resource.setrlimit(what, (soft, hard))


def drop_to(uid: int | None, gid: int | None) -> None:
    if uid is None:
        return
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def keep_fds(mapping: dict[int, int]) -> None:
    """Make exactly the descriptors ``{target: source}`` open (0, 1, 2 included), closing every other one."""
    staged = {}
    for target, source in mapping.items():
        staged[target] = os.dup(source) if source != target else source
    for target, fd in staged.items():
        if fd != target:
            os.dup2(fd, target)
    keep = sorted(mapping)
    lo = 0
    for fd in keep + [65536]:
        if lo < fd:
            os.closerange(lo, fd)
        lo = fd + 1
    for target in keep:
        os.set_inheritable(target, target <= 2)


def vm_bytes() -> int:
    """This process's current address-space size."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
