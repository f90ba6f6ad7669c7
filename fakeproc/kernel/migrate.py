"""move_pages(2) with MPOL_MF_SW_YOUNG, migrate_pages(2) and get_mempolicy(2).

Linux: mm/migrate.c of 4.20 (kernel_move_pages, do_pages_move,
add_page_for_migration, do_move_pages_to_node, store_status, do_pages_stat_array)
plus the RFC's MPOL_MF_SW_YOUNG; mm/mempolicy.c (do_get_mempolicy, lookup_node,
kernel_migrate_pages). INTERFACES.md 3 is the contract, including the 4.17-5.5
quirk that status entries of a batch with nothing queued stay unwritten.

The entry loop is Python (it is all bookkeeping); moving a page is C
(native/migrate.c), shared with reclaim's demotion.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from .native import ffi, lib

if TYPE_CHECKING:
    from .kernel import Kernel
    from .task import Task

MPOL_MF_MOVE = 2
MPOL_MF_MOVE_ALL = 4
MPOL_MF_SW_YOUNG = 0x80  # the RFC's flag
MPOL_F_NODE = 1
MPOL_F_ADDR = 2
MAX_NUMNODES = 1024
ADDR_MASK = 0x000FFFFFFFFFF000


@dataclass
class PageLookup:
    """follow_page(FOLL_GET | FOLL_DUMP) for one address: a page or an errno."""

    err: int = 0           # 0, EFAULT or ENOENT (positive)
    pfn: int = -1
    node: int = -1
    huge: bool = False


def _follow_page(kernel: "Kernel", task: "Task", addr: int) -> PageLookup:
    assert task.mm_id is not None
    vma = kernel.mm(task.mm_id).find_vma(addr)
    if vma is None:
        return PageLookup(errno.EFAULT)
    level = ffi.new("int32_t *")
    e = lib.fp_lookup(kernel.native, task.mm_id, addr, level)
    entry = int(e[0]) if e != ffi.NULL else 0
    leaf = level[0] == 4 or bool(entry & lib.FP_PAGE_PSE)
    if entry == 0 or (not leaf and entry & (lib.FP_PAGE_PRESENT | lib.FP_PAGE_PROTNONE)):
        # no_page_table(): anonymous memory (no ->fault) says EFAULT, a file mapping NULL
        return PageLookup(errno.ENOENT if vma.has_file else errno.EFAULT)
    if not entry & (lib.FP_PAGE_PRESENT | lib.FP_PAGE_PROTNONE) or entry & lib.FP_PAGE_SWPENTRY:
        # a swap or migration entry: a PMD-level one in anonymous memory is EFAULT
        if level[0] < 4 and not vma.has_file:
            return PageLookup(errno.EFAULT)
        return PageLookup(errno.ENOENT)
    pfn = (entry & ADDR_MASK) >> 12
    node = kernel.page_node(task, addr)
    if node is None:  # a frame outside node RAM (DAX, [vdso])
        return PageLookup(0, pfn, -1, bool(entry & lib.FP_PAGE_PSE))
    return PageLookup(0, pfn, node, bool(entry & lib.FP_PAGE_PSE))


def _query_node(kernel: "Kernel", task: "Task", addr: int, look: PageLookup) -> int:
    """The node a query reports. [vdso] pages are kernel-image pages (node 0's memory
    in the emulation); device (DAX) memory has no node RAM behind it: -EFAULT."""
    if look.node >= 0:
        return look.node
    assert task.mm_id is not None
    vma = kernel.mm(task.mm_id).find_vma(addr)
    return kernel.nodes[0].id if vma is not None and vma.kind == "vdso" else -errno.EFAULT


def _node_ok(kernel: "Kernel", node: int) -> bool:
    return 0 <= node < MAX_NUMNODES and node in kernel.node_ids


class _Batch:
    """The open batch of do_pages_move(): target node, first index, queued pages."""

    def __init__(self, node: int, start: int) -> None:
        self.node, self.start = node, start
        self.queued: list[int] = []


def move_pages(kernel: "Kernel", pid: int, pages: Sequence[int], nodes: Sequence[int] | None,
               status: list[int], flags: int, *, caller_node: int | None = None,
               capable: bool = True) -> int:
    """The syscall: returns 0, a positive count of pages not migrated, or -errno.

    ``status`` is the caller's array, updated in place exactly where 4.20 writes it.
    ``caller_node`` is the node of the calling CPU (numa local/other); ``capable``
    stands for CAP_SYS_NICE (MPOL_MF_MOVE_ALL) and the ptrace check.
    """
    if flags & ~(MPOL_MF_MOVE | MPOL_MF_MOVE_ALL | MPOL_MF_SW_YOUNG):
        return -errno.EINVAL
    if flags & MPOL_MF_MOVE_ALL and not capable:
        return -errno.EPERM
    task = _target(kernel, pid, capable)
    if isinstance(task, int):
        return task
    if nodes is None:
        for i, addr in enumerate(pages):
            look = _follow_page(kernel, task, addr)
            status[i] = -look.err if look.err else _query_node(kernel, task, addr, look)
        return 0
    caller = caller_node if caller_node is not None else kernel.cpu_node(task.cpu)
    batch: _Batch | None = None
    err = 0
    i = 0
    for i, (addr, node) in enumerate(zip(pages, nodes)):
        if not _node_ok(kernel, node):
            err = -errno.ENODEV
            break
        if node not in kernel.mems_allowed(task):
            err = -errno.EACCES  # outside the task's cpuset
            break
        if batch is None:
            batch = _Batch(node, i)
        elif batch.node != node:
            r = _flush(kernel, batch, caller)
            if r:
                return r
            _store(status, batch.start, i, batch.node)
            batch = _Batch(node, i)
        e = _queue(kernel, task, addr, node, flags, batch)
        if e is not None:
            status[i] = e
            r = _flush(kernel, batch, caller)
            if r:
                return r
            if i > batch.start:
                _store(status, batch.start, i, batch.node)
            batch = None
    else:
        i = len(pages)
    if batch is None or not batch.queued:
        return err
    r = _flush(kernel, batch, caller)
    if r == 0:
        _store(status, batch.start, i, batch.node)
    return err if err else r


def _target(kernel: "Kernel", pid: int, capable: bool) -> "Task | int":
    """find_mm_struct(): the target task, or -ESRCH / -EPERM (ptrace) / -EINVAL (no mm)."""
    task = kernel.thread(pid)
    if task is None:
        return -errno.ESRCH
    if not capable:
        return -errno.EPERM
    if task.mm_id is None:
        return -errno.EINVAL
    return task


def _store(status: list[int], start: int, end: int, node: int) -> None:
    for j in range(start, end):
        status[j] = node


def _queue(kernel: "Kernel", task: "Task", addr: int, node: int, flags: int,
           batch: _Batch) -> int | None:
    """add_page_for_migration(): None when queued (on the batch) or already in
    place, else the negative status for this entry."""
    assert task.mm_id is not None
    vma = kernel.mm(task.mm_id).find_vma(addr)
    if vma is None or vma.kind == "vvar":  # no VMA, or VM_IO | VM_PFNMAP
        return -errno.EFAULT
    look = _follow_page(kernel, task, addr)
    if look.err:
        return -look.err
    if look.node == -1:
        # device-DAX is not migratable; [vdso] pages are not on an LRU (isolation fails)
        return -errno.EFAULT if vma.kind != "vdso" else -errno.EBUSY
    if look.node == node:
        return None  # already there: success, not queued
    page = kernel.native.pages[look.pfn]
    if page.mapcount > 1 and not flags & MPOL_MF_MOVE_ALL:
        return -errno.EACCES
    if not page.flags & lib.FP_PG_LRU:
        return -errno.EBUSY
    if flags & MPOL_MF_SW_YOUNG:
        page.flags |= lib.FP_PG_REFERENCED  # only pages actually isolated get it
    batch.queued.append(look.pfn)
    return None


def _flush(kernel: "Kernel", batch: _Batch, caller: int) -> int:
    """do_move_pages_to_node(): 0, a positive count left unmigrated, or -ENOMEM
    (the target has no room; no THP split is emulated, see docs/interfaces.md)."""
    queued, batch.queued = batch.queued, []
    dst, failed = kernel.node_index(batch.node), 0
    kernel.generation += 1
    for pfn in queued:
        r = lib.fp_migrate_page(kernel.native, pfn, dst, kernel.node_index(caller),
                                lib.FP_MR_SYSCALL, ffi.NULL)
        if r == -errno.ENOMEM:
            kernel.native.events[lib.FP_EV_PGMIGRATE_FAIL] += 1
            return -errno.ENOMEM
        if r:
            failed += 1
            kernel.native.events[lib.FP_EV_PGMIGRATE_FAIL] += 1
    return failed


def get_mempolicy_node(kernel: "Kernel", pid: int, addr: int) -> int:
    """get_mempolicy(&node, NULL, 0, addr, MPOL_F_NODE | MPOL_F_ADDR): the node of the
    page at addr, faulting it in first as lookup_node()'s get_user_pages() does."""
    task = kernel.thread(pid)
    if task is None:
        return -errno.ESRCH
    if task.mm_id is None:
        return -errno.EINVAL
    vma = kernel.mm(task.mm_id).find_vma(addr)
    if vma is None:
        return -errno.EFAULT
    if kernel.page_node(task, addr) is None and vma.kind != "vdso":
        kernel.touch(task, addr)
    look = _follow_page(kernel, task, addr)
    return -look.err if look.err else _query_node(kernel, task, addr, look)


def migrate_pages(kernel: "Kernel", pid: int, old_nodes: Sequence[int], new_nodes: Sequence[int],
                  *, capable: bool = True) -> int:
    """migrate_pages(2): move every page of pid on old_nodes to new_nodes (the i-th
    old node to the i-th new one, the last new node for the rest); returns the pages
    that could not be moved, or -errno."""
    task = _target(kernel, pid, capable)
    if isinstance(task, int):
        return task
    if not new_nodes or any(not _node_ok(kernel, n) for n in (*old_nodes, *new_nodes)):
        return -errno.EINVAL
    target = {o: new_nodes[min(i, len(new_nodes) - 1)] for i, o in enumerate(sorted(old_nodes))}
    left = 0
    caller = kernel.node_index(kernel.cpu_node(task.cpu))
    for vma in kernel.mm(task.mm_id).vmas:
        if vma.kind == "vvar" or not vma.walked_by_idle_pages and vma.shared:
            continue
        for addr, pfn in kernel.range_pages(task, vma.start, vma.end):
            node = kernel.page_node(task, addr)
            if node is None or node not in target or target[node] == node:
                continue
            if lib.fp_migrate_page(kernel.native, pfn, kernel.node_index(target[node]), caller,
                                   lib.FP_MR_SYSCALL, ffi.NULL):
                left += 1
                kernel.native.events[lib.FP_EV_PGMIGRATE_FAIL] += 1
    kernel.generation += 1
    return left
