"""Swap slots (native/swapfile.c): a swap entry names a slot of the device; fork
shares it (swap_duplicate), so SwapFree does not move and smaps divides SwapPss by
the slot's count; pagemap shows the slot. Expected values derived by hand from 4.20's
mm/swapfile.c and fs/proc/task_mmu.c (smaps_account, smaps_pte_entry, PSS_SHIFT 12)."""
from __future__ import annotations

import errno
import os
import struct

import pytest

from fakeproc.kernel.native import KernelError
from fakeproc.machine import SWAP_ENTRY, load
from mountutil import mounted

BASE = 0x7F0000000000
PAGE = 4096
ONE_PAGE_VMAS = [0x7F0000100000 + i * 0x10000 for i in range(4)]

MACHINE = """
[machine]
swap = "1MiB"
upstream = true
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"

[[process]]
pid = 70
name = "swapper"
[[process.vma]]
start = 0x7f0000000000
size = "20KiB"
pages = "2 accessed, 3 swap"
""" + "".join(f"""[[process.vma]]
start = {a:#x}
size = "4KiB"
pages = "1 accessed"
""" for a in ONE_PAGE_VMAS) + """
[[process]]
pid = 71
name = "child"
fork_of = 70

[[process]]
pid = 72
name = "child2"
fork_of = 70
"""

# (4096 << 12) // 3: one page's Pss share when three processes map it
THIRD = 5592405


def field(text: str, key: str) -> int:
    return int(next(line for line in text.splitlines() if line.startswith(key + ":")).split()[1])


@pytest.mark.fuse
def test_fork_shares_swap_slots_swappss_divides_and_pagemap_names_the_slot():
    with mounted(MACHINE) as m:
        mi = m.read("proc/meminfo").decode()
        # 256 slots; the three swap entries hold slots 1-3, which the two forks share
        # (4.20: copy_one_pte -> swap_duplicate): 253 free, not 247
        assert field(mi, "SwapTotal") == 1024
        assert field(mi, "SwapFree") == 1012
        for pid in (70, 71, 72):
            smaps = m.read(f"proc/{pid}/smaps").decode()
            first = smaps.split("VmFlags", 1)[0]
            # 3 entries, each slot's count 3: 3 * THIRD = 16777215 >> 22 = 3 kB (3.99...)
            assert field(first, "Swap") == 12
            assert field(first, "SwapPss") == (3 * THIRD) >> 22 == 3
            # 2 present pages mapped three times: 2 * THIRD >> 22 = 2 kB (2.67)
            assert field(first, "Pss") == (2 * THIRD) >> 22 == 2
            status = m.read(f"proc/{pid}/status").decode()
            assert "VmSwap:\t      12 kB" in status.splitlines()
            # pagemap: PM_SWAP | PM_SOFT_DIRTY | offset << 5 (type 0), the same slots
            # in every process that shares them
            fd = os.open(m.proc_path(f"{pid}/pagemap"), os.O_RDONLY)
            try:
                words = struct.unpack("<5Q", os.pread(fd, 5 * 8, BASE // 4096 * 8))
            finally:
                os.close(fd)
            assert [hex(w) for w in words[2:]] == ["0x4080000000000020", "0x4080000000000040",
                                                   "0x4080000000000060"]
            rollup = m.read(f"proc/{pid}/smaps_rollup").decode()
            # six present pages, each a third: 6 * THIRD = 33554430 >> 22 = 7 kB, where
            # the per-VMA lines truncate to 2 + 1 + 1 + 1 + 1 = 6 (show_smaps_rollup sums
            # before it shifts)
            assert field(rollup, "Pss") == (6 * THIRD) >> 22 == 7
            assert field(rollup, "SwapPss") == 3
            assert field(rollup, "Swap") == 12


def test_a_shared_slot_is_freed_by_its_last_swap_entry():
    k = load(MACHINE)
    swap_map = k.native.swap_map
    assert k.swap_pages() == (256, 3)
    assert [swap_map[i] for i in range(5)] == [0, 3, 3, 3, 0]
    k.exit(71)  # zap_pte_range -> free_swap_and_cache: a count goes, the slot stays
    assert k.swap_pages() == (256, 3) and [swap_map[i] for i in range(1, 4)] == [2, 2, 2]
    k.touch(k.task(70), BASE + 2 * 4096)  # swap-in of slot 1: swap_free
    assert k.swap_pages() == (256, 3) and swap_map[1] == 1
    k.touch(k.task(72), BASE + 2 * 4096)  # the last entry naming slot 1
    assert k.swap_pages() == (256, 2) and swap_map[1] == 0
    assert k.check() == []
    k.exit(72)
    k.exit(70)
    assert k.swap_pages() == (256, 0)
    assert k.check() == []


RECLAIM = """
[machine]
swap = "16KiB"
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"

[[process]]
pid = 80
name = "cold"
[[process.vma]]
start = 0x7f0000000000
size = "20KiB"
pages = "5 idle"
"""


def swap_slots(k, pid: int, n: int) -> list[int]:
    """The slot offsets of the first n pages' entries (0: not a swap entry)."""
    words = struct.unpack(f"<{n}Q", k.pagemap(k.task(pid), BASE, n))
    return [(w & ((1 << 55) - 1)) >> 5 if w >> 62 & 1 else 0 for w in words]


def test_reclaim_fills_the_device_and_stops():
    k = load(RECLAIM)
    # 4 slots for 5 idle pages on a DRAM node with no peer: four are swapped
    k.shrink_node(0, 32)
    assert sorted(swap_slots(k, 80, 5)) == [0, 1, 2, 3, 4]
    assert k.swap_pages() == (4, 4)
    assert k.check() == []


def test_a_freed_slot_waits_for_the_search_to_wrap():
    """scan_swap_map_slots() of a rotational device goes on from cluster_next: slot 1,
    freed by a swap-in, is not taken again before the slots after the last one."""
    k = load(RECLAIM.replace('"16KiB"', '"32KiB"').replace('"5 idle"', '"3 swap, 1 idle"'))
    assert swap_slots(k, 80, 4) == [1, 2, 3, 0]
    k.touch(k.task(80), BASE)  # swap-in: slot 1 is free, the page is young
    assert k.swap_pages() == (8, 2)
    # the idle page (inactive list) goes to slot 4; the swapped-in page, new on the
    # active list, is aged to the inactive list and follows it to slot 5: slot 1 stays
    # free (first-fit would have given it the idle page)
    k.shrink_node(0, 32)
    assert swap_slots(k, 80, 4) == [5, 2, 3, 4]
    assert k.swap_pages() == (8, 4)
    assert k.check() == []


def test_machine_file_swap_entries_past_the_device_take_slots_past_its_end():
    text = RECLAIM.replace('"5 idle"', '"3 swap, 2 idle"').replace('"16KiB"', '"4KiB"', 1)
    k = load(text)
    assert k.swap_pages() == (1, 3)  # SwapFree reads 0
    assert swap_slots(k, 80, 3) == [1, 2, 3]
    assert k.shrink_node(0, 32) == 0  # no room: the idle pages stay
    assert k.swap_pages() == (1, 3)
    assert k.check() == []


def test_the_slot_map_grows_with_the_slots_used_not_with_the_device():
    """A 1 TiB device with one swap entry holds a map of 1024 slots (the first
    growth), 4 KiB, not 2^28 counts; past a full device, slots are handed out in
    order and the map doubles."""
    text = RECLAIM.replace('"16KiB"', '"1TiB"', 1).replace('"5 idle"', '"1 swap, 4 idle"')
    k = load(text)
    assert k.swap_pages() == (1 << 28, 1) and k.native.swap_slots == 1024
    text = RECLAIM.replace('"16KiB"', '"4KiB"', 1).replace('size = "20KiB"', 'size = "8MiB"') \
        .replace('"5 idle"', '"2000 swap"')
    k = load(text)
    assert k.swap_pages() == (1, 2000) and k.native.swap_slots == 2048
    assert swap_slots(k, 80, 4) == [1, 2, 3, 4]
    k.touch(k.task(80), BASE + 2 * PAGE)  # slot 3 (past the device) is free again
    k.set_ptes(k.task(80), BASE + 2 * PAGE, 1, SWAP_ENTRY, None, k.mm(k.task(80).mm_id).vmas[0])
    assert swap_slots(k, 80, 4) == [1, 2, 3, 4]  # and taken again first
    assert k.check() == []


def test_a_fork_that_runs_out_of_memory_leaves_no_child_and_no_slot_reference():
    """dup_mmap() failing half-way makes fork() fail and mmput() tears down what was
    copied: no child, and the swap entry it had copied gives its slot reference back.
    Node 0 (4 MiB) is full of the filler's pages: the child's first page tables fit,
    the copy of the second VMA finds no page for its tables."""
    k = load("""
[machine]
swap = "4KiB"
[[node]]
type = "dram"
size = "4MiB"
cpus = "0"
[[process]]
pid = 10
name = "p"
[[process.vma]]
start = 0x7f0000000000
size = "4KiB"
pages = "1 swap"
[[process.vma]]
start = 0x7f8000000000
size = "4KiB"
pages = "1 dirty"
[[process]]
pid = 20
name = "filler"
[[process.vma]]
start = 0x7f0000000000
size = "4MiB"
pages = "1010 dirty@0"
""")
    with pytest.raises(KernelError) as e:
        k.fork(10, 11)
    assert e.value.errno == errno.ENOMEM
    assert k.task(11) is None and k.native.swap_map[1] == 1
    assert k.check() == []
