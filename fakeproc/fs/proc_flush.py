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
import heapq
import logging
import os
import stat
import struct
from typing import Iterable

from .tree import InodeTable

log = logging.getLogger("fakeproc.fs")

FUSE_NOTIFY_PRUNE = 9
OUT_HEADER = struct.Struct("<IiQ")  # struct fuse_out_header: len, error (the notify code), unique 0
PRUNE_OUT = struct.Struct("<IIQ")   # struct fuse_notify_prune_out: count, padding, spare
BATCH = 4096                         # node ids per message
RETRIES = 8                          # tries after the first, 1, 2, 4 ... 128 releases later


def prune_message(nodeids: list[int]) -> bytes:
    """One FUSE_NOTIFY_PRUNE message naming nodeids, in that order."""
    body = PRUNE_OUT.pack(len(nodeids), 0, 0) + struct.pack(f"<{len(nodeids)}Q", *nodeids)
    return OUT_HEADER.pack(OUT_HEADER.size + len(body), FUSE_NOTIFY_PRUNE, 0) + body


FUSE_DEVICE = os.makedev(10, 229)  # /dev/fuse


def fuse_fds() -> set[int]:
    """This process's open /dev/fuse descriptors."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.fstat(int(name))
        except OSError:
            continue  # the listing's own descriptor, closed by now
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == FUSE_DEVICE:
            found.add(int(name))
    return found


def session_fd(before: set[int]) -> int | None:
    """The descriptor a session opened since `before` was taken (pyfuse3 does not
    show its own); None, with a warning, unless there is exactly one."""
    new = fuse_fds() - before
    if len(new) == 1:
        return new.pop()
    log.warning("cannot tell the FUSE session's descriptor (%d new): a released "
                "process's /proc entries stay until the host's memory pressure", len(new))
    return None


class ProcFlush:
    """A Kernel release hook: prunes what the host holds under a released process's
    /proc/PID and /proc/TID (and procview/'s). What is still in use then (an open
    file keeps its dentry) is tried again after 1, 2, 4, ... 128 later releases, then
    left to the host's memory pressure (a negative dentry below it, left by a lookup
    of a name it lacks, holds it until then), so a release costs O(1) amortized."""

    def __init__(self, inodes: InodeTable, fd: int | None) -> None:
        self.inodes = inodes
        self.fd = fd
        self.releases = 0
        self.retries: list[tuple[int, int, tuple[str, ...]]] = []  # heap: (due, attempt, dir)

    def __call__(self, pid: int, tids: tuple[int, ...]) -> None:
        self.gone([(top, str(t)) for top in ("proc", "procview") for t in sorted({pid, *tids})])

    def gone(self, dirs: Iterable[tuple[str, ...]]) -> None:
        """These process directories' processes are gone: prune them now, and any
        earlier ones due for another try."""
        self.releases += 1
        now = [d for d in dirs if d in self.inodes.held]
        for d in now:
            heapq.heappush(self.retries, (self.releases + 1, 1, d))
        while self.retries and self.retries[0][0] <= self.releases:
            _, attempt, d = heapq.heappop(self.retries)
            if d in self.inodes.held:
                now.append(d)
                if attempt < RETRIES:
                    heapq.heappush(self.retries, (self.releases + 2 ** attempt, attempt + 1, d))
        self.prune(dict.fromkeys(now))

    def prune(self, dirs: Iterable[tuple[str, ...]]) -> None:
        if self.fd is None:
            return
        nodeids = [ino for d in dirs for ino in self.inodes.held_under(d)]
        for start in range(0, len(nodeids), BATCH):
            if not self.send(nodeids[start:start + BATCH]):
                return

    def send(self, nodeids: list[int]) -> bool:
        assert self.fd is not None
        try:
            os.write(self.fd, prune_message(nodeids))
        except OSError as e:
            if e.errno == errno.EINVAL:  # no FUSE_NOTIFY_PRUNE before Linux 6.18
                log.warning("the host kernel cannot prune /proc entries (%s): a released "
                            "process's entries stay until its memory pressure", e)
                self.fd = None
            return False  # ENODEV: the connection is ending
        return True
