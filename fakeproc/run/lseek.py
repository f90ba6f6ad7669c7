"""lseek(2) on an idle_pages file, as the RFC kernel answers it, for programs under
`fakeproc run` (INTERFACES.md 1.1 and 1.9).

Through FUSE the position after a read is pos + bytes and SEEK_END is answered from
the reported size; the RFC kernel reports the read's cursor and refuses SEEK_END.
The runner intercepts lseek: for a descriptor of an emulated idle_pages file it
takes a copy of the caller's descriptor (pidfd_getfd), asks the emulator for the
cursor behind the FUSE position, moves the shared file position there (+ offset)
and returns it; every other lseek goes on to the real kernel untouched.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
from typing import Any, Callable

from . import seccomp

NR_PIDFD_OPEN = 434
NR_PIDFD_GETFD = 438
SEEK_SET, SEEK_CUR = 0, 1
IDLE_PATH = re.compile(r"^/proc/(\d+)(?:/task/\d+)?/idle_pages$")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def tgid_of(tid: int) -> int:
    """The thread-group id of a thread (what an idle_pages handle records as opener)."""
    with open(f"/proc/{tid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Tgid:"))


def dup_from(tgid: int, fd: int) -> int:
    """A descriptor of this process for the open file behind fd of process tgid."""
    pidfd = _libc.syscall(NR_PIDFD_OPEN, tgid, 0)
    if pidfd < 0:
        raise OSError(ctypes.get_errno(), "pidfd_open")
    try:
        dup = _libc.syscall(NR_PIDFD_GETFD, pidfd, fd, 0)
        if dup < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
        return dup
    finally:
        os.close(pidfd)


def lseek_handler(cursor_of: Callable[[int, int, int], int | None]) -> Callable[[Any], Any]:
    """A seccomp handler for lseek; cursor_of(opener tgid, emulated pid, fuse_pos)."""
    def handler(notif: Any) -> Any:
        fd, offset, whence = seccomp._s32(notif.args[0]), ctypes.c_int64(notif.args[1]).value, \
            seccomp._s32(notif.args[2])
        try:
            m = IDLE_PATH.match(os.readlink(f"/proc/{notif.pid}/fd/{fd}"))
        except OSError:
            m = None
        if m is None or whence == SEEK_SET:
            return seccomp.Continue()  # not idle_pages, or a plain SEEK_SET: FUSE is right
        if whence != SEEK_CUR:
            return seccomp.Return(-errno.EINVAL)  # SEEK_END and the rest (ept_idle_llseek)
        tgid = tgid_of(notif.pid)
        dup = dup_from(tgid, fd)
        try:
            fuse_pos = os.lseek(dup, 0, os.SEEK_CUR)
            cursor = cursor_of(tgid, int(m.group(1)), fuse_pos)
            new = (fuse_pos if cursor is None else cursor) + offset
            if new < 0 or new >= 1 << 63:
                return seccomp.Return(-errno.EINVAL)
            os.lseek(dup, new, os.SEEK_SET)  # the shared file position: reads continue there
            return seccomp.Return(new)
        finally:
            os.close(dup)
    return handler
