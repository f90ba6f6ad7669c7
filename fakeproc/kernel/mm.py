"""Address spaces and VMAs.

Linux: include/linux/mm_types.h (vm_area_struct), mm/mmap.c. The page tables
themselves live in C (native/memory.c); this side keeps the VMA list the walk,
/proc/PID/maps and the fault path read.
"""
from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

from .native import ffi, lib

VmaKind = Literal["anon", "file", "heap", "stack", "vdso", "vvar", "shm"]
SPECIAL_NAMES = {"heap": "[heap]", "stack": "[stack]", "vdso": "[vdso]", "vvar": "[vvar]"}
PAGE_SIZE = 4096
PMD_SIZE = 2 << 20
TASK_SIZE = 0x00007FFFFFFFF000
_anon_vmas = itertools.count(1)


def new_anon_vma() -> int:
    """A fresh anon_vma identity (anon_vma_prepare(), anon_vma_fork())."""
    return next(_anon_vmas)


@dataclass
class Vma:
    """One mapping. Invariant: page aligned, start < end <= TASK_SIZE."""

    start: int
    end: int
    perms: str = "rw-p"
    kind: VmaKind = "anon"
    path: str | None = None
    offset: int = 0
    dev: tuple[int, int] = (0, 0)
    inode: int = 0
    hugetlb: bool = False
    thp: bool = False
    deleted: bool = False
    soft_dirty: bool = True  # VM_SOFTDIRTY: a new VMA has it, clear_refs 4 takes it away
    nohugepage: bool = False  # VM_NOHUGEPAGE (madvise MADV_NOHUGEPAGE)
    # anon_vma: 0 until the first anonymous fault makes one (found lazily, mmap.py);
    # cloned: its anon_vma_chain holds its parent's too (a fork's copy), which
    # vma_merge() will not join to a VMA without one
    anon_vma: int = 0
    anon_vma_cloned: bool = False

    @property
    def has_file(self) -> bool:
        """vma->vm_file: file mappings and shared anonymous memory (a shmem file)."""
        return self.kind in ("file", "shm")

    @property
    def writable(self) -> bool:
        return self.perms[1] == "w"

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s"

    @property
    def is_anon_memory(self) -> bool:
        """Pages faulted here are anonymous (swap-backed) pages."""
        return self.kind in ("anon", "heap", "stack")

    @property
    def walked_by_idle_pages(self) -> bool:
        """mm_idle_test_walk(): no file, or a file mapping that is writable and private."""
        if self.has_file:
            return self.writable and not self.shared
        return True

    @property
    def display_path(self) -> str | None:
        """The path column of /proc/PID/maps."""
        if self.kind in SPECIAL_NAMES:
            return SPECIAL_NAMES[self.kind]
        if self.path is None:
            return None
        return self.path + (" (deleted)" if self.deleted else "")

    @property
    def native_flags(self) -> int:
        flags = 0
        if self.walked_by_idle_pages:
            flags |= lib.FP_VMA_WALK
        if self.hugetlb:
            flags |= lib.FP_VMA_HUGETLB
        if self.thp:
            flags |= lib.FP_VMA_THP
        if self.is_anon_memory:
            flags |= lib.FP_VMA_ANON
        if self.writable:
            flags |= lib.FP_VMA_WRITE
        if self.perms[2] == "x":  # VM_EXEC: reclaim keeps referenced file text active
            flags |= lib.FP_VMA_EXEC
        if self.kind == "shm":
            flags |= lib.FP_VMA_SHMEM
        if self.kind in ("vdso", "vvar"):
            flags |= lib.FP_VMA_SPECIAL
        if self.kind == "vvar":
            flags |= lib.FP_VMA_PFNMAP
        if self.kind == "file" and self.writable and not self.shared:
            flags |= lib.FP_VMA_COW
        return flags

    def fault_flags(self, addr: int, write: bool) -> int:
        """fp_fault()/fp_touch() flags for an access at addr."""
        flags = (lib.FP_FAULT_WRITE if write else 0) | (self.native_flags << lib.FP_FAULT_VMA_SHIFT)
        base = addr & ~(PMD_SIZE - 1)  # THPs are anonymous (4.20 has no file THP but shmem's)
        if self.thp and self.is_anon_memory and self.start <= base and base + PMD_SIZE <= self.end:
            flags |= lib.FP_FAULT_THP
        return flags

    @property
    def vm_flags(self) -> int:
        """The vm_flags bits smaps prints (include/linux/mm.h), as 4.20 sets them."""
        r, w, x = (self.perms[i] != "-" for i in range(3))
        s = self.shared
        bits = {0: r, 1: w, 2: x, 3: s, 4: True, 5: s or self.kind != "vvar", 6: True, 7: s}
        if self.kind == "vvar":  # VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_DONTDUMP, no mw/me
            bits.update({5: False, 6: False, 10: True, 14: True, 18: True, 26: True})
        elif self.kind == "vdso":
            bits[18] = True  # VM_DONTEXPAND
        elif self.kind == "stack":
            bits[8] = True   # VM_GROWSDOWN
        if self.hugetlb:
            bits[18] = True  # VM_DONTEXPAND (hugetlbfs_file_mmap); never VM_ACCOUNT
        elif self.writable and not self.shared and (self.is_anon_memory or self.kind == "file"):
            bits[20] = True  # VM_ACCOUNT
        bits[22] = self.hugetlb
        bits[27] = self.soft_dirty  # VM_SOFTDIRTY (CONFIG_MEM_SOFT_DIRTY)
        bits[29] = self.thp  # VM_HUGEPAGE
        bits[30] = self.nohugepage  # VM_NOHUGEPAGE
        return sum(1 << b for b, on in bits.items() if on)

    @property
    def nr_pages(self) -> int:
        return (self.end - self.start) // PAGE_SIZE


@dataclass
class MmStruct:
    """An address space: the C page tables (by id) and the sorted VMA list."""

    id: int
    vmas: list[Vma] = field(default_factory=list)
    hiwater_vm: int = 0  # VmPeak: the most pages mapped before a munmap (update_hiwater_vm())
    _spans: Any = None  # cached cffi array of struct fp_vma_span
    _move_spans: Any = None  # cached cffi array of struct fp_move_vma

    def add_vma(self, vma: Vma) -> None:
        """Insert a VMA; overlapping an existing one is a caller error."""
        i = bisect.bisect_left(self.vmas, vma.start, key=_start)
        if (i > 0 and self.vmas[i - 1].end > vma.start) or (
            i < len(self.vmas) and self.vmas[i].start < vma.end
        ):
            raise ValueError(f"VMA {vma.start:#x}-{vma.end:#x} overlaps another mapping")
        self.vmas.insert(i, vma)
        self._spans = self._move_spans = None

    def remove_vma(self, vma: Vma) -> None:
        self.vmas.remove(vma)
        self.invalidate()

    def invalidate(self) -> None:
        """The VMA list or a VMA changed: the C views are built again."""
        self._spans = self._move_spans = None

    def find_vma(self, addr: int) -> Vma | None:
        """The VMA containing addr, if any (the list is sorted and disjoint)."""
        i = bisect.bisect_right(self.vmas, addr, key=_start) - 1
        return self.vmas[i] if i >= 0 and addr < self.vmas[i].end else None

    def spans(self) -> tuple[Any, int]:
        """The VMA list as the C walk wants it (cached until the list changes)."""
        if self._spans is None:
            arr = ffi.new("struct fp_vma_span[]", max(1, len(self.vmas)))
            for i, v in enumerate(self.vmas):
                arr[i].start, arr[i].end, arr[i].flags = v.start, v.end, v.native_flags
            self._spans = arr
        return self._spans, len(self.vmas)

    def move_spans(self) -> tuple[Any, int]:
        """The VMA list as fp_move_pages() wants it: what follow_page() must know of
        each mapping (cached until the list changes)."""
        if self._move_spans is None:
            arr = ffi.new("struct fp_move_vma[]", max(1, len(self.vmas)))
            for i, v in enumerate(self.vmas):
                arr[i].start, arr[i].end = v.start, v.end
                arr[i].kind = (lib.FP_MV_VVAR if v.kind == "vvar" else lib.FP_MV_VDSO
                               if v.kind == "vdso" else lib.FP_MV_FILE if v.has_file or v.hugetlb
                               else lib.FP_MV_ANON)  # hugetlbfs has ->fault: a hole is ENOENT
                arr[i].soft_dirty = v.soft_dirty
            self._move_spans = arr
        return self._move_spans, len(self.vmas)

    def clear_soft_dirty(self) -> None:
        """clear_refs 4: every VMA loses VM_SOFTDIRTY."""
        for v in self.vmas:
            v.soft_dirty = False
        self._spans = self._move_spans = None

    @property
    def total_vm_pages(self) -> int:
        return sum(v.nr_pages for v in self.vmas)


def _start(vma: Vma) -> int:
    return vma.start
