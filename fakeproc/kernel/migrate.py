"""move_pages(2) with MPOL_MF_SW_YOUNG, migrate_pages(2) and get_mempolicy(2).

Linux: mm/migrate.c of 4.20 (kernel_move_pages, do_pages_move,
add_page_for_migration, do_move_pages_to_node, store_status, do_pages_stat_array)
plus the RFC's MPOL_MF_SW_YOUNG; mm/mempolicy.c (do_get_mempolicy, lookup_node,
kernel_migrate_pages). INTERFACES.md 3 is the contract, including the 4.17-5.5
quirk that status entries of a batch with nothing queued stay unwritten.

The checks (flags, target task, cpuset) are Python; the entry loop and the batches
are C (fp_move_pages in native/migrate.c), so a daemon's batches of 1024 run at C
speed; moving a page is C too, shared with reclaim's demotion.
"""
from __future__ import annotations

import errno
import weakref
from typing import TYPE_CHECKING, Any, Callable, Generator, Sequence

from .native import check, ffi, lib
from .task import CAP_SYS_NICE, Caller, capable as _capable, ptrace_may_access as _ptrace_may_access

if TYPE_CHECKING:
    from .kernel import Kernel
    from .task import Task

MPOL_MF_MOVE = 2
MPOL_MF_MOVE_ALL = 4
MPOL_MF_SW_YOUNG = 0x80  # the RFC's flag
MPOL_F_NODE = 1
MPOL_F_ADDR = 2
MAX_NUMNODES = 1024


def _node_ok(kernel: "Kernel", node: int) -> bool:
    return 0 <= node < MAX_NUMNODES and node in kernel.node_ids


Ints = Sequence[int] | bytes | bytearray | memoryview  # a list, or packed little-endian C values


def move_pages(kernel: "Kernel", pid: int, pages: Ints, nodes: Ints | None,
               status: list[int] | bytearray, flags: int, *, caller_node: int | None = None,
               caller: Caller | None = None, written: list[tuple[int, int]] | None = None) -> int:
    """The syscall: returns 0, a positive count of pages not migrated, or -errno.

    ``status`` is the caller's array, updated in place exactly where 4.20 writes it.
    Each array is a list of ints or packed (u64 pages, i32 nodes and status, the
    host's little-endian layout, as the syscall's user arrays): packed ones go to C
    without a copy, which is what a daemon's bulk calls need.
    ``caller_node`` is the node of the calling CPU (numa local/other); ``caller`` the
    calling process's credentials (CAP_SYS_NICE for MPOL_MF_MOVE_ALL, the ptrace check). ``written``, when
    given, receives the [start, end) runs of the entries the kernel stored (put_user
    faults on any of them in a read-only array, whatever the value).
    """
    if flags & ~(MPOL_MF_MOVE | MPOL_MF_MOVE_ALL | MPOL_MF_SW_YOUNG):
        return -errno.EINVAL
    if flags & MPOL_MF_MOVE_ALL and not _capable(caller, CAP_SYS_NICE):
        return -errno.EPERM
    task = _target(kernel, pid, caller)
    if isinstance(task, int):
        return task
    return _move_native(kernel, task, pages, nodes, status, flags, caller_node, written)


def _move_native(kernel: "Kernel", task: "Task", pages: Ints, nodes: Ints | None,
                 status: list[int] | bytearray, flags: int, caller_node: int | None,
                 written: list[tuple[int, int]] | None = None) -> int:
    """The entry loop in C (fp_move_pages): batches of 1024 go at C speed."""
    assert task.mm_id is not None
    c_pages, n = _c_array("uint64_t[]", pages, lambda p: p & (1 << 64) - 1)  # pointers wrap
    # a value that is no C int names no node of ours: ENODEV at its entry, as -1 does
    c_nodes, nr_nodes = (ffi.NULL, n) if nodes is None else _c_array(
        "int32_t[]", nodes, lambda x: x if -(1 << 31) <= x < 1 << 31 else -1)
    if isinstance(status, bytearray):  # written in place
        c_status, nr_status = _c_array("int32_t[]", status, int)
    else:
        c_status, nr_status = _c_array("int32_t[]", status[:n], int)
    if nr_nodes != n or nr_status < n:  # C reads n of each
        raise ValueError(f"{n} pages, {nr_nodes} nodes, {nr_status} status entries")
    old = None
    if written is not None and n:
        old = ffi.new("int32_t[]", n)
        ffi.memmove(old, c_status, 4 * n)
        ffi.memmove(c_status, _UNWRITTEN * n, 4 * n)
    vmas, nr_vmas = kernel.mm(task.mm_id).move_spans()
    index, ids = _node_tables(kernel, tuple(kernel.mems_allowed(task)))
    caller = caller_node if caller_node is not None else kernel.cpu_node(task.cpu)
    ret = lib.fp_move_pages(kernel.native, task.mm_id, vmas, nr_vmas, n, c_pages, c_nodes, index,
                            ids, kernel.nodes[0].id, flags, kernel.node_index(caller), c_status,
                            ffi.new("uint64_t[]", max(n, 1)))
    if old is not None:
        runs = ffi.new("uint64_t[]", n + 1)
        pairs = ffi.unpack(runs, 2 * lib.fp_status_written(c_status, old, n, runs))
        written.extend(zip(pairs[::2], pairs[1::2]))
    if not isinstance(status, bytearray):
        status[:n] = ffi.unpack(c_status, n)
    if nodes is not None:
        kernel.generation += 1
    return int(ret)


_UNWRITTEN = (lib.FP_STATUS_UNWRITTEN & 0xFFFFFFFF).to_bytes(4, "little")


def _c_array(ctype: str, values: Ints, fix: "Callable[[int], int]") -> tuple[Any, int]:
    """values as a C array (never empty) and their count: packed values as they are,
    a list converted, fix() mapping each value only when one does not fit the C type
    (the slow path)."""
    if isinstance(values, (bytes, bytearray, memoryview)):
        size = ffi.sizeof(ctype.replace("[]", ""))
        if len(values) % size:
            raise ValueError(f"{len(values)} bytes are not whole {ctype} items")
        return (ffi.from_buffer(ctype, values) if values else ffi.new(ctype, 1)), len(values) // size
    try:
        return ffi.new(ctype, list(values) or [0]), len(values)
    except OverflowError:
        return ffi.new(ctype, [fix(v) for v in values]), len(values)


def _node_tables(kernel: "Kernel", allowed: tuple[int, ...]) -> tuple[Any, Any]:
    """fp_move_pages()'s node tables: id -> index (-1 no such node, -2 outside the
    task's mems_allowed) and index -> id; built once per kernel and cpuset."""
    cache = _NODE_TABLES.setdefault(kernel, {})
    if allowed not in cache:
        index = ffi.new("int16_t[]", [-1] * lib.FP_MAX_NUMNODES)
        ids = ffi.new("int32_t[]", [nd.id for nd in kernel.nodes])
        for i, nd in enumerate(kernel.nodes):
            if nd.id < lib.FP_MAX_NUMNODES:
                index[nd.id] = i if nd.id in allowed else -2
        cache[allowed] = (index, ids)
    return cache[allowed]


_NODE_TABLES: "weakref.WeakKeyDictionary[Kernel, dict[tuple[int, ...], tuple[Any, Any]]]" = \
    weakref.WeakKeyDictionary()


def _target(kernel: "Kernel", pid: int, caller: Caller | None) -> "Task | int":
    """kernel_move_pages()'s lookup: the target task, or -ESRCH / -EPERM (the ptrace
    check) / -EINVAL (no mm)."""
    task = kernel.thread(pid)
    if task is None:
        return -errno.ESRCH
    if not _ptrace_may_access(caller, task):
        return -errno.EPERM
    if task.mm_id is None:
        return -errno.EINVAL
    return task


def get_mempolicy_node(kernel: "Kernel", pid: int, addr: int) -> int:
    """get_mempolicy(&node, NULL, 0, addr, MPOL_F_NODE | MPOL_F_ADDR): the node of the
    page at addr, faulting it in first as lookup_node()'s get_user_pages() does."""
    task = kernel.thread(pid)
    if task is None:
        return -errno.ESRCH
    if task.mm_id is None:
        return -errno.EINVAL
    vma = kernel.mm(task.mm_id).find_vma(addr)
    if vma is None or vma.kind == "vvar":  # get_user_pages() refuses VM_IO | VM_PFNMAP
        return -errno.EFAULT
    # [vdso] frames lie outside node RAM (no node) even when mapped: fault in only a hole
    missing = kernel.entry(task, addr)[1] == 0 if vma.kind == "vdso" else \
        kernel.page_node(task, addr) is None
    if missing and vma.hugetlb:  # the fault needs a huge page and there is no pool
        return -errno.EFAULT
    if missing:
        kernel.touch(task, addr)
    if kernel.maps_zero_page(task, addr):  # a load faults in the zero page: the kernel's
        return kernel.nodes[0].id          # frame, on the node [vdso]'s frames are taken to be
    status = [0]
    _move_native(kernel, task, [addr], None, status, 0, None)  # follow_page as a query does
    return status[0]


def migrate_pages(kernel: "Kernel", pid: int, old_nodes: Sequence[int], new_nodes: Sequence[int],
                  *, caller: Caller | None = None) -> int:
    """migrate_pages(2): move pid's pages from the old node set to the new one, node
    pair by node pair as do_migrate_pages() picks them; returns the pages that could
    not be moved, or -errno. The node lists are sets, as the syscall's bitmasks.
    kernel_migrate_pages()'s order: get_nodes() (any node below MAX_NUMNODES), the
    task (-ESRCH), the ptrace check (-EPERM), new nodes outside the task's cpuset
    without CAP_SYS_NICE (-EPERM), the new set masked with the caller's cpuset (every
    node here) and the nodes with memory (empty: -EINVAL), the mm (-EINVAL); without
    CAP_SYS_NICE only pages mapped once move (MPOL_MF_MOVE)."""
    if any(not 0 <= n < MAX_NUMNODES for n in (*old_nodes, *new_nodes)):
        return -errno.EINVAL
    task = kernel.thread(pid)
    if task is None:
        return -errno.ESRCH
    if not _ptrace_may_access(caller, task):
        return -errno.EPERM
    move_all = _capable(caller, CAP_SYS_NICE)
    if not set(new_nodes) <= set(kernel.mems_allowed(task)) and not move_all:
        return -errno.EPERM
    old, new = sorted(set(old_nodes)), sorted(set(new_nodes) & set(kernel.node_ids))
    if not new or task.mm_id is None:
        return -errno.EINVAL
    busy = 0
    try:
        for source, dest in node_pairs(old, new):
            err = _migrate_to_node(kernel, task, source, dest, move_all)
            if err < 0:
                return err
            busy += err
    finally:
        kernel.generation += 1
    return busy


def node_pairs(old: list[int], new: list[int]) -> Generator[tuple[int, int], None, None]:
    """do_migrate_pages()'s (source, dest) pairs, in its order, for ascending old and
    new node sets. Each source maps to new[i % len(new)] for the old set's i-th node
    (node_remap()); with sets of unequal size a source that is also a new node stays.
    Each round takes the first source whose destination is no longer a source (so a
    node is emptied before it is filled), else the last one that moves."""
    tmp = list(old)
    while tmp:
        pair = None
        for s in tmp:
            if len(old) != len(new) and s in new:
                continue
            d = new[old.index(s) % len(new)]
            if s == d:
                continue
            pair = (s, d)
            if d not in tmp:
                break
        if pair is None:
            return
        tmp.remove(pair[0])
        yield pair


def _migrate_to_node(kernel: "Kernel", task: "Task", source: int, dest: int, move_all: bool) -> int:
    """migrate_to_node(): the task's present pages in address order go to C
    (fp_migrate_to_node), which queues those on `source` (queue_pages_range(); with
    MPOL_MF_MOVE only pages mapped once), isolates them and runs 4.20's
    migrate_pages() over the list. Returns the pages left behind, or -ENOMEM (no
    room) or -EBUSY (a pinned THP that could not be split)."""
    if source not in kernel.node_ids:
        return 0  # a node without memory has no pages
    vmas = [v for v in kernel.mm(task.mm_id).vmas
            if v.kind not in ("vvar", "vdso")]  # not vma_migratable(), or kernel frames
    for vma in vmas:  # queue_pages_pmd() splits every huge zero PMD it meets
        for addr, pfn in kernel.range_pages(task, vma.start, vma.end):
            if pfn == kernel.native.huge_zero_pfn:
                check(lib.fp_split_huge_zero_at(kernel.native, task.mm_id, addr))
    pfns = [pfn for vma in vmas for _, pfn in kernel.range_pages(task, vma.start, vma.end)]
    if not pfns:
        return 0
    caller = kernel.node_index(kernel.cpu_node(task.cpu))
    return int(lib.fp_migrate_to_node(kernel.native, ffi.new("uint64_t[]", pfns), len(pfns),
                                      kernel.node_index(source), kernel.node_index(dest), caller,
                                      move_all))
