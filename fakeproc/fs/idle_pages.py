"""An open /proc/PID/idle_pages: maps FUSE READ requests to emulated read(2)s.

INTERFACES.md 1.9: the kernel splits one large direct read into READ requests
at byte offsets pos, pos + r1, ...; and a plain sequential read() arrives at
pos + bytes. Both are continuations, so each handle remembers where its last
reply ended and the cursor that read left; a READ at exactly that offset goes
on from the cursor, anything else is a new read at that offset (an lseek).
"""
from __future__ import annotations

import errno
import weakref
from typing import TYPE_CHECKING

from ..kernel.native import KernelError
from ..kernel.task import Task
from ..kernel.task_mmu import SCAN_HUGE_PAGE, write_errno

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel


# every open handle of this mount's server (one mount per process), so the runner can
# ask for the kernel's file position of one of them (see position_of)
OPEN: "weakref.WeakSet[IdlePagesHandle]" = weakref.WeakSet()


class IdlePagesHandle:
    """Per-open-file state. ``flags`` are the open flags (the scan flags); ``opener``
    is the thread-group id that opened it (from the FUSE request)."""

    direct_io = True

    def __init__(self, kernel: "Kernel", task: Task, flags: int, opener: int | None = None) -> None:
        self.kernel = kernel
        self.task = task
        self.flags = flags
        self.opener = opener
        OPEN.add(self)
        self._reply_end: int | None = None  # byte offset where the last reply ended
        self._cursor = 0                    # the file position the kernel would hold

    def read(self, off: int, size: int) -> bytes:
        """One FUSE READ. Raises OSError(errno) as the read(2) would fail."""
        pos = self._cursor if off == self._reply_end else off
        try:
            result = self.kernel.idle_pages_read(self.task, pos, size, self.flags)
        except KernelError:
            self._reply_end = None
            raise
        self._reply_end = off + len(result.data)
        self._cursor = result.pos
        return result.data

    def write(self, off: int, data: bytes) -> int:
        raise OSError(write_errno(readable_only=False), "idle_pages is not writable")


def position_of(opener: int, pid: int, fuse_pos: int) -> int | None:
    """The position the RFC kernel would report for the open idle_pages file of `pid`
    that process `opener` holds at FUSE position `fuse_pos` (pos + bytes after a read):
    the cursor of its last read. None when no such handle (then FUSE's is right)."""
    found = [h for h in OPEN if h.opener == opener and h.task.pid == pid and h._reply_end == fuse_pos]
    return found[0]._cursor if len(found) == 1 else None


# the scan flag fcntl(F_SETFL) can change (O_NONBLOCK): O_NOFOLLOW counts only at open,
# and RFC v2 ignores O_NOATIME (INTERFACES.md 1.1)
SETFL_SCAN_FLAGS = SCAN_HUGE_PAGE


def set_status_flags(opener: int, pid: int, fuse_pos: int, flags: int) -> bool:
    """fcntl(F_SETFL, flags) by process `opener` on its open idle_pages of `pid`: later
    reads scan with the new O_NONBLOCK, as the RFC kernel's do. The file is the only one
    the opener holds for pid, else the one whose last reply ended at `fuse_pos`. False
    when none (or more than one) matches."""
    found = [h for h in OPEN if h.opener == opener and h.task.pid == pid]
    if len(found) > 1:
        found = [h for h in found if h._reply_end == fuse_pos]
    if len(found) != 1:
        return False
    h = found[0]
    h.flags = (h.flags & ~SETFL_SCAN_FLAGS) | (flags & SETFL_SCAN_FLAGS)
    return True


__all__ = ["IdlePagesHandle", "position_of", "set_status_flags", "errno"]
