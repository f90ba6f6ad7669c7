"""Address-space changes of emulated processes: mmap(2) of anonymous memory,
munmap(2), and madvise(2)'s MADV_DONTNEED, MADV_HUGEPAGE and MADV_NOHUGEPAGE.

Linux: mm/mmap.c of 4.20 (do_mmap, mmap_region, get_unmapped_area,
unmapped_area_topdown, vma_merge, is_mergeable_anon_vma, __split_vma, do_munmap,
unmap_region, free_pgtables), mm/madvise.c (madvise_behavior, madvise_dontneed_free),
mm/khugepaged.c (hugepage_madvise).

The VMA list is Python's (mm.MmStruct); zapping pages and freeing page tables are C
(native/memory.c: fp_zap_range, fp_free_pgd_range). Every call returns 0 (mmap: the
address) or -errno, as the syscall would. The host memory of a VM's memory slots
keeps its mappings (EBUSY, deviation x): only MADV_DONTNEED reaches it.
"""
from __future__ import annotations

import dataclasses
import errno
from typing import TYPE_CHECKING

from .mm import PAGE_SIZE, PMD_SIZE, TASK_SIZE, MmStruct, Vma, new_anon_vma
from .native import check, lib

if TYPE_CHECKING:
    from .kernel import Kernel
    from .task import Task

# mmap_base() of a process without address-space randomisation: the 8 MiB stack
# rlimit plus the 1 MiB stack_guard_gap, raised to the 128 MiB minimum gap
MMAP_BASE = TASK_SIZE - (128 << 20)
STACK_GUARD_GAP = 256 * PAGE_SIZE
MMAP_MIN_ADDR = 65536            # vm.mmap_min_addr
MAX_MAP_COUNT = 65530            # vm.max_map_count
VM_SOFTDIRTY = 1 << 27
HUGETLB_SIZE = PMD_SIZE          # the hugetlb VMAs' page size (smaps' KernelPageSize)

MADV_DONTNEED, MADV_HUGEPAGE, MADV_NOHUGEPAGE = 4, 14, 15


def _page_align(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _start_gap(v: Vma) -> int:
    """vm_start_gap(): a stack (VM_GROWSDOWN) keeps stack_guard_gap free below it."""
    return max(0, v.start - STACK_GUARD_GAP) if v.kind == "stack" else v.start


def _neighbours(mm: MmStruct, start: int, end: int) -> tuple[Vma | None, Vma | None]:
    """The VMA ending at or before start and the one starting at or after end."""
    prev = next((v for v in reversed(mm.vmas) if v.end <= start), None)
    nxt = next((v for v in mm.vmas if v.start >= end), None)
    return prev, nxt


# ---- anon_vma: what vma_merge() may join ---------------------------------------

def anon_vma_of(k: "Kernel", mm: MmStruct, v: Vma) -> int:
    """The VMA's anon_vma, 0 for none. A VMA gets one at its first anonymous fault
    (anon_vma_prepare(), made in C): found then from the pages it maps."""
    if not v.anon_vma and not v.shared and check(lib.fp_range_has_anon(k.native, mm.id, v.start, v.end)):
        v.anon_vma = new_anon_vma()
    return v.anon_vma


def _singular(v: Vma) -> bool:
    """list_is_singular(&vma->anon_vma_chain): an anon_vma of its own and no parent's."""
    return bool(v.anon_vma) and not v.anon_vma_cloned


def _anon_mergeable(a1: int, a2: int, v: Vma | None) -> bool:
    """is_mergeable_anon_vma(): a VMA cloned from a parent's is never joined to one
    without an anon_vma (nor is one without any, its chain being empty, to one with)."""
    if (not a1 or not a2) and (v is None or _singular(v)):
        return True
    return a1 == a2


def _flags_mergeable(a: Vma, b: Vma) -> bool:
    """is_mergeable_vma() for anonymous memory: the same vm_flags but VM_SOFTDIRTY, no
    file (an anonymous VMA's vm_pgoff is its address, so the offsets always follow)."""
    anon = ("anon", "heap")
    return (a.kind in anon and b.kind in anon and not a.shared and not b.shared
            and (a.vm_flags ^ b.vm_flags) & ~VM_SOFTDIRTY == 0)


def _join(mm: MmStruct, parts: list[Vma], like: Vma) -> Vma:
    """Replace the VMAs `parts`, adjacent to like's range, with one VMA of like's flags
    over the union; it keeps the first anon_vma among them (__vma_adjust()'s
    importer), is [heap] when one was, and has like's VM_SOFTDIRTY (a new mapping's,
    which mmap_region() sets on what it grew; madvise() the advised range's)."""
    owner = next((p for p in parts if p.anon_vma), None)
    joined = dataclasses.replace(
        like, start=min(parts[0].start, like.start), end=max(parts[-1].end, like.end),
        soft_dirty=like.soft_dirty,
        kind="heap" if any(p.kind == "heap" for p in parts) else like.kind,
        anon_vma=owner.anon_vma if owner else 0, anon_vma_cloned=owner.anon_vma_cloned if owner else False)
    for p in parts:
        mm.remove_vma(p)
    mm.add_vma(joined)
    return joined


def _merge(k: "Kernel", mm: MmStruct, new: Vma, vma: Vma | None) -> Vma | None:
    """vma_merge() of [new.start, new.end) with new's flags: joined to the VMA before
    it and/or the one after it, or None. `vma` is the VMA the range lies in (madvise),
    or None for a new mapping (mmap_region(): no anon_vma yet)."""
    start, end = new.start, new.end
    anon = anon_vma_of(k, mm, vma) if vma is not None else 0
    prev, nxt = _neighbours(mm, start, end)
    if vma is not None:  # only a range that starts (ends) the VMA can join the one before (after)
        prev = prev if start == vma.start else None
        nxt = nxt if end == vma.end else None
    prev_ok = (prev is not None and prev.end == start and _flags_mergeable(prev, new)
               and _anon_mergeable(anon, anon_vma_of(k, mm, prev), prev))
    next_ok = (nxt is not None and nxt.start == end and _flags_mergeable(nxt, new)
               and _anon_mergeable(anon, anon_vma_of(k, mm, nxt), nxt))
    middle = [vma] if vma is not None and vma.start == start and vma.end == end else []
    if prev_ok and next_ok and _anon_mergeable(prev.anon_vma, nxt.anon_vma, None):  # type: ignore[union-attr]
        return _join(mm, [prev, *middle, nxt], new)  # type: ignore[list-item]
    if prev_ok:
        if vma is not None and end < vma.end:
            _split(k, mm, vma, end)
            middle = [mm.find_vma(start)]  # type: ignore[list-item]
        return _join(mm, [prev, *middle], new)  # type: ignore[list-item]
    if next_ok:
        if vma is not None and start > vma.start:
            _split(k, mm, vma, start)
            middle = [mm.find_vma(start)]  # type: ignore[list-item]
        return _join(mm, [*middle, nxt], new)  # type: ignore[list-item]
    return None


def _split(k: "Kernel", mm: MmStruct, v: Vma, addr: int) -> int:
    """__split_vma(): v becomes [start, addr) and [addr, end), both with v's anon_vma,
    and a huge PMD across addr is split (vma_adjust_trans_huge()). A hugetlb VMA splits
    only at a huge page boundary (hugetlb_vm_op_split()). The callers check
    vm.max_map_count where 4.20 does."""
    if v.hugetlb and addr % HUGETLB_SIZE:
        return -errno.EINVAL
    check(lib.fp_split_huge_pmd_at(k.native, mm.id, addr))
    mm.remove_vma(v)
    mm.add_vma(dataclasses.replace(v, end=addr))
    mm.add_vma(dataclasses.replace(v, start=addr, offset=v.offset + (addr - v.start) if v.has_file else 0))
    return 0


def _under_memslot(task: "Task", start: int, end: int) -> bool:
    """[start, end) overlaps the host memory of a KVM memory slot of task's VM, whose
    mapping is fixed here (deviation x)."""
    vm = task.vm
    return vm is not None and any(sl.hva < end and start < sl.hva + sl.size for sl in vm.slots)


def _changed(k: "Kernel", task: "Task") -> None:
    """The address space changed: its caches, the generation the files are rendered
    for, and the workload's regions (what a program touches exists)."""
    mm = k.mm(task.mm_id)  # type: ignore[arg-type]
    mm.invalidate()
    k.generation += 1
    wl = task.workload
    if wl is not None and wl._c is not None and wl._c.vm < 0:  # a guest's workload is guest-physical
        k.rebind_workload(task, wl)


# ---- munmap ----------------------------------------------------------------------

def _unmap(k: "Kernel", task: "Task", start: int, end: int) -> int:
    """do_munmap() of the page-aligned [start, end)."""
    mm = k.mm(task.mm_id)  # type: ignore[arg-type]
    first = next((v for v in mm.vmas if v.end > start), None)
    if first is None or first.start >= end:
        return 0
    for v in mm.vmas:
        if v.start < end and v.end > start:
            anon_vma_of(k, mm, v)  # before the zap takes the pages that show it
    if first.start < start:
        if end < first.end and len(mm.vmas) >= MAX_MAP_COUNT:
            return -errno.ENOMEM
        err = _split(k, mm, first, start)
        if err:
            return err
    last = next((v for v in mm.vmas if v.end >= end), None)
    if last is not None and last.start < end < last.end:
        err = _split(k, mm, last, end)
        if err:
            return err
    gone = [v for v in mm.vmas if start <= v.start and v.end <= end]
    prev, nxt = _neighbours(mm, start, end)
    mm.hiwater_vm = max(mm.hiwater_vm, mm.total_vm_pages)  # update_hiwater_vm()
    check(lib.fp_zap_range(k.native, mm.id, start, end))  # unmap_vmas()
    for v in gone:
        mm.remove_vma(v)
    _free_pgtables(k, mm, gone, prev.end if prev else 0, nxt.start if nxt else 0)
    return 0


def _free_pgtables(k: "Kernel", mm: MmStruct, gone: list[Vma], floor: int, ceiling: int) -> None:
    """free_pgtables(): one free_pgd_range() per run of removed VMAs less than a PMD
    apart (a hugetlb VMA alone), each bounded by the next removed VMA or ceiling."""
    i = 0
    while i < len(gone):
        j = i
        if not gone[i].hugetlb:
            while j + 1 < len(gone) and gone[j + 1].start <= gone[j].end + PMD_SIZE and not gone[j + 1].hugetlb:
                j += 1
        top = gone[j + 1].start if j + 1 < len(gone) else ceiling
        check(lib.fp_free_pgd_range(k.native, mm.id, gone[i].start, gone[j].end, floor, top))
        i = j + 1


def munmap(k: "Kernel", task: "Task", addr: int, length: int) -> int:
    """munmap(2): 0 or -EINVAL (an unaligned start, a length of 0 or past TASK_SIZE, a
    hugetlb VMA cut off a huge page boundary), -ENOMEM (too many VMAs)."""
    if addr % PAGE_SIZE or addr > TASK_SIZE or length > TASK_SIZE - addr:
        return -errno.EINVAL
    length = _page_align(length)
    if not length:
        return -errno.EINVAL
    if _under_memslot(task, addr, addr + length):
        return -errno.EBUSY
    ret = _unmap(k, task, addr, addr + length)
    _changed(k, task)
    return ret


# ---- mmap ------------------------------------------------------------------------

def _hint_free(mm: MmStruct, addr: int, length: int) -> bool:
    """x86's arch_get_unmapped_area_topdown() takes a hint whose range fits below
    TASK_SIZE (mmap_address_hint_valid()) and ends before the next VMA's start gap
    (find_vma(): the first VMA ending above addr)."""
    nxt = next((v for v in mm.vmas if v.end > addr), None)
    return addr <= TASK_SIZE - length and (nxt is None or addr + length <= _start_gap(nxt))


def get_unmapped_area(mm: MmStruct, addr: int, length: int, fixed: bool) -> int:
    """An address for length bytes, or -errno: MAP_FIXED takes addr as given; a hint
    is taken when its range is free; else the highest gap below mmap_base that holds
    it (unmapped_area_topdown(), low limit one page). No bottom-up fallback: -ENOMEM."""
    if length > TASK_SIZE:
        return -errno.ENOMEM
    if fixed:
        if addr > TASK_SIZE - length:
            return -errno.ENOMEM
        return -errno.EINVAL if addr % PAGE_SIZE else addr
    if addr and _hint_free(mm, addr, length):
        return addr
    ends = [0] + [v.end for v in mm.vmas]
    starts = [_start_gap(v) for v in mm.vmas] + [1 << 64]
    for gap_start, gap_end in reversed(list(zip(ends, starts))):
        if (gap_start + length <= MMAP_BASE and gap_end - gap_start >= length
                and gap_end >= PAGE_SIZE + length):
            return min(gap_end, MMAP_BASE) - length
    return -errno.ENOMEM


def mmap(k: "Kernel", task: "Task", length: int, addr: int = 0, *, perms: str = "rw-p",
         fixed: bool = False, noreplace: bool = False) -> int:
    """mmap(2) of anonymous memory (MAP_ANONYMOUS | MAP_PRIVATE; perms "rwx" letters
    or dashes, then "p"): the address, or -EINVAL (length 0, MAP_FIXED unaligned),
    -ENOMEM (no room, past TASK_SIZE, too many VMAs), -EEXIST (MAP_FIXED_NOREPLACE
    over a mapping). MAP_FIXED replaces what was there (do_munmap() first); the new
    range joins a neighbour with the same flags (vma_merge())."""
    if len(perms) != 4 or perms[3] != "p" or any(perms[i] not in ("rwx"[i], "-") for i in range(3)):
        return -errno.EINVAL
    if not length:
        return -errno.EINVAL
    fixed = fixed or noreplace
    if not fixed:  # round_hint_to_min()
        addr &= ~(PAGE_SIZE - 1)
        if addr and addr < MMAP_MIN_ADDR:
            addr = _page_align(MMAP_MIN_ADDR)
    length = _page_align(length)
    if not length:
        return -errno.ENOMEM
    mm = k.mm(task.mm_id)  # type: ignore[arg-type]
    if len(mm.vmas) > MAX_MAP_COUNT:
        return -errno.ENOMEM
    addr = get_unmapped_area(mm, addr, length, fixed)
    if addr < 0:
        return addr
    if noreplace and any(v.start < addr + length and v.end > addr for v in mm.vmas):
        return -errno.EEXIST
    if _under_memslot(task, addr, addr + length):
        return -errno.EBUSY
    if any(v.start < addr + length and v.end > addr for v in mm.vmas):
        if _unmap(k, task, addr, addr + length):
            _changed(k, task)
            return -errno.ENOMEM
    new = Vma(addr, addr + length, perms=perms)
    if _merge(k, mm, new, None) is None:
        mm.add_vma(new)
    _changed(k, task)
    return addr


# ---- madvise ---------------------------------------------------------------------

def _behavior(k: "Kernel", mm: MmStruct, vma: Vma, start: int, end: int, advice: int) -> int:
    """madvise_behavior() for MADV_HUGEPAGE / MADV_NOHUGEPAGE (hugepage_madvise()):
    new flags on [start, end) of vma, joined to a neighbour or split off."""
    want = dataclasses.replace(vma, start=start, end=end, thp=advice == MADV_HUGEPAGE,
                               nohugepage=advice == MADV_NOHUGEPAGE)
    if (want.thp, want.nohugepage) == (vma.thp, vma.nohugepage):
        return 0
    if _merge(k, mm, want, vma) is not None:
        return 0
    for cut in (start, end):
        v = mm.find_vma(cut if cut == start else cut - 1)
        if v is not None and v.start < cut < v.end:
            if len(mm.vmas) >= MAX_MAP_COUNT:
                return -errno.ENOMEM
            err = _split(k, mm, v, cut)
            if err:
                return err
    v = mm.find_vma(start)
    assert v is not None
    v.thp, v.nohugepage = want.thp, want.nohugepage
    return 0


def madvise(k: "Kernel", task: "Task", addr: int, length: int, advice: int) -> int:
    """madvise(2) with MADV_DONTNEED (the pages go, the next touch faults anew; -EINVAL
    on [vvar] and hugetlb VMAs), MADV_HUGEPAGE or MADV_NOHUGEPAGE: 0, -EINVAL (an
    unaligned start, a wrapping range, another advice), or -ENOMEM when part of the
    range is unmapped (the rest is still advised)."""
    if advice not in (MADV_DONTNEED, MADV_HUGEPAGE, MADV_NOHUGEPAGE) or addr % PAGE_SIZE:
        return -errno.EINVAL
    size = _page_align(length) & ((1 << 64) - 1)
    end = addr + size
    if (length and not size) or end >= 1 << 64:  # rounded up from near -1, or wrapping
        return -errno.EINVAL
    if end == addr:
        return 0
    if advice != MADV_DONTNEED and _under_memslot(task, addr, end):
        return -errno.EBUSY  # (MADV_DONTNEED is a balloon's: the EPT follows, as it does in 4.20)
    mm = k.mm(task.mm_id)  # type: ignore[arg-type]
    ret = unmapped = 0
    pos = addr
    while pos < end:  # do_madvise()'s loop, the VMA list looked up again each round
        v = next((v for v in mm.vmas if v.end > pos), None)
        if v is None or v.start >= end:
            ret = -errno.ENOMEM
            break
        if v.start > pos:  # a hole: advised around, reported at the end
            unmapped, pos = -errno.ENOMEM, v.start
        hi = min(v.end, end)
        if advice == MADV_DONTNEED:
            if v.hugetlb or v.kind == "vvar":  # can_madv_dontneed_vma(): VM_HUGETLB, VM_PFNMAP
                ret = -errno.EINVAL
                break
            anon_vma_of(k, mm, v)
            check(lib.fp_zap_range(k.native, mm.id, pos, hi))
        else:
            ret = _behavior(k, mm, v, pos, hi, advice)
            if ret:
                break
        pos, ret = hi, unmapped
    _changed(k, task)
    return ret
