"""proc_flush_task(): a released process's /proc/PID leaves the host's caches.

Why: the host keeps the dentries of /proc/PID and of the files under it once they are
used (an entry timeout of 0 makes it ask again, not drop them: they stay until memory
pressure), so their inodes, and the paths they name in fs/tree.InodeTable, would
outlive the process. procfs drops them when the task is released (proc_flush_task()
in 4.20). Here the server asks the host to prune them with FUSE_NOTIFY_PRUNE
(protocol 7.45, Linux 6.18): for each inode named, deepest first, the host kills the
dentries nobody uses and evicts the inode, whose FORGET then frees it here.

Not FUSE_NOTIFY_INVAL_ENTRY: it takes /proc's directory lock in the host, which a
LOOKUP waiting for this server holds, so it has to be sent from a thread of its own,
and a server SIGKILLed while that thread waits cannot exit (measured: the first of
ten kills during spawn/kill with three readers left it a zombie until the readers
were killed). PRUNE takes no directory lock. A kernel without it answers EINVAL;
then the host's memory pressure alone brings the FORGETs.
"""
from __future__ import annotations

import errno
import logging
import os
import struct
from typing import Iterable

from .tree import InodeTable

log = logging.getLogger("fakeproc.fs")

FUSE_NOTIFY_PRUNE = 9
OUT_HEADER = struct.Struct("<IiQ")  # struct fuse_out_header: len, error (the notify code), unique 0
PRUNE_OUT = struct.Struct("<IIQ")   # struct fuse_notify_prune_out: count, padding, spare
BATCH = 4096                         # node ids per message


def prune_message(nodeids: list[int]) -> bytes:
    """One FUSE_NOTIFY_PRUNE message naming nodeids, in that order."""
    body = PRUNE_OUT.pack(len(nodeids), 0, 0) + struct.pack(f"<{len(nodeids)}Q", *nodeids)
    return OUT_HEADER.pack(OUT_HEADER.size + len(body), FUSE_NOTIFY_PRUNE, 0) + body


def fuse_device_fd() -> int | None:
    """This process's one /dev/fuse descriptor: call it right after pyfuse3.init(),
    before any other session opens one. None if there is not exactly one."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/fuse":
                found.append(int(name))
        except OSError:
            continue  # the listing's own descriptor, closed by now
    return found[0] if len(found) == 1 else None


class ProcFlush:
    """A Kernel release hook: prunes what the host holds under a released process's
    /proc/PID and /proc/TID (and procview/'s), now and at every later release while
    something there is still in use (an open file keeps its dentry)."""

    def __init__(self, inodes: InodeTable, fd: int | None) -> None:
        self.inodes = inodes
        self.fd = fd
        self.released: set[tuple[str, ...]] = set()

    def __call__(self, pid: int, tids: tuple[int, ...]) -> None:
        self.released.update((top, str(t)) for top in ("proc", "procview") for t in {pid, *tids})
        self.prune()

    def prune(self) -> None:
        self.released = {d for d in self.released if d in self.inodes.held}
        if self.fd is None or not self.released:
            return
        nodeids = [ino for d in sorted(self.released) for ino in self.inodes.held_under(d)]
        for start in range(0, len(nodeids), BATCH):
            if not self.send(nodeids[start:start + BATCH]):
                return

    def send(self, nodeids: Iterable[int]) -> bool:
        assert self.fd is not None
        try:
            os.write(self.fd, prune_message(list(nodeids)))
        except OSError as e:
            if e.errno == errno.EINVAL:  # no FUSE_NOTIFY_PRUNE before Linux 6.18
                log.info("the host kernel cannot prune /proc entries (%s): a released "
                         "process's inodes go under its memory pressure", e)
                self.fd = None
            return False  # ENODEV/ENOENT: the connection is ending
        return True
