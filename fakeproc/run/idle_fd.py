"""An intercepted call's descriptor of an emulated idle_pages file, as the runner's
lseek and fcntl handlers need it: which emulated pid it reads, the process that holds
it, and a copy of it in the runner (pidfd_getfd) that shares its file position."""
from __future__ import annotations

import ctypes
import errno
import os
import re
from contextlib import contextmanager
from typing import Iterator

from .tasks import status_field

NR_PIDFD_OPEN = 434
NR_PIDFD_GETFD = 438
IDLE_PATH = re.compile(r"^/proc/(\d+)(?:/task/\d+)?/idle_pages$")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def idle_pages_pid(tid: int, fd: int) -> int | None:
    """The emulated pid whose idle_pages file thread tid's fd is, or None."""
    try:
        m = IDLE_PATH.match(os.readlink(f"/proc/{tid}/fd/{fd}"))
    except OSError:
        return None
    return int(m.group(1)) if m else None


def tgid_of(tid: int) -> int:
    """The thread-group id of a thread (what an idle_pages handle records as opener)."""
    tgid = status_field(tid, "Tgid")
    if tgid is None:
        raise FileNotFoundError(errno.ENOENT, f"no task {tid}")  # as open() of its status said
    return tgid


@contextmanager
def shared_file(tgid: int, fd: int) -> Iterator[int]:
    """A descriptor of this process for the open file behind fd of process tgid (the
    same file position), closed on exit."""
    pidfd = _libc.syscall(NR_PIDFD_OPEN, tgid, 0)
    if pidfd < 0:
        raise OSError(ctypes.get_errno(), "pidfd_open")
    try:
        dup = _libc.syscall(NR_PIDFD_GETFD, pidfd, fd, 0)
        if dup < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
    finally:
        os.close(pidfd)
    try:
        yield dup
    finally:
        os.close(dup)
