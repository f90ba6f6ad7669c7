"""Answer a program's memory syscalls on emulated pids: seccomp user notification.

A program started with :func:`spawn` runs under a classic-BPF seccomp filter that
sends ``move_pages(2)`` and ``migrate_pages(2)`` calls whose pid argument is above
``PID_MAX_LIMIT`` (4194304: no real process can have such a pid, every emulated one
does) to a supervisor in this process; every other syscall, including the same
calls on real pids, runs in the real kernel without ever leaving it. The supervisor
(:class:`Supervisor`) receives each notification, lets a handler compute the result
(reading and writing the caller's memory with :func:`read_mem` / :func:`write_mem`)
and sends the result back as the syscall's return value. Works for dynamically and
statically linked programs alike: nothing is preloaded.

The BPF program (:func:`build_filter`), in words::

    if arch != AUDIT_ARCH_X86_64:              ALLOW   (i386 and other ABIs pass)
    if nr in {move_pages, migrate_pages} ∩ intercepted:
        if (int)args[0] < 0:                   ALLOW   (the real kernel says ESRCH)
        if (int)args[0] > PID_MAX_LIMIT:       USER_NOTIF
        else:                                  ALLOW   (a real pid, or 0 = self)
    if nr == lseek and lseek is intercepted:
        if (int)args[2] == SEEK_SET:           ALLOW   (a position FUSE gets right)
        else:                                  USER_NOTIF
    if nr == fcntl and fcntl is intercepted:
        if (int)args[1] == F_SETFL:            USER_NOTIF  (status flags: scan flags)
        else:                                  ALLOW
    if nr == ioctl and ioctl is intercepted:
        if (int)args[1] == FIONBIO:            USER_NOTIF  (O_NONBLOCK: a scan flag)
        else:                                  ALLOW
    if nr in {open, openat} and it is intercepted:
        if (int)flags has a bit outside O_CLOEXEC|O_NOCTTY|O_NONBLOCK|O_LARGEFILE:
                                               ALLOW   (a write, or an unusual open)
        else:                                  USER_NOTIF  (read-only: maybe a status file)
    if nr == get_mempolicy and get_mems_allowed (not get_mempolicy) is intercepted:
        if args[4] == MPOL_F_MEMS_ALLOWED (all 64 bits): USER_NOTIF (the caller's cpuset)
        else:                                  ALLOW
    if nr in the other intercepted syscalls:   USER_NOTIF  (they act on the caller)
    otherwise:                                 ALLOW

The pid test reads the syscall's register (seccomp_data.args[0]), not user memory,
so the program cannot change it after the decision; its low 32 bits are the C int
the kernel uses (SYSCALL_DEFINE6(move_pages, pid_t pid, ...)).

Speed (this kind of machine, 2 vCPUs, kernel 6.18): one intercepted move_pages round
trip costs ~8 us with a handler that answers at once and ~17-24 us through
:func:`move_pages_handler` (one process_vm_readv for pages/nodes/status, a trivial
emulation), against ~4.3 us for the same loop with a C supervisor. That needs the
Linux 6.6 ``SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`` flag (set by :class:`Supervisor`
when available): without it caller and supervisor wake each other across CPUs and a
round trip varies between 10 and 65 us.

Limitations (see also :func:`spawn`):

* Only the x86_64 ABI is intercepted. i386 calls (a 32-bit program, or ``int 0x80``:
  move_pages 317, migrate_pages 294) and x32 calls (``nr | 0x40000000``: move_pages
  533, migrate_pages 256) reach the real kernel, which answers ``ESRCH`` for an
  emulated pid.
* ``notif.pid`` is the calling *thread's* id (task_pid_vnr), in this process's pid
  namespace; /proc/TID/mem and process_vm_readv accept a thread id.
* Memory is accessed with process_vm_readv/writev, which honours page protections as
  the kernel's get_user/put_user do (a status array in read-only memory gives
  ``-EFAULT``). A caller thread racing on the same memory sees the result at a
  different moment than with a real kernel (the handler reads everything first and
  writes the status back at the end).
* ``PR_SET_NO_NEW_PRIVS`` is set by default (required for an unprivileged filter), so
  setuid programs do not gain privileges; a root runner may pass
  ``no_new_privs=False``.
* One supervisor thread serves notifications one at a time; concurrent callers wait.
* With ``SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`` (Linux 5.19+, used when available)
  a received call cannot be interrupted by a non-fatal signal, so a handler's side
  effects never happen twice through a restarted syscall. On older kernels a signal
  aborts the wait, the syscall restarts, and the supervisor's SEND fails with ENOENT
  (handled: counted in ``Supervisor.gone``).

Linux: kernel/seccomp.c (seccomp_notify_recv/send/id_valid, EPOLLHUP once no task
uses the filter), include/uapi/linux/seccomp.h, mm/migrate.c of 4.20
(kernel_move_pages, do_pages_stat), mm/mempolicy.c of 4.20 (get_nodes,
kernel_migrate_pages).
"""
from __future__ import annotations

import ast
import ctypes
import errno
import fcntl
import inspect
import logging
import os
import platform
import select
import signal
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple, Sequence

log = logging.getLogger(__name__)

# --- constants (include/uapi/linux/seccomp.h, filter.h, audit.h; asm/unistd_64.h) ---------

PID_MAX_LIMIT = 4194304  # include/linux/threads.h: the largest pid a real task can have

NR_OPEN = 2
NR_LSEEK = 8
NR_IOCTL = 16
NR_FCNTL = 72
NR_SCHED_SETAFFINITY = 203
NR_SCHED_GETAFFINITY = 204
NR_MBIND = 237
NR_SET_MEMPOLICY = 238
NR_GET_MEMPOLICY = 239
NR_MIGRATE_PAGES = 256
NR_OPENAT = 257
NR_MOVE_PAGES = 279
NR_SECCOMP = 317

SYSCALLS = {
    "open": NR_OPEN,
    "openat": NR_OPENAT,
    "lseek": NR_LSEEK,
    "ioctl": NR_IOCTL,
    "fcntl": NR_FCNTL,
    "sched_setaffinity": NR_SCHED_SETAFFINITY,
    "sched_getaffinity": NR_SCHED_GETAFFINITY,
    "mbind": NR_MBIND,
    "set_mempolicy": NR_SET_MEMPOLICY,
    "get_mempolicy": NR_GET_MEMPOLICY,
    "migrate_pages": NR_MIGRATE_PAGES,
    "move_pages": NR_MOVE_PAGES,
}
SYSCALL_NAMES = {nr: name for name, nr in SYSCALLS.items()}
# syscalls whose first argument names the target process
PID_ARG_SYSCALLS = frozenset({NR_MOVE_PAGES, NR_MIGRATE_PAGES})
# syscalls decided on one argument: (argument index, value, notify when equal), or
# (argument index, Only(bits)): notify when the argument has no other bit. Programs
# make many of them; only some need the runner (fakeproc.run.lseek, fcntl, procstatus):
# lseek with SEEK_CUR or SEEK_END, fcntl with F_SETFL (4), a read-only open (O_RDONLY
# and no flags but these), which may be of a status file.
class Only(int):
    """An argument with no bits outside these (O_RDONLY is 0)."""


READ_ONLY_OPEN = Only(os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK | 0o100000)  # O_LARGEFILE
FIONBIO = 0x5421
ARG_RULES = {NR_LSEEK: (2, 0, False), NR_FCNTL: (1, 4, True), NR_IOCTL: (1, FIONBIO, True),
             NR_OPEN: (1, READ_ONLY_OPEN), NR_OPENAT: (2, READ_ONLY_OPEN)}
MPOL_F_MEMS_ALLOWED = 4
# intercept names for one form of a syscall: name -> (nr, (index, value, notify when
# equal, the argument is an unsigned long: its high word must be 0 too)).
# get_mems_allowed: get_mempolicy(..., flags == MPOL_F_MEMS_ALLOWED), the caller's cpuset
NAMED_RULES = {"get_mems_allowed": (NR_GET_MEMPOLICY, (4, MPOL_F_MEMS_ALLOWED, True, True))}
DEFAULT_INTERCEPT = ("move_pages", "migrate_pages")

AUDIT_ARCH_X86_64 = 0xC000003E  # EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE

PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1

# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
SECCOMP_DATA = struct.Struct("<iIQ6Q")
# struct seccomp_notif { __u64 id; __u32 pid; __u32 flags; struct seccomp_data data; }
SECCOMP_NOTIF = struct.Struct("<QII" + SECCOMP_DATA.format[1:])
# struct seccomp_notif_resp { __u64 id; __s64 val; __s32 error; __u32 flags; }
SECCOMP_NOTIF_RESP = struct.Struct("<QqiI")
OFF_NR, OFF_ARCH, OFF_ARG0 = 0, 4, 16  # offsets in seccomp_data (args[0] low word: LE)


def _ioc(direction: int, type_: str, nr: int, size: int) -> int:
    """include/uapi/asm-generic/ioctl.h: dir << 30 | size << 16 | type << 8 | nr."""
    return direction << 30 | size << 16 | ord(type_) << 8 | nr


_IOC_WRITE, _IOC_READ = 1, 2
SECCOMP_IOCTL_NOTIF_RECV = _ioc(_IOC_READ | _IOC_WRITE, "!", 0, SECCOMP_NOTIF.size)
SECCOMP_IOCTL_NOTIF_SEND = _ioc(_IOC_READ | _IOC_WRITE, "!", 1, SECCOMP_NOTIF_RESP.size)
SECCOMP_IOCTL_NOTIF_ID_VALID = _ioc(_IOC_WRITE, "!", 2, 8)
SECCOMP_IOCTL_NOTIF_SET_FLAGS = _ioc(_IOC_WRITE, "!", 4, 8)  # Linux 6.6; the argument is the value
# struct seccomp_notif_addfd { __u64 id; __u32 flags, srcfd, newfd, newfd_flags; } (Linux 5.9)
SECCOMP_NOTIF_ADDFD = struct.Struct("<QIIII")
SECCOMP_IOCTL_NOTIF_ADDFD = _ioc(_IOC_WRITE, "!", 3, SECCOMP_NOTIF_ADDFD.size)
SECCOMP_ADDFD_FLAG_SEND = 1 << 1  # Linux 5.14: install the fd and answer with its number
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1
assert (SECCOMP_IOCTL_NOTIF_RECV, SECCOMP_IOCTL_NOTIF_SEND, SECCOMP_IOCTL_NOTIF_ID_VALID) == (
    0xC0502100, 0xC0182101, 0x40082102)

# classic BPF (include/uapi/linux/bpf_common.h)
BPF_LD_W_ABS = 0x20    # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x15       # BPF_JMP | BPF_JEQ | BPF_K
BPF_JGT_K = 0x25       # BPF_JMP | BPF_JGT | BPF_K
BPF_JSET_K = 0x45      # BPF_JMP | BPF_JSET | BPF_K
BPF_RET_K = 0x06       # BPF_RET | BPF_K
SOCK_FILTER = struct.Struct("<HBBI")  # struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }

# --- libc through ctypes ---------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_prctl = _libc.prctl
_prctl.restype = ctypes.c_int
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_process_vm_readv = _libc.process_vm_readv
_process_vm_writev = _libc.process_vm_writev
for _f in (_process_vm_readv, _process_vm_writev):
    _f.restype = ctypes.c_ssize_t
    _f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong,
                   ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]


def _check_host() -> None:
    if platform.machine() != "x86_64":
        raise NotImplementedError(f"seccomp interception is written for x86_64, not {platform.machine()}")


def _syscall_number(s: str | int) -> int:
    nr = (SYSCALLS.get(s) or NAMED_RULES.get(s, (None,))[0]) if isinstance(s, str) else int(s)
    if nr is None:
        raise ValueError(f"unknown syscall {s!r} (known: {', '.join(sorted([*SYSCALLS, *NAMED_RULES]))})")
    return nr


def _syscall_numbers(intercept: Iterable[str | int]) -> list[int]:
    nrs = []
    for s in intercept:
        nr = _syscall_number(s)
        if nr not in nrs:
            nrs.append(nr)
    return nrs


# --- the filter ------------------------------------------------------------------------


def build_filter(intercept: Iterable[str | int] = DEFAULT_INTERCEPT, *,
                 pid_above: int = PID_MAX_LIMIT) -> bytes:
    """The classic-BPF program (an array of struct sock_filter) described in the module
    docstring. ``intercept`` names syscalls (or x86_64 numbers); move_pages and
    migrate_pages notify only when their pid argument, as an int, exceeds ``pid_above``;
    the others notify unconditionally."""
    intercept = list(intercept)
    nrs = _syscall_numbers(intercept)
    plain = {SYSCALLS[s] if isinstance(s, str) and s in SYSCALLS else s for s in intercept}
    rules = {**ARG_RULES, **{nr: rule for name, (nr, rule) in NAMED_RULES.items()
                             if name in intercept and nr not in plain}}  # the whole call wins
    pid_nrs = [nr for nr in nrs if nr in PID_ARG_SYSCALLS]
    arg_nrs = [nr for nr in nrs if nr in rules]
    other_nrs = [nr for nr in nrs if nr not in PID_ARG_SYSCALLS and nr not in rules]
    # instructions as (code, jt-label, jf-label, k); labels resolve to relative offsets
    prog: list[tuple[int, Any, Any, int]] = []
    labels: dict[str, int] = {}

    def emit(code: int, k: int, jt: Any = 0, jf: Any = 0) -> None:
        prog.append((code, jt, jf, k))

    emit(BPF_LD_W_ABS, OFF_ARCH)
    emit(BPF_JEQ_K, AUDIT_ARCH_X86_64, 0, "allow")
    emit(BPF_LD_W_ABS, OFF_NR)
    for nr in pid_nrs:
        emit(BPF_JEQ_K, nr, "pid", 0)
    for nr in arg_nrs:
        emit(BPF_JEQ_K, nr, f"arg{nr}", 0)
    for nr in other_nrs:
        emit(BPF_JEQ_K, nr, "notify", 0)
    labels["allow_"] = len(prog)
    emit(BPF_RET_K, SECCOMP_RET_ALLOW)
    if pid_nrs:
        labels["pid"] = len(prog)
        emit(BPF_LD_W_ABS, OFF_ARG0)
        emit(BPF_JSET_K, 0x80000000, "allow", 0)  # a negative pid: not ours
        emit(BPF_JGT_K, pid_above, "notify", "allow")
    for nr in arg_nrs:
        index, value, *how = rules[nr]
        notify_equal, wide = (how[0] if how else True), (len(how) > 1 and how[1])
        labels[f"arg{nr}"] = len(prog)
        emit(BPF_LD_W_ABS, OFF_ARG0 + 8 * index)  # the low word: an int argument
        if isinstance(value, Only):
            emit(BPF_JSET_K, ~value & 0xFFFFFFFF, "allow", "notify")
        elif wide:  # a long equal to value: the high word is 0 as well
            assert notify_equal
            emit(BPF_JEQ_K, value, 0, "allow")
            emit(BPF_LD_W_ABS, OFF_ARG0 + 8 * index + 4)
            emit(BPF_JEQ_K, 0, "notify", "allow")
        elif notify_equal:
            emit(BPF_JEQ_K, value, "notify", "allow")
        else:
            emit(BPF_JEQ_K, value, "allow", "notify")
    labels["notify"] = len(prog)
    emit(BPF_RET_K, SECCOMP_RET_USER_NOTIF)
    labels["allow"] = len(prog)
    emit(BPF_RET_K, SECCOMP_RET_ALLOW)

    out = bytearray()
    for pc, (code, jt, jf, k) in enumerate(prog):
        offs = []
        for j in (jt, jf):
            if isinstance(j, str):
                j = labels[j] - pc - 1
                assert 0 <= j <= 255
            offs.append(j)
        out += SOCK_FILTER.pack(code, offs[0], offs[1], k)
    return bytes(out)


class _Program:
    """A BPF program in ctypes memory, built before fork so the child only makes calls."""

    def __init__(self, code: bytes) -> None:
        self.buf = ctypes.create_string_buffer(code, len(code))
        self.fprog = _SockFprog(len(code) // SOCK_FILTER.size,
                                ctypes.cast(self.buf, ctypes.c_void_p).value)


def install_filter(intercept: Iterable[str | int] = DEFAULT_INTERCEPT, *,
                   no_new_privs: bool = True, program: bytes | _Program | None = None) -> int:
    """Install the filter on the calling process and return the listener fd (O_CLOEXEC).

    Call it in a CHILD after fork and before exec: the filter is permanent and applies
    to this thread and every thread/process created after it, so installing it in the
    supervising process itself would make it wait on its own notifications. Raises
    OSError when the kernel refuses (no seccomp, no user notification)."""
    _check_host()
    if program is None:
        program = build_filter(intercept)
    prog = program if isinstance(program, _Program) else _Program(program)
    if no_new_privs and _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(e)}")
    flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
    while True:
        fd = _syscall(ctypes.c_long(NR_SECCOMP), ctypes.c_long(SECCOMP_SET_MODE_FILTER),
                      ctypes.c_long(flags), ctypes.byref(prog.fprog))
        if fd >= 0:
            return fd
        e = ctypes.get_errno()
        if e == errno.EINVAL and flags & SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV:
            flags &= ~SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV  # before Linux 5.19
            continue
        raise OSError(e, f"seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER): {os.strerror(e)}")


# --- spawning --------------------------------------------------------------------------


class SpawnError(OSError):
    """The child could not install the filter or exec the program. Like a shell, the
    child has exited with ``exitcode`` 127 (already reaped); ``stage`` is "setup"
    (stdio, cwd), "filter" or "exec"."""

    def __init__(self, err: int, msg: str, filename: str | None, stage: str,
                 exitcode: int = 127) -> None:
        super().__init__(err, msg, filename)
        self.stage, self.exitcode = stage, exitcode


class Spawned(NamedTuple):
    pid: int
    listener_fd: int


def _exec_candidates(file: str, env: dict[str, str]) -> list[bytes]:
    """execvpe's search, resolved in the parent (as subprocess does)."""
    if os.path.dirname(file):
        return [os.fsencode(file)]
    return [os.fsencode(os.path.join(d, file)) for d in os.get_exec_path(env)]


def spawn(argv: Sequence[str], env: dict[str, str] | None = None,
          intercept: Iterable[str | int] = DEFAULT_INTERCEPT, *,
          no_new_privs: bool = True, cwd: str | None = None, stdin: int | None = None,
          stdout: int | None = None, stderr: int | None = None) -> Spawned:
    """Fork; in the child install the filter, pass the listener fd to the parent over a
    socketpair (SCM_RIGHTS), then exec ``argv`` (PATH search as execvpe) in ``cwd``
    with ``env`` (default: os.environ) and the given fds as stdin/stdout/stderr
    (default: inherited; give fds above 2). Returns once the exec has succeeded, with
    the child's real pid and the listener fd (the caller owns both: reap the pid, close
    the fd or give it to a :class:`Supervisor`).

    A failure in the child (filter refused, exec failed) makes the child exit with
    status 127 after sending the error over the socket; spawn then reaps it and raises
    :class:`SpawnError` (errno, message, filename).

    Between fork and exec the child runs Python: ctypes calls, socket.send_fds and
    os.execve, everything else prepared before fork. That is fine in practice; as for
    any fork of a multi-threaded process, a lock another thread held at fork time
    (the import lock, a logging handler) stays held in the child, and the child takes
    none of them.
    """
    _check_host()
    argv = [os.fsdecode(os.fspath(a)) for a in argv]
    if not argv:
        raise ValueError("spawn: empty argv")
    env = dict(os.environ if env is None else env)
    benv = {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
    bargv = [os.fsencode(a) for a in argv]
    candidates = _exec_candidates(argv[0], env)
    prog = _Program(build_filter(intercept))
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        stage = "setup"
        try:
            parent_sock.close()
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores them; exec keeps SIG_IGN
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
                if fd is not None:
                    os.dup2(fd, target)  # inheritable
            if cwd is not None:
                os.chdir(cwd)
            stage = "filter"
            fd = install_filter(program=prog, no_new_privs=no_new_privs)
            socket.send_fds(child_sock, [b"F"], [fd])
            os.close(fd)
            stage = "exec"
            first: OSError | None = None
            for path in candidates:
                try:
                    os.execve(path, bargv, benv)
                except OSError as e:  # as execvpe: remember the first real error
                    if first is None or (first.errno in (errno.ENOENT, errno.ENOTDIR)
                                         and e.errno not in (errno.ENOENT, errno.ENOTDIR)):
                        first = e
            raise first if first is not None else FileNotFoundError(errno.ENOENT, "not found")
        except BaseException as e:
            try:
                err = getattr(e, "errno", None) or errno.EINVAL
                msg = getattr(e, "strerror", None) or str(e)
                child_sock.send(b"E" + repr((stage, err, msg)).encode())
            finally:
                os._exit(127)
    child_sock.close()
    with parent_sock:
        listener = -1
        try:
            msg, fds, _, _ = socket.recv_fds(parent_sock, 4096, 1)
            if msg == b"F" and fds:
                listener = fds[0]
                msg = parent_sock.recv(4096)  # b"": the socket closed on exec (O_CLOEXEC)
        except BaseException:
            if listener >= 0:
                os.close(listener)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
    if msg == b"" and listener >= 0:
        return Spawned(pid, listener)
    if listener >= 0:
        os.close(listener)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if msg.startswith(b"E"):
        stage, err, text = ast.literal_eval(msg[1:].decode())
        raise SpawnError(err, text, argv[0] if stage == "exec" else None, stage, code)
    raise SpawnError(errno.ECHILD, f"child died before exec (status {code})", None, "setup", code)


def wait(pid: int) -> int:
    """Reap ``pid``: its exit code, or -signal (os.waitstatus_to_exitcode)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        except InterruptedError:
            continue


async def wait_async(pid: int) -> int:
    """Reap ``pid`` without blocking trio (pidfd_open + wait_readable)."""
    import trio

    pidfd = os.pidfd_open(pid)
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    return wait(pid)


# --- the caller's memory -----------------------------------------------------------------


def _vm_io(fn: Any, pid: int, local: Sequence[tuple[int, int]],
           remote: Sequence[tuple[int, int]]) -> int:
    """process_vm_readv/writev with (address, length) iovecs: bytes transferred
    (possibly short), or -errno."""
    iov = bytearray(struct.pack(f"<{2 * (len(local) + len(remote))}Q",
                                *(x for iv in (*local, *remote) for x in iv)))
    base = ctypes.addressof((ctypes.c_char * len(iov)).from_buffer(iov))
    r = fn(pid, base, len(local), base + 16 * len(local), len(remote), 0)
    return r if r >= 0 else -ctypes.get_errno()


def _vm_rw(fn: Any, pid: int, addr: int, buf: bytearray, n: int) -> int:
    """One range: bytes transferred (possibly short), or -errno."""
    local = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
    return _vm_io(fn, pid, [(local, n)], [(addr, n)])


def read_mem_many(pid: int, ranges: Sequence[tuple[int, int]]) -> list[bytes] | None:
    """Several (addr, n) ranges in one process_vm_readv: their bytes, or None unless
    every byte was readable (read them one by one then, to see which part faults)."""
    total = sum(n for _, n in ranges)
    if total == 0:
        return [b""] * len(ranges)
    if any(a + n > 1 << 64 for a, n in ranges):
        return None
    buf = bytearray(total)
    base = ctypes.addressof((ctypes.c_char * total).from_buffer(buf))
    local, off = [], 0
    for _, n in ranges:
        local.append((base + off, n))
        off += n
    r = _vm_io(_process_vm_readv, pid, local, ranges)
    if r != total:
        if r < 0 and -r not in (errno.EFAULT, errno.EIO, errno.ENOMEM):
            raise OSError(-r, f"process_vm_readv {pid}: {os.strerror(-r)}")
        return None
    out, off = [], 0
    for _, n in ranges:
        out.append(bytes(buf[off:off + n]))
        off += n
    return out


def _raise(e: int, what: str, pid: int, addr: int) -> None:
    raise OSError(e, f"{what} {pid} at {addr:#x}: {os.strerror(e)}")


def read_mem_prefix(pid: int, addr: int, n: int, *, chunk: int = 1 << 20) -> bytes:
    """Up to ``n`` bytes at ``addr`` in ``pid``: everything readable from ``addr`` on,
    stopping at the first fault (no MemoryError for a huge ``n``). Raises OSError only
    when the process is gone (ESRCH) or not accessible (EPERM)."""
    out = bytearray()
    while len(out) < n:
        want = min(chunk, n - len(out))
        if addr + len(out) + want > 1 << 64:
            want = (1 << 64) - addr - len(out)
            if want <= 0:
                break
        buf = bytearray(want)
        r = _vm_rw(_process_vm_readv, pid, addr + len(out), buf, want)
        if r < 0:
            if r in (-errno.EFAULT, -errno.EIO, -errno.ENOMEM):
                break
            _raise(-r, "process_vm_readv", pid, addr)
        out += buf[:r]
        if r < want:
            break
    return bytes(out)


def read_mem(pid: int, addr: int, n: int) -> bytes:
    """``n`` bytes of ``pid``'s memory at ``addr``; OSError(EFAULT) unless all of them
    are readable (as the kernel's copy_from_user), OSError(ESRCH) if pid is gone."""
    if n == 0:
        return b""
    data = read_mem_prefix(pid, addr, n)
    if len(data) != n:
        _raise(errno.EFAULT, "read of", pid, addr)
    return data


def write_mem(pid: int, addr: int, data: bytes) -> None:
    """Write ``data`` into ``pid``'s memory at ``addr``; OSError(EFAULT) unless all of
    it lands (as copy_to_user: read-only memory faults), OSError(ESRCH) if gone."""
    n = len(data)
    if n == 0:
        return
    if addr + n > 1 << 64:
        _raise(errno.EFAULT, "write to", pid, addr)
    buf = bytearray(data)
    r = _vm_rw(_process_vm_writev, pid, addr, buf, n)
    if r == n:
        return
    if r < 0 and r not in (-errno.EFAULT, -errno.EIO, -errno.ENOMEM):
        _raise(-r, "process_vm_writev", pid, addr)
    _raise(errno.EFAULT, "write to", pid, addr)


# --- notifications and responses -----------------------------------------------------------


class NotificationGone(Exception):
    """The notifying call is no longer waiting (the caller died or was interrupted)."""


@dataclass(frozen=True)
class Continue:
    """Let the real kernel run the call (SECCOMP_USER_NOTIF_FLAG_CONTINUE)."""


@dataclass(frozen=True)
class Return:
    """Finish the call with ``value``: a negative value is -errno (the caller sees -1 and
    errno), anything else the syscall's return value."""

    value: int


@dataclass(frozen=True)
class ReturnFd:
    """Finish the call with a new descriptor in the caller for this process's open file
    ``fd`` (SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SEND), close-on-exec when
    ``cloexec``; the supervisor closes ``fd`` afterwards."""

    fd: int
    cloexec: bool = False


Response = Continue | Return | ReturnFd


@dataclass
class Notification:
    """One intercepted call (struct seccomp_notif)."""

    id: int
    pid: int                    # the calling thread's real id
    flags: int
    nr: int
    arch: int
    instruction_pointer: int
    args: tuple[int, ...]       # six unsigned 64-bit values
    supervisor: "Supervisor | None" = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return SYSCALL_NAMES.get(self.nr, str(self.nr))

    def valid(self) -> bool:
        """SECCOMP_IOCTL_NOTIF_ID_VALID: is the caller still waiting for this answer?"""
        return self.supervisor is None or self.supervisor.id_valid(self.id)

    def check(self) -> None:
        """Raise NotificationGone unless the caller is still waiting (call it after
        reading the caller's memory and before writing it: the pid might be reused)."""
        if not self.valid():
            raise NotificationGone(self.id)

    def read(self, addr: int, n: int) -> bytes:
        data = read_mem(self.pid, addr, n)
        self.check()
        return data

    def read_prefix(self, addr: int, n: int) -> bytes:
        data = read_mem_prefix(self.pid, addr, n)
        self.check()
        return data

    def write(self, addr: int, data: bytes) -> None:
        self.check()
        write_mem(self.pid, addr, data)


Handler = Callable[[Notification], Any]  # returns a Response (or an awaitable of one)


class Supervisor:
    """Serves the notifications of one listener fd with ``handler(notif) -> Response``.

    ``run()`` blocks (poll) until every task using the filter is gone (EPOLLHUP: the
    kernel signals it once they have exited AND been reaped) or ``stop()`` is called
    from another thread; ``serve()`` does the same under trio. A handler that raises
    OSError answers ``-errno``; NotificationGone drops the call; any other exception is
    logged, kept in ``errors`` and answered with ``-ENOSYS`` (the caller never hangs).
    The supervisor owns the fd: ``close()`` (or the context manager) closes it.
    """

    def __init__(self, listener_fd: int, handler: Handler, *, sync_wakeup: bool = True) -> None:
        self.fd = listener_fd
        self.handler = handler
        self.handled = 0      # notifications answered
        self.gone = 0         # notifications whose caller vanished (RECV/SEND ENOENT)
        self.errors: list[BaseException] = []
        self._recv = bytearray(SECCOMP_NOTIF.size)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._closed = False
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)
        self._poll.register(self._wake_r, select.POLLIN)
        self.sync_wakeup = False
        if sync_wakeup:  # caller and supervisor hand over on one CPU (no cross-CPU wakeups)
            try:
                fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
                self.sync_wakeup = True
            except OSError as e:  # before Linux 6.6
                if e.errno not in (errno.EINVAL, errno.ENOTTY):
                    raise

    def fileno(self) -> int:
        return self.fd

    # -- ioctls
    def receive(self) -> Notification | None:
        """SECCOMP_IOCTL_NOTIF_RECV (blocks until a notification is pending); None when
        the notification vanished before it could be received."""
        buf = self._recv
        buf[:] = bytes(len(buf))  # the kernel wants it zeroed
        while True:
            try:
                fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
                break
            except InterruptedError:
                continue
            except FileNotFoundError:  # ENOENT: the caller left before we got it
                self.gone += 1
                return None
        id_, pid, flags, nr, arch, ip, *args = SECCOMP_NOTIF.unpack(buf)
        return Notification(id_, pid, flags, nr, arch, ip, tuple(args), self)

    def respond(self, notif: Notification, response: Response) -> bool:
        """SECCOMP_IOCTL_NOTIF_SEND (NOTIF_ADDFD for a descriptor); False if the caller
        is no longer waiting."""
        if isinstance(response, ReturnFd):
            return self._send_fd(notif, response)
        if isinstance(response, Continue):
            resp = SECCOMP_NOTIF_RESP.pack(notif.id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
        elif isinstance(response, Return):
            v = int(response.value)
            resp = SECCOMP_NOTIF_RESP.pack(notif.id, 0, v, 0) if v < 0 else \
                SECCOMP_NOTIF_RESP.pack(notif.id, v, 0, 0)
        else:
            raise TypeError(f"a handler must return Continue() or Return(value), not {response!r}")
        return self._answer(SECCOMP_IOCTL_NOTIF_SEND, resp) is not None

    def _send_fd(self, notif: Notification, response: ReturnFd) -> bool:
        """Install the descriptor and answer with its number: atomically with
        SECCOMP_ADDFD_FLAG_SEND (Linux 5.14), else in two steps (5.9). When it cannot be
        installed (EMFILE at the caller's RLIMIT_NOFILE, an LSM's refusal) the call
        fails with that errno, as the open would."""
        cloexec = os.O_CLOEXEC if response.cloexec else 0
        try:
            for flags in (SECCOMP_ADDFD_FLAG_SEND, 0):
                arg = bytearray(SECCOMP_NOTIF_ADDFD.pack(notif.id, flags, response.fd, 0, cloexec))
                try:
                    newfd = self._answer(SECCOMP_IOCTL_NOTIF_ADDFD, arg)
                except OSError as e:
                    if e.errno == errno.EINVAL and flags:
                        continue  # no SEND flag before Linux 5.14
                    return self.respond(notif, Return(-(e.errno or errno.EBADF)))
                if newfd is None or flags:
                    return newfd is not None
                return self.respond(notif, Return(newfd))
            return False
        finally:
            os.close(response.fd)

    def _answer(self, request: int, arg: bytes | bytearray) -> int | None:
        """An ioctl about a call: its result, None if the caller is no longer waiting."""
        while True:
            try:
                r = fcntl.ioctl(self.fd, request, arg)  # a bytearray gives the result
                return r if isinstance(r, int) else 0
            except InterruptedError:
                continue
            except FileNotFoundError:  # ENOENT: the caller died or was interrupted
                self.gone += 1
                return None

    def id_valid(self, notif_id: int) -> bool:
        try:
            fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_ID_VALID, struct.pack("<Q", notif_id))
            return True
        except FileNotFoundError:
            return False

    # -- dispatch
    def _call(self, notif: Notification) -> Any:
        try:
            return self.handler(notif)
        except NotificationGone:
            return None
        except OSError as e:
            if e.errno:
                return Return(-e.errno)
            self._error(notif, e)
            return Return(-errno.ENOSYS)
        except Exception as e:
            self._error(notif, e)
            return Return(-errno.ENOSYS)

    def _error(self, notif: Notification, e: BaseException) -> None:
        log.exception("seccomp handler failed on %s from pid %d", notif.name, notif.pid,
                      exc_info=e)
        self.errors.append(e)

    def _finish(self, notif: Notification, response: Any) -> None:
        if response is None:
            self.gone += 1
            return
        if self.respond(notif, response):
            self.handled += 1

    def handle_one(self) -> bool:
        """Receive one notification (blocking), answer it; False if it vanished."""
        notif = self.receive()
        if notif is None:
            return False
        response = self._call(notif)
        if inspect.isawaitable(response):
            raise TypeError("an async handler needs Supervisor.serve()")
        self._finish(notif, response)
        return True

    def _pending(self, timeout_ms: int | None) -> int:
        """poll() the listener (and the stop pipe): its revents, or -1 when stopped."""
        ev = 0
        for fd, revents in self._poll.poll(timeout_ms):
            if fd == self._wake_r:
                return -1
            ev = revents
        return ev

    def run(self) -> None:
        """Serve until no task uses the filter any more, or stop()."""
        while True:
            ev = self._pending(None)
            if ev < 0:
                return
            if ev & select.POLLIN:
                self.handle_one()
            elif ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                return

    def start(self) -> threading.Thread:
        """run() in a daemon thread; returns it (join it after stop() or the child's end)."""
        t = threading.Thread(target=self.run, name=f"seccomp-supervisor-{self.fd}", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        """Make run() return (from any thread)."""
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    async def serve(self) -> None:
        """run() for trio: waits with trio.lowlevel.wait_readable; handlers may be async."""
        import trio

        while True:
            await trio.lowlevel.wait_readable(self.fd)
            ev = self._pending(0)
            if ev < 0:
                return
            if ev & select.POLLIN:
                notif = self.receive()
                if notif is None:
                    continue
                response = self._call(notif)
                if inspect.isawaitable(response):
                    try:
                        response = await response
                    except NotificationGone:
                        response = None
                    except OSError as e:
                        response = Return(-e.errno) if e.errno else Return(-errno.ENOSYS)
                    except Exception as e:
                        self._error(notif, e)
                        response = Return(-errno.ENOSYS)
                self._finish(notif, response)
            elif ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                return

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for fd in (self.fd, self._wake_r, self._wake_w):
                os.close(fd)

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- handlers for the memory syscalls --------------------------------------------------------


def _s32(v: int) -> int:
    """The low 32 bits of a register as a C int (how the kernel sees an int argument)."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def index_runs(indices: Iterable[int]) -> list[tuple[int, int]]:
    """Distinct indices as sorted [start, end) runs."""
    idx = sorted(set(indices))
    if idx and idx[-1] - idx[0] + 1 == len(idx):
        return [(idx[0], idx[-1] + 1)]  # one run: a whole batch
    out: list[tuple[int, int]] = []
    for i in idx:
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def changed_runs(old: bytes, new: bytes | bytearray) -> list[tuple[int, int]]:
    """The 4-byte entries that differ between two equally long int arrays, as runs."""
    if old == new:
        return []
    a, b = memoryview(old).cast("i").tolist(), memoryview(new).cast("i").tolist()
    return index_runs(i for i, (x, y) in enumerate(zip(a, b)) if x != y)


class StatusArray(list):
    """move_pages' status[]: the caller's values, recording which entries were assigned,
    so that exactly those are written back (entries the emulation leaves alone keep the
    caller's bytes, as with 4.20's unwritten batches)."""

    def __init__(self, values: Iterable[int]) -> None:
        super().__init__(values)
        self.dirty: set[int] = set()

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value)
        if isinstance(index, slice):
            self.dirty.update(range(*index.indices(len(self))))
        else:
            self.dirty.add(index if index >= 0 else index + len(self))

    def runs(self) -> list[tuple[int, int]]:
        """The assigned entries as sorted [start, end) runs."""
        return index_runs(self.dirty)


class PackedStatus(bytearray):
    """move_pages' status[] as the caller's bytes (packed mode). An emulation that knows
    which entries it stored sets ``written`` to their [start, end) runs: exactly those
    are written back (a read-only array then faults as put_user() would, even where a
    value did not change); left None, the entries whose bytes changed are."""

    written: list[tuple[int, int]] | None = None


def _read_prefix(pid: int, addr: int, count: int, size: int) -> bytes:
    """The readable whole items of an array of ``count`` items of ``size`` bytes."""
    data = read_mem_prefix(pid, addr, count * size) if count else b""
    return data[:len(data) // size * size]


DO_PAGES_STAT_CHUNK_NR = 16  # mm/migrate.c
FAST_READ_MAX = 1 << 16       # entries read in one process_vm_readv


def _move_pages_arrays(notif: "Notification", count: int, pages_p: int, nodes_p: int,
                       status_p: int) -> tuple[bytes, bytes | None, bytes]:
    """move_pages' pages[], nodes[] (None: query mode) and status[] as 4.20 reads them:
    all of them, or the readable prefix where one faults (in query mode rounded down
    to do_pages_stat's chunks of 16); status[] padded with zeros where unreadable."""
    if count <= FAST_READ_MAX:  # one process_vm_readv for all three arrays
        ranges = [(pages_p, 8 * count), (status_p, 4 * count)]
        if nodes_p:
            ranges.append((nodes_p, 4 * count))
        fast = read_mem_many(notif.pid, ranges)
        if fast is not None:
            return fast[0], (fast[2] if nodes_p else None), fast[1]
    pages = _read_prefix(notif.pid, pages_p, count, 8)
    nodes = None
    if nodes_p == 0:
        if len(pages) < 8 * count:
            pages = pages[:len(pages) // (8 * DO_PAGES_STAT_CHUNK_NR) * 8 * DO_PAGES_STAT_CHUNK_NR]
    else:
        nodes = _read_prefix(notif.pid, nodes_p, len(pages) // 8, 4)
        pages = pages[:2 * len(nodes)]
    n = len(pages) // 8
    old = _read_prefix(notif.pid, status_p, n, 4)
    return pages, nodes, old + bytes(4 * n - len(old))


def move_pages_handler(emulate: Callable[..., int], *, pass_notif: bool = False,
                       packed: bool = False) -> Handler:
    """A handler for move_pages(pid, count, pages, nodes, status, flags).

    Reads ``count`` page pointers, ``count`` node ints (unless nodes is NULL: query
    mode) and the caller's current status[], calls
    ``emulate(pid, pages, nodes_or_None, status, flags) -> int`` (pid and flags as C
    ints; ``status`` a list updated in place; with ``pass_notif`` also
    ``notif=notif``), writes the assigned status entries back and returns the result.
    With ``packed`` the arrays stay the caller's bytes (pages u64, nodes and status
    i32, little-endian; status a PackedStatus, a bytearray) and the entries written
    back are those it names written, else those whose bytes changed. ``emulate`` may
    raise OSError(e) for -e.

    Faults, as 4.20 does them: when only a prefix of pages[] (or nodes[]) is readable,
    emulate sees that prefix (in query mode rounded down to do_pages_stat's chunks of
    16) and a non-negative result becomes -EFAULT (an error emulate returns stands, so
    ESRCH, EINVAL... still come first). An unwritable status entry also gives -EFAULT
    (after the emulation's side effects, like put_user failing mid-call). Not exact: a
    positive count from an intermediate batch flush becomes -EFAULT too.
    """
    def handler(notif: Notification) -> Response:
        a = notif.args
        pid, count, status_p, flags = _s32(a[0]), a[1], a[4], _s32(a[5])
        pages, nodes, old = _move_pages_arrays(notif, count, a[2], a[3], status_p)
        notif.check()  # read first, then validate: the pid may have been reused
        n = len(pages) // 8
        kw = {"notif": notif} if pass_notif else {}
        status: PackedStatus | StatusArray
        if packed:
            status = PackedStatus(old)
        else:
            status = StatusArray(struct.unpack(f"<{n}i", old))
            pages = list(struct.unpack(f"<{n}Q", pages))
            nodes = None if nodes is None else list(struct.unpack(f"<{n}i", nodes))
        try:
            ret = int(emulate(pid, pages, nodes, status, flags, **kw))
        except OSError as e:
            if not e.errno:
                raise
            ret = -e.errno
        if isinstance(status, PackedStatus):
            runs = status.written if status.written is not None else changed_runs(old, status)
        else:
            runs = status.runs()
        if runs:
            notif.check()
        for start, end in runs:
            try:
                write_mem(notif.pid, status_p + 4 * start,
                          status[4 * start:4 * end] if isinstance(status, bytearray) else
                          struct.pack(f"<{end - start}i", *status[start:end]))
            except OSError as e:
                if e.errno != errno.EFAULT:
                    raise
                ret = -errno.EFAULT
                break
        if n < count and ret >= 0:
            ret = -errno.EFAULT
        return Return(ret)

    return handler


BITS_PER_LONG = 64


def get_nodes(notif: Notification, nmask: int, maxnode: int,
              max_numnodes: int = 1024, page_size: int = 4096) -> list[int]:
    """mm/mempolicy.c get_nodes() of 4.20: the node list of a user bitmask of
    ``maxnode`` bits (the kernel uses maxnode - 1 of them); OSError(EINVAL/EFAULT)."""
    maxnode = (maxnode - 1) & ((1 << 64) - 1)  # unsigned long: 0 wraps to ULONG_MAX
    if maxnode == 0 or nmask == 0:
        return []
    if maxnode > page_size * 8:
        raise OSError(errno.EINVAL, "maxnode too large")
    nlongs = (maxnode + BITS_PER_LONG - 1) // BITS_PER_LONG
    full = (1 << BITS_PER_LONG) - 1
    endmask = full if maxnode % BITS_PER_LONG == 0 else (1 << (maxnode % BITS_PER_LONG)) - 1
    max_longs = (max_numnodes + BITS_PER_LONG - 1) // BITS_PER_LONG

    def word(k: int) -> int:
        return struct.unpack("<Q", notif.read(nmask + 8 * k, 8))[0]

    if nlongs > max_longs:
        for k in range(max_longs, nlongs):
            t = word(k)
            if (t & endmask) if k == nlongs - 1 else t:
                raise OSError(errno.EINVAL, "nodes beyond MAX_NUMNODES")
        nlongs, endmask = max_longs, full
    if maxnode > max_numnodes and max_numnodes % BITS_PER_LONG:
        valid_mask = endmask & ~((1 << (max_numnodes % BITS_PER_LONG)) - 1)
        if word(nlongs - 1) & valid_mask:
            raise OSError(errno.EINVAL, "nodes beyond MAX_NUMNODES")
    words = list(struct.unpack(f"<{nlongs}Q", notif.read(nmask, 8 * nlongs)))
    words[-1] &= endmask
    return [k * BITS_PER_LONG + b for k, w in enumerate(words) for b in range(BITS_PER_LONG)
            if w >> b & 1]


def migrate_pages_handler(emulate: Callable[..., int], *, max_numnodes: int = 1024,
                          pass_notif: bool = False) -> Handler:
    """A handler for migrate_pages(pid, maxnode, old_nodes, new_nodes): decodes both
    bitmasks as 4.20's get_nodes() (EINVAL/EFAULT come before the pid lookup, as in
    kernel_migrate_pages) and returns ``emulate(pid, old_nodes, new_nodes) -> int``
    (sorted node lists; ``notif=notif`` too with ``pass_notif``)."""
    def handler(notif: Notification) -> Response:
        a = notif.args
        pid, maxnode = _s32(a[0]), a[1]
        try:
            old = get_nodes(notif, a[2], maxnode, max_numnodes)
            new = get_nodes(notif, a[3], maxnode, max_numnodes)
        except OSError as e:
            return Return(-(e.errno or errno.EINVAL))
        kw = {"notif": notif} if pass_notif else {}
        return Return(int(emulate(pid, old, new, **kw)))

    return handler


def copy_nodes_to_user(notif: Notification, nmask: int, maxnode: int, nodes: Iterable[int],
                       max_numnodes: int = 1024) -> int:
    """mm/mempolicy.c copy_nodes_to_user() of 4.20: ALIGN(maxnode - 1, 64) / 8 bytes,
    zeros past BITS_TO_LONGS(MAX_NUMNODES) longs first (EINVAL past a page), then the
    bitmap; 0, or -EFAULT where a write faults (after the bytes before it)."""
    nbytes = (max_numnodes + 63) // 64 * 8
    copy = ((maxnode - 1) % (1 << 64) + 63) % (1 << 64) // 64 * 8
    try:
        if copy > nbytes:
            if copy > 4096:
                return -errno.EINVAL
            write_mem(notif.pid, nmask + nbytes, bytes(copy - nbytes))
            copy = nbytes
        write_mem(notif.pid, nmask, sum(1 << n for n in nodes).to_bytes(nbytes, "little")[:copy])
    except OSError as e:
        if e.errno != errno.EFAULT:
            raise
        return -errno.EFAULT
    return 0


def put_int(notif: Notification, addr: int, value: int) -> int:
    """put_user() of an int: 0 or -EFAULT."""
    try:
        write_mem(notif.pid, addr, struct.pack("<i", value))
    except OSError as e:
        if e.errno != errno.EFAULT:
            raise
        return -errno.EFAULT
    return 0


def dispatch(handlers: dict[str | int, Handler], default: Handler | None = None) -> Handler:
    """One handler from per-syscall ones (keys: names or numbers); others -> ``default``
    or Continue()."""
    table = {_syscall_number(k): h for k, h in handlers.items()}

    def handler(notif: Notification) -> Any:
        h = table.get(notif.nr, default)
        return h(notif) if h is not None else Continue()

    return handler
