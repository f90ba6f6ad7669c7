"""Byte-exact text of the Linux v4.20 /proc and /sys files that fakeproc serves.

Pure functions: plain numbers in, the exact text the reference kernel prints out
(spec: INTERFACES.md sections 2 and 5). No I/O, no state, no fakeproc imports.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

MAX_NUMNODES = 1024  # NODES_SHIFT=10: Mems_allowed is printed over this many bits
VMALLOC_TOTAL_KB = 34359738367  # x86_64 4-level: (VMALLOC_END - VMALLOC_START) >> 10
MAPS_PAD_WIDTH = 72  # seq_setwidth(m, 25 + sizeof(void *) * 6 - 1)


# --------------------------------------------------------------------- helpers


def _sorted_bits(bits: Iterable[int], nbits: int | None = None) -> list[int]:
    """Distinct bit numbers in ascending order; ValueError outside [0, nbits)."""
    out = sorted(set(bits))
    if out and (out[0] < 0 or (nbits is not None and out[-1] >= nbits)):
        raise ValueError(f"bit numbers must lie in [0, {nbits}): {out}")
    return out


def _val(label: str, value: int, width: int = 16, numwidth: int = 8,
         unit: str = " kB") -> str:
    """`label:` left-justified in `width` columns, then `%<numwidth>lu` and `unit`.

    Linux: fs/seq_file.c:seq_put_decimal_ull_width() as used by show_val_kb(), and the
    equivalent "%-padded label%8lu kB" sprintf formats; numwidth is a minimum width.
    """
    return f"{label + ':':<{width}}{int(value):>{numwidth}}{unit}\n"


def _name_values(keys: Iterable[str], values: Mapping[str, int]) -> str:
    """`name value` lines, missing names print 0. Linux: mm/vmstat.c:vmstat_show()."""
    return "".join(f"{k} {int(values.get(k, 0))}\n" for k in keys)


def _mangle(path: str, esc: str) -> str:
    r"""Each character of `esc` becomes a backslash and 3 octal digits ("\n" -> "\012").

    Linux: fs/seq_file.c:mangle_path() via seq_file_path().
    """
    return "".join(f"\\{ord(c):03o}" if c in esc else c for c in path)


# ------------------------------------------------------- section 2: node tree


def node_list(ids: Iterable[int]) -> str:
    """Ranges and singles, comma separated, + "\\n" (`0-2,5\\n`; empty -> `\\n`).

    Linux: lib/vsprintf.c:bitmap_list_string() ("%*pbl"), as printed by
    drivers/base/node.c:print_nodes_state() and node_read_cpulist().
    """
    ranges: list[list[int]] = []
    for i in _sorted_bits(ids):
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges) + "\n"


def cpumap(bits: Iterable[int], nbits: int) -> str:
    """Hex mask in 32-bit comma-separated groups, most significant first, + "\\n".

    Every group has 8 digits except the first: ceil((nbits mod 32) / 4), 8 when nbits is
    a multiple of 32. Linux: lib/vsprintf.c:bitmap_string() ("%*pb"), as printed by
    drivers/base/node.c:node_read_cpumap() and fs/proc/array.c:task_cpus_allowed().
    """
    mask = sum(1 << b for b in _sorted_bits(bits, nbits))
    ngroups = -(-nbits // 32)
    first = -(-(nbits - 32 * (ngroups - 1)) // 4) if ngroups else 0
    return ",".join(
        f"{(mask >> (32 * g)) & 0xFFFFFFFF:0{first if g == ngroups - 1 else 8}x}"
        for g in reversed(range(ngroups))) + "\n"


def node_distance(distances: Sequence[int] | Sequence[tuple[int, int]],
                  first_node_online: bool = True) -> str:
    """Distances to every online node, + "\\n"; a space precedes every node but node 0.

    `distances` is either `(node_id, distance)` pairs of the online nodes in ascending
    id order, or plain distances in that order with `first_node_online` telling whether
    the first of them is node 0 (else the line starts with a space).
    Linux: drivers/base/node.c:node_read_distance().
    """
    out = []
    for i, item in enumerate(distances):
        if isinstance(item, tuple):
            nid, dist = item
            node0 = nid == 0
        else:
            dist, node0 = item, i == 0 and first_node_online
        out.append(f"{'' if node0 else ' '}{int(dist)}")
    return "".join(out) + "\n"


NODE_NUMASTAT_KEYS: tuple[str, ...] = (
    "numa_hit", "numa_miss", "numa_foreign", "interleave_hit", "local_node", "other_node")


def node_numastat(numa_hit: int, numa_miss: int, numa_foreign: int,
                  interleave_hit: int, local_node: int, other_node: int) -> str:
    """Six `name value` lines. Linux: drivers/base/node.c:node_read_numastat()."""
    return _name_values(NODE_NUMASTAT_KEYS, dict(zip(NODE_NUMASTAT_KEYS, (
        numa_hit, numa_miss, numa_foreign, interleave_hit, local_node, other_node))))


#: The kB keys of nodeN/meminfo in order (the three HugePages_* lines follow them).
NODE_MEMINFO_KEYS: tuple[str, ...] = (
    "MemTotal", "MemFree", "MemUsed", "Active", "Inactive", "Active(anon)",
    "Inactive(anon)", "Active(file)", "Inactive(file)", "Unevictable", "Mlocked",
    "Dirty", "Writeback", "FilePages", "Mapped", "AnonPages", "Shmem", "KernelStack",
    "PageTables", "NFS_Unstable", "Bounce", "WritebackTmp", "KReclaimable", "Slab",
    "SReclaimable", "SUnreclaim", "AnonHugePages", "ShmemHugePages", "ShmemPmdMapped")


def node_meminfo(nid: int, kb: Mapping[str, int], huge_total: int, huge_free: int,
                 huge_surp: int) -> str:
    """`Node N Key:<pad>%8lu kB` lines, then HugePages_Total/Free/Surp as `%5u` counts.

    `kb` maps NODE_MEMINFO_KEYS to kB; missing keys print 0, a missing MemUsed is
    MemTotal - MemFree. Linux: drivers/base/node.c:node_read_meminfo() and
    mm/hugetlb.c:hugetlb_report_node_meminfo().
    """
    vals = {"MemUsed": kb.get("MemTotal", 0) - kb.get("MemFree", 0), **kb}
    args: list[int] = []
    for k in NODE_MEMINFO_KEYS:
        args += (nid, int(vals.get(k, 0)))
    return _NODE_MEMINFO_FORMAT % (*args, nid, huge_total, nid, huge_free, nid, huge_surp)


# node_meminfo's lines as one %-format (what _val writes, a tenth of the time: a
# daemon's open of nodeN/meminfo renders it)
_NODE_MEMINFO_FORMAT = (
    "".join(f"Node %d {k + ':':<16}%8d kB\n" for k in NODE_MEMINFO_KEYS)
    + "".join(f"Node %d {k + ':':<17}%5d\n" for k in ("HugePages_Total", "HugePages_Free",
                                                      "HugePages_Surp")))


_ZONE_STAT_KEYS = (
    "nr_free_pages", "nr_zone_inactive_anon", "nr_zone_active_anon",
    "nr_zone_inactive_file", "nr_zone_active_file", "nr_zone_unevictable",
    "nr_zone_write_pending", "nr_mlock", "nr_page_table_pages", "nr_kernel_stack",
    "nr_bounce", "nr_zspages", "nr_free_cma")
_NUMA_STAT_KEYS = (
    "numa_hit", "numa_miss", "numa_foreign", "numa_interleave", "numa_local", "numa_other")
_NODE_STAT_KEYS = (
    "nr_inactive_anon", "nr_active_anon", "nr_inactive_file", "nr_active_file",
    "nr_unevictable", "nr_slab_reclaimable", "nr_slab_unreclaimable", "nr_isolated_anon",
    "nr_isolated_file", "workingset_nodes", "workingset_refault", "workingset_activate",
    "workingset_restore", "workingset_nodereclaim", "nr_anon_pages", "nr_mapped",
    "nr_file_pages", "nr_dirty", "nr_writeback", "nr_writeback_temp", "nr_shmem",
    "nr_shmem_hugepages", "nr_shmem_pmdmapped", "nr_anon_transparent_hugepages",
    "nr_unstable", "nr_vmscan_write", "nr_vmscan_immediate_reclaim", "nr_dirtied",
    "nr_written", "nr_kernel_misc_reclaimable")
NODE_VMSTAT_KEYS: tuple[str, ...] = _ZONE_STAT_KEYS + _NUMA_STAT_KEYS + _NODE_STAT_KEYS


def node_vmstat(values: Mapping[str, int]) -> str:
    """Zone, NUMA and node counters of one node, `name value` each, missing -> 0.

    Linux: drivers/base/node.c:node_read_vmstat().
    """
    return _name_values(NODE_VMSTAT_KEYS, values)


# ------------------------------------------------- section 5: /proc/vmstat, meminfo


def _zones(event: str) -> tuple[str, ...]:
    """Linux: mm/vmstat.c TEXTS_FOR_ZONES() on x86_64 (no highmem zone)."""
    return tuple(f"{event}_{z}" for z in ("dma", "dma32", "normal", "movable"))


_VM_EVENT_KEYS = (
    "pgpgin", "pgpgout", "pswpin", "pswpout", *_zones("pgalloc"), *_zones("allocstall"),
    *_zones("pgskip"), "pgfree", "pgactivate", "pgdeactivate", "pglazyfree", "pgfault",
    "pgmajfault", "pglazyfreed", "pgrefill", "pgsteal_kswapd", "pgsteal_direct",
    "pgscan_kswapd", "pgscan_direct", "pgscan_direct_throttle", "zone_reclaim_failed",
    "pginodesteal", "slabs_scanned", "kswapd_inodesteal", "kswapd_low_wmark_hit_quickly",
    "kswapd_high_wmark_hit_quickly", "pageoutrun", "pgrotated", "drop_pagecache",
    "drop_slab", "oom_kill", "numa_pte_updates", "numa_huge_pte_updates",
    "numa_hint_faults", "numa_hint_faults_local", "numa_pages_migrated",
    "pgmigrate_success", "pgmigrate_fail", "compact_migrate_scanned",
    "compact_free_scanned", "compact_isolated", "compact_stall", "compact_fail",
    "compact_success", "compact_daemon_wake", "compact_daemon_migrate_scanned",
    "compact_daemon_free_scanned", "htlb_buddy_alloc_success", "htlb_buddy_alloc_fail",
    "unevictable_pgs_culled", "unevictable_pgs_scanned", "unevictable_pgs_rescued",
    "unevictable_pgs_mlocked", "unevictable_pgs_munlocked", "unevictable_pgs_cleared",
    "unevictable_pgs_stranded", "thp_fault_alloc", "thp_fault_fallback",
    "thp_collapse_alloc", "thp_collapse_alloc_failed", "thp_file_alloc",
    "thp_file_mapped", "thp_split_page", "thp_split_page_failed",
    "thp_deferred_split_page", "thp_split_pmd", "thp_split_pud", "thp_zero_page_alloc",
    "thp_zero_page_alloc_failed", "thp_swpout", "thp_swpout_fallback", "balloon_inflate",
    "balloon_deflate", "balloon_migrate", "swap_ra", "swap_ra_hit")
PROC_VMSTAT_KEYS: tuple[str, ...] = (
    NODE_VMSTAT_KEYS + ("nr_dirty_threshold", "nr_dirty_background_threshold")
    + _VM_EVENT_KEYS)


def proc_vmstat(values: Mapping[str, int]) -> str:
    """All of /proc/vmstat, `name value` each, missing -> 0. Linux: mm/vmstat.c:vmstat_show()."""
    return _name_values(PROC_VMSTAT_KEYS, values)


def _kb16(*keys: str) -> tuple[tuple[str, int, int, str], ...]:
    """Layout rows for show_val_kb() lines: 16-character label, %8lu, " kB"."""
    return tuple((k, 16, 8, " kB") for k in keys)


# (key, label width, number width, unit) of every /proc/meminfo line, in order.
_PROC_MEMINFO_LAYOUT: tuple[tuple[str, int, int, str], ...] = (
    *_kb16("MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapCached",
           "Active", "Inactive", "Active(anon)", "Inactive(anon)", "Active(file)",
           "Inactive(file)", "Unevictable", "Mlocked", "SwapTotal", "SwapFree", "Dirty",
           "Writeback", "AnonPages", "Mapped", "Shmem", "KReclaimable", "Slab",
           "SReclaimable", "SUnreclaim", "KernelStack", "PageTables", "NFS_Unstable",
           "Bounce", "WritebackTmp", "CommitLimit", "Committed_AS", "VmallocTotal",
           "VmallocUsed", "VmallocChunk", "Percpu"),
    ("HardwareCorrupted", 19, 5, " kB"),
    *_kb16("AnonHugePages", "ShmemHugePages", "ShmemPmdMapped", "CmaTotal", "CmaFree"),
    *((k, 19, 5, "") for k in (
        "HugePages_Total", "HugePages_Free", "HugePages_Rsvd", "HugePages_Surp")),
    *_kb16("Hugepagesize", "Hugetlb", "DirectMap4k", "DirectMap2M", "DirectMap1G"))
PROC_MEMINFO_KEYS: tuple[str, ...] = tuple(k for k, *_ in _PROC_MEMINFO_LAYOUT)
#: The keys proc_meminfo() takes from its `huge` mapping (hugetlb_report_meminfo()).
PROC_MEMINFO_HUGE_KEYS: tuple[str, ...] = (
    "HugePages_Total", "HugePages_Free", "HugePages_Rsvd", "HugePages_Surp",
    "Hugepagesize", "Hugetlb")


def proc_meminfo(kb: Mapping[str, int], huge: Mapping[str, int]) -> str:
    """The whole /proc/meminfo.

    `huge` holds PROC_MEMINFO_HUGE_KEYS (page counts, Hugepagesize and Hugetlb in kB;
    Hugepagesize defaults to 2048), `kb` every other key in kB. Missing keys print 0,
    except VmallocTotal (defaults to the x86_64 constant); VmallocUsed and VmallocChunk
    are always 0; DirectMap1G is printed only when `kb` has it.
    Linux: fs/proc/meminfo.c:meminfo_proc_show(), mm/hugetlb.c:hugetlb_report_meminfo(),
    arch/x86/mm/pageattr.c:arch_report_meminfo().
    """
    vals = {"VmallocTotal": VMALLOC_TOTAL_KB, **kb, "VmallocUsed": 0, "VmallocChunk": 0}
    vals.update((k, huge.get(k, 2048 if k == "Hugepagesize" else 0))
                for k in PROC_MEMINFO_HUGE_KEYS)
    return "".join(_val(k, vals.get(k, 0), width, numwidth, unit)
                   for k, width, numwidth, unit in _PROC_MEMINFO_LAYOUT
                   if k != "DirectMap1G" or k in kb)


# ------------------------------------------------- section 5: maps, smaps, numa_maps


def maps_line(start: int, end: int, perms: str, offset: int, major: int, minor: int,
              inode: int, path: str | None) -> str:
    """One /proc/PID/maps line with "\\n"; path (raw, newlines get escaped) at column 73.

    Linux: fs/proc/task_mmu.c:show_map_vma() / show_vma_header_prefix() + seq_pad().
    """
    if len(perms) != 4:
        raise ValueError(f"perms must be 4 characters: {perms!r}")
    prefix = f"{start:08x}-{end:08x} {perms} {offset:08x} {major:02x}:{minor:02x} {inode} "
    if path is None:
        return prefix + "\n"
    name = _mangle(path, "\n")
    return f"{prefix:<{MAPS_PAD_WIDTH}} {name}\n"


VSYSCALL_MAPS_LINE: str = maps_line(
    0xffffffffff600000, 0xffffffffff601000, "r-xp", 0, 0, 0, 0, "[vsyscall]")

#: Rss..Locked of smaps and smaps_rollup, in order (values in kB).
SMAPS_KEYS: tuple[str, ...] = (
    "Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty",
    "Referenced", "Anonymous", "LazyFree", "AnonHugePages", "ShmemPmdMapped",
    "Shared_Hugetlb", "Private_Hugetlb", "Swap", "SwapPss", "Locked")

# VmFlags mnemonics by vm_flags bit; "" is never printed (pkey bits 32-35 show up as
# ProtectionKey), unnamed bits (19 = VM_LOCKONFAULT, 36..63) print "??".
_VM_FLAG_NAMES: tuple[str, ...] = (
    "rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "gd", "um", "pf", "dw", "uw", "lo",
    "io", "sr", "rr", "dc", "de", "??", "ac", "nr", "ht", "sf", "ar", "wf", "dd", "sd",
    "mm", "hg", "nh", "mg", "", "", "", "") + ("??",) * 28


def _smaps_counters(counters: Mapping[str, int]) -> str:
    """Rss..Locked, kB. Linux: fs/proc/task_mmu.c:__show_smap()."""
    return "".join(_val(k, counters.get(k, 0), 17, 7) if k == "Private_Hugetlb"
                   else _val(k, counters.get(k, 0)) for k in SMAPS_KEYS)


def vm_flags_line(vm_flags: int) -> str:
    """`VmFlags: ` + two-letter code and a space per set bit. Linux: show_smap_vma_flags()."""
    return "VmFlags: " + "".join(f"{name} " for bit, name in enumerate(_VM_FLAG_NAMES)
                                 if name and vm_flags >> bit & 1) + "\n"


def smaps_block(maps_header: str, size_kb: int, kernel_page_kb: int, mmu_page_kb: int,
                counters: Mapping[str, int], protection_key: int, vm_flags: int) -> str:
    """One VMA of /proc/PID/smaps; `maps_header` is its maps_line(), counters SMAPS_KEYS.

    Linux: fs/proc/task_mmu.c:show_smap() (x86 with protection keys).
    """
    return (maps_header + _val("Size", size_kb) + _val("KernelPageSize", kernel_page_kb)
            + _val("MMUPageSize", mmu_page_kb) + _smaps_counters(counters)
            + _val("ProtectionKey", protection_key, unit="") + vm_flags_line(vm_flags))


# the gate VMA (get_gate_vma()) that maps and smaps list last: m_next() returns it
# after the mm's VMAs; smaps walks nothing there (it has no mm), and its vm_flags are
# VM_READ | VM_EXEC
VSYSCALL_SMAPS_BLOCK: str = smaps_block(VSYSCALL_MAPS_LINE, 4, 4, 4, {}, 0, 0b101)


def smaps_rollup(start: int, end: int, counters: Mapping[str, int]) -> str:
    """/proc/PID/smaps_rollup: `[rollup]` header from the first VMA's start to the last
    VMA's end, then Rss..Locked. Linux: fs/proc/task_mmu.c:show_smaps_rollup().
    """
    return maps_line(start, end, "---p", 0, 0, 0, 0, "[rollup]") + _smaps_counters(counters)


def mempolicy_str(mode: str = "default", nodes: Iterable[int] = (),
                  flag: str | None = None) -> str:
    """`default`, `local`, `prefer:1`, `bind=static:0-1`, ... Linux: mm/mempolicy.c:mpol_to_str().

    mode: default, prefer, bind, interleave or local; flag: None, "static" or "relative".
    """
    ids = node_list(nodes)[:-1]
    return mode + (f"={flag}" if flag else "") + (f":{ids}" if ids else "")


def numa_maps_line(start: int, policy: str, *, file: str | None = None,
                   heap: bool = False, stack: bool = False, huge: bool = False,
                   pages: int = 0, anon: int = 0, dirty: int = 0, mapmax: int = 0,
                   swapcache: int = 0, active: int = 0, writeback: int = 0,
                   node_pages: Mapping[int, int] | None = None,
                   kernel_pagesize_kb: int = 4) -> str:
    """One /proc/PID/numa_maps line with "\\n" (counts in base pages, hugetlb pages as 1).

    `policy` is a mempolicy_str(); file (raw path) wins over heap, heap over stack.
    Linux: fs/proc/task_mmu.c:show_numa_map().
    """
    out = [f"{start:08x} {policy}"]
    if file is not None:
        out.append(" file=" + _mangle(file, "\n\t= "))
    elif heap or stack:
        out.append(" heap" if heap else " stack")
    if huge:
        out.append(" huge")
    if pages:
        opt = (("anon", anon, anon), ("dirty", dirty, dirty),
               ("mapped", pages, pages != anon and pages != dirty),
               ("mapmax", mapmax, mapmax > 1), ("swapcache", swapcache, swapcache),
               ("active", active, active < pages and not huge),
               ("writeback", writeback, writeback))
        out += [f" {name}={v}" for name, v, shown in opt if shown]
        out += [f" N{nid}={n}" for nid, n in sorted((node_pages or {}).items()) if n]
        out.append(f" kernelpagesize_kB={kernel_pagesize_kb}")
    return "".join(out) + "\n"


# --------------------------------------------------------- /proc/PID/status


_TASK_STATES = {s[0]: s for s in (
    "R (running)", "S (sleeping)", "D (disk sleep)", "T (stopped)", "t (tracing stop)",
    "X (dead)", "Z (zombie)", "P (parked)", "I (idle)")}


@dataclass(frozen=True, kw_only=True)
class StatusInfo:
    """Everything /proc/PID/status prints. Sizes in kB, masks as ints, ids as seen by
    the reader's namespaces; ns_* give one value per pid-namespace level (None: one
    level holding tgid/pid/pgid/sid). name is the stored comm (<= 15 bytes)."""

    name: str
    state: str  # a letter of task_state_array ("S") or the full text ("S (sleeping)")
    tgid: int
    pid: int
    ppid: int
    pgid: int
    sid: int
    uid: tuple[int, int, int, int]  # real, effective, saved, fs
    gid: tuple[int, int, int, int]
    sigq: tuple[int, int]  # queued signals of the user / RLIMIT_SIGPENDING
    cpus_allowed: frozenset[int]
    nr_cpu_ids: int
    mems_allowed: frozenset[int]
    is_zombie_or_kthread: bool = False
    umask: int = 0o022
    ngid: int = 0
    tracer_pid: int = 0
    fdsize: int = 64
    groups: tuple[int, ...] = ()
    ns_tgid: tuple[int, ...] | None = None
    ns_pid: tuple[int, ...] | None = None
    ns_pgid: tuple[int, ...] | None = None
    ns_sid: tuple[int, ...] | None = None
    vm_peak: int = 0
    vm_size: int = 0
    vm_lck: int = 0
    vm_pin: int = 0
    vm_hwm: int = 0
    vm_rss: int = 0
    rss_anon: int = 0
    rss_file: int = 0
    rss_shmem: int = 0
    vm_data: int = 0
    vm_stk: int = 0
    vm_exe: int = 0
    vm_lib: int = 0
    vm_pte: int = 0
    vm_swap: int = 0
    hugetlb_pages: int = 0
    core_dumping: bool = False
    threads: int = 1
    sig_pnd: int = 0
    shd_pnd: int = 0
    sig_blk: int = 0
    sig_ign: int = 0
    sig_cgt: int = 0
    cap_inh: int = 0
    cap_prm: int = 0
    cap_eff: int = 0
    cap_bnd: int = 0x3fffffffff  # CAP_LAST_CAP = 37 (CAP_AUDIT_READ) in 4.20
    cap_amb: int = 0
    no_new_privs: bool = False
    seccomp: int = 0
    speculation_store_bypass: str = "thread vulnerable"
    voluntary_ctxt_switches: int = 0
    nonvoluntary_ctxt_switches: int = 0

    def __post_init__(self) -> None:
        if len(self.uid) != 4 or len(self.gid) != 4:
            raise ValueError("uid and gid take 4 values: real, effective, saved, fs")


def _umask(umask: int) -> str:
    """C's `%#04o` (Python's `#o` would print `0o22`)."""
    return (f"0{umask:o}" if umask else "0").rjust(4, "0")


def proc_status(info: StatusInfo) -> str:
    """The whole /proc/PID/status. Zombies and kernel threads get no Umask, Vm*, Rss*,
    HugetlbPages or CoreDumping lines.

    Linux: fs/proc/array.c:proc_pid_status() (task_state, task_mem, hugetlb_report_usage,
    task_core_dumping, task_sig, task_cap, task_seccomp, task_cpus_allowed,
    task_context_switch_counts) and kernel/cgroup/cpuset.c:cpuset_task_status_allowed().
    """
    i = info
    has_mm = not i.is_zombie_or_kthread
    name = i.name.replace("\\", "\\\\").replace("\n", "\\n")  # proc_task_name(escape)
    out = [f"Name:\t{name}\n"]
    if has_mm:
        out.append(f"Umask:\t{_umask(i.umask)}\n")
    out += [f"State:\t{_TASK_STATES.get(i.state, i.state)}\n", f"Tgid:\t{i.tgid}\n",
            f"Ngid:\t{i.ngid}\n", f"Pid:\t{i.pid}\n", f"PPid:\t{i.ppid}\n",
            f"TracerPid:\t{i.tracer_pid}\n",
            "Uid:\t" + "\t".join(map(str, i.uid)) + "\n",
            "Gid:\t" + "\t".join(map(str, i.gid)) + "\n",
            f"FDSize:\t{i.fdsize}\n",
            "Groups:\t" + " ".join(map(str, i.groups)) + " \n"]
    for key, levels, own in (("NStgid", i.ns_tgid, i.tgid), ("NSpid", i.ns_pid, i.pid),
                             ("NSpgid", i.ns_pgid, i.pgid), ("NSsid", i.ns_sid, i.sid)):
        out.append(f"{key}:" + "".join(f"\t{v}" for v in (levels or (own,))) + "\n")
    if has_mm:
        out += [f"{k}:\t{int(v):>8} kB\n" for k, v in (
            ("VmPeak", i.vm_peak), ("VmSize", i.vm_size), ("VmLck", i.vm_lck),
            ("VmPin", i.vm_pin), ("VmHWM", i.vm_hwm), ("VmRSS", i.vm_rss),
            ("RssAnon", i.rss_anon), ("RssFile", i.rss_file), ("RssShmem", i.rss_shmem),
            ("VmData", i.vm_data), ("VmStk", i.vm_stk), ("VmExe", i.vm_exe),
            ("VmLib", i.vm_lib), ("VmPTE", i.vm_pte), ("VmSwap", i.vm_swap),
            ("HugetlbPages", i.hugetlb_pages))]
        out.append(f"CoreDumping:\t{int(i.core_dumping)}\n")
    out += [f"Threads:\t{i.threads}\n", f"SigQ:\t{i.sigq[0]}/{i.sigq[1]}\n"]
    out += [f"{k}:\t{v:016x}\n" for k, v in (
        ("SigPnd", i.sig_pnd), ("ShdPnd", i.shd_pnd), ("SigBlk", i.sig_blk),
        ("SigIgn", i.sig_ign), ("SigCgt", i.sig_cgt), ("CapInh", i.cap_inh),
        ("CapPrm", i.cap_prm), ("CapEff", i.cap_eff), ("CapBnd", i.cap_bnd),
        ("CapAmb", i.cap_amb))]
    out += [f"NoNewPrivs:\t{int(i.no_new_privs)}\n", f"Seccomp:\t{i.seccomp}\n",
            f"Speculation_Store_Bypass:\t{i.speculation_store_bypass}\n",
            "Cpus_allowed:\t" + cpumap(i.cpus_allowed, i.nr_cpu_ids),
            "Cpus_allowed_list:\t" + node_list(i.cpus_allowed),
            "Mems_allowed:\t" + cpumap(i.mems_allowed, MAX_NUMNODES),
            "Mems_allowed_list:\t" + node_list(i.mems_allowed),
            f"voluntary_ctxt_switches:\t{i.voluntary_ctxt_switches}\n",
            f"nonvoluntary_ctxt_switches:\t{i.nonvoluntary_ctxt_switches}\n"]
    return "".join(out)


RLIM_INFINITY = (1 << 64) - 1
USER_HZ = 100  # clock_t ticks per second


@dataclass(frozen=True, kw_only=True)
class TaskStat:
    """What /proc/PID/stat prints that varies for an emulated task; the rest is what a
    task that never ran, has no tty, no signals, no children and no real-time policy
    shows. Addresses are the mm's (0 with no mm); ``permitted`` is
    ptrace_may_access() for the reader, without which the code, stack and data
    addresses read 1, 1, 0, 0 and the exit code 0."""

    pid: int
    comm: str
    state: str  # a letter of task_state_array
    ppid: int
    pgrp: int
    session: int
    flags: int  # task->flags (PF_*)
    num_threads: int
    start_time: int  # clock ticks since boot
    has_mm: bool
    permitted: bool
    vsize: int = 0  # bytes
    rss: int = 0  # pages
    start_code: int = 0
    end_code: int = 0
    start_stack: int = 0
    exit_signal: int = 17  # SIGCHLD; -1 for a thread that is not the group leader
    processor: int = 0
    start_data: int = 0
    end_data: int = 0
    start_brk: int = 0
    arg_start: int = 0
    arg_end: int = 0
    env_start: int = 0
    env_end: int = 0


def proc_pid_stat(s: TaskStat) -> str:
    """/proc/PID/stat and /proc/PID/task/TID/stat: 52 fields on one line.

    Linux: fs/proc/array.c do_task_stat() of 4.20 (tty_nr 0 and tpgid -1 without a
    tty; priority 20 and nice 0 for SCHED_OTHER at nice 0; rsslim RLIM_INFINITY;
    esp and eip 0 unless the task is exiting or dumping core; the signal words, wchan
    and nswap 0)."""
    mm, ok = s.has_mm, s.permitted
    code = (s.start_code, s.end_code) if ok else (1, 1)
    fields = [
        s.ppid, s.pgrp, s.session, 0, -1, s.flags,
        0, 0, 0, 0,  # minflt, cminflt, majflt, cmajflt
        0, 0, 0, 0,  # utime, stime, cutime, cstime
        20, 0, s.num_threads, 0, s.start_time,
        s.vsize if mm else 0, s.rss if mm else 0, RLIM_INFINITY,
        code[0] if mm else 0, code[1] if mm else 0, s.start_stack if mm and ok else 0,
        0, 0,  # esp, eip
        0, 0, 0, 0,  # signal, blocked, sigignore, sigcatch
        0, 0, 0,  # wchan, nswap, cnswap
        s.exit_signal, s.processor, 0, 0,  # rt_priority, policy
        0, 0, 0,  # delayacct_blkio_ticks, guest_time, cguest_time
        *((s.start_data, s.end_data, s.start_brk, s.arg_start, s.arg_end, s.env_start,
           s.env_end) if mm and ok else (0,) * 7),
        0,  # exit_code
    ]
    return f"{s.pid} ({s.comm}) {s.state} " + " ".join(map(str, fields)) + "\n"


def proc_pid_statm(size: int, resident: int, shared: int, text: int, data: int) -> str:
    """/proc/PID/statm in pages: size resident shared text lib data dt, lib and dt
    always 0 (fs/proc/array.c proc_pid_statm(), task_statm()); all 0 without an mm."""
    return f"{size} {resident} {shared} {text} 0 {data} 0\n"
