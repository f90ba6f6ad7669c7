"""The kernel model called directly (fast, no FUSE): topology rules, faults,
fallback, THP, workloads, exit. Every interface is also tested through the mount."""
from __future__ import annotations

import errno
import os

import pytest

from fakeproc.kernel import node as nodemod
from fakeproc.kernel.kernel import Kernel, NodeConfig
from fakeproc.kernel.mm import Vma
from fakeproc.kernel.task import MemPolicy
from fakeproc.kernel.native import KernelError, check, lib
from fakeproc.kernel.task_mmu import llseek
from fakeproc.kernel.workload import Phase, Workload
from fakeproc.machine import load
import kernel_ops
from kernel_ops import RFC_DIST, rfc_kernel

MIB = 1 << 20
BASE = 0x7F0000000000


class TestPeerRule:
    def test_rfc_example(self):
        # node 0: nearest non-local is 2 (17); node 1: 3 (17); node 2: 0 (17) unchosen;
        # node 3: 1 (17) unchosen
        assert nodemod.compute_peers([0, 1, 2, 3], RFC_DIST) == {0: 2, 1: 3, 2: 0, 3: 1}

    def test_chosen_set_is_shared_and_types_are_ignored(self):
        # three nodes all at distance 20: 0 takes 1; 1 takes 0 (0 not chosen yet);
        # 2 finds 0 and 1 chosen -> -1
        d = [[10, 20, 20], [20, 10, 20], [20, 20, 10]]
        assert nodemod.compute_peers([0, 1, 2], d) == {0: 1, 1: 0, 2: -1}

    def test_ties_go_to_the_lowest_id_and_sparse_ids(self):
        d = [[10, 30, 30], [30, 10, 15], [30, 15, 10]]
        # ids 0, 4, 6: node 0 ties (30, 30) -> 4; node 4 -> 6 (15); node 6 -> 4 is
        # chosen, 0 is not -> 0
        assert nodemod.compute_peers([0, 4, 6], d) == {0: 4, 4: 6, 6: 0}

    def test_a_remote_node_at_local_distance_is_never_a_peer(self):
        d = [[10, 10], [10, 10]]
        assert nodemod.compute_peers([0, 1], d) == {0: -1, 1: -1}


def test_fallback_lists_stay_within_a_type():
    k = rfc_kernel()
    assert [n.fallback for n in k.nodes] == [(0, 1), (1, 0), (2, 3), (3, 2)]


def test_dram_fallback_takes_turns_among_equal_nodes_and_pmem_goes_by_id():
    """The RFC's build_zonelists(), by hand. Four DRAM nodes 21 apart, each with a CPU,
    and four PMEM nodes: find_next_best_node()'s value for a DRAM node is (distance +
    [lower id] + [has CPUs]) * 8 * 1024 + node_load, and the first node placed at a new
    distance gets node_load = the nodes left to place (7). PMEM nodes list themselves,
    then the other PMEM nodes by id, whatever the distances."""
    n = 8
    ids = list(range(n))
    types = ["dram"] * 4 + ["pmem"] * 4
    dist = [[10 if i == j else (21 if (i < 4) == (j < 4) else 17) for j in range(n)] for i in range(n)]
    dist[7][6] = dist[6][7] = 30  # farther than node 4 or 5: the order stays by id
    fb = nodemod.compute_fallback(ids, types, dist, [True] * 4 + [False] * 4)
    # node 0: 1, 2, 3 tie at 22*8192: 1 (load[1] = 7), 2, 3; node 1: 2 and 3 at 22*8192
    # before 0 at 23*8192: 2 (load[2] = 7), 3, 0; node 2: 3 (22*8192, load[3] = 7),
    # then 0 (23*8192) before 1 (23*8192 + 7); node 3: 0 (23*8192, load[0] = 7), then
    # 1 and 2 tie at 23*8192 + 7: the lower id first
    assert fb[0] == (0, 1, 2, 3) and fb[1] == (1, 2, 3, 0)
    assert fb[2] == (2, 3, 0, 1) and fb[3] == (3, 0, 1, 2)
    assert fb[7] == (7, 4, 5, 6) and fb[5] == (5, 4, 6, 7)


# kernel_ops' two DRAM and two PMEM nodes (peers 0-2, 1-3), a process bound by {nodes}
MIXED_BIND = kernel_ops.MACHINE.format(swap="0") + """
[[process]]
pid = 5
name = "p"
policy = "bind:{nodes}"
"""


@pytest.mark.parametrize("nodes,zonelist", [
    ("0,2", [0]),       # mixed: node 0's zonelist (DRAM only) filtered by the bind
    ("1,3", [1]),       # mixed, no local node: the DRAM node of the bind
    ("2,3", [2, 3]),    # PMEM only: the peer's (node 2's) zonelist
    ("3", [3]),
    ("0,1", [0, 1]),    # DRAM only: node 0's zonelist
])
def test_a_bind_takes_the_zonelist_policy_node_picks(nodes, zonelist):
    """The RFC's policy_node(): a bind whose nodes are all of the other type (PMEM from
    a DRAM CPU) starts from the CPU node's peer, else from the CPU's node; its zonelist
    holds one type, so a bind that mixes types never allocates on the PMEM nodes."""
    k = load(MIXED_BIND.replace("{nodes}", nodes))
    assert k.zonelist(k.task(5)) == zonelist


def spawn_with_vma(k: Kernel, pid: int = 10, cpu: int = 0, size: int = 8 * MIB, thp: bool = False):
    t = k.spawn(pid, "t", cpu=cpu)
    v = Vma(BASE, BASE + size, thp=thp)
    k.add_vma(t, v)
    return t, v


def anon(k: Kernel, nid: int) -> int:
    return k.node_stat(nid)[lib.FP_NR_ANON_PAGES]


class TestFaults:
    def test_first_touch_allocates_on_the_cpu_node(self):
        k = rfc_kernel()
        t, v = spawn_with_vma(k, cpu=2)  # CPU 2 is on node 1
        k.touch(t, BASE, write=True)
        assert k.page_node(t, BASE) == 1
        assert anon(k, 1) == 1 and anon(k, 0) == 0
        level, entry = k.entry(t, BASE)
        assert level == 4
        assert entry & lib.FP_PAGE_ACCESSED and entry & lib.FP_PAGE_DIRTY

    def test_read_access_sets_accessed_but_not_dirty(self):
        k = rfc_kernel()
        t, _ = spawn_with_vma(k)
        k.touch(t, BASE)
        _, entry = k.entry(t, BASE)
        assert entry & lib.FP_PAGE_ACCESSED and not entry & lib.FP_PAGE_DIRTY

    def test_faults_stay_on_dram_and_reclaim_demotes_to_the_peer(self):
        # each DRAM node: 2 MiB = 512 pages; faults take DRAM only (node 0, then node 1);
        # once both are short, direct reclaim demotes cold pages to the PMEM peers
        k = rfc_kernel(dram_pages=512, pmem_pages=4096)
        t, _ = spawn_with_vma(k, size=8 * MIB)
        placed = []
        for i in range(2048):
            k.touch(t, BASE + i * 4096, write=True)
            placed.append(k.page_node(t, BASE + i * 4096))
        assert set(placed) <= {0, 1}             # a fault never lands on PMEM
        assert placed[0] == 0 and 1 in placed
        assert anon(k, 2) + anon(k, 3) > 0       # demoted
        assert sum(anon(k, n) for n in range(4)) == 2048
        assert k.event(lib.FP_EV_PGMIGRATE_SUCCESS) == anon(k, 2) + anon(k, 3)

    def test_oom_kills_the_largest_process_when_nothing_can_move(self):
        k = Kernel([NodeConfig(0, "dram", 1024, (0,))])  # no peer, no swap
        big, _ = spawn_with_vma(k, pid=3, size=3 * MIB)  # not pid 1: init is never a victim
        k.populate(big, k.mm(big.mm_id).vmas[0])
        small = k.spawn(2, "small")
        k.add_vma(small, Vma(BASE, BASE + 4 * MIB))
        for i in range(1024):  # small asks for more than is left: the big one dies
            k.touch(small, BASE + i * 4096, write=True)
            if k.task(3) is None:
                break
        assert k.task(3) is None and k.task(2) is not None
        assert k.event(lib.FP_EV_OOM_KILL) == 1
        assert k.oom_log[0].startswith("Out of memory: Killed process 3 (t) total-vm:3072kB, anon-rss:3072kB")

    def test_prefer_policy_on_pmem_uses_the_pmem_fallback(self):
        text = """
[[node]]
type = "dram"
size = "4MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "4MiB"
[[node]]
type = "pmem"
size = "4MiB"
[[process]]
pid = 5
name = "p"
policy = "prefer:1"
[[process.vma]]
start = 0x7f0000000000
size = "2MiB"
populate = true
"""
        k = load(text)
        t = k.task(5)
        assert k.page_node(t, BASE) == 1
        assert anon(k, 1) == 512 and anon(k, 0) == 0

    def test_thp_fault_takes_a_huge_page_then_falls_back(self):
        k = rfc_kernel(dram_pages=1024)  # 2 blocks on node 0
        t, _ = spawn_with_vma(k, size=8 * MIB, thp=True)
        k.touch(t, BASE, write=True)
        level, entry = k.entry(t, BASE)
        assert level == 3 and entry & lib.FP_PAGE_PSE
        assert k.node_stat(0)[lib.FP_NR_ANON_THPS] == 1
        assert anon(k, 0) == 512
        # the other block of node 0 went to page tables; node 1 has two free blocks
        k.touch(t, BASE + 2 * MIB, write=True)
        assert k.page_node(t, BASE + 2 * MIB) == 1
        assert k.event(lib.FP_EV_THP_FAULT_ALLOC) == 2

    def test_exit_frees_every_page(self):
        k = rfc_kernel()
        t, v = spawn_with_vma(k)
        k.populate(t, v)
        assert anon(k, 0) == 2048
        k.exit(t.pid)
        # all but PFN 0, which x86 reserves at boot
        assert [k.node_stat(n)[lib.FP_NR_FREE_PAGES] for n in range(4)] == [4095, 4096, 8192, 8192]
        assert k.task(t.pid) is None


class TestWorkloads:
    def _run(self, seed: int, pattern: str = "hotcold") -> tuple[bytes, list[int]]:
        k = rfc_kernel(dram_pages=8192)
        t, _ = spawn_with_vma(k, size=8 * MIB)
        k.attach_workload(t, Workload(pattern=pattern, rate=5000, hot=0.1, hot_access=0.9, seed=seed))  # type: ignore[arg-type]
        k.advance(1.0)
        return k.idle_pages_read(t, BASE, 4096, 0).data, k.node_stat(0)

    def test_same_seed_same_state(self):
        assert self._run(7) == self._run(7)

    def test_different_seed_different_state(self):
        assert self._run(7)[0] != self._run(8)[0]

    def _access_rounds(self, wl: Workload, seconds: float = 0.2, rounds: int = 10) -> list[list[int]]:
        """Per round of `seconds`: which of the 1024 pages were accessed (1) or not (0)."""
        k = rfc_kernel(dram_pages=8192)
        t, v = spawn_with_vma(k, size=4 * MIB)
        k.populate(t, v)
        k.attach_workload(t, wl)
        k.idle_pages_read(t, BASE, 4096, 0)  # clear the populate accesses
        out = []
        for _ in range(rounds):
            k.advance(seconds)
            out.append([int(bool(k.entry(t, BASE + i * 4096)[1] & lib.FP_PAGE_ACCESSED))
                        for i in range(v.nr_pages)])
            k.idle_pages_read(t, BASE, 4096, 0)
        return out

    def _access_counts(self, wl: Workload, seconds: float = 0.2, rounds: int = 10) -> list[int]:
        return [sum(col) for col in zip(*self._access_rounds(wl, seconds, rounds))]

    def test_hot_set_is_hotter(self):
        counts = self._access_counts(Workload(pattern="hotcold", rate=2000, hot=0.1, hot_access=0.9))
        hot = counts[:102]
        cold = counts[102:]
        assert sum(hot) / len(hot) > 5 * (sum(cold) / len(cold))

    def test_phase_moves_the_hot_set(self):
        """The hot 10 % (102 pages) starts at page 0 and moves to page 512 at t = 1.0.
        Per 0.25 s round, 450 hot touches leave nearly every hot page accessed and 50
        cold ones about 5 % of the cold pages: each half of the run must show its own
        hot set, and only it."""
        wl = Workload(pattern="hotcold", rate=2000, hot=0.1, hot_access=0.9,
                      phases=(Phase(0, 0.0), Phase(1.0, 0.5)))
        rounds = self._access_rounds(wl, seconds=0.25, rounds=8)  # t = 0.25 .. 2.0

        def accessed(rs: list[list[int]], lo: int) -> int:
            return sum(sum(r[lo:lo + 102]) for r in rs)
        before, after = rounds[:4], rounds[4:]
        assert accessed(before, 0) > 5 * accessed(before, 512)
        assert accessed(after, 512) > 5 * accessed(after, 0)
        wl2 = Workload(pattern="hotcold", rate=2000, hot=0.1, hot_access=0.9, phases=(Phase(0, 0.5),))
        c2 = self._access_counts(wl2)
        assert sum(c2[512:614]) / 102 > 5 * (sum(c2[:102]) / 102)

    def test_steps_lose_no_touch_to_rounding(self):
        """Ten steps of 0.1 s at 10 touches a second make 10 touches, not 9."""
        k = rfc_kernel(dram_pages=8192)
        t, _ = spawn_with_vma(k, size=4 * MIB)
        wl = Workload(pattern="uniform", rate=10)
        k.attach_workload(t, wl)
        for _ in range(10):
            k.advance(0.1)
        assert wl.touches == 10

    def test_zipf_is_skewed_and_seq_sweeps(self):
        z = self._access_counts(Workload(pattern="zipf", rate=2000, zipf_s=1.2))
        assert sum(z[:10]) > sum(z[500:510]) * 3
        s = self._access_counts(Workload(pattern="seq", rate=1024), seconds=1.0, rounds=2)
        assert s == [2] * 1024  # 1024 touches per round sweep all 1024 pages once


def test_idle_llseek_model():
    assert llseek(100, 4096, os.SEEK_SET) == 4096
    assert llseek(4096, 4096, os.SEEK_CUR) == 8192
    with pytest.raises(KernelError) as e:
        llseek(0, 0, os.SEEK_END)
    assert e.value.errno == errno.EINVAL


def test_idle_read_model_errnos():
    k = rfc_kernel()
    t, _ = spawn_with_vma(k)
    for pos, count, want in ((BASE + 1, 4096, errno.EINVAL), (BASE, 18, errno.EINVAL),
                             (1 << 63, 4096, errno.EINVAL)):
        with pytest.raises(KernelError) as e:
            k.idle_pages_read(t, pos, count, 0)
        assert e.value.errno == want
    assert k.idle_pages_read(t, BASE + 1, 0, 0).data == b""
    k.exit(t.pid, zombie=True)
    with pytest.raises(KernelError) as e:
        k.idle_pages_read(t, BASE, 4096, 0)
    assert e.value.errno == errno.ESRCH


class TestPageKinds:
    """What each kind of VMA's pages are counted as (fs/proc/meminfo.c, task_mmu.c)."""

    TEXT = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0-1"
[[node]]
type = "dram"
size = "64MiB"
cpus = "2-3"
[[process]]
pid = 7
name = "kinds"
[[process.vma]]
start = 0x7f0000000000
size = "16KiB"
kind = "shm"
path = "/SYSV00000001"
pages = "4 accessed"
[[process.vma]]
start = 0x7f0000200000
size = "16KiB"
perms = "rw-p"
path = "/lib/libx.so"
pages = "2 dirty, 2 accessed"
[[process.vma]]
start = 0x7f0000400000
size = "8KiB"
perms = "r-xp"
kind = "vdso"
pages = "2 accessed"
"""

    def test_counts(self):
        k = load(self.TEXT)
        st = k.node_stat(0)
        mc = k.mm_counters(k.task(7))
        assert st[lib.FP_NR_SHMEM] == 4                 # shmem pages ...
        assert st[lib.FP_NR_INACTIVE_ANON] == 4         # ... on the anon LRU
        assert st[lib.FP_NR_ANON_PAGES] == 2            # the written private file pages (COW)
        assert st[lib.FP_NR_FILE_PAGES] == 4 + 2        # shmem + the clean file pages
        assert st[lib.FP_NR_MAPPED] == 4 + 2
        # rss_file: the 2 clean file pages and the 2 [vdso] pages (kernel-image pages
        # mapped by normal PTEs: MM_FILEPAGES, not node memory)
        assert (mc["rss_shmem"], mc["rss_anon"], mc["rss_file"]) == (4, 2, 2 + 2)

    def test_interleave_alternates_by_page_number_and_counts_hits(self):
        text = self.TEXT.split("[[process]]")[0] + """
[[process]]
pid = 8
name = "ileave"
policy = "interleave:0-1"
[[process.vma]]
start = 0x7f0000000000
size = "32KiB"
populate = true
"""
        k = load(text)
        t = k.task(8)
        assert [k.page_node(t, BASE + i * 4096) for i in range(8)] == [0, 1] * 4
        assert k.node_stat(0)[lib.FP_NUMA_INTERLEAVE] == 4
        assert k.node_stat(1)[lib.FP_NUMA_INTERLEAVE] == 4


def test_the_rss_peak_counts_vdso_pages():
    """VmHWM is the RSS peak: 10 anonymous pages and then 2 [vdso] pages make 12, which
    stays the peak once the anonymous pages are unmapped (4.20 takes it before every
    unmap: update_hiwater_rss())."""
    k = rfc_kernel()
    t = k.spawn(10, "t", cpu=0)
    k.add_vma(t, Vma(BASE, BASE + 10 * 4096))
    k.add_vma(t, Vma(BASE + MIB, BASE + MIB + 8192, perms="r-xp", kind="vdso"))
    for i in range(10):
        k.touch(t, BASE + i * 4096, write=True)
    k.touch(t, BASE + MIB)
    k.touch(t, BASE + MIB + 4096)
    from fakeproc.kernel import mmap
    assert mmap.munmap(k, t, BASE, 10 * 4096) == 0
    mc = k.mm_counters(t)
    assert (mc["rss_anon"], mc["rss_file"], mc["hiwater_rss"]) == (0, 2, 12)
    assert k.check() == []


def test_kernel_frames_cannot_be_pinned():
    """[vdso] and [vvar] pages are kernel frames with no struct page here: a machine
    file that pins one is refused, naming the field (pin_page() refuses one too)."""
    from fakeproc.machine import MachineFileError
    text = ('[[node]]\ntype = "dram"\nsize = "64MiB"\ncpus = "0"\n[[process]]\npid = 10\n'
            'name = "a"\n[[process.vma]]\nstart = 0x7ffff7fd0000\nsize = "8KiB"\n'
            'perms = "r-xp"\nkind = "vdso"\npages = "2 pinned"\n')
    with pytest.raises(MachineFileError, match="kernel frames: they cannot be pinned"):
        load(text)
    k = load(text.replace("2 pinned", "2 accessed"))
    with pytest.raises(KernelError) as e:
        k.pin_page(k.task(10), 0x7ffff7fd0000)
    assert e.value.errno == errno.EFAULT


def _wrote(perms: str, pages: int = 64, pattern: str = "seq",
           piped: bool = False) -> tuple[list[tuple[int, int]], int]:
    """A workload that stores at every touch, over one file VMA with these perms: each
    page's (RW, dirty) PTE bits afterwards, and the generator's state."""
    k = rfc_kernel()
    if piped:
        k.native.wl_pipeline_pages = 0  # the pipelined loop, whatever the size
    t = k.spawn(10, "t", cpu=0)
    k.add_vma(t, Vma(BASE, BASE + pages * 4096, perms=perms, path="/usr/lib/libx.so"))
    wl = Workload(pattern=pattern, rate=1, write=1.0, vma_indices=(0,))  # type: ignore[arg-type]
    k.attach_workload(t, wl)
    check(lib.fp_workload_run(k.native, wl._c, 32 * pages))  # every page, whatever the pattern
    bits = [(k.entry(t, BASE + i * 4096)[1] & lib.FP_PAGE_RW, k.entry(t, BASE + i * 4096)[1] & lib.FP_PAGE_DIRTY)
            for i in range(pages)]
    assert k.check() == []
    return bits, int(wl._c.rng)


def test_a_workload_only_loads_from_a_mapping_without_write():
    """A store to a mapping without VM_WRITE would be SIGSEGV: a workload's stores
    there are loads (the page maps read-only and clean); in a writable private file
    mapping they are stores (copy-on-write: writable and dirty). The write is drawn
    all the same, so the generator's stream does not change."""
    for pattern, piped in (("seq", False), ("uniform", False), ("uniform", True)):
        ro, rng_ro = _wrote("r-xp", pattern=pattern, piped=piped)
        rw, rng_rw = _wrote("rw-p", pattern=pattern, piped=piped)
        assert set(ro) == {(0, 0)}
        assert set(rw) == {(lib.FP_PAGE_RW, lib.FP_PAGE_DIRTY)}
        assert rng_ro == rng_rw


def test_a_store_to_a_read_only_mapping_is_refused():
    k = rfc_kernel()
    t = k.spawn(10, "t", cpu=0)
    k.add_vma(t, Vma(BASE, BASE + 4096, perms="r--p", path="/usr/lib/libx.so"))
    with pytest.raises(KernelError) as e:
        k.touch(t, BASE, write=True)
    assert e.value.errno == errno.EFAULT
    k.touch(t, BASE)  # a load maps it
    assert k.entry(t, BASE)[1] & lib.FP_PAGE_PRESENT


def test_a_fork_whose_page_tables_reclaim_copies_the_entries_as_they_are_then():
    """The child's page tables come from the page allocator; on a DRAM node at its min
    watermark that means direct reclaim, which demotes the parent's cold pages while
    fork copies them. copy_pte_range() holds the parent's page-table lock, so the
    child maps where each page is when its entry is copied, never a freed frame."""
    k = load(kernel_ops.MACHINE.format(swap="0").replace('"8MiB"', '"4MiB"', 2))
    a = k.spawn(100, "a", cpu=0)
    k.set_policy(a, MemPolicy("bind", (0,)))
    k.add_vma(a, Vma(BASE, BASE + 4 * MIB))
    i = 0
    while k.node_stat(0)[lib.FP_NR_FREE_PAGES] > k.watermarks(0)[0] + 1:  # down to min
        k.touch(a, BASE + i * 4096, write=True)
        i += 1
    assert k.check() == []
    child = k.fork(100, 101)
    assert k.check() == []
    for page in range(i):
        assert k.entry(child, BASE + page * 4096)[1] >> 12 == k.entry(a, BASE + page * 4096)[1] >> 12
