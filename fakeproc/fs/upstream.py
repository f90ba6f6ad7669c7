"""The later upstream interfaces (INTERFACES.md 6), served when the machine file says
`[machine] upstream = true`: memory tiers, demotion_enabled, the page_idle bitmap,
/proc/kpageflags, /proc/kpagecount and /proc/PID/pagemap.

Linux: mm/memory-tiers.c, mm/page_idle.c, fs/proc/page.c, fs/proc/task_mmu.c.
"""
from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from . import formats as fmt, readcall
from .tree import Ctx, Dir, File, Lister, Special

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel
    from ..kernel.task import Task

TASK_SIZE = 0x7FFFFFFFF000
PAGE_SIZE = 4096  # kernfs moves at most a page per read(2) or write(2) of a bin attribute
DRAM_TIER, PMEM_TIER = 4, 22  # the default adistance tiers of DRAM and of dax/PMEM nodes


def _tier_nodes(tier: int):  # noqa: ANN202
    kind = "dram" if tier == DRAM_TIER else "pmem"
    return lambda c: fmt.node_list(n.id for n in c.kernel.nodes if n.type == kind)


MEMORY_TIERING = Dir("memory_tiering", tuple(
    Dir(f"memory_tier{t}", (File("nodelist", _tier_nodes(t)),)) for t in (DRAM_TIER, PMEM_TIER)))


class _Binary:
    """A handle that reads and writes by byte offset in 8-byte units (no snapshot)."""

    direct_io = True

    def __init__(self, kernel: "Kernel") -> None:
        self.kernel = kernel

    @staticmethod
    def _check(off: int, size: int) -> None:
        if off % 8 or size % 8:
            raise OSError(errno.EINVAL, "position and count must be multiples of 8")

    def write(self, off: int, data: bytes) -> int:
        raise OSError(errno.EINVAL, "not writable")


class PageIdleBitmap(_Binary):
    """/sys/kernel/mm/page_idle/bitmap: bit pfn % 64 of word pfn / 64; 1 = idle. Each
    read(2) or write(2) moves at most a page (kernfs's bin attribute buffer), and a
    write takes the words up to the last PFN (page_idle_bitmap_write's return)."""

    def _words(self, off: int, size: int) -> tuple[int, int]:
        size = min(size, PAGE_SIZE)  # kernfs cuts the count before page_idle checks it
        self._check(off, size)
        pfn = off // 8 * 64
        total = self.kernel.nr_pfns
        return pfn, max(0, min(size // 8, (total - pfn + 63) // 64)) if pfn < total else 0

    def read(self, off: int, size: int) -> bytes:
        pfn, n = self._words(off, size)
        return self.kernel.page_idle_read(pfn, n) if n else b""

    def write(self, off: int, data: bytes) -> int:
        pfn, n = self._words(off, len(data))
        if not n:
            raise OSError(errno.ENXIO, "past the last PFN")
        self.kernel.page_idle_write(pfn, data[:n * 8])
        return n * 8


class _SplitChecked(_Binary):
    """A file of u64 entries whose read(2) is checked as one call (position and count
    multiples of 8), while FUSE may bring it as several READs: a read larger than one
    request (1 MiB, less the buffer's offset in its page) is cut at an arbitrary byte
    when the buffer is not 8-byte aligned, and a count that is not a multiple of 8
    leaves a short last request. So a READ that is misaligned, or fills a request, is
    matched to the opener's read(2) blocked on this file (fs/readcall.py): the whole
    call's count is checked, and its later READs get the bytes at their offsets. A
    READ the host's /proc cannot tie to a call is checked alone (deviation z6)."""

    def __init__(self, kernel: "Kernel", opener: int | None = None, ino: int | None = None) -> None:
        super().__init__(kernel)
        self._threads = readcall.Threads(opener) if opener is not None else None
        self.ino = ino
        # a split call's next READ offset -> (the call, its end)
        self._calls: dict[int, tuple[readcall.ReadCall, int]] = {}

    def count(self, off: int, size: int) -> int:
        """The count the kernel checks and reads for a read(2) of size at off."""
        return size

    def stream(self, off: int, size: int) -> bytes:
        """The entries' bytes from off (a multiple of 8) for size bytes (one too)."""
        raise NotImplementedError

    def _split_call(self, off: int, size: int) -> tuple[readcall.ReadCall, int] | None:
        """The read(2) behind this READ and where it ends, when it is split into
        several (EINVAL when that call's position or count is not a multiple of 8)."""
        if self._threads is None or self.ino is None:
            return None
        kept = self._calls.pop(off, None)
        if kept is not None and self._threads.still_in(kept[0]) is not False:
            return kept  # still in that call (or running between its READs)
        if not (off % 8 or size % 8 or size >= readcall.REQUEST_PAGES * PAGE_SIZE - (PAGE_SIZE - 1)):
            return None
        calls = self._threads.find(self.ino, off)
        if len(calls) != 1 or calls[0].count <= size:
            return None
        count = self.count(off, calls[0].count)
        self._check(off, count)
        return calls[0], off + count

    def read(self, off: int, size: int) -> bytes:
        split = self._split_call(off, size)
        if split is None:
            size = self.count(off, size)
            self._check(off, size)
            return self.stream(off, size) if size else b""
        call, end = split
        size = max(0, min(size, end - off))
        if off + size < end:
            self._calls[off + size] = (call, end)
        first = off - off % 8
        data = self.stream(first, (off + size + 7) // 8 * 8 - first)
        return data[off - first:off - first + size]

    def close(self) -> None:
        if self._threads is not None:
            self._threads.close()


class _PerPfn(_SplitChecked):
    """A u64 per PFN, read as 4.20's fs/proc/page.c reads: the count is first cut to
    what is left before max_pfn in unsigned arithmetic, which a position past the end
    wraps (4.20 has no end check: such a read returns whole entries for the holes
    there), and only then must position and count be multiples of 8 (`EINVAL`)."""

    def entries(self, pfn: int, n: int) -> bytes:
        raise NotImplementedError

    def count(self, off: int, size: int) -> int:
        end = self.kernel.nr_pfns * 8
        return min(size, end - off) if off <= end else size

    def stream(self, off: int, size: int) -> bytes:
        return self.entries(off // 8, size // 8)


class KPageFlags(_PerPfn):
    """/proc/kpageflags: one u64 of KPF_* flags per PFN (KPF_NOPAGE for a hole)."""

    def entries(self, pfn: int, n: int) -> bytes:
        return self.kernel.kpageflags(pfn, n)


class KPageCount(_PerPfn):
    """/proc/kpagecount: page_mapcount() of each PFN's page, a u64 (0 for a hole)."""

    def entries(self, pfn: int, n: int) -> bytes:
        return self.kernel.kpagecount(pfn, n)


class PageMap(_SplitChecked):
    """/proc/PID/pagemap: one u64 per virtual page (present, swapped, file, PFN). The
    PFNs are shown only to an opener with CAP_SYS_ADMIN (pagemap_read() checks the
    file's credentials, so the opener's, since 4.2), 0 to others."""

    def __init__(self, kernel: "Kernel", task: "Task", show_pfn: bool = True,
                 opener: int | None = None, ino: int | None = None) -> None:
        super().__init__(kernel, opener, ino)
        self.task = task
        self.show_pfn = show_pfn

    def read(self, off: int, size: int) -> bytes:
        if self.task.mm_id is None:  # pagemap_read(): no mm to get, 0 bytes, checks after
            return b""
        return super().read(off, size)

    def stream(self, off: int, size: int) -> bytes:
        addr = off // 8 * 4096
        if addr >= TASK_SIZE:
            return b""
        n = min(size // 8, (TASK_SIZE - addr) // 4096)
        try:
            return self.kernel.pagemap(self.task, addr, n, show_pfn=self.show_pfn)
        except OSError:
            return b""  # gone meanwhile


class DemotionEnabled:
    """/sys/kernel/mm/numa/demotion_enabled: `true\\n`/`false\\n`. 5.15's store compares
    prefixes: what starts with `true` or `1` turns it on, `false` or `0` off."""

    direct_io = True

    def __init__(self, kernel: "Kernel") -> None:
        self.kernel = kernel

    def read(self, off: int, size: int) -> bytes:
        return (b"true\n" if self.kernel.demotion_enabled else b"false\n")[off:off + size]

    def write(self, off: int, data: bytes) -> int:
        data = data[:PAGE_SIZE]  # kernfs_fop_write() hands the store at most a page
        if data.startswith((b"true", b"1")):
            self.kernel.demotion_enabled = True
        elif data.startswith((b"false", b"0")):
            self.kernel.demotion_enabled = False
        else:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return len(data)


_SPACES = b" \t\n\v\f\r"  # isspace(): proc_skip_spaces()
_SEPARATORS = b" \t\n"      # proc_wspace_sep: what may follow a number
TMPBUFLEN = 22


def dointvec_minmax(data: bytes, lo: int, hi: int) -> tuple[int, int]:
    """4.20's proc_dointvec_minmax() write of one int: (the value stored, the count the
    write returns), or EINVAL as its parse says. Of at most PAGE_SIZE - 1 bytes: spaces;
    then `-` and digits in simple_strtoul()'s base 0 (`0x2`, `010`; wrapping at 2^64),
    no more than 20 characters, followed by a space, tab, newline or the end; then
    spaces. The count is what was consumed, counted from the end of the whole write
    (`*lenp -= left`): `1 2` stores 1 and returns 2."""
    left = min(len(data), PAGE_SIZE - 1)
    buf = data[:left]
    p = len(buf) - len(buf.lstrip(_SPACES))
    if p == left:
        raise OSError(errno.EINVAL, "no number")
    tmp = buf[p:p + TMPBUFLEN - 1]
    neg = tmp[:1] == b"-" and left - p > 1
    digits = tmp[1:] if neg else tmp
    if not digits[:1].isdigit():
        raise OSError(errno.EINVAL, "not a number")
    base, start = (8, 1) if digits[:1] == b"0" else (10, 0)
    if digits[:2].lower() == b"0x" and digits[2:3].isalnum() and digits[2:3].lower() in b"0123456789abcdef":
        base, start = 16, 2
    end = start
    while end < len(digits) and chr(digits[end]).lower() in "0123456789abcdef"[:base]:
        end += 1
    value = int(digits[start:end] or b"0", base) % (1 << 64)
    used = p + (1 if neg else 0) + end
    if used - p == TMPBUFLEN - 1 or (used < left and buf[used] not in _SEPARATORS):
        raise OSError(errno.EINVAL, "not a number")
    if value > (1 << 31) - 1 + neg or not lo <= (-value if neg else value) <= hi:
        raise OSError(errno.EINVAL, "out of range")  # do_proc_dointvec_conv(), then minmax
    rest = buf[used:]
    consumed = used + len(rest) - len(rest.lstrip(_SPACES))
    return -value if neg else value, len(data) - (left - consumed)


class NumaBalancing:
    """/proc/sys/kernel/numa_balancing: `N\n`; takes 0-3 (2: memory-tiering promotion),
    parsed as proc_dointvec_minmax() does. A read or a write at a position past 0
    does nothing (sysctl_writes_strict: the write is ignored, its count returned)."""

    direct_io = True

    def __init__(self, kernel: "Kernel") -> None:
        self.kernel = kernel

    def read(self, off: int, size: int) -> bytes:
        return b"" if off else f"{self.kernel.numa_balancing}\n".encode()[:size]

    def write(self, off: int, data: bytes) -> int:
        if off or not data:
            return len(data)
        self.kernel.numa_balancing, count = dointvec_minmax(data, 0, 3)
        return count


PROC_SYS = Dir("sys", (Dir("kernel", (
    Special("numa_balancing", lambda c, f: NumaBalancing(c.kernel), mode=0o644),), mode=0o555),),
    mode=0o555)  # sysctl directories: new_dir() makes them 0555

SYS_KERNEL_MM = Dir("kernel", (Dir("mm", (
    Dir("numa", (Special("demotion_enabled", lambda c, f: DemotionEnabled(c.kernel), mode=0o644,
                         size=4096),)),  # a kobj_attribute: a page, as every text attribute
    Dir("page_idle", (Special("bitmap", lambda c, f: PageIdleBitmap(c.kernel), mode=0o600),)),
)),))
KPAGEFLAGS = Special("kpageflags", lambda c, f: KPageFlags(c.kernel, c.get_or("caller_tgid"),
                                                           c.get_or("inode")), mode=0o400)
KPAGECOUNT = Special("kpagecount", lambda c, f: KPageCount(c.kernel, c.get_or("caller_tgid"),
                                                           c.get_or("inode")), mode=0o400)


CAP_SYS_ADMIN = 21


def _cap_sys_admin(ctx: Ctx) -> bool:
    """The opener's CapEff has CAP_SYS_ADMIN (bound by the server at open)."""
    return bool(ctx.get_or("caller_cap_eff", -1) >> CAP_SYS_ADMIN & 1)


def pagemap_entry(task_of) -> Special:  # noqa: ANN001 - procfs's _task
    return Special("pagemap", lambda c, f: PageMap(c.kernel, task_of(c), _cap_sys_admin(c),
                                                   c.get_or("caller_tgid"), c.get_or("inode")), mode=0o400,
                   owner=lambda c: task_of(c).dump_owner(dir_0555=False), ptrace_read=True)


def enabled(ctx: Ctx) -> bool:
    return bool(getattr(ctx.kernel, "upstream", False))


def only_upstream(entry: Dir | File | Special) -> Lister:
    """A directory's dynamic child that exists only on an upstream-mode machine."""
    return Lister("upstream", lambda c: [entry.name] if enabled(c) else [],
                  lambda c, name: 1 if name == entry.name and enabled(c) else None, entry)
