"""The page table an anonymous huge PMD keeps in reserve (4.20 mm/huge_memory.c).

__do_huge_pmd_anonymous_page() and copy_huge_pmd() allocate a page table with
pte_alloc_one() (from the task's policy, like every page table) and
pgtable_trans_huge_deposit() it with the PMD, counted by mm_inc_nr_ptes() (VmPTE)
and in the node's PageTables; __split_huge_pmd_locked() withdraws it as the PTE
table of the split mapping; zap_huge_pmd() frees it (zap_deposited_table). A fault
that gets the THP but not the page table fails with VM_FAULT_OOM after freeing the
THP, where a fault that gets no THP falls back to 4 KiB pages.

Every expected number is counted by hand in the comments.
"""
from __future__ import annotations

import errno

from fakeproc.kernel.kernel import Kernel
from fakeproc.kernel.mm import Vma
from fakeproc.kernel.native import lib
from fakeproc.machine import load
from kernel_ops import rfc_kernel

MIB = 1 << 20
BASE = 0x7F0000000000


def tables(k: Kernel, nid: int) -> int:
    return k.node_stat(nid)[lib.FP_NR_PAGETABLE]


def free(k: Kernel, nid: int) -> int:
    return k.node_stat(nid)[lib.FP_NR_FREE_PAGES]


def two_thps(k: Kernel, pid: int = 10):
    t = k.spawn(pid, "t", cpu=0)
    k.add_vma(t, Vma(BASE, BASE + 8 * MIB, thp=True))
    k.touch(t, BASE, write=True)
    k.touch(t, BASE + 2 * MIB, write=True)
    return t


def test_a_thp_fault_deposits_a_page_table_and_exit_frees_it():
    k = rfc_kernel()
    t = two_thps(k)
    # PGD, PUD, PMD, then a THP and its deposit per fault: 3 + 2 tables on node 0;
    # PageTables counts the deposits only (PTE tables: pte_alloc_one())
    assert k.event(lib.FP_EV_THP_FAULT_ALLOC) == 2
    assert k.mm_counters(t)["nr_tables"] == 5
    assert tables(k, 0) == 2
    assert free(k, 0) == 4096 - 1 - 2 * 512 - 5  # PFN 0 is reserved at boot
    assert k.check() == []
    k.exit(t.pid)
    assert (tables(k, 0), free(k, 0)) == (0, 4095)
    assert k.check() == []


def test_fork_deposits_a_page_table_for_each_huge_pmd_of_the_child():
    k = rfc_kernel()
    parent = two_thps(k)
    child = k.fork(parent.pid, 11)
    # the child: PGD, PUD, PMD and one deposit per copied huge PMD, on its CPU's node 0
    assert k.mm_counters(child)["nr_tables"] == 5
    assert tables(k, 0) == 4  # the deposits, two each
    assert k.check() == []
    k.exit(child.pid)
    assert tables(k, 0) == 2
    assert k.check() == []


SWAP_MACHINE = """
distances = [[10, 17], [17, 10]]
[machine]
swap = "8MiB"
[[node]]
type = "dram"
size = "4MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "64MiB"

[[process]]
pid = 10
name = "app"
cpu = 0
[[process.vma]]
start = 0x7f0000000000
size = "2MiB"
thp = true
node = 1
pages = "1 thp-idle"
"""


def test_a_thp_split_for_swap_takes_the_deposited_table_as_its_pte_table():
    k = load(SWAP_MACHINE)
    t = k.task(10)
    # PGD, PUD, PMD and the THP's deposit, all from the task's node 0 (PageTables: the
    # deposit)
    assert (k.mm_counters(t)["nr_tables"], tables(k, 0), tables(k, 1)) == (4, 1, 0)
    k.age_active(1)
    assert k.shrink_node(1, 512) == 512
    # the THP is split for swap (a rotational device: test_thp_swapout.py)
    assert k.event(lib.FP_EV_THP_SWPOUT_FALLBACK) == 1 and k.event(lib.FP_EV_THP_SPLIT_PMD) == 1
    level, entry = k.entry(t, BASE)
    assert level == 4 and entry & lib.FP_PAGE_SWPENTRY
    # the PTE table of 512 swap entries is the deposited page: no new table
    assert (k.mm_counters(t)["nr_tables"], tables(k, 0), tables(k, 1)) == (4, 1, 0)
    assert k.mm_counters(t)["swap"] == 512
    assert k.check() == []


NO_ROOM = """
[[node]]
type = "dram"
size = "4MiB"
cpus = "0"
watermarks = ["0KiB", "0KiB", "0KiB"]

[[process]]
pid = 10
name = "app"
cpu = 0
[[process.vma]]
start = 0x7f0000000000
size = "2MiB"
[[process.vma]]
start = 0x7f0000200000
size = "2MiB"
thp = true
"""


def test_a_thp_without_a_page_table_to_deposit_is_freed_and_the_fault_fails():
    k = load(NO_ROOM)
    t = k.task(10)
    # 2 blocks of 512 pages; PFN 0, reserved at boot, split the first. The first touch
    # takes the PGD, PUD, PMD and PTE tables (4) and its page; 506 more pages use up
    # the split block.
    for i in range(507):
        k.touch(t, BASE + i * 4096, write=True)
    assert free(k, 0) == 512
    vma = k.mm(t.mm_id).find_vma(BASE + 2 * MIB)
    # the THP takes the last block, its deposit finds no page: no reclaim can help
    # (one node, no swap), so the THP goes back and the fault is VM_FAULT_OOM
    ret = lib.fp_touch(k.native, t.mm_id, BASE + 2 * MIB, vma.fault_flags(BASE + 2 * MIB, True))
    assert ret == -errno.ENOMEM
    assert free(k, 0) == 512
    assert k.event(lib.FP_EV_THP_FAULT_ALLOC) == 0
    assert k.event(lib.FP_EV_THP_FAULT_FALLBACK) == 0  # not a fallback to 4 KiB pages
    assert k.node_stat(0)[lib.FP_NR_ANON_THPS] == 0
    assert k.entry(t, BASE + 2 * MIB) == (3, 0)
    assert k.mm_counters(t)["nr_tables"] == 4
    assert k.check() == []


def test_a_thp_needs_a_private_anonymous_mapping():
    """The emulated THPs are anonymous pages: a shared or file mapping with thp = true
    is refused, naming the field (4.20 deposits no page table for those either)."""
    import pytest

    from fakeproc.machine import MachineFileError
    base = "[[node]]\ntype = \"dram\"\nsize = \"64MiB\"\ncpus = \"0\"\n[[process]]\npid = 10\n" \
           "name = \"a\"\n[[process.vma]]\nstart = 0x7f0000000000\nsize = \"2MiB\"\nthp = true\n"
    for extra, what in (('kind = "shm"\n', "shm shared"), ('path = "/lib/x.so"\n', "file private"),
                        ('perms = "rw-s"\n', "anon shared")):
        with pytest.raises(MachineFileError, match=f"thp.*not a {what} one"):
            load(base + extra)
    load(base)  # a private anonymous one is fine
