"""Reclaim (INTERFACES.md 4) on the kernel model, and its counters through the mount.

Scenario: a DRAM node (4 MiB = 1024 pages, watermarks pinned) whose peer is a
PMEM node; one process with 896 pages of anonymous memory, some hot.
"""
from __future__ import annotations

import pytest

from fakeproc.kernel.native import lib
from fakeproc.machine import load
from mountutil import mounted

BASE = 0x7F0000000000
PAGE = 4096
DRAM_PMEM = """
distances = [[10, 17], [17, 10]]
[machine]
swap = "0"
[[node]]
type = "dram"
size = "4MiB"
cpus = "0"
watermarks = ["256KiB", "512KiB", "1MiB"]
[[node]]
type = "pmem"
size = "64MiB"
watermarks = ["256KiB", "512KiB", "1MiB"]

[[process]]
pid = 10
name = "app"
[[process.vma]]
start = 0x7f0000000000
size = "3584KiB"
node = 0
pages = "896 accessed"
"""


def pages_on(k, task, node: int, first: int, count: int) -> list[int]:
    return [i for i in range(first, first + count) if k.page_node(task, BASE + i * PAGE) == node]


def counters(k) -> dict[str, int]:
    from fakeproc.kernel import vmstat
    return vmstat.global_counters(k)


def test_watermarks_and_peer():
    k = load(DRAM_PMEM)
    assert k.watermarks(0) == (64, 128, 256)
    assert k.node(0).peer == 1
    # the default rule: min_free_kbytes = int_sqrt(68 MiB in kB * 16) = 1043 kB -> 260
    # pages, node 0's share 260 * 1024 / 17408 = 15; delta = max(3, 1024 * 10 / 10000) = 3
    k2 = load(DRAM_PMEM.replace('watermarks = ["256KiB", "512KiB", "1MiB"]\n', ""))
    assert k2.watermarks(0) == (15, 18, 21)


def kswapd(k, nid: int) -> int:
    """Wake node nid's kswapd and let it run (balance_pgdat())."""
    k.native.nodes[nid].kswapd_wake = 1
    return k.run_kswapd()


# kswapd on DRAM_PMEM after aging, by hand: 1024 - PFN 0 (reserved at boot) - 896 - 5
# page tables (PGD, PUD, PMD, 2 PTE) = 122 free, high 256, nr_to_reclaim = 256. The inactive list's tail is page 0
# (aging moved page 0 first, each to the head). Each priority scans inactive >> prio
# pages; demoted pages are not reclaimed pages (the RFC counts them nowhere), so the
# priority drops every round until the node is balanced at a round's start.
def test_cold_pages_are_demoted_before_hot_ones_and_hot_pages_stay_active():
    k = load(DRAM_PMEM)
    t = k.task(10)
    # age: the active (new anon) pages move to the inactive list with their accessed
    # bits cleared (shrink_active_list's page_referenced)
    k.age_active(0)
    assert k.check() == []
    # pages 0..99 are hot: touched again after aging; the rest are not
    for i in range(100):
        k.touch(t, BASE + i * PAGE)
    assert k.node_stat(0)[lib.FP_NR_FREE_PAGES] == 122
    # priorities 12-10 scan 0 pages; 9: 1 (page 0), 8: 3, 7: 6, 6: 13, 5: 27 -> pages
    # 0..49, all hot, activated; 4: 846 >> 4 = 52 -> 50..99 activated, 100 and 101
    # demoted (free 124); 3: 794 >> 3 = 99 -> 102..200 (free 223); 2: 695 >> 2 = 173
    # -> 201..373 (free 396); balanced at the next round's start
    assert kswapd(k, 0) == 0  # nothing reclaimed: every page that left was demoted
    demoted = pages_on(k, t, 1, 0, 896)
    assert demoted == list(range(100, 374))
    assert [k.page_node(t, BASE + i * PAGE) for i in range(100)] == [0] * 100
    c = counters(k)
    assert (c["pgdemote_kswapd"], c["pgmigrate_success"], c["pgactivate"]) == (274, 274, 100)
    assert c["pgscan_kswapd"] == 1 + 3 + 6 + 13 + 27 + 52 + 99 + 173 == 374
    assert c["pgsteal_kswapd"] == 0 and c["pageoutrun"] == 1
    st = k.node_stat(0)
    assert st[lib.FP_NR_FREE_PAGES] == 396 and st[lib.FP_NR_ACTIVE_ANON] == 100
    # AnonPages moved from node 0's meminfo to node 1's
    assert k.node_stat(1)[lib.FP_NR_ANON_PAGES] == 274
    assert st[lib.FP_NR_ANON_PAGES] == 896 - 274
    # the demoted copies are inactive and were installed old (accessed bit clear)
    _, entry = k.entry(t, BASE + demoted[0] * PAGE)
    assert not entry & lib.FP_PAGE_ACCESSED
    assert k.check() == []


def test_direct_reclaim_demotes_down_to_priority_zero():
    """The RFC migrates the chosen pages after shrink_page_list()'s loop and adds them
    to no count: do_try_to_free_pages() never reaches nr_to_reclaim on a node whose
    reclaimable memory is anonymous, so it goes on to priority 0, where the whole
    inactive list is scanned: every cold page is demoted, the hot ones (activated on
    the way, then deactivated by the rebalance as their bits were cleared) too."""
    k = load(DRAM_PMEM)
    t = k.task(10)
    k.age_active(0)
    for i in range(100):
        k.touch(t, BASE + i * PAGE)
    assert k.shrink_node(0, 32, direct=True) == 0
    assert pages_on(k, t, 1, 100, 796) == list(range(100, 896))  # every cold page
    c = counters(k)
    assert c["pgdemote_direct"] == c["pgmigrate_success"] >= 796 and c["pgsteal_direct"] == 0
    assert k.check() == []


def test_pg_referenced_alone_never_saves_an_anonymous_page():
    k = load(DRAM_PMEM)
    t = k.task(10)
    k.age_active(0)  # everything inactive, accessed bits clear
    for i in range(896):  # PG_referenced set (what MPOL_MF_SW_YOUNG does), PTEs stay old
        pfn = (k.entry(t, BASE + i * PAGE)[1] >> 12) & 0xFFFFFFFFFF
        k.native.pages[pfn].flags |= lib.FP_PG_REFERENCED
    # kswapd as in the test above, but no page is referenced through a PTE: priority
    # 9 demotes page 0, 8 pages 1-3, 7: 4-9, 6: 10-22, 5: 23-49, 4: 50-101, 3: 794 >> 3
    # = 99 -> 102..200; free 122 + 201 = 323 >= 256
    kswapd(k, 0)
    assert pages_on(k, t, 1, 0, 896) == list(range(201))
    c = counters(k)
    assert c["pgactivate"] == 0 and c["pgdemote_kswapd"] == 201
    assert k.check() == []


def test_idle_pages_scans_make_pages_demotable():
    def referenced_then_reclaim(scan: bool) -> dict[str, int]:
        k = load(DRAM_PMEM)
        t = k.task(10)
        k.age_active(0)
        for i in range(896):
            k.touch(t, BASE + i * PAGE)  # every page referenced again
        if scan:
            k.idle_pages_read(t, BASE, 1 << 16, 0)  # clears the accessed bits
        kswapd(k, 0)
        assert k.check() == []
        return counters(k) | {"free": k.node_stat(0)[lib.FP_NR_FREE_PAGES]}

    without, with_scan = referenced_then_reclaim(False), referenced_then_reclaim(True)
    # without a scan the second-chance check activates referenced pages first, and only
    # pages aged back to the inactive list are demoted; after a scan the first pages
    # looked at are demoted at once
    assert without["pgactivate"] > 0 and with_scan["pgactivate"] == 0
    assert with_scan["pgscan_kswapd"] < without["pgscan_kswapd"]
    # after the scan kswapd balances the node (201 pages, as in the test above); without
    # it, the pages kswapd deactivates again are too few before priority 1
    assert with_scan["free"] == 122 + 201 and with_scan["pgdemote_kswapd"] == 201
    assert without["free"] < 256 and without["pgdemote_kswapd"] < 201


def test_allocation_pressure_wakes_kswapd_which_reclaims_to_high():
    k = load(DRAM_PMEM.replace('size = "3584KiB"', 'size = "8MiB"'))
    t = k.task(10)
    k.age_active(0)
    for i in range(896, 1900):  # fault beyond DRAM: direct reclaim and kswapd wake-ups
        k.touch(t, BASE + i * PAGE, write=True)
    k.run_kswapd()
    free = k.node_stat(0)[lib.FP_NR_FREE_PAGES]
    assert free >= k.watermarks(0)[2]
    assert all(k.page_node(t, BASE + i * PAGE) in (0, 1) for i in range(1900))
    c = counters(k)
    # the first fault below low woke kswapd; faults below min reclaimed directly,
    # and direct reclaim demotes down to priority 0 (the test above), so the kswapd
    # that runs afterwards finds the node balanced
    assert c["allocstall_normal"] >= 1 and c["pgdemote_direct"] > 0
    assert c["pageoutrun"] >= 1  # every kswapd run, balanced already or not
    assert k.check() == []


def test_pmem_node_swaps_when_there_is_swap():
    text = DRAM_PMEM.replace('swap = "0"', 'swap = "8MiB"').replace('node = 0', 'node = 1')
    k = load(text)
    t = k.task(10)
    k.age_active(1)
    assert k.shrink_node(1, 100) >= 100
    c = counters(k)
    assert c["pswpout"] >= 100 and c["pgsteal_kswapd"] == c["pswpout"]
    assert k.mm_counters(t)["swap"] == c["pswpout"]
    assert k.swap_pages()[1] == c["pswpout"]
    # a swapped page faults back in (pswpin) on an access
    swapped = next(i for i in range(896) if k.page_node(t, BASE + i * PAGE) is None)
    k.touch(t, BASE + swapped * PAGE)
    assert counters(k)["pswpin"] == 1
    assert k.check() == []


def test_pmem_without_swap_reclaims_nothing_anonymous():
    k = load(DRAM_PMEM.replace('node = 0', 'node = 1'))
    k.age_active(1)
    assert k.shrink_node(1, 100) == 0
    assert counters(k)["pgscan_kswapd"] == 0


@pytest.mark.fuse
def test_counters_reach_the_mount():
    text = DRAM_PMEM + """
[process.workload]
pattern = "uniform"
rate = 2000
"""
    text = text.replace('size = "3584KiB"', 'size = "6MiB"')
    with mounted(text, extra_args=["--no-paused", "--rate", "5"]) as m:
        import time
        deadline = time.monotonic() + 30
        while True:
            vm = dict(line.split() for line in m.read("proc/vmstat").decode().splitlines())
            if int(vm["pgmigrate_success"]) > 0:
                break
            assert time.monotonic() < deadline, "no demotion happened"
            time.sleep(0.1)
        n1 = m.read("sys/devices/system/node/node1/meminfo").decode()
        anon1 = int(next(line for line in n1.splitlines() if "AnonPages:" in line).split()[3])
        assert anon1 > 0
        assert int(vm["pgsteal_kswapd"]) == 0


def test_a_full_peer_is_reclaimed_by_its_own_kswapd_to_swap():
    # 8 MiB DRAM + 8 MiB PMEM + 64 MiB swap and a 24 MiB process: demotion fills the
    # peer, the peer's kswapd swaps, nobody is OOM-killed
    text = """
distances = [[10, 17], [17, 10]]
[machine]
swap = "64MiB"
[[node]]
type = "dram"
size = "8MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "8MiB"
[[process]]
pid = 10
name = "big"
[[process.vma]]
start = 0x7f0000000000
size = "24MiB"
"""
    k = load(text)
    t = k.task(10)
    for i in range(6144):
        k.touch(t, BASE + i * PAGE, write=True)
        if i % 256 == 0:
            k.run_kswapd()
    c = counters(k)
    assert k.task(10) is not None and c["oom_kill"] == 0
    assert c["pswpout"] > 0 and c["pgmigrate_success"] > 0
    assert k.check() == []


def test_shmem_on_dram_is_not_demoted():
    """The RFC diverts PageAnon() pages; shmem is swap-backed but not anonymous: it
    goes to swap as on any node (here there is none: it is activated)."""
    text = DRAM_PMEM.replace('size = "3584KiB"\nnode = 0\npages = "896 accessed"',
                             'size = "3584KiB"\nkind = "shm"\npath = "/SYSV0"\nnode = 0\npages = "896 idle"')
    k = load(text)
    assert k.node_stat(0)[lib.FP_NR_SHMEM] == 896
    assert k.shrink_node(0, 64) == 0
    c = counters(k)
    assert k.node_stat(1)[lib.FP_NR_SHMEM] == 0 and k.node_stat(0)[lib.FP_NR_SHMEM] == 896
    assert c["pgmigrate_success"] == c["pswpout"] == 0 and c["pgactivate"] > 0
    assert k.check() == []
    k = load(text.replace('swap = "0"', 'swap = "8MiB"'))
    # swapped pages are reclaimed pages: priority 5 swaps 896 >> 5 = 28, priority 4
    # 868 >> 4 = 54 in batches of 32 and 22 (60 < 64 after the first): 82
    assert k.shrink_node(0, 64) == 82
    assert counters(k)["pswpout"] == 82 and k.node_stat(1)[lib.FP_NR_SHMEM] == 0
    assert k.check() == []


FILE_TEXT = """
distances = [[10, 17], [17, 10]]
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "64MiB"
[[process]]
pid = 10
name = "app"
[[process.vma]]
start = 0x7f0000000000
size = "4KiB"
perms = "r-xp"
path = "/usr/bin/app"
pages = "1 accessed@0"
[[process.vma]]
start = 0x7f0000200000
size = "4KiB"
perms = "r--p"
path = "/data/table"
pages = "1 accessed@0"
"""


def test_referenced_executable_file_pages_are_activated_and_stay_active():
    """INTERFACES.md 4. Both file pages start inactive, accessed, text at the tail.
    shrink_node(0, 1): prio 1 scans one page (2 >> 1), the text: referenced once and
    executable -> activated (pgactivate 1). Prio 0 scans the one inactive page left,
    the table: referenced once, not executable -> PG_referenced, stays inactive.
    Nothing is reclaimed. Then the text, touched again, survives active aging."""
    k = load(FILE_TEXT)
    t = k.task(10)
    assert (k.node_stat(0)[lib.FP_NR_ACTIVE_FILE], k.node_stat(0)[lib.FP_NR_INACTIVE_FILE]) == (0, 2)
    assert k.shrink_node(0, 1) == 0
    st = k.node_stat(0)
    assert (st[lib.FP_NR_ACTIVE_FILE], st[lib.FP_NR_INACTIVE_FILE]) == (1, 1)
    assert counters(k)["pgactivate"] == 1
    assert [k.page_node(t, a) for a in (BASE, BASE + 0x200000)] == [0, 0]
    k.touch(t, BASE)
    k.age_active(0)
    assert k.node_stat(0)[lib.FP_NR_ACTIVE_FILE] == 1
    assert counters(k)["pgdeactivate"] == 0
    assert k.check() == []


def test_a_full_swap_device_still_ages_the_active_anon_list():
    """4.20's shrink_node_memcg() ends with shrink_active_list(SWAP_CLUSTER_MAX,
    ACTIVE_ANON) when inactive_list_is_low(anon), which asks whether swap exists, not
    whether it has room. PMEM node 1: 40 active idle anon pages, 8 idle file pages,
    the one swap slot taken. The file pages are reclaimed (anon is not scanned with no
    free slot) and the first pass's rebalance deactivates 32 anon pages (0 x 1 < 40);
    after it 32 x 1 >= 8 stops any more."""
    k = load("""
distances = [[10, 17], [17, 10]]
[machine]
swap = "4KiB"
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "64MiB"
[[process]]
pid = 10
name = "app"
[[process.vma]]
start = 0x7f0000000000
size = "256KiB"
pages = "1 swap, 40 idle@1"
[[process.vma]]
start = 0x7f0000200000
size = "64KiB"
perms = "r--p"
path = "/data/f"
pages = "8 idle@1"
""")
    assert k.swap_pages() == (1, 1)
    assert k.shrink_node(1, 4) >= 4
    st = k.node_stat(1)
    assert (st[lib.FP_NR_ACTIVE_ANON], st[lib.FP_NR_INACTIVE_ANON]) == (8, 32)
    c = counters(k)
    assert c["pgdeactivate"] == c["pgrefill"] == 32
    assert c["pswpout"] == 0
    assert k.check() == []


def test_commit_limit_counts_swap():
    """vm_commit_limit(): RAM pages x overcommit_ratio 50 % + swap pages. 128 MiB of RAM
    (32768 pages) and 1 page of swap: 16384 + 1 = 16385 pages = 65540 kB."""
    from fakeproc.kernel import vmstat
    k = load(FILE_TEXT.replace('distances = [[10, 17], [17, 10]]\n',
                               'distances = [[10, 17], [17, 10]]\n[machine]\nswap = "4KiB"\n'))
    assert vmstat.meminfo(k)["CommitLimit"] == 65540


PAGE_CACHE_FIRST = """
distances = [[10, 17], [17, 10]]
[[node]]
type = "dram"
size = "16MiB"
cpus = "0"
watermarks = ["1MiB", "2MiB", "3MiB"]
[[node]]
type = "pmem"
size = "64MiB"
[[process]]
pid = 50
name = "app"
[[process.vma]]
start = 0x7f0000000000
size = "4MiB"
pages = "1024 idle@0"
[[process.vma]]
start = 0x7f0001000000
size = "1MiB"
kind = "file"
path = "/data/f"
pages = "256 idle@0"
"""


def test_page_cache_goes_first_when_there_is_enough_of_it():
    """get_scan_count() (the RFC keeps it, less the no-swap shortcut on DRAM), by hand.
    After aging: 1024 inactive anon, 256 inactive page cache, 2810 free (high 768);
    recent scanned/rotated: anon 2048/1024 (1024 new active pages, then aged), file
    256/0. Priorities 12-9: no cache trap (256 + 2810 > 768) and 256 >> prio = 0
    inactive file to scan, so SCAN_FRACT: each call halves the stats of a type whose
    scans exceed a quarter of its pages; anon weighs 60 * (s + 1) / (r + 1) = 119, file
    140 * (s + 1) / (r + 1) = 18060 at 12, then 9100; 1024 >> 10 = 1 and 1023 >> 9 = 1
    anon page, rounded up: pages 0 and 1 demoted. From priority 8 (256 >> 8 = 1) the
    inactive file list is large enough: SCAN_FILE. 1 + 1 + 3 + 7 + 15 + 28 = 55 pages
    of page cache reclaimed, the last batch at priority 3 passing the 32 asked for."""
    k = load(PAGE_CACHE_FIRST)
    t = k.task(50)
    k.age_active(0)
    assert list(k.native.nodes[0].recent_scanned) == [2048, 256]
    assert list(k.native.nodes[0].recent_rotated) == [1024, 0]
    assert k.shrink_node(0, 32) == 55
    c = counters(k)
    assert (c["pgdemote_kswapd"], c["pgsteal_kswapd"], c["pgscan_kswapd"]) == (2, 55, 57)
    assert pages_on(k, t, 1, 0, 1024) == [0, 1]
    assert k.check() == []
