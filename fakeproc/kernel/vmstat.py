"""Counters by their kernel names, and the derived values meminfo prints.

Linux: mm/vmstat.c (node/zone/NUMA counters, vm events), drivers/base/node.c
node_read_meminfo(), fs/proc/meminfo.c meminfo_proc_show(). Everything here is
read from the native counters the page-state changes maintain; nothing is
counted twice and no renderer computes a number of its own.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .native import lib

if TYPE_CHECKING:
    from .kernel import Kernel

PAGE_KB = 4
HPAGE_PAGES = 512

_NODE_STAT_NAMES = {
    lib.FP_NR_FREE_PAGES: "nr_free_pages",
    lib.FP_NR_ANON_PAGES: "nr_anon_pages",
    lib.FP_NR_ACTIVE_ANON: "nr_active_anon",
    lib.FP_NR_INACTIVE_ANON: "nr_inactive_anon",
    lib.FP_NR_ACTIVE_FILE: "nr_active_file",
    lib.FP_NR_INACTIVE_FILE: "nr_inactive_file",
    lib.FP_NR_FILE_PAGES: "nr_file_pages",
    lib.FP_NR_MAPPED: "nr_mapped",
    lib.FP_NR_ANON_THPS: "nr_anon_transparent_hugepages",
    lib.FP_NR_DIRTY: "nr_dirty",
    lib.FP_NR_PAGETABLE: "nr_page_table_pages",
    lib.FP_NR_SHMEM: "nr_shmem",
    lib.FP_NR_ISOLATED_ANON: "nr_isolated_anon",
    lib.FP_NR_ISOLATED_FILE: "nr_isolated_file",
    lib.FP_NR_UNEVICTABLE: "nr_unevictable",
    lib.FP_NUMA_HIT: "numa_hit",
    lib.FP_NUMA_MISS: "numa_miss",
    lib.FP_NUMA_FOREIGN: "numa_foreign",
    lib.FP_NUMA_INTERLEAVE: "numa_interleave",
    lib.FP_NUMA_LOCAL: "numa_local",
    lib.FP_NUMA_OTHER: "numa_other",
}
_EVENT_NAMES = {
    lib.FP_EV_PGFAULT: "pgfault",
    lib.FP_EV_PGALLOC_NORMAL: "pgalloc_normal",
    lib.FP_EV_PGFREE: "pgfree",
    lib.FP_EV_THP_FAULT_ALLOC: "thp_fault_alloc",
    lib.FP_EV_THP_FAULT_FALLBACK: "thp_fault_fallback",
    lib.FP_EV_PGACTIVATE: "pgactivate",
    lib.FP_EV_PGMAJFAULT: "pgmajfault",
    lib.FP_EV_PGDEACTIVATE: "pgdeactivate",
    lib.FP_EV_PGREFILL: "pgrefill",
    lib.FP_EV_PGSTEAL_KSWAPD: "pgsteal_kswapd",
    lib.FP_EV_PGSTEAL_DIRECT: "pgsteal_direct",
    lib.FP_EV_PGSCAN_KSWAPD: "pgscan_kswapd",
    lib.FP_EV_PGSCAN_DIRECT: "pgscan_direct",
    lib.FP_EV_PSWPIN: "pswpin",
    lib.FP_EV_PSWPOUT: "pswpout",
    lib.FP_EV_PGMIGRATE_SUCCESS: "pgmigrate_success",
    lib.FP_EV_PGMIGRATE_FAIL: "pgmigrate_fail",
    lib.FP_EV_ALLOCSTALL_NORMAL: "allocstall_normal",
    lib.FP_EV_PAGEOUTRUN: "pageoutrun",
    lib.FP_EV_OOM_KILL: "oom_kill",
    lib.FP_EV_THP_SWPOUT_FALLBACK: "thp_swpout_fallback",
    lib.FP_EV_KSWAPD_LOW_WMARK_HIT_QUICKLY: "kswapd_low_wmark_hit_quickly",
    lib.FP_EV_KSWAPD_HIGH_WMARK_HIT_QUICKLY: "kswapd_high_wmark_hit_quickly",
    lib.FP_EV_PGROTATED: "pgrotated",
    lib.FP_EV_THP_SPLIT_PMD: "thp_split_pmd",
    lib.FP_EV_THP_SPLIT_PAGE: "thp_split_page",
    lib.FP_EV_THP_SPLIT_PAGE_FAILED: "thp_split_page_failed",
    lib.FP_EV_THP_DEFERRED_SPLIT_PAGE: "thp_deferred_split_page",
    lib.FP_EV_THP_ZERO_PAGE_ALLOC: "thp_zero_page_alloc",
    lib.FP_EV_NUMA_PAGES_MIGRATED: "numa_pages_migrated",
    lib.FP_EV_NUMA_HINT_FAULTS: "numa_hint_faults",
    lib.FP_EV_PGPROMOTE_SUCCESS: "pgpromote_success",
    lib.FP_EV_PGPROMOTE_CANDIDATE: "pgpromote_candidate",
    lib.FP_EV_PGDEMOTE_KSWAPD: "pgdemote_kswapd",
    lib.FP_EV_PGDEMOTE_DIRECT: "pgdemote_direct",
}
# counters that arrived after 4.20: /proc/vmstat shows them on upstream-mode machines
UPSTREAM_VMSTAT = ("pgpromote_success", "pgpromote_candidate", "pgdemote_kswapd", "pgdemote_direct")


def node_counters(kernel: "Kernel", nid: int) -> dict[str, int]:
    """One node's counters under their /sys/.../nodeN/vmstat names (pages, events)."""
    raw = kernel.node_stat(nid)
    c = {name: raw[i] for i, name in _NODE_STAT_NAMES.items()}
    # single-zone nodes: the zone LRU counters equal the node's
    c["nr_zone_inactive_anon"] = c["nr_inactive_anon"]
    c["nr_zone_active_anon"] = c["nr_active_anon"]
    c["nr_zone_inactive_file"] = c["nr_inactive_file"]
    c["nr_zone_active_file"] = c["nr_active_file"]
    c["nr_zone_unevictable"] = c["nr_unevictable"]
    c["nr_zone_write_pending"] = c["nr_dirty"]
    return c


def global_counters(kernel: "Kernel") -> dict[str, int]:
    """/proc/vmstat values: node counters summed over nodes, then the events."""
    total: dict[str, int] = {}
    for n in kernel.nodes:
        for k, v in node_counters(kernel, n.id).items():
            total[k] = total.get(k, 0) + v
    for i, name in _EVENT_NAMES.items():
        total[name] = kernel.event(i)
    total["nr_dirty_background_threshold"], total["nr_dirty_threshold"] = dirty_limits(kernel, total)
    return total


# vm.dirty_background_ratio and vm.dirty_ratio (defaults), as domain_dirty_limits()
# turns them into fractions of a page: 10 * 4096 / 100 and 20 * 4096 / 100
_BG_RATIO = 10 * 4096 // 100
_RATIO = 20 * 4096 // 100


def dirty_limits(kernel: "Kernel", total: dict[str, int]) -> tuple[int, int]:
    """(background, threshold) in pages: 4.20's global_dirty_limits() for a task that is
    neither real-time nor PF_LESS_THROTTLE. The dirtyable memory is free pages less the
    reserve (totalreserve_pages: each zone's high watermark, one zone a node, so no
    lowmem_reserve) plus the file LRUs, plus one (global_dirtyable_memory())."""
    free = total["nr_free_pages"]
    reserve = sum(min(kernel.watermarks(n.id)[2], n.nr_pages) for n in kernel.nodes)
    available = free - min(free, reserve) + total["nr_inactive_file"] + total["nr_active_file"] + 1
    thresh = _RATIO * available // 4096
    bg = _BG_RATIO * available // 4096
    return (thresh // 2 if bg >= thresh else bg), thresh


def _meminfo_from(c: dict[str, int], total_pages: int) -> dict[str, int]:
    """The kB values both meminfo files share, from summed or per-node counters."""
    kb = {
        "MemTotal": total_pages * PAGE_KB,
        "MemFree": c["nr_free_pages"] * PAGE_KB,
        "Active": (c["nr_active_anon"] + c["nr_active_file"]) * PAGE_KB,
        "Inactive": (c["nr_inactive_anon"] + c["nr_inactive_file"]) * PAGE_KB,
        "Active(anon)": c["nr_active_anon"] * PAGE_KB,
        "Inactive(anon)": c["nr_inactive_anon"] * PAGE_KB,
        "Active(file)": c["nr_active_file"] * PAGE_KB,
        "Inactive(file)": c["nr_inactive_file"] * PAGE_KB,
        "Unevictable": c["nr_unevictable"] * PAGE_KB,
        "Dirty": c["nr_dirty"] * PAGE_KB,
        "Mapped": c["nr_mapped"] * PAGE_KB,
        "AnonPages": c["nr_anon_pages"] * PAGE_KB,
        "Shmem": c["nr_shmem"] * PAGE_KB,
        "PageTables": c["nr_page_table_pages"] * PAGE_KB,
        "AnonHugePages": c["nr_anon_transparent_hugepages"] * HPAGE_PAGES * PAGE_KB,
    }
    return kb


def node_meminfo(kernel: "Kernel", nid: int) -> dict[str, int]:
    """nodeN/meminfo values in kB (MemUsed = MemTotal - MemFree)."""
    c = node_counters(kernel, nid)
    kb = _meminfo_from(c, kernel.node(nid).nr_pages)
    kb["MemUsed"] = kb["MemTotal"] - kb["MemFree"]
    kb["FilePages"] = c["nr_file_pages"] * PAGE_KB
    return kb


VM_ACCOUNT = 1 << 20


def committed_pages(kernel: "Kernel") -> int:
    """vm_committed_as: what the overcommit account was charged. Every VM_ACCOUNT
    mapping (private writable memory, the heap and the stack: mmap_region(), brk(),
    acct_stack_growth(); a fork charges its copy again, dup_mmap()) and each shared
    anonymous or SysV segment once, at its creation (shmem_acct_size(); a forked
    child's copy is its parent's segment, and a memfd is VM_NORESERVE). Not file
    mappings that are shared or read-only, hugetlb, [vdso] or [vvar]."""
    pages = 0
    for t in kernel.tasks.values():
        for v in [] if t.mm_id is None else kernel.mm(t.mm_id).vmas:
            if v.vm_flags & VM_ACCOUNT:
                pages += v.nr_pages
            elif v.kind == "shm" and not t.forked and not (v.path or "").startswith("/memfd:"):
                pages += v.nr_pages
    return pages


def meminfo(kernel: "Kernel") -> dict[str, int]:
    """/proc/meminfo values in kB. No slab and no vmalloc in the emulation."""
    c = global_counters(kernel)
    total_pages = sum(n.nr_pages for n in kernel.nodes)
    kb = _meminfo_from(c, total_pages)
    kb["Cached"] = c["nr_file_pages"] * PAGE_KB
    # si_mem_available() reduced to what the emulation has: free + page cache
    kb["MemAvailable"] = kb["MemFree"] + kb["Cached"]
    total_swap, used_swap = kernel.swap_pages()
    # vm_commit_limit(): RAM (no hugetlb pool) x overcommit_ratio (50) % + swap, in pages
    kb["CommitLimit"] = (total_pages * 50 // 100 + total_swap) * PAGE_KB
    kb["Committed_AS"] = committed_pages(kernel) * PAGE_KB
    kb["VmallocTotal"] = 34359738367
    kb["SwapTotal"] = total_swap * PAGE_KB
    kb["SwapFree"] = (total_swap - min(used_swap, total_swap)) * PAGE_KB
    # the direct map: the first 2 MiB in 4 KiB pages, 2 MiB pages up to the first
    # 1 GiB boundary, 1 GiB pages after it (x86_64 with pdpe1gb)
    total, gib = kb["MemTotal"], 1 << 20
    kb["DirectMap4k"] = min(total, 2048)
    kb["DirectMap2M"] = min(total, gib) - kb["DirectMap4k"]
    if total > gib:
        kb["DirectMap1G"] = (total - gib) // gib * gib
        kb["DirectMap2M"] += (total - gib) % gib
    return kb
