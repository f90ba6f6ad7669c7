"""An open /proc/PID/idle_pages: maps FUSE READ requests to emulated read(2)s.

INTERFACES.md 1.9: the kernel splits one large direct read into READ requests
at byte offsets pos, pos + r1, ...; and a plain sequential read() arrives at
pos + bytes. Both are continuations, so each handle remembers where its recent
replies ended and the cursor each left; a READ at exactly such an offset goes on
from that cursor, anything else is a new read at that offset (an lseek or a
pread). More than one is kept because a pread() leaves the file position alone:
the read() after it arrives where the read() before it ended.
"""
from __future__ import annotations

import errno
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generator

import trio

from . import readcall
from ..kernel.task import Task
from ..kernel.task_mmu import SCAN_HUGE_PAGE, IdleRead, IdleScan, IdleTail, write_errno

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel


# How long a step of a read may hold the trio thread, and the passes (one 8000-byte
# staging buffer each; ~130 make a 1 MiB read) of its first step and of any step.
STEP_SECONDS = 0.0005
FIRST_STEP_PASSES = 2
MAX_STEP_PASSES = 1024
# Scheduling rounds between two steps. A request waiting in /dev/fuse needs three: a
# reader task that finished its last request registers its wait, then epoll finds the
# request readable, then the reader runs it. With one round a request sat out ~4 steps.
HANDOFF_CHECKPOINTS = 3
# Scans (1 MiB of reply buffer each) not in use, for the next reads: one per read
# running at the same time, not one per open file.
SCANS: list[IdleScan] = []
MAX_SPARE_SCANS = 4

# the most one READ carries (FUSE's 256 pinned pages), and the largest read(2) served
# as one scan when FUSE splits it (its bytes are held until its READs have them all;
# a larger one is a scan per READ, deviation d)
REPLY_MAX = 1 << 20
WHOLE_READ_MAX = 64 << 20
MAX_RESTS = 8  # rests kept per open file (one per thread in a large read at once)


@dataclass
class _Rest:
    """What is left of a read(2) served as one scan: its bytes from FUSE offset `at`
    on, the count its READs have still to ask for, and the syscall they belong to."""

    at: int
    data: memoryview
    count: int
    call: readcall.ReadCall
    # calls of other threads already blocked in a read starting at `at` when this
    # rest was made: their first READs were queued before its next one
    ahead: set[readcall.ReadCall] = field(default_factory=set)


# reply ends remembered per open file: a read() still continues after this many minus
# one preads at other positions (each pread's reply end is remembered too)
MAX_CONTINUATIONS = 8
# every open handle of this mount's server (one mount per process), so the runner can
# ask for the kernel's file position of one of them (see position_of)
OPEN: "weakref.WeakSet[IdlePagesHandle]" = weakref.WeakSet()


class IdlePagesHandle:
    """Per-open-file state. ``flags`` are the open flags (the scan flags); ``opener``
    is the thread-group id that opened it (from the FUSE request)."""

    direct_io = True

    def __init__(self, kernel: "Kernel", task: Task, flags: int, opener: int | None = None,
                 ino: int | None = None) -> None:
        self.kernel = kernel
        self.task = task
        self.flags = flags
        self.opener = opener
        self.ino = ino
        self._threads = readcall.Threads(opener) if opener is not None else None
        # the rests of read(2)s that arrive as several READs, by the offset of the READ
        # that gets each next
        self._rests: dict[int, list[_Rest]] = {}
        # what the last read that filled its buffer left unreported: missed, unless the
        # file's next read goes on from its last unit (Kernel.idle_tail_settle)
        self._tail: IdleTail | None = None
        OPEN.add(self)
        self._lock = trio.Lock()
        # byte offset where a recent reply ended -> the file position the kernel would
        # hold after it (its cursor), oldest first
        self._continuations: dict[int, int] = {}

    async def read_async(self, off: int, size: int) -> bytes | memoryview:
        """One FUSE READ, walked in steps of about STEP_SECONDS with trio checkpoints
        between them: a 1 MiB read walks up to 8 Mi pages (~17 ms), and every other
        request of the mount would wait that long otherwise. Raises OSError(errno) as
        the read(2) would fail. Reads of one open file are served one at a time (their
        positions depend on each other).

        A READ that may be the first of several (INTERFACES.md 1.9) is matched to the
        opener's read(2) (fs/readcall.py): when that asked for more, the scan runs with
        the syscall's count, as the kernel's one read does, and the READs that follow
        get the rest of its bytes."""
        async with self._lock:
            self._drop_ended_rests()
            call = self._whole_read(off, size)
            rest = self._rest_for(off, size, call)
            if rest is not None:
                return self._reply_from(rest, off, size)
            count = call.count if call else size
            pos = self._continuations.get(off, off)
            scan = SCANS.pop() if SCANS else IdleScan()
            passes = FIRST_STEP_PASSES
            try:
                steps = self.kernel.idle_pages_steps(scan, self.task, pos, count, self.flags, passes)
                result = await _walk(steps, passes)  # on an error the position stays (1.2)
            finally:
                if len(SCANS) < MAX_SPARE_SCANS and scan.capacity <= REPLY_MAX:
                    SCANS.append(scan)
            # the read before, if it filled its buffer, is judged by where this one began
            tail, self._tail = self._tail, result.tail
            self.kernel.idle_tail_settle(self.task, tail, pos, count)
            self._continue_at(off + len(result.data), result.pos)
            if call is None:
                return result.data
            return self._reply_from(_Rest(off, memoryview(result.data), count, call), off, size)

    def _drop_ended_rests(self) -> None:
        """Forget the rests of calls that ended without their READs (FUSE stops at a
        failed copy to the user, EFAULT, or at a signal)."""
        if self._threads is None:
            return
        for at, rests in list(self._rests.items()):  # a thread between two READs runs: not ended
            rests[:] = [r for r in rests if self._threads.still_in(r.call) is not False]
            if not rests:
                del self._rests[at]

    def _whole_read(self, off: int, size: int) -> readcall.ReadCall | None:
        """The opener's read(2) whose first READ this may be: it fills a request, and
        the one thread blocked in a read starting here, whose first READ was not
        served yet (another thread's in the same place was), asked for more (up to
        WHOLE_READ_MAX). A READ by another process (a forked child sharing the file)
        where the opener's half-served read began matches nothing new."""
        if size <= REPLY_MAX - 4096 or self._threads is None or self.ino is None:
            return None
        served = {r.call for rests in self._rests.values() for r in rests}
        calls = [c for c in self._threads.find(self.ino, off) if c not in served]
        if len(calls) != 1 or not size < calls[0].count <= WHOLE_READ_MAX:
            return None
        return calls[0]

    def _rest_for(self, off: int, size: int, call: readcall.ReadCall | None) -> _Rest | None:
        """The rest this READ continues, if any: those kept at its offset, oldest first
        (their READs were queued in that order). When a new call's first READ could be
        this one too: it is, if that call was already waiting when the rest was made
        (its READ was queued first); else the sizes tell them apart where they differ
        (a first READ carries 256 pages less the buffer's page offset, a later one
        whole pages); else the rest's, queued at its first READ's reply."""
        rests = self._rests.get(off)
        if not rests:
            return None
        if call is not None and call in rests[0].ahead:  # queued before the rest's READ
            rests[0].ahead.discard(call)
            return None
        if call is not None and size == call.first_read_size() != min(rests[0].count, REPLY_MAX):
            return None
        rest = rests.pop(0)
        if not rests:
            del self._rests[off]
        return rest

    def _reply_from(self, rest: "_Rest", off: int, size: int) -> memoryview:
        """This READ's part of a whole read's bytes (a view: pyfuse3 replies from any
        buffer); the next READ, if FUSE sends one (a full reply, with count left), gets
        what follows. Rests are kept by the offset their READ will come at, in order:
        threads reading the one file at once each have theirs."""
        data = rest.data[:size]
        if len(data) == size and rest.count > size:
            ahead = set(self._threads.find(self.ino, off + size)) - {rest.call} \
                if self._threads is not None and self.ino is not None else set()
            self._rests.setdefault(off + size, []).append(
                _Rest(off + size, rest.data[size:], rest.count - size, rest.call, ahead))
            while sum(map(len, self._rests.values())) > MAX_RESTS:
                oldest = next(iter(self._rests))
                self._rests[oldest].pop(0)
                if not self._rests[oldest]:
                    del self._rests[oldest]
        return data

    def _continue_at(self, reply_end: int, cursor: int) -> None:
        self._continuations.pop(reply_end, None)
        self._continuations[reply_end] = cursor
        while len(self._continuations) > MAX_CONTINUATIONS:
            del self._continuations[next(iter(self._continuations))]

    def cursor_at(self, fuse_pos: int) -> int | None:
        """The kernel's file position for FUSE's ``fuse_pos``, if a reply ended there."""
        return self._continuations.get(fuse_pos)

    def write(self, off: int, data: bytes) -> int:
        raise OSError(write_errno(readable_only=False), "idle_pages is not writable")

    def close(self) -> None:
        """The file's last close (FUSE RELEASE): a tail still waiting is missed."""
        if self._threads is not None:
            self._threads.close()
        tail, self._tail = self._tail, None
        self.kernel.idle_tail_settle(self.task, tail)


async def _walk(steps: Generator[None, int | None, IdleRead], passes: int) -> IdleRead:
    """Run a stepped read to its end, sizing each step to about STEP_SECONDS from the
    pace of the one before (passes cost from microseconds to a millisecond, by how
    many pages one staging buffer's records cover)."""
    send: int | None = None
    while True:
        t0 = time.perf_counter()
        try:
            steps.send(send)
        except StopIteration as done:
            return done.value
        took = time.perf_counter() - t0
        passes = max(1, min(MAX_STEP_PASSES, int(passes * STEP_SECONDS / max(took, 1e-6))))
        send = passes
        for _ in range(HANDOFF_CHECKPOINTS):
            await trio.lowlevel.checkpoint()


def position_of(opener: int, pid: int, fuse_pos: int) -> int | None:
    """The position the RFC kernel would report for the open idle_pages file of `pid`
    that process `opener` holds at FUSE position `fuse_pos` (pos + bytes after a read):
    the cursor of the read whose reply ended there. None when no such handle (then
    FUSE's is right)."""
    found = [h for h in _opened(opener, pid) if h.cursor_at(fuse_pos) is not None]
    return found[0].cursor_at(fuse_pos) if len(found) == 1 else None


def _opened(opener: int, pid: int) -> list["IdlePagesHandle"]:
    """The idle_pages files process `opener` holds of the process that `pid` names (its
    pid, or one of its thread ids: /proc/TID/idle_pages is the same file)."""
    return [h for h in OPEN if h.opener == opener and pid in h.task.tids]


# the scan flag fcntl(F_SETFL) can change (O_NONBLOCK): O_NOFOLLOW counts only at open,
# and RFC v2 ignores O_NOATIME (INTERFACES.md 1.1)
SETFL_SCAN_FLAGS = SCAN_HUGE_PAGE


def set_status_flags(opener: int, pid: int, fuse_pos: int, flags: int) -> bool:
    """fcntl(F_SETFL, flags) by process `opener` on its open idle_pages of `pid`: later
    reads scan with the new O_NONBLOCK, as the RFC kernel's do. The file is the only one
    the opener holds for pid, else the one with a reply that ended at `fuse_pos`. False
    when none (or more than one) matches."""
    found = _opened(opener, pid)
    if len(found) > 1:
        found = [h for h in found if h.cursor_at(fuse_pos) is not None]
    if len(found) != 1:
        return False
    h = found[0]
    h.flags = (h.flags & ~SETFL_SCAN_FLAGS) | (flags & SETFL_SCAN_FLAGS)
    return True


__all__ = ["IdlePagesHandle", "position_of", "set_status_flags", "errno"]
