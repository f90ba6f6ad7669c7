"""Every number agrees with the page state (INTERFACES.md 2.2 and 5), through the mount.

The machine below pins known pages on known nodes; every expected value is counted by
hand from it (the tallies are in the comments), never read back from fakeproc.

Page tables: a table is one 4 KiB page, allocated from the task's zonelist (its
preferred node first) when the first page of its range is mapped. 4-level x86_64:
PGD, PUD, PMD and PTE tables; a THP is a PMD entry that needs no PTE table, but its
PMD keeps one in reserve for a later split (4.20's __do_huge_pmd_anonymous_page():
pte_alloc_one() + pgtable_trans_huge_deposit()), allocated and counted like the
others. VmPTE counts PUD + PMD + PTE tables and the deposits (mm_pgtables_bytes), not
the PGD. PageTables (NR_PAGETABLE) counts only the PTE tables and the deposits, which
pte_alloc_one() makes (pgtable_page_ctor()); the PGD, PUD and PMD pages are plain
kernel pages in 4.20: used, so not free, but in no counter.

NUMA counters (mm/page_alloc.c zone_statistics() in 4.20): one count per allocation,
whatever its order (a THP counts once): on the node that supplied the page, numa_hit
if it is the preferred node of the allocation, else numa_miss there and numa_foreign
on the preferred node; local_node if it is the allocating CPU's node, else other_node.
A page pinned with `@N` / `node = N` away from the task's preferred node is counted as
such a fallback allocation.
"""
from __future__ import annotations

import pytest

from mountutil import mounted

pytestmark = pytest.mark.fuse

NODE = "sys/devices/system/node"

MACHINE = """
distances = [
  [10, 21, 17, 28],
  [21, 10, 28, 17],
  [17, 28, 10, 28],
  [28, 17, 28, 10],
]

[[node]]
type = "dram"
size = "256MiB"
cpus = "0-1"

[[node]]
type = "dram"
size = "256MiB"
cpus = "2-3"

[[node]]
type = "pmem"
size = "512MiB"

[[node]]
type = "pmem"
size = "512MiB"

# alpha: CPU 0 (local node 0), default policy: preferred node 0 (zonelist 0, 1)
[[process]]
pid = 1000
name = "alpha"
cpu = 0

[[process.vma]]
start = 0x7f0000000000
size = "64KiB"
pages = "10 accessed, 6 dirty"

[[process.vma]]
start = 0x7f0000010000
size = "16KiB"
perms = "r-xp"
path = "/usr/lib/libalpha.so"
pages = "4 accessed"

[[process.vma]]
start = 0x7f0000200000
size = "64KiB"
pages = "5 accessed@2, 3 idle@1"

[[process.vma]]
start = 0x7f0000400000
size = "4MiB"
thp = true
pages = "2 thp-accessed"

[[process.vma]]
start = 0x7f0000800000
size = "2MiB"
thp = true
node = 3
pages = "1 thp-dirty"

# beta: CPU 2 (local node 1), default policy: preferred node 1 (zonelist 1, 0)
[[process]]
pid = 2000
name = "beta"
cpu = 2

[[process.vma]]
start = 0x7f0000000000
size = "32KiB"
pages = "8 dirty"

[[process.vma]]
start = 0x7f0000200000
size = "16KiB"
node = 2
pages = "4 accessed"

# gamma: CPU 0 (local node 0), prefer:2: preferred node 2 (zonelist 2, 3)
[[process]]
pid = 3000
name = "gamma"
cpu = 0
policy = "prefer:2"

[[process.vma]]
start = 0x7f0000000000
size = "40KiB"
pages = "7 accessed, 3 accessed@3"

# delta: CPU 3 (local node 1), MAP_POPULATE of 1 MiB: 256 page faults on node 1
[[process]]
pid = 4000
name = "delta"
cpu = 3

[[process.vma]]
start = 0x7f0000000000
size = "1MiB"
populate = true
"""

# Tally per node (pages):
#
# node 0 (256 MiB = 65536 pages)
#   anon: alpha 16 (10 accessed + 6 dirty) + alpha 2 THPs (1024)   = 1040, all active
#   file: alpha 4 (libalpha.so, inactive file, mapped)              =    4
#   page tables: alpha PGD, PUD, PMD, PTE(0x7f0000000000), PTE(0x7f0000200000)
#                + 3 deposited with its THPs (the one on node 3 too: tables follow
#                the task's policy, not the VMA's node) = 8, PageTables 2 + 3 = 5
#   reserved: PFN 0 (x86 reserves it at boot)
#   free: 65536 - 1 - 1040 - 4 - 8 = 64483
#   numa: hit = alpha 16 + 4 + 2 THPs = 22, local 22
#         foreign = alpha's 5@2 + 3@1 + the THP on node 3 = 9
# node 1 (65536 pages)
#   anon: alpha 3@1 + beta 8 + delta 256 = 267, all active
#   page tables: beta 5 (PGD, PUD, PMD, 2 PTE) + delta 4 (PGD, PUD, PMD, PTE) = 9,
#                PageTables 2 + 1 = 3
#   free: 65536 - 267 - 9 = 65260
#   numa: hit = beta 8 + delta 256 = 264, local 264
#         miss = alpha 3 (other: alpha runs on node 0), foreign = beta's 4 on node 2
# node 2 (512 MiB = 131072 pages)
#   anon: alpha 5 + beta 4 + gamma 7 = 16
#   page tables: gamma 4 (PGD, PUD, PMD, PTE; prefer:2 puts them on node 2),
#                PageTables 1
#   free: 131072 - 16 - 4 = 131052
#   numa: hit = gamma 7, miss = alpha 5 + beta 4 = 9, foreign = gamma's 3@3
#         other = 7 + 5 + 4 = 16 (no task runs on node 2)
# node 3 (131072 pages)
#   anon: alpha's THP (512) + gamma 3 = 515; 1 THP
#   free: 131072 - 515 = 130557
#   numa: miss = alpha 1 (THP) + gamma 3 = 4, other 4
#
# machine: anon 1040 + 267 + 16 + 515 = 1838 pages; file 4; tables 21 (PageTables
#   5 + 3 + 1 = 9, and 12 PGD/PUD/PMD pages); THPs 3
#   free 64483 + 65260 + 131052 + 130557 = 391352 pages = 1565408 kB
#   MemTotal 1536 MiB = 1572864 kB = 1565408 + 4 (PFN 0) + 7352 (anon) + 16 (file) + 84 (tables:
#   36 PageTables + 48 upper levels)
#   pgalloc_normal = 1838 + 4 + 21 = 1863 pages (nothing is ever freed)


@pytest.fixture(scope="module")
def m():
    with mounted(MACHINE) as mnt:
        yield mnt


def kv(text: str, sep: str = " ") -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        k, v = line.split(sep, 1)
        out[k] = int(v.split()[0])
    return out


def node_meminfo(m, nid: int) -> dict[str, int]:
    prefix = f"Node {nid} "
    out = {}
    for line in m.read(f"{NODE}/node{nid}/meminfo").decode().splitlines():
        assert line.startswith(prefix)
        k, v = line[len(prefix):].split(":", 1)
        out[k] = int(v.split()[0])
    return out


def node_vmstat(m, nid: int) -> dict[str, int]:
    return kv(m.read(f"{NODE}/node{nid}/vmstat").decode())


def status(m, pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in m.read(f"proc/{pid}/status").decode().splitlines())


# node -> (AnonPages, Active(anon), AnonHugePages, FilePages, PageTables, MemFree) in kB
NODE_KB = {
    0: (4160, 4160, 4096, 16, 20, 257932),
    1: (1068, 1068, 0, 0, 12, 261040),
    2: (64, 64, 0, 0, 4, 524208),
    3: (2060, 2060, 2048, 0, 0, 522228),
}
# node -> the PGD, PUD and PMD pages on it, in kB: used, in no counter
UPPER_TABLES_KB = {0: 12, 1: 24, 2: 12, 3: 0}
RESERVED_KB = {0: 4, 1: 0, 2: 0, 3: 0}  # PFN 0
NODE_TOTAL_KB = {0: 262144, 1: 262144, 2: 524288, 3: 524288}


@pytest.mark.parametrize("nid", [0, 1, 2, 3])
def test_node_meminfo(m, nid):
    mi = node_meminfo(m, nid)
    anon, active_anon, anon_huge, file_, tables, free = NODE_KB[nid]
    assert mi["MemTotal"] == NODE_TOTAL_KB[nid]
    assert mi["AnonPages"] == anon
    assert mi["Active(anon)"] == active_anon
    assert mi["Inactive(anon)"] == 0
    assert mi["AnonHugePages"] == anon_huge
    assert mi["FilePages"] == file_
    assert mi["Mapped"] == file_
    assert mi["Inactive(file)"] == file_  # page cache enters the inactive list
    assert mi["Active(file)"] == 0
    assert mi["Active"] == active_anon
    assert mi["Inactive"] == file_
    assert mi["PageTables"] == tables
    assert mi["MemFree"] == free
    assert mi["MemFree"] == (mi["MemTotal"] - mi["AnonPages"] - mi["PageTables"] - mi["FilePages"]
                             - UPPER_TABLES_KB[nid] - RESERVED_KB[nid])
    assert mi["MemUsed"] == mi["MemTotal"] - mi["MemFree"]
    assert mi["Unevictable"] == mi["Mlocked"] == mi["Dirty"] == mi["Shmem"] == 0
    assert mi["HugePages_Total"] == mi["HugePages_Free"] == mi["HugePages_Surp"] == 0


# node 0 as a whole file: the numbers above in the 2.2 layout
NODE0_MEMINFO = """\
Node 0 MemTotal:         262144 kB
Node 0 MemFree:          257932 kB
Node 0 MemUsed:            4212 kB
Node 0 Active:             4160 kB
Node 0 Inactive:             16 kB
Node 0 Active(anon):       4160 kB
Node 0 Inactive(anon):        0 kB
Node 0 Active(file):          0 kB
Node 0 Inactive(file):       16 kB
Node 0 Unevictable:           0 kB
Node 0 Mlocked:               0 kB
Node 0 Dirty:                 0 kB
Node 0 Writeback:             0 kB
Node 0 FilePages:            16 kB
Node 0 Mapped:               16 kB
Node 0 AnonPages:          4160 kB
Node 0 Shmem:                 0 kB
Node 0 KernelStack:           0 kB
Node 0 PageTables:           20 kB
Node 0 NFS_Unstable:          0 kB
Node 0 Bounce:                0 kB
Node 0 WritebackTmp:          0 kB
Node 0 KReclaimable:          0 kB
Node 0 Slab:                  0 kB
Node 0 SReclaimable:          0 kB
Node 0 SUnreclaim:            0 kB
Node 0 AnonHugePages:      4096 kB
Node 0 ShmemHugePages:        0 kB
Node 0 ShmemPmdMapped:        0 kB
Node 0 HugePages_Total:     0
Node 0 HugePages_Free:      0
Node 0 HugePages_Surp:      0
"""


def test_node0_meminfo_whole_file(m):
    assert m.read(f"{NODE}/node0/meminfo").decode() == NODE0_MEMINFO


# node -> pages: nr_anon_pages, nr_active_anon, nr_anon_transparent_hugepages,
# nr_free_pages, nr_page_table_pages, nr_file_pages
NODE_PAGES = {
    0: (1040, 1040, 2, 64483, 5, 4),
    1: (267, 267, 0, 65260, 3, 0),
    2: (16, 16, 0, 131052, 1, 0),
    3: (515, 515, 1, 130557, 0, 0),
}


@pytest.mark.parametrize("nid", [0, 1, 2, 3])
def test_node_vmstat(m, nid):
    vs = node_vmstat(m, nid)
    anon, active, thp, free, tables, file_ = NODE_PAGES[nid]
    assert vs["nr_anon_pages"] == anon
    assert vs["nr_active_anon"] == vs["nr_zone_active_anon"] == active
    assert vs["nr_inactive_anon"] == vs["nr_zone_inactive_anon"] == 0
    assert vs["nr_anon_transparent_hugepages"] == thp
    assert vs["nr_free_pages"] == free
    assert vs["nr_page_table_pages"] == tables
    assert vs["nr_file_pages"] == vs["nr_mapped"] == vs["nr_inactive_file"] == file_
    # the same numbers as meminfo, in pages
    mi = node_meminfo(m, nid)
    assert mi["AnonPages"] == 4 * vs["nr_anon_pages"]
    assert mi["MemFree"] == 4 * vs["nr_free_pages"]
    assert mi["AnonHugePages"] == 2048 * vs["nr_anon_transparent_hugepages"]


# Data-page allocations only (see test_page_table_allocations_are_counted for the
# tables): node -> (numa_hit, numa_miss, numa_foreign, interleave_hit, local_node, other_node)
NUMA_DATA = {
    0: (22, 0, 9, 0, 22, 0),
    1: (264, 3, 4, 0, 264, 3),
    2: (7, 9, 3, 0, 0, 16),
    3: (0, 4, 0, 0, 0, 4),
}
NUMA_KEYS = ("numa_hit", "numa_miss", "numa_foreign", "interleave_hit", "local_node",
             "other_node")


@pytest.mark.parametrize("nid", [0, 1, 2, 3])
def test_numa_miss_and_foreign(m, nid):
    """miss/foreign/interleave do not depend on how page tables are counted: all of
    them come from the preferred node here."""
    ns = kv(m.read(f"{NODE}/node{nid}/numastat").decode())
    assert list(ns) == list(NUMA_KEYS)
    want = dict(zip(NUMA_KEYS, NUMA_DATA[nid]))
    for k in ("numa_miss", "numa_foreign", "interleave_hit"):
        assert ns[k] == want[k], k
    # the node vmstat file carries the same counters under their vmstat names
    vs = node_vmstat(m, nid)
    assert (vs["numa_hit"], vs["numa_miss"], vs["numa_foreign"], vs["numa_interleave"],
            vs["numa_local"], vs["numa_other"]) == tuple(ns.values())


def test_numa_hit_on_a_node_without_page_tables(m):
    # node 3 holds no page table: hit/local/other are data pages only
    ns = kv(m.read(f"{NODE}/node3/numastat").decode())
    assert tuple(ns.values()) == NUMA_DATA[3]


def test_page_table_allocations_are_counted(m):
    # tables come from the task's preferred node, allocated on the task's CPU:
    # node 0 +8 hit/local (alpha 5 + 3 deposits), node 1 +9 hit/local (beta 5, delta 4),
    # node 2 +4 hit/other (gamma runs on node 0, prefers node 2)
    want = {
        0: (22 + 8, 0, 9, 0, 22 + 8, 0),
        1: (264 + 9, 3, 4, 0, 264 + 9, 3),
        2: (7 + 4, 9, 3, 0, 0, 16 + 4),
        3: (0, 4, 0, 0, 0, 4),
    }
    got = {nid: tuple(kv(m.read(f"{NODE}/node{nid}/numastat").decode()).values())
           for nid in range(4)}
    assert got == want


def test_proc_meminfo_sums_the_nodes(m):
    mi = kv(m.read("proc/meminfo").decode(), ":")
    assert mi["MemTotal"] == 1572864
    assert mi["MemFree"] == 1565408
    assert mi["AnonPages"] == 7352 == sum(v[0] for v in NODE_KB.values())
    assert mi["Active(anon)"] == 7352
    assert mi["Inactive(anon)"] == 0
    assert mi["AnonHugePages"] == 6144
    assert mi["PageTables"] == 36
    assert mi["Cached"] == 16
    assert mi["Mapped"] == 16
    assert mi["Inactive(file)"] == 16
    assert mi["MemFree"] == (mi["MemTotal"] - mi["AnonPages"] - mi["PageTables"] - mi["Cached"]
                             - sum(UPPER_TABLES_KB.values()) - 4)
    assert mi["SwapTotal"] == mi["SwapFree"] == mi["SwapCached"] == 0
    nodes = [node_meminfo(m, n) for n in range(4)]
    for k in ("MemTotal", "MemFree", "AnonPages", "AnonHugePages", "PageTables",
              "Active(anon)", "Inactive(file)", "Mapped"):
        assert mi[k] == sum(n[k] for n in nodes), k


def test_proc_vmstat_sums_the_nodes(m):
    vs = kv(m.read("proc/vmstat").decode())
    assert vs["nr_anon_pages"] == 1838
    assert vs["nr_active_anon"] == 1838
    assert vs["nr_inactive_anon"] == 0
    assert vs["nr_isolated_anon"] == 0
    assert vs["nr_anon_transparent_hugepages"] == 3
    assert vs["nr_free_pages"] == 391352
    assert vs["nr_page_table_pages"] == 9
    assert vs["nr_file_pages"] == vs["nr_mapped"] == 4
    assert vs["numa_miss"] == vs["numa_foreign"] == 16
    assert vs["pgalloc_normal"] == 1863
    assert vs["pgfree"] == 0
    assert vs["pgfault"] == 256  # delta's MAP_POPULATE; pinned pages take no fault
    nodes = [node_vmstat(m, n) for n in range(4)]
    for k in ("nr_anon_pages", "nr_free_pages", "nr_anon_transparent_hugepages",
              "nr_page_table_pages", "numa_hit", "numa_miss", "numa_foreign",
              "numa_local", "numa_other"):
        assert vs[k] == sum(n[k] for n in nodes), k


def test_proc_vmstat_dirty_limits(m):
    """4.20's global_dirty_limits() with the default ratios (20 % and 10 %, as
    fractions of a page: 819 and 409 / 4096) of the dirtyable memory: free pages less
    totalreserve_pages, plus the file LRUs, plus one. totalreserve_pages is the sum
    of the nodes' high watermarks, by hand from __setup_per_zone_wmarks():
    min_free_kbytes = int_sqrt(1536 MiB in kB * 16) = 5016, so 1254 pages of min,
    shared by size (209, 209, 418, 418); the gap is max(min / 4, pages * 10 / 10000):
    65, 65, 131, 131; high = min + 2 gaps = 339 + 339 + 680 + 680 = 2038.
    Dirtyable: 391352 free - 2038 + 4 file pages + 1 = 389319."""
    vs = kv(m.read("proc/vmstat").decode())
    assert vs["nr_dirty_threshold"] == 819 * 389319 // 4096 == 77844
    assert vs["nr_dirty_background_threshold"] == 409 * 389319 // 4096 == 38874


# pid -> (RssAnon, RssFile, VmPTE) in kB
#   alpha: 16 + 5 + 3 + 1024 + 512 = 1560 anon pages, 4 file; tables PUD, PMD, 2 PTE,
#          3 deposited with the THPs
#   beta:  8 + 4 = 12;          PUD, PMD, 2 PTE
#   gamma: 7 + 3 = 10;          PUD, PMD, PTE
#   delta: 256;                 PUD, PMD, PTE
STATUS_KB = {1000: (6240, 16, 28), 2000: (48, 0, 16), 3000: (40, 0, 12), 4000: (1024, 0, 12)}


@pytest.mark.parametrize("pid", sorted(STATUS_KB))
def test_status_rss(m, pid):
    st = status(m, pid)
    anon, file_, pte = STATUS_KB[pid]
    assert st["RssAnon"] == f"{anon:8d} kB"
    assert st["RssFile"] == f"{file_:8d} kB"
    assert st["RssShmem"] == f"{0:8d} kB"
    assert st["VmRSS"] == f"{anon + file_:8d} kB"
    assert st["VmHWM"] == f"{anon + file_:8d} kB"
    assert st["VmPTE"] == f"{pte:8d} kB"
    assert st["VmSwap"] == f"{0:8d} kB"


def test_rss_adds_up_to_the_mapped_pages(m):
    # no page is shared: the processes' RssAnon add up to AnonPages
    total = sum(int(status(m, pid)["RssAnon"].split()[0]) for pid in STATUS_KB)
    assert total == kv(m.read("proc/meminfo").decode(), ":")["AnonPages"] == 7352


COMMIT = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
[[process]]
pid = 90
name = "charged"
[[process.vma]]
start = 0x7f0000000000
size = "32KiB"
[[process.vma]]
start = 0x7f0000100000
size = "16KiB"
perms = "r--p"
[[process.vma]]
start = 0x7f0000200000
size = "8KiB"
path = "/data/private"
[[process.vma]]
start = 0x7f0000300000
size = "12KiB"
perms = "rw-s"
path = "/data/shared"
[[process.vma]]
start = 0x7f0000400000
size = "20KiB"
perms = "r--p"
path = "/usr/lib/libc.so"
[[process.vma]]
start = 0x7f0000500000
size = "24KiB"
kind = "shm"
path = "/SYSV00000000"
[[process.vma]]
start = 0x7f0000600000
size = "28KiB"
kind = "shm"
path = "/memfd:cache"
[[process.vma]]
start = 0x55d000000000
size = "4KiB"
kind = "heap"
[[process.vma]]
start = 0x7ffe00000000
size = "8KiB"
kind = "stack"
[[process.vma]]
start = 0x7f0000a00000
size = "4MiB"
hugetlb = true
[[process.vma]]
start = 0x7fff00000000
size = "8KiB"
perms = "r-xp"
kind = "vdso"
[[process]]
pid = 91
name = "child"
fork_of = 90
"""


def test_committed_as_counts_what_4_20_charges():
    """vm_committed_as: the charged pages, by hand. The parent: 8 anonymous + 2 of a
    private writable file mapping + 6 of the SysV segment + 1 heap + 2 stack = 19;
    not the read-only anonymous VMA, the shared and the read-only file mappings, the
    memfd (VM_NORESERVE), hugetlb or [vdso]. The fork charges its copies of the
    VM_ACCOUNT VMAs again (8 + 2 + 1 + 2 = 13), not the segment it shares: 32 pages."""
    with mounted(COMMIT) as m:
        line = next(x for x in m.read("proc/meminfo").decode().splitlines()
                    if x.startswith("Committed_AS:"))
    assert line == "Committed_AS:        128 kB"
