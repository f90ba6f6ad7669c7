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
from typing import Any, Callable

from . import seccomp
from .idle_fd import idle_pages_pid, shared_file, tgid_of

SEEK_SET, SEEK_CUR = 0, 1


def lseek_handler(cursor_of: Callable[[int, int, int], int | None]) -> Callable[[Any], Any]:
    """A seccomp handler for lseek; cursor_of(opener tgid, emulated pid, fuse_pos)."""
    def handler(notif: Any) -> Any:
        fd, offset, whence = seccomp._s32(notif.args[0]), ctypes.c_int64(notif.args[1]).value, \
            seccomp._s32(notif.args[2])
        pid = idle_pages_pid(notif.pid, fd)
        if pid is None or whence == SEEK_SET:
            return seccomp.Continue()  # not idle_pages, or a plain SEEK_SET: FUSE is right
        if whence != SEEK_CUR:
            return seccomp.Return(-errno.EINVAL)  # SEEK_END and the rest (ept_idle_llseek)
        tgid = tgid_of(notif.pid)
        with shared_file(tgid, fd) as dup:
            fuse_pos = os.lseek(dup, 0, os.SEEK_CUR)
            cursor = cursor_of(tgid, pid, fuse_pos)
            new = (fuse_pos if cursor is None else cursor) + offset
            if new < 0 or new >= 1 << 63:
                return seccomp.Return(-errno.EINVAL)
            os.lseek(dup, new, os.SEEK_SET)  # the shared file position: reads continue there
            return seccomp.Return(new)
    return handler
