"""Swapping out a THP on a rotational device (4.20 mm/vmscan.c shrink_page_list).

The emulated swap device is rotational (next-fit slots, no cluster_info), so
get_swap_pages() has no free cluster to give a THP and add_to_swap() fails; the
THP is split onto the page list (split_huge_page_to_list(), thp_swpout_fallback),
the head is swapped as a base page, and the tails, appended 511 down to 1 by
lru_add_page_tail(), are reclaimed after it: old PTEs (page_referenced() cleared
the PMD's bit before the split), so each takes the next slot. A pinned THP fails
can_split_huge_page() and is activated whole; a tail with no slot left is
activated. Every expected number is counted by hand in the comments.
"""
from __future__ import annotations

import os
import struct

from fakeproc.kernel.native import lib
from fakeproc.machine import load
from fakeproc.ctl.client import Client
from mountutil import mounted
from test_pgtable_deposit import SWAP_MACHINE

BASE = 0x7F0000000000
PAGE = 4096

def machine(swap: str) -> str:
    """One idle THP on PMEM node 1 (test_pgtable_deposit's machine), swap of that size."""
    return SWAP_MACHINE.replace('swap = "8MiB"', f'swap = "{swap}"')


def slots(words: tuple[int, ...]) -> list[int]:
    """Swap offsets of pagemap entries (PM_SWAP, offset << 5 of type 0); 0 if present."""
    return [(w & ((1 << 55) - 1)) >> 5 if w >> 62 & 1 else 0 for w in words]


def test_a_thp_is_split_and_its_pages_swapped_head_first_then_tails_511_to_1():
    k = load(machine("8MiB"))
    t = k.task(10)
    k.age_active(1)
    assert k.shrink_node(1, 32) == 512  # the batch ends with the THP (it counts 512)
    ev = k.event
    assert ev(lib.FP_EV_THP_SWPOUT_FALLBACK) == 1
    assert ev(lib.FP_EV_THP_SPLIT_PAGE) == 1 and ev(lib.FP_EV_THP_SPLIT_PMD) == 1
    assert ev(lib.FP_EV_PSWPOUT) == 512
    # pgscan counts what was taken from the list (the THP: 512); pgsteal the 512 freed
    assert ev(lib.FP_EV_PGSCAN_KSWAPD) == 512 and ev(lib.FP_EV_PGSTEAL_KSWAPD) == 512
    assert ev(lib.FP_EV_PGACTIVATE) == 0
    # next-fit from slot 1: the head gets 1, then tail 511 gets 2 ... tail 1 gets 512
    got = slots(struct.unpack("<512Q", k.pagemap(t, BASE, 512)))
    assert got[0] == 1 and got[511] == 2 and got[510] == 3 and got[1] == 512
    assert sorted(got) == list(range(1, 513))
    assert k.swap_pages() == (2048, 512)
    assert k.mm_counters(t)["swap"] == 512
    assert k.check() == []


def test_the_tails_that_find_no_slot_are_activated():
    # 1 MiB = 256 slots: the head takes slot 1, tails 511..257 slots 2..256; tails
    # 256..1 find the device full and go to the active list, one base page each
    k = load(machine("1MiB"))
    t = k.task(10)
    k.age_active(1)
    aged = k.event(lib.FP_EV_PGDEACTIVATE)  # the THP (512), from the active list
    assert k.shrink_node(1, 32) == 256
    assert k.event(lib.FP_EV_PSWPOUT) == 256 and k.event(lib.FP_EV_PGACTIVATE) == 256
    got = slots(struct.unpack("<512Q", k.pagemap(t, BASE, 512)))
    assert got[0] == 1 and got[511] == 2 and got[257] == 256
    assert got[1:257] == [0] * 256
    assert k.swap_pages() == (256, 256)
    # then shrink_node_memcg()'s closing rebalance: the inactive anon list (0) is low
    # against 256 active and swap exists, so SWAP_CLUSTER_MAX = 32 are deactivated
    stat = k.node_stat(1)
    assert k.event(lib.FP_EV_PGDEACTIVATE) - aged == 32
    assert stat[lib.FP_NR_ACTIVE_ANON] == 224 and stat[lib.FP_NR_INACTIVE_ANON] == 32
    assert stat[lib.FP_NR_ANON_THPS] == 0 and stat[lib.FP_NR_ANON_PAGES] == 256
    assert k.check() == []


def test_a_pinned_thp_cannot_be_split_and_is_activated_whole():
    k = load(machine("8MiB"))
    t = k.task(10)
    k.pin_page(t, BASE)
    k.age_active(1)
    assert k.shrink_node(1, 32) == 0
    # can_split_huge_page() fails before split_huge_page(): no split event is counted
    assert k.event(lib.FP_EV_THP_SPLIT_PAGE) == 0 and k.event(lib.FP_EV_THP_SPLIT_PAGE_FAILED) == 0
    # nothing is reclaimed, so every priority from 9 (512 >> 9 = 1, the first with a
    # target) down to 0 takes the THP, activates it, and shrink_node_memcg()'s closing
    # rebalance (inactive 0 against 512 active) deactivates it again: 10 activations,
    # each counting 1 in 4.20's pgactivate (a page; base pages only from 5.8)
    assert k.event(lib.FP_EV_PGACTIVATE) == 10 and k.event(lib.FP_EV_PSWPOUT) == 0
    assert k.node_stat(1)[lib.FP_NR_ANON_THPS] == 1
    assert k.swap_pages() == (2048, 0)
    assert k.check() == []


def vmstat(text: str) -> dict[str, int]:
    return {key: int(v) for key, v in (line.split() for line in text.splitlines())}


# node 1 below its low watermark once one more page is faulted there: kswapd
# (upstream mode for pagemap, a later file)
KSWAPD_MACHINE = machine("8MiB").replace('swap = "8MiB"', 'swap = "8MiB"\nupstream = true').replace(
    'size = "64MiB"', 'size = "4MiB"\nwatermarks = ["0KiB", "3MiB", "3MiB"]').replace(
    'cpu = 0', 'cpu = 0\npolicy = "bind:1"') + """[[process.vma]]
start = 0x7f0000400000
size = "64KiB"
"""


def test_kswapd_swaps_a_thp_through_the_fallback_and_the_mount_shows_it():
    with mounted(KSWAPD_MACHINE) as m:
        with Client(m.path) as c:
            # the fault leaves 2 MiB - 4 KiB free on node 1, below low (3 MiB): kswapd
            # wakes and runs at the clock step, reclaiming to high; the THP (active:
            # its fault made it young) is aged, then split and swapped
            assert c.touch(10, 0x7F0000400000, write=True)["node"] == 1
            c.step(1.0)
        vs = vmstat(m.read("proc/vmstat").decode())
        assert (vs["thp_swpout"], vs["thp_swpout_fallback"], vs["thp_split_page"]) == (0, 1, 1)
        assert (vs["pswpout"], vs["thp_split_pmd"], vs["pgsteal_kswapd"]) == (512, 1, 512)
        fd = os.open(m.proc_path("10/pagemap"), os.O_RDONLY)
        try:
            raw = os.pread(fd, 512 * 8, BASE // PAGE * 8)
        finally:
            os.close(fd)
        words = struct.unpack("<512Q", raw)
        # PM_SWAP (bit 62) | PM_SOFT_DIRTY (55) | offset << 5: the head in slot 1, the
        # last tail (511) in slot 2, the first tail in slot 512 = 0x200 << 5 = 0x4000
        assert hex(words[0]) == "0x4080000000000020"
        assert hex(words[511]) == "0x4080000000000040"
        assert hex(words[1]) == "0x4080000000004000"
        first = m.read("proc/10/smaps").decode().split("VmFlags", 1)[0]
        assert "AnonHugePages:         0 kB" in first and "Swap:               2048 kB" in first
