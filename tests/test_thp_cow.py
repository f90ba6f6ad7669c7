"""A store to a THP shared after fork (4.20 mm/huge_memory.c do_huge_pmd_wp_page()):
a THP of its own when one can be had (thp_fault_alloc), else
do_huge_pmd_wp_page_fallback(): 512 base pages, the PMD's deposited table mapping
them, the other mapper keeping the THP (thp_fault_fallback, no PMD split counted)."""
from __future__ import annotations

from fakeproc.kernel.native import lib
from fakeproc.machine import load
from machines import small_machine

THP_VA = 0x7F0000200000
PAGE = 4096
# 16 MiB = 8 blocks. The parent's THP takes block 1 (block 0 holds the page tables);
# process 50 populates 6 MiB of base pages, splitting more blocks, and is killed by
# the test (2 MiB blocks never merge again: their pages stay base pages); the
# blocker's three THPs take the last whole blocks.
MACHINE = small_machine(dram="16MiB") + """
[[process]]
pid = 30
name = "parent"
[[process.vma]]
start = 0x7f0000200000
size = "2MiB"
thp = true
pages = "1 thp-dirty"
[[process]]
pid = 31
name = "child"
fork_of = 30
[[process]]
pid = 50
name = "scratch"
[[process.vma]]
start = 0x7f0000000000
size = "6MiB"
populate = true
[[process]]
pid = 40
name = "blocker"
[[process.vma]]
start = 0x7f0000000000
size = "6MiB"
thp = true
pages = "3 thp-idle"
"""


def test_a_store_to_a_shared_thp_without_a_free_block_copies_into_base_pages():
    k = load(MACHINE)
    k.exit(50)
    parent, child = k.task(30), k.task(31)
    thp = k.entry(child, THP_VA)[1] >> 12 & 0xFFFFFFFFFF
    events = {e: k.event(e) for e in (lib.FP_EV_THP_FAULT_ALLOC, lib.FP_EV_THP_FAULT_FALLBACK,
                                      lib.FP_EV_THP_SPLIT_PMD, lib.FP_EV_PGFAULT)}
    k.touch(parent, THP_VA + 7 * PAGE, write=True)
    assert {e: k.event(e) - n for e, n in events.items()} == {
        lib.FP_EV_THP_FAULT_ALLOC: 0, lib.FP_EV_THP_FAULT_FALLBACK: 1, lib.FP_EV_THP_SPLIT_PMD: 0,
        lib.FP_EV_PGFAULT: 1}
    # the parent: a PTE table of 512 base pages of its own, each writable, dirty and
    # soft-dirty; the child keeps the THP, now mapped once
    entries = [k.entry(parent, THP_VA + i * PAGE) for i in range(512)]
    want = lib.FP_PAGE_PRESENT | lib.FP_PAGE_RW | lib.FP_PAGE_DIRTY | lib.FP_PAGE_SOFT_DIRTY
    assert all(level == 4 and e & want == want for level, e in entries)
    pfns = {e >> 12 & 0xFFFFFFFFFF for _, e in entries}
    assert len(pfns) == 512 and not pfns & set(range(thp, thp + 512))
    level, e = k.entry(child, THP_VA)
    assert level == 3 and e & lib.FP_PAGE_PSE and e >> 12 & 0xFFFFFFFFFF == thp
    assert k.mm_counters(parent)["rss_anon"] == 512 and k.mm_counters(child)["rss_anon"] == 512
    assert k.range_stats(child, THP_VA, THP_VA + (2 << 20))["mapmax"] == 1
    assert k.check() == []


def test_with_a_free_block_the_copy_is_a_thp():
    k = load(MACHINE.replace('pages = "3 thp-idle"', 'pages = "2 thp-idle"'))
    parent = k.task(30)
    alloc = k.event(lib.FP_EV_THP_FAULT_ALLOC)
    k.touch(parent, THP_VA, write=True)
    assert k.event(lib.FP_EV_THP_FAULT_ALLOC) == alloc + 1
    assert k.entry(parent, THP_VA)[0] == 3
    assert k.check() == []
