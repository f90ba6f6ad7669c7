"""Tests of fakeproc.fs.formats against hand-written 4.20 output (INTERFACES.md 2 and 5).

Every expected string below is a literal written from the spec or real kernel output,
never computed by the code under test. The *_layout_matches_host tests feed values read
from this machine's (6.x) files back in and compare only the keys the spec lists.
"""
from __future__ import annotations

import dataclasses
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakeproc.fs import formats as F

# ------------------------------------------------------------------ node_list


@pytest.mark.parametrize("ids, expected", [
    ([], "\n"),
    ([0], "0\n"),
    ([5], "5\n"),
    ([0, 1], "0-1\n"),
    ([0, 1, 2, 3], "0-3\n"),
    ([0, 2], "0,2\n"),
    ([0, 1, 2, 5], "0-2,5\n"),
    ([3, 1, 2, 2], "1-3\n"),
    ([1, 3, 5, 6, 7, 9], "1,3,5-7,9\n"),
    ([*range(26), *range(52, 78)], "0-25,52-77\n"),
    ([1023], "1023\n"),
])
def test_node_list(ids: list[int], expected: str) -> None:
    assert F.node_list(ids) == expected


def test_node_list_accepts_sets_and_generators() -> None:
    assert F.node_list({2, 0, 1}) == "0-2\n"
    assert F.node_list(i for i in (4, 6)) == "4,6\n"


def test_node_list_rejects_negative() -> None:
    with pytest.raises(ValueError):
        F.node_list([-1, 0])


# ------------------------------------------------------------------ cpumap


@pytest.mark.parametrize("nbits, expected", [
    (2, "3\n"),
    (6, "3f\n"),
    (40, "ff,ffffffff\n"),
    (64, "ffffffff,ffffffff\n"),
    (104, "ff,ffffffff,ffffffff,ffffffff\n"),
])
def test_cpumap_spec_examples_all_set(nbits: int, expected: str) -> None:
    assert F.cpumap(range(nbits), nbits) == expected


@pytest.mark.parametrize("nbits, expected", [
    (2, "0\n"),
    (6, "00\n"),
    (40, "00,00000000\n"),
    (64, "00000000,00000000\n"),
    (104, "00,00000000,00000000,00000000\n"),
])
def test_cpumap_cpuless_node_prints_zeros_of_same_width(nbits: int, expected: str) -> None:
    assert F.cpumap([], nbits) == expected


def test_cpumap_partial_masks() -> None:
    assert F.cpumap([1, 4], 6) == "12\n"
    assert F.cpumap([0, 33], 40) == "02,00000001\n"
    assert F.cpumap(range(32, 40), 40) == "ff,00000000\n"
    assert F.cpumap([32], 33) == "1,00000000\n"
    assert F.cpumap([31], 32) == "80000000\n"
    assert F.cpumap([4], 5) == "10\n"
    assert F.cpumap([0], 1) == "1\n"
    # cpulist 0-25,52-77 on a 104-CPU machine (worked out by hand)
    assert (F.cpumap([*range(26), *range(52, 78)], 104)
            == "00,00003fff,fff00000,03ffffff\n")


def test_cpumap_zero_bits() -> None:
    assert F.cpumap([], 0) == "\n"


def test_cpumap_rejects_bits_out_of_range() -> None:
    with pytest.raises(ValueError):
        F.cpumap([2], 2)
    with pytest.raises(ValueError):
        F.cpumap([-1], 8)


def test_mems_allowed_1024_bits_is_32_groups_of_8() -> None:
    zero = "00000000,"
    assert F.cpumap([0], 1024) == zero * 31 + "00000001\n"
    assert F.cpumap([0, 1, 2, 3], 1024) == zero * 31 + "0000000f\n"
    assert F.cpumap([1023], 1024) == "80000000," + zero * 30 + "00000000\n"
    assert F.cpumap([32], 1024) == zero * 30 + "00000001,00000000\n"


# ------------------------------------------------------------------ distance, numastat


def test_node_distance_plain() -> None:
    assert F.node_distance([10, 21, 17, 28]) == "10 21 17 28\n"
    assert F.node_distance([10]) == "10\n"
    assert F.node_distance([]) == "\n"


def test_node_distance_pairs() -> None:
    assert F.node_distance([(0, 10), (1, 21), (2, 17), (3, 28)]) == "10 21 17 28\n"
    assert F.node_distance([(0, 10), (2, 17)]) == "10 17\n"


def test_node_distance_node0_offline_starts_with_space() -> None:
    assert F.node_distance([(1, 10), (2, 21), (3, 28)]) == " 10 21 28\n"
    assert F.node_distance([10, 21], first_node_online=False) == " 10 21\n"


def test_node_numastat() -> None:
    assert F.node_numastat(numa_hit=123456, numa_miss=0, numa_foreign=7,
                           interleave_hit=2048, local_node=123000, other_node=456) == (
        "numa_hit 123456\n"
        "numa_miss 0\n"
        "numa_foreign 7\n"
        "interleave_hit 2048\n"
        "local_node 123000\n"
        "other_node 456\n")


# ------------------------------------------------------------------ node meminfo

NODE0_4GIB = {
    "MemTotal": 4194304, "MemFree": 3670016, "Active": 200000, "Inactive": 150000,
    "Active(anon)": 120000, "Inactive(anon)": 30000, "Active(file)": 80000,
    "Inactive(file)": 120000, "Dirty": 12, "FilePages": 200000, "Mapped": 50000,
    "AnonPages": 150000, "Shmem": 1024, "KernelStack": 2304, "PageTables": 3000,
    "KReclaimable": 20000, "Slab": 30000, "SReclaimable": 20000, "SUnreclaim": 10000,
    "AnonHugePages": 102400,
}

NODE0_4GIB_TEXT = (
    "Node 0 MemTotal:        4194304 kB\n"
    "Node 0 MemFree:         3670016 kB\n"
    "Node 0 MemUsed:          524288 kB\n"
    "Node 0 Active:           200000 kB\n"
    "Node 0 Inactive:         150000 kB\n"
    "Node 0 Active(anon):     120000 kB\n"
    "Node 0 Inactive(anon):    30000 kB\n"
    "Node 0 Active(file):      80000 kB\n"
    "Node 0 Inactive(file):   120000 kB\n"
    "Node 0 Unevictable:           0 kB\n"
    "Node 0 Mlocked:               0 kB\n"
    "Node 0 Dirty:                12 kB\n"
    "Node 0 Writeback:             0 kB\n"
    "Node 0 FilePages:        200000 kB\n"
    "Node 0 Mapped:            50000 kB\n"
    "Node 0 AnonPages:        150000 kB\n"
    "Node 0 Shmem:              1024 kB\n"
    "Node 0 KernelStack:        2304 kB\n"
    "Node 0 PageTables:         3000 kB\n"
    "Node 0 NFS_Unstable:          0 kB\n"
    "Node 0 Bounce:                0 kB\n"
    "Node 0 WritebackTmp:          0 kB\n"
    "Node 0 KReclaimable:      20000 kB\n"
    "Node 0 Slab:              30000 kB\n"
    "Node 0 SReclaimable:      20000 kB\n"
    "Node 0 SUnreclaim:        10000 kB\n"
    "Node 0 AnonHugePages:    102400 kB\n"
    "Node 0 ShmemHugePages:        0 kB\n"
    "Node 0 ShmemPmdMapped:        0 kB\n"
    "Node 0 HugePages_Total:     0\n"
    "Node 0 HugePages_Free:      0\n"
    "Node 0 HugePages_Surp:      0\n"
)


def test_node_meminfo_4gib_node_full_text() -> None:
    assert F.node_meminfo(0, NODE0_4GIB, 0, 0, 0) == NODE0_4GIB_TEXT


@settings(max_examples=200, deadline=None)
@given(nid=st.integers(0, 9), data=st.data())
def test_node_meminfo_columns_line_up(nid: int, data: st.DataObject) -> None:
    """"Node %d %-15s %8lu kB" and "Node %d %-15s %5u" (drivers/base/node.c): for
    values of up to 8 and 5 digits every line has the width of the worked example."""
    kb = st.integers(0, 10**8 - 1)
    values = {key: data.draw(kb, label=key) for key in NODE0_4GIB}
    values["MemFree"] = data.draw(st.integers(0, values["MemTotal"]), label="MemFree")
    values.pop("MemUsed", None)
    huge = [data.draw(st.integers(0, 10**5 - 1), label=f"huge{i}") for i in range(3)]
    lines = F.node_meminfo(nid, values, *huge).splitlines()
    assert len(lines) == len(NODE0_4GIB_TEXT.splitlines())
    assert {len(line) for line in lines[:29]} == {34}
    assert {len(line) for line in lines[29:]} == {29}


def test_node_meminfo_explicit_memused_wins() -> None:
    out = F.node_meminfo(2, {"MemTotal": 100, "MemFree": 40, "MemUsed": 50}, 0, 0, 0)
    assert "Node 2 MemUsed:              50 kB\n" in out


def test_node_meminfo_wide_values_and_hugepages() -> None:
    out = F.node_meminfo(1, {"MemTotal": 123456789, "MemFree": 99999999}, 512, 100, 3)
    lines = out.splitlines(keepends=True)
    assert lines[0] == "Node 1 MemTotal:       123456789 kB\n"
    assert lines[1] == "Node 1 MemFree:        99999999 kB\n"
    assert lines[2] == "Node 1 MemUsed:        23456790 kB\n"
    assert lines[-3:] == ["Node 1 HugePages_Total:   512\n",
                          "Node 1 HugePages_Free:    100\n",
                          "Node 1 HugePages_Surp:      3\n"]
    wide = F.node_meminfo(10, {}, 123456, 0, 0).splitlines(keepends=True)
    assert wide[0] == "Node 10 MemTotal:              0 kB\n"
    assert wide[-3] == "Node 10 HugePages_Total: 123456\n"


def test_node_meminfo_keys() -> None:
    assert F.NODE_MEMINFO_KEYS == (
        "MemTotal", "MemFree", "MemUsed", "Active", "Inactive", "Active(anon)",
        "Inactive(anon)", "Active(file)", "Inactive(file)", "Unevictable", "Mlocked",
        "Dirty", "Writeback", "FilePages", "Mapped", "AnonPages", "Shmem", "KernelStack",
        "PageTables", "NFS_Unstable", "Bounce", "WritebackTmp", "KReclaimable", "Slab",
        "SReclaimable", "SUnreclaim", "AnonHugePages", "ShmemHugePages", "ShmemPmdMapped")


# ------------------------------------------------------------------ vmstat

# Copied by hand from INTERFACES.md 2.2 (node vmstat) and 5 (/proc/vmstat).
SPEC_NODE_VMSTAT = (
    "nr_free_pages nr_zone_inactive_anon nr_zone_active_anon nr_zone_inactive_file "
    "nr_zone_active_file nr_zone_unevictable nr_zone_write_pending nr_mlock "
    "nr_page_table_pages nr_kernel_stack nr_bounce nr_zspages nr_free_cma "
    "numa_hit numa_miss numa_foreign numa_interleave numa_local numa_other "
    "nr_inactive_anon nr_active_anon nr_inactive_file nr_active_file nr_unevictable "
    "nr_slab_reclaimable nr_slab_unreclaimable nr_isolated_anon nr_isolated_file "
    "workingset_nodes workingset_refault workingset_activate workingset_restore "
    "workingset_nodereclaim nr_anon_pages nr_mapped nr_file_pages nr_dirty "
    "nr_writeback nr_writeback_temp nr_shmem nr_shmem_hugepages nr_shmem_pmdmapped "
    "nr_anon_transparent_hugepages nr_unstable nr_vmscan_write "
    "nr_vmscan_immediate_reclaim nr_dirtied nr_written nr_kernel_misc_reclaimable"
).split()

SPEC_EVENTS = (
    "pgpgin pgpgout pswpin pswpout "
    "pgalloc_dma pgalloc_dma32 pgalloc_normal pgalloc_movable "
    "allocstall_dma allocstall_dma32 allocstall_normal allocstall_movable "
    "pgskip_dma pgskip_dma32 pgskip_normal pgskip_movable "
    "pgfree pgactivate pgdeactivate pglazyfree pgfault pgmajfault pglazyfreed pgrefill "
    "pgsteal_kswapd pgsteal_direct pgscan_kswapd pgscan_direct pgscan_direct_throttle "
    "zone_reclaim_failed pginodesteal slabs_scanned kswapd_inodesteal "
    "kswapd_low_wmark_hit_quickly kswapd_high_wmark_hit_quickly pageoutrun pgrotated "
    "drop_pagecache drop_slab oom_kill numa_pte_updates numa_huge_pte_updates "
    "numa_hint_faults numa_hint_faults_local numa_pages_migrated pgmigrate_success "
    "pgmigrate_fail compact_migrate_scanned compact_free_scanned compact_isolated "
    "compact_stall compact_fail compact_success compact_daemon_wake "
    "compact_daemon_migrate_scanned compact_daemon_free_scanned "
    "htlb_buddy_alloc_success htlb_buddy_alloc_fail unevictable_pgs_culled "
    "unevictable_pgs_scanned unevictable_pgs_rescued unevictable_pgs_mlocked "
    "unevictable_pgs_munlocked unevictable_pgs_cleared unevictable_pgs_stranded "
    "thp_fault_alloc thp_fault_fallback thp_collapse_alloc thp_collapse_alloc_failed "
    "thp_file_alloc thp_file_mapped thp_split_page thp_split_page_failed "
    "thp_deferred_split_page thp_split_pmd thp_split_pud thp_zero_page_alloc "
    "thp_zero_page_alloc_failed thp_swpout thp_swpout_fallback balloon_inflate "
    "balloon_deflate balloon_migrate swap_ra swap_ra_hit"
).split()


def test_node_vmstat_key_order() -> None:
    assert list(F.NODE_VMSTAT_KEYS) == SPEC_NODE_VMSTAT
    assert len(F.NODE_VMSTAT_KEYS) == 49
    assert F.NODE_VMSTAT_KEYS[0] == "nr_free_pages"
    assert F.NODE_VMSTAT_KEYS[-1] == "nr_kernel_misc_reclaimable"
    for daemon_key in ("nr_free_pages", "nr_active_anon", "nr_inactive_anon",
                       "nr_anon_transparent_hugepages"):
        assert daemon_key in F.NODE_VMSTAT_KEYS


def test_node_vmstat_text() -> None:
    out = F.node_vmstat({"nr_free_pages": 917504, "nr_active_anon": 30000,
                         "nr_anon_transparent_hugepages": 50})
    lines = out.splitlines(keepends=True)
    assert len(lines) == 49
    assert lines[0] == "nr_free_pages 917504\n"
    assert lines[1] == "nr_zone_inactive_anon 0\n"
    assert lines[13] == "numa_hit 0\n"
    assert lines[19] == "nr_inactive_anon 0\n"
    assert lines[20] == "nr_active_anon 30000\n"
    assert lines[42] == "nr_anon_transparent_hugepages 50\n"
    assert lines[-1] == "nr_kernel_misc_reclaimable 0\n"


def test_proc_vmstat_keys_and_text() -> None:
    expected = SPEC_NODE_VMSTAT + ["nr_dirty_threshold",
                                   "nr_dirty_background_threshold"] + SPEC_EVENTS
    assert list(F.PROC_VMSTAT_KEYS) == expected
    assert len(F.PROC_VMSTAT_KEYS) == 49 + 2 + 85
    out = F.proc_vmstat({"pgmigrate_success": 42, "nr_dirty_threshold": 12345,
                         "swap_ra_hit": 7})
    lines = out.splitlines(keepends=True)
    assert lines[49] == "nr_dirty_threshold 12345\n"
    assert lines[50] == "nr_dirty_background_threshold 0\n"
    assert lines[51] == "pgpgin 0\n"
    assert "pgmigrate_success 42\n" in lines
    assert lines[-1] == "swap_ra_hit 7\n"


# ------------------------------------------------------------------ /proc/meminfo

MEMINFO_8GIB = {
    "MemTotal": 8388608, "MemFree": 7340032, "MemAvailable": 7600000, "Buffers": 10240,
    "Cached": 300000, "Active": 250000, "Inactive": 200000, "Active(anon)": 150000,
    "Inactive(anon)": 20000, "Active(file)": 100000, "Inactive(file)": 180000,
    "Dirty": 8, "AnonPages": 170000, "Mapped": 60000, "Shmem": 2048,
    "KReclaimable": 25000, "Slab": 40000, "SReclaimable": 25000, "SUnreclaim": 15000,
    "KernelStack": 2304, "PageTables": 3000, "CommitLimit": 4194304,
    "Committed_AS": 900000, "Percpu": 1536, "AnonHugePages": 102400,
    "DirectMap4k": 110000, "DirectMap2M": 8278016,
}

MEMINFO_8GIB_TEXT = (
    "MemTotal:        8388608 kB\n"
    "MemFree:         7340032 kB\n"
    "MemAvailable:    7600000 kB\n"
    "Buffers:           10240 kB\n"
    "Cached:           300000 kB\n"
    "SwapCached:            0 kB\n"
    "Active:           250000 kB\n"
    "Inactive:         200000 kB\n"
    "Active(anon):     150000 kB\n"
    "Inactive(anon):    20000 kB\n"
    "Active(file):     100000 kB\n"
    "Inactive(file):   180000 kB\n"
    "Unevictable:           0 kB\n"
    "Mlocked:               0 kB\n"
    "SwapTotal:             0 kB\n"
    "SwapFree:              0 kB\n"
    "Dirty:                 8 kB\n"
    "Writeback:             0 kB\n"
    "AnonPages:        170000 kB\n"
    "Mapped:            60000 kB\n"
    "Shmem:              2048 kB\n"
    "KReclaimable:      25000 kB\n"
    "Slab:              40000 kB\n"
    "SReclaimable:      25000 kB\n"
    "SUnreclaim:        15000 kB\n"
    "KernelStack:        2304 kB\n"
    "PageTables:         3000 kB\n"
    "NFS_Unstable:          0 kB\n"
    "Bounce:                0 kB\n"
    "WritebackTmp:          0 kB\n"
    "CommitLimit:     4194304 kB\n"
    "Committed_AS:     900000 kB\n"
    "VmallocTotal:   34359738367 kB\n"
    "VmallocUsed:           0 kB\n"
    "VmallocChunk:          0 kB\n"
    "Percpu:             1536 kB\n"
    "HardwareCorrupted:     0 kB\n"
    "AnonHugePages:    102400 kB\n"
    "ShmemHugePages:        0 kB\n"
    "ShmemPmdMapped:        0 kB\n"
    "CmaTotal:              0 kB\n"
    "CmaFree:               0 kB\n"
    "HugePages_Total:       0\n"
    "HugePages_Free:        0\n"
    "HugePages_Rsvd:        0\n"
    "HugePages_Surp:        0\n"
    "Hugepagesize:       2048 kB\n"
    "Hugetlb:               0 kB\n"
    "DirectMap4k:      110000 kB\n"
    "DirectMap2M:     8278016 kB\n"
)


def test_proc_meminfo_full_text() -> None:
    assert F.proc_meminfo(MEMINFO_8GIB, {}) == MEMINFO_8GIB_TEXT


def test_proc_meminfo_special_widths() -> None:
    out = F.proc_meminfo(
        {"HardwareCorrupted": 8, "VmallocUsed": 999, "DirectMap1G": 2097152},
        {"HugePages_Total": 1024, "HugePages_Free": 1000, "HugePages_Rsvd": 12,
         "HugePages_Surp": 123456, "Hugepagesize": 2048, "Hugetlb": 2097152})
    lines = out.splitlines(keepends=True)
    assert "HardwareCorrupted:     8 kB\n" in lines
    assert "HardwareCorrupted: 123456 kB\n" in F.proc_meminfo(
        {"HardwareCorrupted": 123456}, {})
    assert "VmallocUsed:           0 kB\n" in lines  # always 0 in 4.20
    assert lines[-9:] == [
        "HugePages_Total:    1024\n",
        "HugePages_Free:     1000\n",
        "HugePages_Rsvd:       12\n",
        "HugePages_Surp:    123456\n",
        "Hugepagesize:       2048 kB\n",
        "Hugetlb:         2097152 kB\n",
        "DirectMap4k:           0 kB\n",
        "DirectMap2M:           0 kB\n",
        "DirectMap1G:     2097152 kB\n",
    ]


def test_proc_meminfo_keys_and_no_node_prefix() -> None:
    assert len(F.PROC_MEMINFO_KEYS) == 51
    assert F.PROC_MEMINFO_KEYS[:3] == ("MemTotal", "MemFree", "MemAvailable")
    assert F.PROC_MEMINFO_KEYS[-3:] == ("DirectMap4k", "DirectMap2M", "DirectMap1G")
    assert "MemUsed" not in F.PROC_MEMINFO_KEYS
    assert "Node" not in F.proc_meminfo({}, {})


# ------------------------------------------------------------------ maps

VSYSCALL = ("ffffffffff600000-ffffffffff601000 r-xp 00000000 00:00 0"
            "                  [vsyscall]\n")


def test_maps_anonymous_line() -> None:
    assert (F.maps_line(0x7f0000000000, 0x7f0000010000, "rw-p", 0, 0, 0, 0, None)
            == "7f0000000000-7f0000010000 rw-p 00000000 00:00 0 \n")
    assert (F.maps_line(0x1000, 0x2000, "---p", 0, 0, 0, 0, None)
            == "00001000-00002000 ---p 00000000 00:00 0 \n")


def test_maps_path_at_column_73() -> None:
    line = F.maps_line(0x5574b96dc000, 0x5574b96e1000, "r-xp", 0x2000, 0xfe, 0, 260131,
                       "/usr/bin/cat")
    assert line == ("5574b96dc000-5574b96e1000 r-xp 00002000 fe:00 260131"
                    "                     /usr/bin/cat\n")
    assert line.index("/") == 73
    heap = F.maps_line(0x5574ec3ae000, 0x5574ec3cf000, "rw-p", 0, 0, 0, 0, "[heap]")
    assert heap == ("5574ec3ae000-5574ec3cf000 rw-p 00000000 00:00 0"
                    "                          [heap]\n")
    small = F.maps_line(0x400000, 0x452000, "r-xp", 0, 8, 1, 1234, "/bin/x")
    assert small == ("00400000-00452000 r-xp 00000000 08:01 1234"
                     "                               /bin/x\n")
    assert small.index("/") == 73


def test_maps_long_prefix_gets_exactly_one_more_space() -> None:
    exactly_72 = F.maps_line(0xffffffffff600000, 0xffffffffff601000, "r--p", 0, 0, 0,
                             12345678901234567, "/x")
    assert exactly_72 == ("ffffffffff600000-ffffffffff601000 r--p 00000000 00:00 "
                          "12345678901234567  /x\n")
    longer = F.maps_line(0xffffffffff600000, 0xffffffffff601000, "rw-s",
                         0xffffffffffff0000, 0x103, 0x1ff, 18446744073709551615, "/y")
    assert longer == ("ffffffffff600000-ffffffffff601000 rw-s ffffffffffff0000 103:1ff "
                      "18446744073709551615  /y\n")


def test_maps_deleted_and_escaped_paths() -> None:
    line = F.maps_line(0x7f0000000000, 0x7f0000001000, "rw-s", 0, 0, 5, 77,
                       "/dev/shm/x (deleted)")
    assert line == ("7f0000000000-7f0000001000 rw-s 00000000 00:05 77"
                    "                         /dev/shm/x (deleted)\n")
    assert line.index("/") == 73
    assert F.maps_line(0x1000, 0x2000, "r--p", 0, 0, 0, 9, "/tmp/a\nb").endswith(
        " /tmp/a\\012b\n")


def test_maps_rejects_bad_perms() -> None:
    with pytest.raises(ValueError):
        F.maps_line(0, 0x1000, "rw", 0, 0, 0, 0, None)


def test_vsyscall_line() -> None:
    assert F.VSYSCALL_MAPS_LINE == VSYSCALL
    assert F.VSYSCALL_MAPS_LINE.index("[") == 73


def test_maps_line_parses_with_daemon_sscanf_pattern() -> None:
    # sscanf("%lx-%lx %4s %lx %x:%x %lu%*[ ]%n"): the path starts right after the spaces
    line = F.maps_line(0x7f0000000000, 0x7f0000010000, "rw-p", 0, 0, 0, 0, "[stack]")
    m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) ([0-9a-f]+):([0-9a-f]+)"
                 r" (\d+) +", line)
    assert m is not None and line[m.end():] == "[stack]\n"


# ------------------------------------------------------------------ smaps, numa_maps


def test_smaps_block_anonymous_vma() -> None:
    header = F.maps_line(0x7f0000000000, 0x7f0000010000, "rw-p", 0, 0, 0, 0, None)
    out = F.smaps_block(header, 64, 4, 4,
                        {"Rss": 40, "Pss": 40, "Private_Dirty": 40, "Referenced": 12,
                         "Anonymous": 40},
                        0, 0x1 | 0x2 | 0x10 | 0x20 | 0x40 | 0x100000 | 0x8000000)
    assert out == (
        "7f0000000000-7f0000010000 rw-p 00000000 00:00 0 \n"
        "Size:                 64 kB\n"
        "KernelPageSize:        4 kB\n"
        "MMUPageSize:           4 kB\n"
        "Rss:                  40 kB\n"
        "Pss:                  40 kB\n"
        "Shared_Clean:          0 kB\n"
        "Shared_Dirty:          0 kB\n"
        "Private_Clean:         0 kB\n"
        "Private_Dirty:        40 kB\n"
        "Referenced:           12 kB\n"
        "Anonymous:            40 kB\n"
        "LazyFree:              0 kB\n"
        "AnonHugePages:         0 kB\n"
        "ShmemPmdMapped:        0 kB\n"
        "Shared_Hugetlb:        0 kB\n"
        "Private_Hugetlb:       0 kB\n"
        "Swap:                  0 kB\n"
        "SwapPss:               0 kB\n"
        "Locked:                0 kB\n"
        "ProtectionKey:         0\n"
        "VmFlags: rd wr mr mw me ac sd \n"
    )


def test_vm_flags_lockonfault_prints_question_marks_and_pkeys_hidden() -> None:
    assert F.vm_flags_line(0x80000 | 0x2000) == "VmFlags: lo ?? \n"
    assert F.vm_flags_line(0xF00000000) == "VmFlags: \n"  # VM_PKEY_BIT0..3
    assert F.vm_flags_line(0x80000000 | 0x200 | 0x1000) == "VmFlags: um uw mg \n"


def test_smaps_private_hugetlb_width() -> None:
    out = F.smaps_block("", 2048, 2048, 2048, {"Private_Hugetlb": 12345678}, 3, 0x400000)
    assert "Private_Hugetlb: 12345678 kB\n" in out
    assert "Private_Hugetlb:    2048 kB\n" in F.smaps_block(
        "", 0, 0, 0, {"Private_Hugetlb": 2048}, 0, 0)
    assert out.endswith("ProtectionKey:         3\nVmFlags: ht \n")


def test_smaps_rollup() -> None:
    out = F.smaps_rollup(0x55d4c0000000, 0x7ffd00000000, {"Rss": 1})
    assert out.startswith(
        "55d4c0000000-7ffd00000000 ---p 00000000 00:00 0"
        "                          [rollup]\n"
        "Rss:                   1 kB\n")
    assert out.endswith("Locked:                0 kB\n")
    assert len(out.splitlines()) == 17


def test_mempolicy_str() -> None:
    assert F.mempolicy_str() == "default"
    assert F.mempolicy_str("local") == "local"
    assert F.mempolicy_str("prefer", [2]) == "prefer:2"
    assert F.mempolicy_str("bind", [0, 1, 3]) == "bind:0-1,3"
    assert F.mempolicy_str("interleave", [0, 1], "relative") == "interleave=relative:0-1"
    assert F.mempolicy_str("prefer", [1], "static") == "prefer=static:1"


def test_numa_maps_lines() -> None:
    assert F.numa_maps_line(0x7f0000000000, "default") == "7f0000000000 default\n"
    assert F.numa_maps_line(0x55b961d6e000, "default", file="/usr/bin/cat", pages=2,
                            active=2, node_pages={0: 2}) == (
        "55b961d6e000 default file=/usr/bin/cat mapped=2 N0=2 kernelpagesize_kB=4\n")
    assert F.numa_maps_line(0x55b961d78000, "default", file="/usr/bin/cat", pages=1,
                            anon=1, dirty=1, node_pages={0: 1}) == (
        "55b961d78000 default file=/usr/bin/cat anon=1 dirty=1 active=0 N0=1"
        " kernelpagesize_kB=4\n")
    assert F.numa_maps_line(0x1000, "bind:2-3", heap=True, pages=1024, anon=1024,
                            dirty=1000, mapmax=2, swapcache=3, active=1024, writeback=1,
                            node_pages={3: 24, 2: 1000, 0: 0}) == (
        "00001000 bind:2-3 heap anon=1024 dirty=1000 mapmax=2 swapcache=3 writeback=1"
        " N2=1000 N3=24 kernelpagesize_kB=4\n")
    assert F.numa_maps_line(0x7ffc0000, "default", stack=True, pages=3, anon=3, dirty=3,
                            active=3, node_pages={1: 3}) == (
        "7ffc0000 default stack anon=3 dirty=3 N1=3 kernelpagesize_kB=4\n")
    assert F.numa_maps_line(0x7f0000000000, "default", file="/mnt/huge/a b=c",
                            huge=True, pages=2, dirty=2, node_pages={0: 2},
                            kernel_pagesize_kb=2048) == (
        "7f0000000000 default file=/mnt/huge/a\\040b\\075c huge dirty=2 N0=2"
        " kernelpagesize_kB=2048\n")


# ------------------------------------------------------------------ status

SIMPLE = F.StatusInfo(
    name="cat", state="R", tgid=3640, pid=3640, ppid=3630, pgid=3630, sid=2571,
    uid=(0, 0, 0, 0), gid=(0, 0, 0, 0), sigq=(0, 96365),
    cpus_allowed=frozenset({0, 1}), nr_cpu_ids=2, mems_allowed=frozenset({0}),
    fdsize=256, vm_peak=3060, vm_size=3060, vm_hwm=1772, vm_rss=1772, rss_anon=112,
    rss_file=1660, vm_data=360, vm_stk=132, vm_exe=20, vm_lib=1528, vm_pte=48,
    cap_prm=0x3fffffffff, cap_eff=0x3fffffffff, speculation_store_bypass="vulnerable",
    voluntary_ctxt_switches=1, nonvoluntary_ctxt_switches=2,
)

MEMS_0 = ("00000000," * 31) + "00000001"

SIMPLE_TEXT = (
    "Name:\tcat\n"
    "Umask:\t0022\n"
    "State:\tR (running)\n"
    "Tgid:\t3640\n"
    "Ngid:\t0\n"
    "Pid:\t3640\n"
    "PPid:\t3630\n"
    "TracerPid:\t0\n"
    "Uid:\t0\t0\t0\t0\n"
    "Gid:\t0\t0\t0\t0\n"
    "FDSize:\t256\n"
    "Groups:\t \n"
    "NStgid:\t3640\n"
    "NSpid:\t3640\n"
    "NSpgid:\t3630\n"
    "NSsid:\t2571\n"
    "VmPeak:\t    3060 kB\n"
    "VmSize:\t    3060 kB\n"
    "VmLck:\t       0 kB\n"
    "VmPin:\t       0 kB\n"
    "VmHWM:\t    1772 kB\n"
    "VmRSS:\t    1772 kB\n"
    "RssAnon:\t     112 kB\n"
    "RssFile:\t    1660 kB\n"
    "RssShmem:\t       0 kB\n"
    "VmData:\t     360 kB\n"
    "VmStk:\t     132 kB\n"
    "VmExe:\t      20 kB\n"
    "VmLib:\t    1528 kB\n"
    "VmPTE:\t      48 kB\n"
    "VmSwap:\t       0 kB\n"
    "HugetlbPages:\t       0 kB\n"
    "CoreDumping:\t0\n"
    "Threads:\t1\n"
    "SigQ:\t0/96365\n"
    "SigPnd:\t0000000000000000\n"
    "ShdPnd:\t0000000000000000\n"
    "SigBlk:\t0000000000000000\n"
    "SigIgn:\t0000000000000000\n"
    "SigCgt:\t0000000000000000\n"
    "CapInh:\t0000000000000000\n"
    "CapPrm:\t0000003fffffffff\n"
    "CapEff:\t0000003fffffffff\n"
    "CapBnd:\t0000003fffffffff\n"
    "CapAmb:\t0000000000000000\n"
    "NoNewPrivs:\t0\n"
    "Seccomp:\t0\n"
    "Speculation_Store_Bypass:\tvulnerable\n"
    "Cpus_allowed:\t3\n"
    "Cpus_allowed_list:\t0-1\n"
    "Mems_allowed:\t" + MEMS_0 + "\n"
    "Mems_allowed_list:\t0\n"
    "voluntary_ctxt_switches:\t1\n"
    "nonvoluntary_ctxt_switches:\t2\n"
)


def test_status_simple_process_full_text() -> None:
    assert F.proc_status(SIMPLE) == SIMPLE_TEXT


@pytest.mark.parametrize("zombie", [False, True])
def test_status_every_line_has_colon_tab(zombie: bool) -> None:
    info = dataclasses.replace(SIMPLE, state="Z" if zombie else "R", is_zombie_or_kthread=zombie)
    lines = F.proc_status(info).splitlines()
    assert lines and all(re.fullmatch(r"[A-Za-z_]+:\t.*", line) for line in lines), lines


def test_status_zombie_has_no_umask_vm_or_coredumping() -> None:
    zombie = F.StatusInfo(
        name="defunct", state="Z", tgid=77, pid=77, ppid=1, pgid=77, sid=77,
        uid=(1000, 1000, 1000, 1000), gid=(100, 100, 100, 100), sigq=(1, 63717),
        cpus_allowed=frozenset(range(6)), nr_cpu_ids=6, mems_allowed=frozenset({0, 1}),
        is_zombie_or_kthread=True, fdsize=0, threads=1, vm_rss=999)
    assert F.proc_status(zombie) == (
        "Name:\tdefunct\n"
        "State:\tZ (zombie)\n"
        "Tgid:\t77\n"
        "Ngid:\t0\n"
        "Pid:\t77\n"
        "PPid:\t1\n"
        "TracerPid:\t0\n"
        "Uid:\t1000\t1000\t1000\t1000\n"
        "Gid:\t100\t100\t100\t100\n"
        "FDSize:\t0\n"
        "Groups:\t \n"
        "NStgid:\t77\n"
        "NSpid:\t77\n"
        "NSpgid:\t77\n"
        "NSsid:\t77\n"
        "Threads:\t1\n"
        "SigQ:\t1/63717\n"
        "SigPnd:\t0000000000000000\n"
        "ShdPnd:\t0000000000000000\n"
        "SigBlk:\t0000000000000000\n"
        "SigIgn:\t0000000000000000\n"
        "SigCgt:\t0000000000000000\n"
        "CapInh:\t0000000000000000\n"
        "CapPrm:\t0000000000000000\n"
        "CapEff:\t0000000000000000\n"
        "CapBnd:\t0000003fffffffff\n"
        "CapAmb:\t0000000000000000\n"
        "NoNewPrivs:\t0\n"
        "Seccomp:\t0\n"
        "Speculation_Store_Bypass:\tthread vulnerable\n"
        "Cpus_allowed:\t3f\n"
        "Cpus_allowed_list:\t0-5\n"
        "Mems_allowed:\t" + ("00000000," * 31) + "00000003\n"
        "Mems_allowed_list:\t0-1\n"
        "voluntary_ctxt_switches:\t0\n"
        "nonvoluntary_ctxt_switches:\t0\n"
    )


def test_status_details() -> None:
    info = F.StatusInfo(
        name="a\\b\nc", state="S (sleeping)", tgid=10, pid=11, ppid=1, pgid=10, sid=10,
        uid=(1000, 0, 0, 0), gid=(1000, 1000, 1000, 1000), sigq=(2, 127431),
        cpus_allowed=frozenset({*range(26), *range(52, 78)}), nr_cpu_ids=104,
        mems_allowed=frozenset({0, 2}), umask=0, groups=(4, 24, 1000),
        ns_tgid=(10, 1), ns_pid=(11, 2), ns_pgid=(10, 1), ns_sid=(10, 1), threads=3,
        vm_peak=123456789, sig_ign=0x1000, sig_cgt=0x184004a02, no_new_privs=True,
        seccomp=2, core_dumping=True, speculation_store_bypass="thread force mitigated")
    lines = F.proc_status(info).splitlines(keepends=True)
    assert lines[0] == "Name:\ta\\\\b\\nc\n"
    assert lines[1] == "Umask:\t0000\n"
    assert lines[2] == "State:\tS (sleeping)\n"
    assert "Uid:\t1000\t0\t0\t0\n" in lines
    assert "Groups:\t4 24 1000 \n" in lines
    assert "NStgid:\t10\t1\n" in lines
    assert "NSpid:\t11\t2\n" in lines
    assert "NSsid:\t10\t1\n" in lines
    assert "VmPeak:\t123456789 kB\n" in lines
    assert "CoreDumping:\t1\n" in lines
    assert "Threads:\t3\n" in lines
    assert "SigQ:\t2/127431\n" in lines
    assert "SigIgn:\t0000000000001000\n" in lines
    assert "SigCgt:\t0000000184004a02\n" in lines
    assert "NoNewPrivs:\t1\n" in lines
    assert "Seccomp:\t2\n" in lines
    assert "Speculation_Store_Bypass:\tthread force mitigated\n" in lines
    assert "Cpus_allowed:\t00,00003fff,fff00000,03ffffff\n" in lines
    assert "Cpus_allowed_list:\t0-25,52-77\n" in lines
    assert "Mems_allowed_list:\t0,2\n" in lines
    assert lines[-4] == "Mems_allowed:\t" + "00000000," * 31 + "00000005\n"


@pytest.mark.parametrize("umask, text", [(0o022, "0022"), (0o002, "0002"), (0o7, "0007"),
                                         (0o077, "0077"), (0o777, "0777"), (0, "0000")])
def test_status_umask_is_c_percent_hash_04o(umask: int, text: str) -> None:
    info = F.StatusInfo(name="x", state="I", tgid=1, pid=1, ppid=0, pgid=0, sid=0,
                        uid=(0, 0, 0, 0), gid=(0, 0, 0, 0), sigq=(0, 0),
                        cpus_allowed=frozenset(), nr_cpu_ids=1, mems_allowed=frozenset(),
                        umask=umask)
    out = F.proc_status(info)
    assert f"Umask:\t{text}\nState:\tI (idle)\n" in out
    assert "Cpus_allowed:\t0\nCpus_allowed_list:\t\n" in out


def test_status_rejects_short_uid() -> None:
    with pytest.raises(ValueError):
        F.StatusInfo(name="x", state="S", tgid=1, pid=1, ppid=0, pgid=0, sid=0,
                     uid=(0, 0), gid=(0, 0, 0, 0), sigq=(0, 0),  # type: ignore[arg-type]
                     cpus_allowed=frozenset(), nr_cpu_ids=1, mems_allowed=frozenset())


# ------------------------------------------------------------------ host layout checks
# The host runs a 6.x kernel with extra keys; only the spec's keys are compared.


def _read(path: str) -> str:
    if not os.path.exists(path):
        pytest.skip(f"{path} not present on this machine")
    with open(path) as f:
        return f.read()


def _kv_lines(text: str, strip_prefix: str = "") -> dict[str, tuple[int, str]]:
    """key -> (value, full line) for `Key:   value[ kB]` lines."""
    out = {}
    for line in text.splitlines(keepends=True):
        key, _, rest = line[len(strip_prefix):].partition(":")
        out[key] = (int(rest.split()[0]), line)
    return out


def test_node_meminfo_layout_matches_host() -> None:
    real = _kv_lines(_read("/sys/devices/system/node/node0/meminfo"), "Node 0 ")
    kb = {k: v for k, (v, _) in real.items() if not k.startswith("HugePages")}
    ours = _kv_lines(F.node_meminfo(0, kb, real["HugePages_Total"][0],
                                    real["HugePages_Free"][0], real["HugePages_Surp"][0]),
                     "Node 0 ")
    compared = [k for k in ours if k in real]
    assert len(compared) >= 30
    for k in compared:
        assert ours[k][1] == real[k][1], k


def test_proc_meminfo_layout_matches_host() -> None:
    real = _kv_lines(_read("/proc/meminfo"))
    huge_keys = set(F.PROC_MEMINFO_HUGE_KEYS)
    ours = _kv_lines(F.proc_meminfo({k: v for k, (v, _) in real.items()},
                                    {k: v for k, (v, _) in real.items() if k in huge_keys}))
    compared = [k for k in ours if k in real and k not in ("VmallocUsed",)]
    assert len(compared) >= 40
    for k in compared:
        assert ours[k][1] == real[k][1], k


def test_proc_self_maps_layout_matches_host() -> None:
    text = _read("/proc/self/maps")
    pat = re.compile(r"([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) ([0-9a-f]+):([0-9a-f]+)"
                     r" (\d+) (?: *(.*))?\n")
    lines = text.splitlines(keepends=True)
    for line in lines:
        m = pat.fullmatch(line)
        assert m is not None, line
        start, end, perms, off, major, minor, ino, path = m.groups()
        assert F.maps_line(int(start, 16), int(end, 16), perms, int(off, 16),
                           int(major, 16), int(minor, 16), int(ino), path or None) == line


def test_proc_self_status_layout_matches_host() -> None:
    text = _read("/proc/self/status")
    real = {}
    for line in text.splitlines(keepends=True):
        k, _, v = line.partition(":\t")
        real[k] = (v[:-1], line)
    if len(real["Mems_allowed"][0].split(",")) != 32:
        pytest.skip("host MAX_NUMNODES is not 1024")
    possible = _read("/sys/devices/system/cpu/possible").strip()
    nr_cpu_ids = int(re.split(r"[-,]", possible)[-1]) + 1

    def num(k: str) -> int:
        return int(real[k][0].split()[0])

    def ids(k: str) -> frozenset[int]:
        out: set[int] = set()
        for part in filter(None, real[k][0].split(",")):
            a, _, b = part.partition("-")
            out.update(range(int(a), int(b or a) + 1))
        return frozenset(out)

    def four(k: str) -> tuple[int, int, int, int]:
        a, b, c, d = map(int, real[k][0].split())
        return (a, b, c, d)

    def levels(k: str) -> tuple[int, ...]:
        return tuple(map(int, real[k][0].split()))

    vm = {f: num(k) for f, k in (
        ("vm_peak", "VmPeak"), ("vm_size", "VmSize"), ("vm_lck", "VmLck"),
        ("vm_pin", "VmPin"), ("vm_hwm", "VmHWM"), ("vm_rss", "VmRSS"),
        ("rss_anon", "RssAnon"), ("rss_file", "RssFile"), ("rss_shmem", "RssShmem"),
        ("vm_data", "VmData"), ("vm_stk", "VmStk"), ("vm_exe", "VmExe"),
        ("vm_lib", "VmLib"), ("vm_pte", "VmPTE"), ("vm_swap", "VmSwap"),
        ("hugetlb_pages", "HugetlbPages"))}
    masks = {f: int(real[k][0], 16) for f, k in (
        ("sig_pnd", "SigPnd"), ("shd_pnd", "ShdPnd"), ("sig_blk", "SigBlk"),
        ("sig_ign", "SigIgn"), ("sig_cgt", "SigCgt"), ("cap_inh", "CapInh"),
        ("cap_prm", "CapPrm"), ("cap_eff", "CapEff"), ("cap_bnd", "CapBnd"),
        ("cap_amb", "CapAmb"))}
    n, m = real["SigQ"][0].split("/")
    info = F.StatusInfo(
        name=real["Name"][0], state=real["State"][0], tgid=num("Tgid"), pid=num("Pid"),
        ppid=num("PPid"), pgid=levels("NSpgid")[0], sid=levels("NSsid")[0],
        uid=four("Uid"), gid=four("Gid"), sigq=(int(n), int(m)),
        cpus_allowed=ids("Cpus_allowed_list"), nr_cpu_ids=nr_cpu_ids,
        mems_allowed=ids("Mems_allowed_list"), umask=int(real["Umask"][0], 8),
        ngid=num("Ngid"), tracer_pid=num("TracerPid"), fdsize=num("FDSize"),
        groups=tuple(map(int, real["Groups"][0].split())), ns_tgid=levels("NStgid"),
        ns_pid=levels("NSpid"), ns_pgid=levels("NSpgid"), ns_sid=levels("NSsid"),
        core_dumping=bool(num("CoreDumping")), threads=num("Threads"),
        no_new_privs=bool(num("NoNewPrivs")), seccomp=num("Seccomp"),
        speculation_store_bypass=real["Speculation_Store_Bypass"][0],
        voluntary_ctxt_switches=num("voluntary_ctxt_switches"),
        nonvoluntary_ctxt_switches=num("nonvoluntary_ctxt_switches"), **vm, **masks)
    ours = F.proc_status(info).splitlines(keepends=True)
    keys = [line.partition(":")[0] for line in ours]
    assert keys == [k for k in real if k in keys]  # same relative order as the host
    for line, k in zip(ours, keys):
        assert line == real[k][1], k


def test_node0_cpumap_and_lists_match_host() -> None:
    cpulist = _read("/sys/devices/system/node/node0/cpulist")
    real_map = _read("/sys/devices/system/node/node0/cpumap")
    possible = _read("/sys/devices/system/cpu/possible").strip()
    nr_cpu_ids = int(re.split(r"[-,]", possible)[-1]) + 1
    cpus: set[int] = set()
    for part in filter(None, cpulist.strip().split(",")):
        a, _, b = part.partition("-")
        cpus.update(range(int(a), int(b or a) + 1))
    assert F.node_list(cpus) == cpulist
    assert F.cpumap(cpus, nr_cpu_ids) == real_map
    distance = _read("/sys/devices/system/node/node0/distance")
    online = _read("/sys/devices/system/node/online")
    if online == "0\n":
        assert F.node_distance([int(d) for d in distance.split()]) == distance


def test_proc_meminfo_huge_keys_come_from_huge_mapping() -> None:
    out = F.proc_meminfo({"HugePages_Total": 5, "Hugepagesize": 1048576}, {})
    assert "HugePages_Total:       0\n" in out
    assert "Hugepagesize:       2048 kB\n" in out
    out = F.proc_meminfo({}, {"Hugepagesize": 1048576, "Hugetlb": 2097152})
    assert "Hugepagesize:    1048576 kB\nHugetlb:         2097152 kB\n" in out
