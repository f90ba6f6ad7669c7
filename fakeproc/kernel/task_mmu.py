"""/proc/PID/idle_pages: the RFC v2 read, seek and write rules (INTERFACES.md 1),
and /proc/PID/clear_refs.

Linux: the RFC's ept_idle_read()/ept_idle_llseek()/mm_idle_* (fs/proc glue in
fs/proc/base.c), fs/proc/task_mmu.c clear_refs_write(). The walks themselves are C
(native/task_mmu.c, native/pagewalk.c); this module only turns file state into
arguments and errno results.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from .native import KernelError, check, ffi, lib

TASK_SIZE = 0x00007FFFFFFFF000
IDLE_BUF_MIN = 19
MAX_RW_COUNT = 0x7FFFF000
NO_MM = 0xFFFFFFFF
# smaps: Pss and SwapPss come in bytes << PSS_SHIFT (Kernel.range_stats)
PSS_SHIFT = lib.FP_PSS_SHIFT
U64 = (1 << 64) - 1
ALL_PASSES = 0xFFFFFFFF  # a step that walks the whole read

# The scan flags are the file's status flags (RFC v2; INTERFACES.md 1.1).
SCAN_HUGE_PAGE = os.O_NONBLOCK   # 0x800
SCAN_SKIM_IDLE = os.O_NOFOLLOW   # 0x20000
SCAN_DIRTY_PAGE = os.O_NOATIME   # 0x40000: ignored by RFC v2


def scan_flags(open_flags: int) -> int:
    """The flags RFC v2 acts on; O_NOATIME is accepted and ignored."""
    return open_flags & (SCAN_HUGE_PAGE | SCAN_SKIM_IDLE)


@dataclass(frozen=True)
class IdleTail:
    """A read that filled its buffer left [resume, end) unreported: `pages` present
    pages there, not yet counted as missed (Kernel.idle_tail_settle decides: a next
    read from `resume` on reports them after all)."""

    mm_id: int
    resume: int
    end: int
    pages: int


@dataclass(frozen=True)
class IdleRead:
    """What one read(2) returned and where it left the file position."""

    data: bytes
    pos: int
    tail: IdleTail | None = None


class IdleScan:
    """One read(2) in steps of a few passes (C: fp_idle_scan_*), so that a server can
    answer other requests between steps instead of stalling them for a whole 1 MiB
    read. Between steps the kernel may change (as other CPUs change it under a real
    read); each step is given the VMAs as they are then. One scan serves one read at
    a time; its buffer is reused (a result is a copy)."""

    def __init__(self) -> None:
        self._buf = ffi.new("uint8_t[]", 1 << 20)
        self._scan = ffi.gc(lib.fp_idle_scan_new(), lib.fp_idle_scan_free)
        if self._scan == ffi.NULL:
            raise MemoryError("fp_idle_scan_new")

    @property
    def capacity(self) -> int:
        """The bytes its buffer holds (a read larger than 1 MiB grows it)."""
        return len(self._buf)

    def start(self, kernel: "Kernel", mm_id: int | None, pos: int, count: int,  # noqa: F821
              flags: int) -> None:
        """The checks of read(fd, buf, count) at file position pos; raises KernelError."""
        if count > len(self._buf):
            self._buf = ffi.new("uint8_t[]", min(count, MAX_RW_COUNT))
        # the address space is gone: C answers ESRCH after the argument checks
        check(lib.fp_idle_scan_start(kernel.native, self._scan, NO_MM if mm_id is None else mm_id,
                                     pos & U64, count, scan_flags(flags), self._buf))

    def step(self, kernel: "Kernel", mm_id: int | None, passes: int) -> bool:  # noqa: F821
        """Walk up to `passes` passes; True while the read has more to do. mm_id None
        (the task's address space is not the one the read started on) ends it."""
        if mm_id is None:
            spans, n, passes = ffi.NULL, 0, 0
        else:
            spans, n = kernel.mm(mm_id).spans()
        return bool(lib.fp_idle_scan_step(kernel.native, self._scan, spans, n, passes))

    def result(self, mm_id: int | None = None) -> IdleRead:
        got = lib.fp_idle_scan_copied(self._scan)
        resume, end = ffi.new("uint64_t *"), ffi.new("uint64_t *")
        pages = int(lib.fp_idle_scan_tail(self._scan, resume, end))
        tail = IdleTail(mm_id, int(resume[0]), int(end[0]), pages) if pages and mm_id is not None else None
        return IdleRead(bytes(ffi.buffer(self._buf, got)), int(lib.fp_idle_scan_cursor(self._scan)), tail)


def llseek(pos: int, offset: int, whence: int) -> int:
    """ept_idle_llseek semantics: SEEK_SET/SEEK_CUR only, no range check."""
    if whence == os.SEEK_SET:
        new = offset
    elif whence == os.SEEK_CUR:
        new = pos + offset
    else:
        raise KernelError(errno.EINVAL, os.strerror(errno.EINVAL))
    return new & U64


def write_errno(readable_only: bool) -> int:
    """write(2) on idle_pages: EBADF on a read-only descriptor, else EINVAL."""
    return errno.EBADF if readable_only else errno.EINVAL


# enum clear_refs_types (fs/proc/task_mmu.c)
CLEAR_REFS_ALL, CLEAR_REFS_ANON, CLEAR_REFS_MAPPED, CLEAR_REFS_SOFT_DIRTY, \
    CLEAR_REFS_MM_HIWATER_RSS = 1, 2, 3, 4, 5


def clear_refs(kernel: "Kernel", task: "Task", kind: int) -> None:  # noqa: F821
    """clear_refs_write() once its buffer is parsed: 1 clears the accessed bits and
    PG_referenced/PG_young of every page, 2 of anonymous VMAs only, 3 of VMAs with a
    file (shmem included); 4 takes VM_SOFTDIRTY from every VMA and write-protects
    and cleans every entry (soft-dirty tracking starts); 5 resets VmHWM to the RSS.
    VM_PFNMAP ([vvar]) and hugetlb VMAs are skipped, as the walk skips them. A
    process without an address space (a zombie): nothing, and success."""
    if not CLEAR_REFS_ALL <= kind <= CLEAR_REFS_MM_HIWATER_RSS:
        raise KernelError(errno.EINVAL, os.strerror(errno.EINVAL))
    if task.mm_id is None:
        return
    if kind == CLEAR_REFS_MM_HIWATER_RSS:  # reset_mm_hiwater_rss()
        c = kernel.native.mms[task.mm_id]
        c.hiwater_rss = c.rss_anon + c.rss_file + c.rss_shmem
        return
    mm = kernel.mm(task.mm_id)
    if kind == CLEAR_REFS_SOFT_DIRTY:
        mm.clear_soft_dirty()
    for v in mm.vmas:
        if v.kind == "vvar" or v.hugetlb or (kind == CLEAR_REFS_ANON and v.has_file) or \
                (kind == CLEAR_REFS_MAPPED and not v.has_file):
            continue
        check(lib.fp_clear_refs(kernel.native, task.mm_id, v.start, v.end,
                                kind == CLEAR_REFS_SOFT_DIRTY))
    kernel.generation += 1
