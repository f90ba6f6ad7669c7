"""The zero page and the huge zero page (4.20 mm/memory.c do_anonymous_page(),
mm/huge_memory.c do_huge_pmd_anonymous_page(), do_huge_pmd_wp_page()): a load from
untouched private anonymous memory maps a kernel frame read-only, which takes no
memory, no RSS and no LRU place, which move_pages reports as -EFAULT (FOLL_DUMP), and
which a store replaces by a page of the process's own. Vectors worked out by hand:
the machine's RAM ends at PFN 32768, where fakeproc puts the zero page (and the huge
zero page 512 further on, 2 MiB aligned)."""
from __future__ import annotations

import os
import struct

import pytest

from fakeproc.ctl.client import Client
from fakeproc.kernel import kvm, migrate, task_mmu
from fakeproc.kernel.mm import Vma
from fakeproc.kernel.native import lib
from fakeproc.machine import load
from machines import small_machine
from mountutil import mounted
from test_kvm import QEMU

pytestmark = pytest.mark.fuse
BASE = 0x7F0000000000
THP_VA = 0x7F0000200000
PAGE = 4096
ZERO_PFN, HUGE_ZERO_PFN = 32768 + 1, 32768 + 512  # past the RAM's 32768 PFNs
MACHINE = small_machine(pmem="64MiB", upstream=True)
PRESENT, FILE, EXCLUSIVE, SOFT_DIRTY = 1 << 63, 1 << 61, 1 << 56, 1 << 55


@pytest.fixture(scope="module")
def m():
    with mounted(MACHINE) as mnt:
        yield mnt


def pagemap(m, pid: int, addr: int, n: int) -> list[int]:
    fd = os.open(m.proc_path(f"{pid}/pagemap"), os.O_RDONLY)
    try:
        return list(struct.unpack(f"<{n}Q", os.pread(fd, 8 * n, addr // PAGE * 8)))
    finally:
        os.close(fd)


def vmstat(m) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in m.read("proc/vmstat").decode().splitlines())}


def status(m, pid: int, key: str) -> str:
    line = next(x for x in m.read(f"proc/{pid}/status").decode().splitlines() if x.startswith(key + ":"))
    return line.split(":\t")[1].strip()


def test_a_load_maps_the_zero_page_and_a_store_replaces_it(m):
    with Client(m.path) as c:
        pid = c.call("spawn", name="z", vma=[{"start": BASE, "size": "16KiB"}])["pid"]
        try:
            before = vmstat(m)
            assert c.call("touch", pid=pid, addr=BASE)["node"] is None  # no node's RAM
            after = vmstat(m)
            # one fault; the PGD, PUD, PMD and PTE tables are the only pages taken
            assert after["pgfault"] - before["pgfault"] == 1
            assert before["nr_free_pages"] - after["nr_free_pages"] == 4
            assert after["nr_anon_pages"] == before["nr_anon_pages"]
            # present with its PFN (32768) and the VMA's soft-dirty bit; no page behind it
            # for pte_to_pagemap_entry() (_vm_normal_page(): NULL for the zero page), so
            # neither PM_FILE nor PM_MMAP_EXCLUSIVE
            assert pagemap(m, pid, BASE, 2) == [PRESENT | SOFT_DIRTY | ZERO_PFN, SOFT_DIRTY]
            assert status(m, pid, "VmRSS") == "0 kB" and status(m, pid, "RssAnon") == "0 kB"
            assert m.read(f"proc/{pid}/numa_maps").decode() == f"{BASE:08x} default\n"
            # FOLL_DUMP: a query and a move both say -EFAULT
            assert c.call("move_pages", pid=pid, pages=[BASE])["status"] == [-14]
            r = c.call("move_pages", pid=pid, pages=[BASE], nodes=[1], flags=2)
            assert (r["ret"], r["status"]) == (0, [-14])
            # lookup_node(): get_user_pages() gives the zero page, a kernel frame: node 0
            assert c.call("get_mempolicy", pid=pid, addr=BASE + PAGE)["node"] == 0
            assert pagemap(m, pid, BASE + PAGE, 1) == [PRESENT | SOFT_DIRTY | ZERO_PFN]
            # the zero PTE is young (vm_page_prot): one PTE_ACCESSED unit of 2
            fd = os.open(m.proc_path(f"{pid}/idle_pages"), os.O_RDONLY)
            try:
                assert os.pread(fd, 4096, BASE)[:10] == b"\xa0" + BASE.to_bytes(8, "big") + b"\x02"
            finally:
                os.close(fd)
            # a store: a write-protect fault copies (wp_page_copy()): a page on node 0
            before = vmstat(m)
            assert c.call("touch", pid=pid, addr=BASE, write=True)["node"] == 0
            after = vmstat(m)
            assert after["pgfault"] - before["pgfault"] == 1
            assert after["nr_anon_pages"] - before["nr_anon_pages"] == 1
            word = pagemap(m, pid, BASE, 1)[0]
            assert word >> 55 == (PRESENT | EXCLUSIVE | SOFT_DIRTY) >> 55 and word & 0xFFFF < 16384
            assert status(m, pid, "VmRSS") == "4 kB"
            assert c.call("check")["problems"] == []
        finally:
            c.call("kill", pid=pid)


def test_the_huge_zero_page(m):
    """do_huge_pmd_anonymous_page(): a load in a THP region maps the huge zero page
    (thp_zero_page_alloc the first time), with a page table deposited; a store gets a
    THP of its own (thp_fault_alloc). pagemap_pmd_range() gives no PM_FILE there."""
    with Client(m.path) as c:
        pid = c.call("spawn", name="hz", vma=[{"start": THP_VA, "size": "4MiB", "thp": True}])["pid"]
        try:
            before = vmstat(m)
            c.call("touch", pid=pid, addr=THP_VA + 5 * PAGE)
            c.call("touch", pid=pid, addr=THP_VA + (2 << 20))
            after = vmstat(m)
            assert after["thp_zero_page_alloc"] == 1  # once for the mount
            assert after["thp_fault_alloc"] == before["thp_fault_alloc"]
            # PGD, PUD and PMD tables and a deposit per PMD: 5 pages, 2 of them PageTables
            assert before["nr_free_pages"] - after["nr_free_pages"] == 5
            assert after["nr_page_table_pages"] - before["nr_page_table_pages"] == 2
            words = pagemap(m, pid, THP_VA, 1024)
            assert words == [PRESENT | SOFT_DIRTY | (HUGE_ZERO_PFN + i % 512) for i in range(1024)]
            assert status(m, pid, "VmRSS") == "0 kB"
            c.call("touch", pid=pid, addr=THP_VA + (2 << 20) + PAGE, write=True)
            assert vmstat(m)["thp_fault_alloc"] == before["thp_fault_alloc"] + 1
            words = pagemap(m, pid, THP_VA, 1024)
            assert words[:512] == [PRESENT | SOFT_DIRTY | (HUGE_ZERO_PFN + i) for i in range(512)]
            head = words[512] & ((1 << 55) - 1)
            assert head % 512 == 0 and words[512:] == [PRESENT | EXCLUSIVE | SOFT_DIRTY | (head + i)
                                                       for i in range(512)]
            assert status(m, pid, "VmRSS") == "2048 kB"
            assert c.call("check")["problems"] == []
        finally:
            c.call("kill", pid=pid)


SMALL = small_machine(dram="4MiB") + """
[[process]]
pid = 20
name = "full"
[[process.vma]]
start = 0x7f0000000000
size = "1MiB"
populate = true
[[process.vma]]
start = 0x7f0000200000
size = "2MiB"
thp = true
"""


def test_a_store_to_the_huge_zero_page_without_a_thp_splits_it():
    """do_huge_pmd_wp_page() with no THP to allocate: the PMD becomes its deposited
    table of 512 zero PTEs (__split_huge_zero_page_pmd(): thp_split_pmd), counted as
    thp_fault_fallback, and the store faults again on its 4 KiB zero PTE, which it
    copies. Node 0 has two 2 MiB blocks: the page tables, the 256 populated pages and
    the huge zero page's deposit split the first; a second process's THP takes the
    other, so the store finds no THP."""
    k = load(SMALL)
    t = k.task(20)
    hz = 0x7F0000200000
    k.touch(t, hz)  # the huge zero page
    level, e = k.entry(t, hz)
    assert (level, e >> 12 & 0xFFFFFFFFFF, e & lib.FP_PAGE_PSE) == (3, 1024 + 512, lib.FP_PAGE_PSE)
    # take the free 2 MiB block away: a THP cannot be had
    blocker = k.spawn(21, "blocker", cpu=0)
    k.add_vma(blocker, Vma(0x7E0000000000, 0x7E0000200000, thp=True))
    k.touch(blocker, 0x7E0000000000, write=True)
    assert k.event(lib.FP_EV_THP_FAULT_ALLOC) == 1
    split, fallback = k.event(lib.FP_EV_THP_SPLIT_PMD), k.event(lib.FP_EV_THP_FAULT_FALLBACK)
    faults = k.event(lib.FP_EV_PGFAULT)
    k.touch(t, hz + 3 * PAGE, write=True)
    assert (k.event(lib.FP_EV_THP_SPLIT_PMD) - split, k.event(lib.FP_EV_THP_FAULT_FALLBACK) - fallback) == (1, 1)
    assert k.event(lib.FP_EV_PGFAULT) - faults == 1  # one handle_mm_fault(): the fallback goes on in it
    words = struct.unpack("<512Q", k.pagemap(t, hz, 512))
    zero = PRESENT | SOFT_DIRTY | 1025  # the RAM's 1024 PFNs, then the zero page
    assert [w for i, w in enumerate(words) if i != 3] == [zero] * 511
    assert words[3] >> 55 == (PRESENT | EXCLUSIVE | SOFT_DIRTY) >> 55 and k.page_node(t, hz + 3 * PAGE) == 0
    assert k.mm_counters(t)["rss_anon"] == 256 + 1
    assert k.check() == []


FORKED = small_machine() + """
[[process]]
pid = 30
name = "parent"
[[process.vma]]
start = 0x7f0000000000
size = "4KiB"
[[process.vma]]
start = 0x7f0000200000
size = "2MiB"
thp = true
"""


def test_fork_copies_the_zero_mappings_and_migrate_pages_splits_the_huge_one():
    """copy_one_pte(): the child's zero PTE is old like any other; copy_huge_pmd():
    set_huge_zero_page() makes the child's huge zero PMD from vm_page_prot, young. So
    the child's first scan reports PTE_IDLE, then PMD_ACCESSED. migrate_pages(2)'s
    queue_pages_pmd() splits a huge zero PMD it meets into 512 zero PTEs."""
    k = load(FORKED)
    parent = k.task(30)
    k.touch(parent, BASE)
    k.touch(parent, THP_VA)
    child = k.fork(30, 31)
    data = k.idle_pages_read(child, BASE, 4096, 0).data
    # SET_HVA(BASE), PTE_IDLE x1 (0x51), then SET_HVA(THP_VA), PMD_ACCESSED x1 (0x11)
    assert data[:10] == b"\xa0" + BASE.to_bytes(8, "big") + b"\x51"
    assert data[10:20] == b"\xa0" + THP_VA.to_bytes(8, "big") + b"\x11"
    assert k.mm_counters(child)["rss_anon"] == 0
    split = k.event(lib.FP_EV_THP_SPLIT_PMD)
    assert migrate.migrate_pages(k, 31, [0], [0]) == 0  # nothing to move, yet it walks
    assert k.event(lib.FP_EV_THP_SPLIT_PMD) == split  # old == new: no pair, no walk
    k2 = load(FORKED.replace(small_machine(), small_machine(pmem="64MiB")))
    p2 = k2.task(30)
    k2.touch(p2, THP_VA)
    split = k2.event(lib.FP_EV_THP_SPLIT_PMD)
    assert migrate.migrate_pages(k2, 30, [0], [1]) == 0
    assert k2.event(lib.FP_EV_THP_SPLIT_PMD) == split + 1
    assert k2.entry(p2, THP_VA)[0] == 4  # a PTE now, the zero page's
    assert k2.maps_zero_page(p2, THP_VA) and k2.maps_zero_page(p2, THP_VA + 511 * PAGE)
    assert k.check() == [] and k2.check() == []


def test_a_guest_access_takes_a_real_page_even_where_the_host_mapped_the_zero_page():
    """KVM's faults here take no zero page: a load by the guest, or by the host
    before it, leaves the host a page of its own, mapped as a read fault maps one
    (read-only, clean; 4.20 maps the zero page read-only in the EPT and copies on the
    guest's first store). The EPT leaf is then read-only too (hva_to_pfn()'s
    writable), so the guest's store is an EPT violation that write-faults the host
    entry: writable, dirty, soft-dirty, one pgfault."""
    k = load(QEMU)
    t = k.task(500)
    hva = 0x7F0000000000 + 100 * PAGE  # slot 0, a page the machine file left empty
    k.touch(t, hva)
    assert k.maps_zero_page(t, hva)
    kvm.guest_touch(k, t, 100 * PAGE)
    assert not k.maps_zero_page(t, hva) and k.page_node(t, hva) == 0
    bits = lib.FP_PAGE_RW | lib.FP_PAGE_DIRTY | lib.FP_PAGE_SOFT_DIRTY
    assert k.entry(t, hva)[1] & bits == 0
    faults = k.event(lib.FP_EV_PGFAULT)
    kvm.guest_touch(k, t, 100 * PAGE, write=True)
    assert k.entry(t, hva)[1] & lib.FP_PAGE_RW and k.event(lib.FP_EV_PGFAULT) == faults + 1
    assert k.check() == []


def test_a_fork_zaps_the_parents_ept_so_a_guest_store_copies():
    """copy_page_range() write-protects the parent's private pages inside
    mmu_notifier_invalidate_range_start(): KVM zaps the EPT, and the guest's next
    store write-faults the host page, which is now shared: a copy of its own."""
    k = load(QEMU)
    t = k.task(500)
    before = k.entry(t, 0x7F0000000000)[1] >> 12 & 0xFFFFFFFFFF
    k.fork(500, 600)
    assert kvm.ept_entry(k, t, 0)[1] == 0  # zapped
    kvm.guest_touch(k, t, 0, write=True)
    after = k.entry(t, 0x7F0000000000)[1] >> 12 & 0xFFFFFFFFFF
    assert after != before and k.entry(k.task(600), 0x7F0000000000)[1] >> 12 & 0xFFFFFFFFFF == before
    assert k.check() == []


def test_a_store_to_a_shared_thp_counts_thp_fault_alloc():
    """do_huge_pmd_wp_page() counts THP_FAULT_ALLOC for every THP it allocates, the
    copy of a THP shared after fork as much as the huge zero page's."""
    k = load(FORKED)
    parent = k.task(30)
    k.touch(parent, THP_VA, write=True)
    k.fork(30, 31)
    before = k.event(lib.FP_EV_THP_FAULT_ALLOC)
    k.touch(parent, THP_VA, write=True)
    assert k.event(lib.FP_EV_THP_FAULT_ALLOC) == before + 1
    assert k.check() == []


VM_THP = small_machine() + """
[[process]]
pid = 700
name = "qemu-system-x86"
[[process.vma]]
start = 0x7f0000000000
size = "4MiB"
thp = true
[process.vm]
[[process.vm.slot]]
gpa = 0
size = "4MiB"
hva = 0x7f0000000000
"""


def test_a_guest_load_in_a_thp_region_faults_a_thp_mapped_as_4_20_maps_one():
    """Where the host would map the huge zero page, KVM's fault here takes a THP:
    __do_huge_pmd_anonymous_page() maps it maybe_pmd_mkwrite(pmd_mkdirty()), so
    writable, dirty and soft-dirty; after clear_refs 4 the guest's store write-faults
    the PMD again (soft-dirty): clear_refs zapped the EPT, and the new leaf follows
    the host entry."""
    k = load(VM_THP)
    t = k.task(700)
    kvm.guest_touch(k, t, 0x3000)
    level, e = k.entry(t, BASE)
    want = lib.FP_PAGE_PSE | lib.FP_PAGE_RW | lib.FP_PAGE_DIRTY | lib.FP_PAGE_SOFT_DIRTY
    assert level == 3 and e & want == want
    task_mmu.clear_refs(k, t, task_mmu.CLEAR_REFS_SOFT_DIRTY)
    assert k.entry(t, BASE)[1] & (lib.FP_PAGE_RW | lib.FP_PAGE_SOFT_DIRTY) == 0
    kvm.guest_touch(k, t, 0x5000, write=True)
    assert k.entry(t, BASE)[1] & (lib.FP_PAGE_RW | lib.FP_PAGE_SOFT_DIRTY) == lib.FP_PAGE_RW | lib.FP_PAGE_SOFT_DIRTY
    assert k.check() == []
