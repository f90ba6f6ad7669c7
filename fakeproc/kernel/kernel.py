"""Kernel: nodes + tasks + the virtual clock, the one object the file system renders.

Linux: the glue of mm/ and kernel/ that the other modules name. All page
state lives in the native core (``self.native``); Python keeps topology,
tasks, VMAs and the clock, and only orchestrates.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterable, Sequence

from . import node as nodemod
from . import mmap, oom_kill, vmscan
from .mm import PAGE_SIZE, MmStruct, Vma, new_anon_vma
from .native import KernelError, check, ffi, lib
from .task import MemPolicy, Task
from .task_mmu import ALL_PASSES, MAX_RW_COUNT, IdleRead, IdleScan, IdleTail
from .workload import Workload

log = logging.getLogger("fakeproc.kernel")


@dataclass(frozen=True)
class NodeConfig:
    """What a machine file says about one node (watermarks: min, low, high pages)."""

    id: int
    type: nodemod.NodeType
    nr_pages: int
    cpus: tuple[int, ...] = ()
    watermarks: tuple[int, int, int] | None = None


class Kernel:
    """An emulated machine. Not thread safe: one trio thread mutates it."""

    def __init__(self, nodes: Sequence[NodeConfig], distances: Sequence[Sequence[int]] | None = None,
                 nr_cpus: int | None = None, *, swap_pages: int = 0,
                 min_free_kbytes: int | None = None, watermark_scale_factor: int = 10) -> None:
        nodes = sorted(nodes, key=lambda n: n.id)
        ids = [n.id for n in nodes]
        types = [n.type for n in nodes]
        dist = [list(r) for r in distances] if distances is not None else nodemod.default_distances(ids)
        peers = nodemod.compute_peers(ids, dist)
        fallback = nodemod.compute_fallback(ids, types, dist, [bool(n.cpus) for n in nodes])
        self.nodes: list[nodemod.Node] = [
            nodemod.Node(n.id, n.type, n.nr_pages, tuple(sorted(n.cpus)), peers[n.id], fallback[n.id])
            for n in nodes
        ]
        self._idx = {n.id: i for i, n in enumerate(self.nodes)}
        self._dist = dist
        all_cpus = [c for n in nodes for c in n.cpus]
        self.nr_cpu_ids = nr_cpus if nr_cpus is not None else (max(all_cpus) + 1 if all_cpus else 1)
        self._cpu_node = {c: n.id for n in nodes for c in n.cpus}
        total = sum(n.nr_pages for n in nodes)
        sizes = ffi.new("uint64_t[]", [n.nr_pages for n in nodes])
        raw = lib.fp_kernel_new(len(nodes), sizes, total // 512 * 2 + 65536)
        if raw == ffi.NULL:
            raise MemoryError("cannot reserve the emulated machine's memory")
        self.native: Any = ffi.gc(raw, lib.fp_kernel_free)
        marks = vmscan.watermarks([n.nr_pages for n in self.nodes], min_free_kbytes,
                                  watermark_scale_factor)
        for i, n in enumerate(self.nodes):
            c = self.native.nodes[i]
            for j, nid in enumerate(n.fallback):
                c.fallback[j] = self._idx[nid]
            c.nr_fallback = len(n.fallback)
            c.peer = self._idx[n.peer] if n.peer >= 0 else -1
            c.is_dram = n.type == "dram"
            for lru in range(lib.FP_NR_LRU_LISTS):
                c.lru_head[lru] = c.lru_tail[lru] = lib.FP_LRU_NONE
            c.wmark[0], c.wmark[1], c.wmark[2] = nodes[i].watermarks or marks[i]
        self.native.swap_total = swap_pages
        self.oom_log: list[str] = []
        self.recorder: Any = None  # a score.Recorder once record() is called
        self.upstream = False      # serve the later upstream interfaces too (INTERFACES.md 6)
        self.drivers_autoprobe = True  # /sys/bus/node/drivers_autoprobe (no driver binds a node)
        self.tasks: dict[int, Task] = {}
        self._threads: dict[int, Task] = {}
        self._mms: dict[int, MmStruct] = {}
        self._next_mm = 1
        self.clock = 0.0  # virtual seconds
        self.generation = 0  # bumped on every state change the file system may cache
        # called with (pid, thread ids) when a process is released (release_task(): not
        # while it is a zombie); the file system's proc_flush_task() hangs here
        self.release_hooks: list[Callable[[int, tuple[int, ...]], None]] = []
        self._idle = IdleScan()

    # ---- topology ----------------------------------------------------------
    def node(self, nid: int) -> nodemod.Node:
        return self.nodes[self._idx[nid]]

    def node_index(self, nid: int) -> int:
        """The native core's dense index of node nid."""
        return self._idx[nid]

    def distance(self, a: int, b: int) -> int:
        return self._dist[self._idx[a]][self._idx[b]]

    @property
    def node_ids(self) -> list[int]:
        return [n.id for n in self.nodes]

    def cpu_node(self, cpu: int) -> int:
        """The node a CPU belongs to (node 0's when the CPU is node-less)."""
        return self._cpu_node.get(cpu, self.nodes[0].id)

    @property
    def online_cpus(self) -> list[int]:
        return sorted(self._cpu_node)

    # ---- tasks -------------------------------------------------------------
    def mm(self, mm_id: int) -> MmStruct:
        return self._mms[mm_id]

    def task(self, pid: int) -> Task | None:
        return self.tasks.get(pid)

    def thread(self, tid: int) -> Task | None:
        """The task a thread id belongs to."""
        return self._threads.get(tid)

    def mems_allowed(self, task: Task) -> list[int]:
        """The nodes task's cpuset allows (cpuset_mems_allowed())."""
        return sorted(task.mems_allowed) if task.mems_allowed is not None else self.node_ids

    def zonelist(self, task: Task) -> list[int]:
        """Node preference for task's faults (mm/mempolicy.c, RFC fallback rule),
        filtered by its cpuset's mems as the allocator's nodemask does."""
        local = self.cpu_node(task.cpu)
        pol = task.policy
        if pol.mode == "prefer" and pol.nodes:
            order = list(self.node(pol.nodes[0]).fallback)
        elif pol.mode == "bind" and pol.nodes:
            # the RFC's policy_node(): the local node's zonelist filtered by the bind's
            # nodes, but the peer's when they are all of the other type (PMEM from a
            # DRAM CPU); a zonelist holds one type only, so a bind that mixes types
            # uses only the local type's nodes
            nd, peer = local, self.node(local).peer
            if peer >= 0 and all(self.node(n).type != self.node(local).type for n in pol.nodes):
                nd = peer
            order = [n for n in self.node(nd).fallback if n in pol.nodes] or \
                sorted(pol.nodes, key=lambda n: (self.distance(local, n), n))
            # (a peer of the CPU node's own type holds none of them: the RFC's
            # allocations would fail; the bound nodes, nearest first, instead)
        elif pol.mode == "interleave" and pol.nodes:  # the order page tables take
            order = sorted(pol.nodes, key=lambda n: (self.distance(local, n), n))
        else:
            order = list(self.node(local).fallback)
        allowed = set(self.mems_allowed(task))
        return [n for n in order if n in allowed] or sorted(allowed, key=lambda n: (self.distance(local, n), n))

    def spawn(self, pid: int, name: str, *, uid: int = 0, gid: int = 0, ppid: int = 1,
              threads: Iterable[int] = (), cpu: int = 0, state: str = "sleeping",
              policy: MemPolicy | None = None) -> Task:
        """Create a process with an empty address space."""
        tids = tuple(threads) or (pid,)
        if pid in self.tasks or any(t in self._threads for t in tids):
            raise ValueError(f"pid {pid} or one of its thread ids is already in use")
        mm_id = self._next_mm
        check(lib.fp_mm_new(self.native, mm_id))
        self._next_mm += 1
        self._mms[mm_id] = MmStruct(mm_id)
        task = Task(pid, name, uid=uid, gid=gid, ppid=ppid, threads=tids, cpu=cpu,
                    state=state, policy=policy or MemPolicy(), mm_id=mm_id)  # type: ignore[arg-type]
        self.tasks[pid] = task
        for t in tids:
            self._threads[t] = task
        self.set_policy(task, task.policy)
        self.generation += 1
        return task

    def fork(self, parent_pid: int, pid: int, name: str | None = None, *,
             threads: Iterable[int] = ()) -> Task:
        """fork(): a child with a copy of the parent's VMAs whose page tables map the
        parent's pages, anonymous ones copy-on-write (their mapcount is 2 now), all of
        them old in the child (copy_one_pte: pte_mkold). Unlike copy_page_range(),
        VMAs without an anon_vma (clean file mappings, shared memory) are copied too:
        the child would fault those pages in from the page cache, which is not indexed
        here, so the copy is what keeps them shared."""
        parent = self.tasks[parent_pid]
        if parent.mm_id is None:
            raise KernelError(errno.EINVAL, f"pid {parent_pid} has no address space")
        child = self.spawn(pid, name or parent.name, uid=parent.uid, gid=parent.gid,
                           ppid=parent.pid, threads=threads, cpu=parent.cpu, policy=parent.policy)
        child.mems_allowed = parent.mems_allowed
        child.forked = True
        child.oom_score_adj, child.oom_score_adj_min = parent.oom_score_adj, parent.oom_score_adj_min
        self.set_policy(child, child.policy)
        assert child.mm_id is not None
        # the VMAs keep their VM_SOFTDIRTY, so the write-notify of soft-dirty tracking
        self.native.mms[child.mm_id].track_soft_dirty = self.native.mms[parent.mm_id].track_soft_dirty
        try:
            pmm = self.mm(parent.mm_id)
            for v in pmm.vmas:
                # anon_vma_fork(): the child's VMA gets an anon_vma of its own, chained
                # to the parent's, when the parent's had one
                had = bool(mmap.anon_vma_of(self, pmm, v))
                self.mm(child.mm_id).add_vma(dataclasses.replace(
                    v, anon_vma=new_anon_vma() if had else 0, anon_vma_cloned=had))
                check(lib.fp_mm_fork_vma(self.native, parent.mm_id, child.mm_id, v.start, v.end,
                                         lib.FP_FORK_SHARED if v.shared else 0))
        except KernelError:
            self.exit(child.pid)  # dup_mmap() failed: mmput() tears down what was copied
            raise
        self.generation += 1
        return child

    def set_policy(self, task: Task, policy: MemPolicy) -> None:
        task.policy = policy
        assert task.mm_id is not None
        c = self.native.mms[task.mm_id]
        zl = self.zonelist(task)
        for i, nid in enumerate(zl):
            c.zonelist[i] = self._idx[nid]
        c.nr_zonelist = len(zl)
        c.local_node = self._idx[self.cpu_node(task.cpu)]
        ileave = sorted(policy.nodes) if policy.mode == "interleave" else []
        for i, nid in enumerate(ileave):
            c.interleave[i] = self._idx[nid]
        c.nr_interleave = len(ileave)

    def exit(self, pid: int, *, zombie: bool = False) -> None:
        """The process exits: its address space is freed; a zombie keeps its pid."""
        task = self.tasks[pid]
        if self.recorder is not None:
            self.recorder.exiting(task)  # its last window, while its counters are there
        if task.mm_id is not None:
            lib.fp_mm_destroy(self.native, task.mm_id)
            del self._mms[task.mm_id]
            task.mm_id = None
        task.workload = None
        task.vm = None  # freed with the address space (fp_mm_destroy)
        if zombie:
            task.state = "zombie"
        else:
            del self.tasks[pid]
            for t in task.tids:
                self._threads.pop(t, None)
            for hook in self.release_hooks:
                hook(pid, tuple(task.tids))
        self.generation += 1

    def add_vma(self, task: Task, vma: Vma) -> None:
        assert task.mm_id is not None
        self.mm(task.mm_id).add_vma(vma)
        self.generation += 1

    # ---- page state ------------------------------------------------------------
    def set_ptes(self, task: Task, addr: int, nr: int, bits: int, node: int | None, vma: Vma) -> None:
        """Install nr identical consecutive PTEs (scenario files). node None = policy."""
        assert task.mm_id is not None
        nidx = -1 if node is None else self._idx[node]
        check(lib.fp_set_ptes(self.native, task.mm_id, addr, nr, bits, nidx, vma.native_flags))
        self.generation += 1

    def set_pte_runs(self, task: Task, addr: int, runs: list[tuple[int, int, int | None]],
                     repeat: int, vma: Vma) -> None:
        """Install `repeat` copies of a pattern of (count, bits, node) PTE runs in one C
        call (a machine file's repeated pages); bits 0 leaves a run unmapped."""
        assert task.mm_id is not None
        c = ffi.new("struct fp_pte_run[]", len(runs))
        for i, (nr, bits, node) in enumerate(runs):
            c[i].nr, c[i].bits, c[i].node = nr, bits, -1 if node is None else self._idx[node]
        check(lib.fp_set_pte_runs(self.native, task.mm_id, addr, c, len(runs), repeat,
                                  vma.native_flags))
        self.generation += 1

    def set_thp(self, task: Task, addr: int, bits: int, node: int | None) -> None:
        assert task.mm_id is not None
        nidx = -1 if node is None else self._idx[node]
        check(lib.fp_set_thp(self.native, task.mm_id, addr, bits, nidx))
        self.generation += 1

    def set_pud(self, task: Task, addr: int, bits: int) -> None:
        assert task.mm_id is not None
        check(lib.fp_set_pud(self.native, task.mm_id, addr, bits))
        self.generation += 1

    def set_table_bits(self, task: Task, addr: int, level: int, set_bits: int, clear: int) -> None:
        assert task.mm_id is not None
        check(lib.fp_set_table_bits(self.native, task.mm_id, addr, level, set_bits, clear))
        self.generation += 1

    def touch(self, task: Task, addr: int, *, write: bool = False) -> None:
        """One CPU access by task at addr (faults in the page first if needed)."""
        assert task.mm_id is not None
        vma = self.mm(task.mm_id).find_vma(addr)
        if vma is None:
            raise KernelError(14, "Bad address")
        if write and not vma.writable:  # the process would get SIGSEGV (VM_WRITE unset)
            raise KernelError(errno.EFAULT, f"a store to the read-only mapping at {addr:#x}")
        ret = lib.fp_touch(self.native, task.mm_id, addr, vma.fault_flags(addr, write))
        if ret == -errno.ENOMEM:
            self.oom_kill()
            if task.mm_id is not None:  # the toucher survived: the access completes
                ret = lib.fp_touch(self.native, task.mm_id, addr, vma.fault_flags(addr, write))
            else:
                ret = 0
        check(ret)
        self.generation += 1

    def populate(self, task: Task, vma: Vma, *, write: bool = True,
                 report: Callable[[int], None] | None = None) -> None:
        """MAP_POPULATE: fault in every page of vma (a C workload pass, in chunks of
        1 M pages so a long build can report progress)."""
        assert task.mm_id is not None
        wl = Workload(pattern="seq", write=1.0 if write else 0.0)
        wl.bind(task.mm_id, [(vma.start, vma.nr_pages, vma.native_flags)])
        for first in range(0, vma.nr_pages, 1 << 20):
            n = min(1 << 20, vma.nr_pages - first)
            check(lib.fp_workload_run(self.native, wl._c, n))
            if report is not None:
                report(n)
        self.generation += 1
        if wl.faults_failed:
            n = wl.faults_failed
            raise KernelError(errno.ENOMEM, f"{n} page{'s' if n != 1 else ''} of {vma.start:#x} could "
                              "not be faulted in")

    def attach_workload(self, task: Task, wl: Workload) -> None:
        """Start wl on task over the chosen VMAs (default: its anonymous ones)."""
        assert task.mm_id is not None
        vmas = self.mm(task.mm_id).vmas
        if wl.vma_indices is not None:
            wl.ranges = tuple((vmas[i].start, vmas[i].end) for i in wl.vma_indices)
        wl.bind(task.mm_id, self._workload_regions(task, wl))
        self.workloads_changing(task)
        task.workload = wl

    def workloads_changing(self, task: Task) -> None:
        """Before a task's workload or its guest's is replaced or stopped: the recorder
        keeps what the old ones did (score.Recorder.workloads_changing)."""
        if self.recorder is not None:
            self.recorder.workloads_changing(task)

    def _workload_regions(self, task: Task, wl: Workload) -> list[tuple[int, int, int]]:
        """The (start, pages, flags) regions wl touches: its task's anonymous VMAs, or
        what is still mapped of the ranges its VMAs had when it was attached."""
        assert task.mm_id is not None
        vmas = self.mm(task.mm_id).vmas
        if wl.ranges is None:
            return [(v.start, v.nr_pages, v.native_flags) for v in vmas if v.is_anon_memory and not v.hugetlb]
        out = []
        for lo, hi in wl.ranges:
            for v in vmas:
                a, b = max(lo, v.start), min(hi, v.end)
                if a < b:
                    out.append((a, (b - a) // PAGE_SIZE, v.native_flags))
        return out

    def rebind_workload(self, task: Task, wl: Workload) -> None:
        """The address space changed under a running workload: it touches what is
        mapped now (a program touches only its mappings), its stream carrying on."""
        wl.set_regions(self._workload_regions(task, wl))

    def advance(self, seconds: float) -> int:
        """Move the virtual clock; every workload runs its share, then kswapd runs
        on the nodes the allocator woke, and a failed allocation OOM-kills. Returns
        the touches made."""
        self.clock += seconds
        for task in [t for t in self.tasks.values() if t.exit_at is not None]:
            if self.clock >= task.exit_at:  # type: ignore[operator]
                self.exit(task.pid)
        done = 0
        for task in list(self.tasks.values()):
            for wl in (task.workload, task.vm.workload if task.vm else None):
                if wl is None or not task.alive:
                    continue
                failed = wl.faults_failed
                done += wl.run(self.native, seconds, self.clock)
                if wl.faults_failed > failed:
                    self.oom_kill()
        self.run_kswapd()
        if self.recorder is not None:
            self.recorder.tick()
        if done:
            self.generation += 1
        return done

    def workload_rate(self) -> float:
        """Touches per virtual second that the running workloads make together."""
        return sum(wl.rate for t in self.tasks.values() if t.alive
                   for wl in (t.workload, t.vm.workload if t.vm else None) if wl is not None)

    def record(self, window: float = 1.0) -> Any:
        """Start recording ground truth every ``window`` virtual seconds (score.py)."""
        from .score import Recorder
        self.recorder = Recorder(self, window)
        return self.recorder

    # ---- reclaim (mm/vmscan.c, mm/oom_kill.c) ------------------------------------
    def run_kswapd(self) -> int:
        """Run kswapd on every node the allocator woke; returns base pages reclaimed."""
        total = 0
        for i, n in enumerate(self.nodes):
            if self.native.nodes[i].kswapd_wake:
                total += check(lib.fp_kswapd(self.native, i))
        if total:
            self.generation += 1
        return total

    def shrink_node(self, nid: int, nr_pages: int, *, direct: bool = False) -> int:
        """One shrink_node() call on node nid; returns base pages reclaimed."""
        mode = lib.FP_RECLAIM_DIRECT if direct else lib.FP_RECLAIM_KSWAPD
        got = check(lib.fp_shrink_node(self.native, self._idx[nid], nr_pages, mode))
        self.generation += 1
        return got

    def check(self) -> list[str]:
        """The invariant checker (native/check.c): [] when consistent, else the first
        problem and a count."""
        buf = ffi.new("char[]", 512)
        n = lib.fp_check(self.native, buf, 512)
        if n == 0:
            return []
        return [ffi.string(buf).decode(), f"{n} problem(s) in all"]

    def mem_usage(self) -> dict[str, int]:
        """Host bytes the emulated machine holds, by purpose (native fp_mem_usage), and
        'populated': the base pages emulated processes map."""
        u = ffi.new("struct fp_mem_usage *")
        lib.fp_mem_usage(self.native, u)
        return {f: getattr(u, f) for f in ("pages", "page_tables", "truth", "free_lists",
                                           "rmap_ext", "other", "populated")}

    # ---- the later upstream interfaces (native/pageidle.c) --------------------------
    @property
    def demotion_enabled(self) -> bool:
        return not self.native.demotion_disabled

    @demotion_enabled.setter
    def demotion_enabled(self, on: bool) -> None:
        self.native.demotion_disabled = not on

    @property
    def numa_balancing(self) -> int:
        """/proc/sys/kernel/numa_balancing: 0 off, 1 normal, 2 memory tiering, 3 both."""
        return int(self.native.numa_balancing)

    @numa_balancing.setter
    def numa_balancing(self, mode: int) -> None:
        if mode not in (0, 1, 2, 3):
            raise KernelError(errno.EINVAL, f"numa_balancing takes 0-3, not {mode}")
        self.native.numa_balancing = mode

    @property
    def nr_pfns(self) -> int:
        return int(self.native.nr_pfns)

    def pagemap(self, task: Task, addr: int, n: int, *, show_pfn: bool = True) -> bytes:
        """/proc/PID/pagemap entries of n pages from addr (little-endian u64s); without
        show_pfn (a reader lacking CAP_SYS_ADMIN) present pages show PFN 0."""
        out = ffi.new("uint64_t[]", max(n, 1))
        if task.mm_id is None:
            raise KernelError(errno.ESRCH, "no address space")
        vmas, nr_vmas = self.mm(task.mm_id).move_spans()
        check(lib.fp_pagemap(self.native, task.mm_id, vmas, nr_vmas, addr, n, show_pfn, out))
        return bytes(ffi.buffer(out, 8 * n))

    def kpageflags(self, pfn: int, n: int) -> bytes:
        return self._per_pfn(lib.fp_kpageflags, pfn, n)

    def kpagecount(self, pfn: int, n: int) -> bytes:
        return self._per_pfn(lib.fp_kpagecount, pfn, n)

    def _per_pfn(self, fn, pfn: int, n: int) -> bytes:  # noqa: ANN001 - a cffi function
        """n u64s, one per PFN from pfn, as fn (fs/proc/page.c's readers) puts them."""
        out = ffi.new("uint64_t[]", max(n, 1))
        fn(self.native, pfn, n, out)
        return bytes(ffi.buffer(out, 8 * n))

    def page_idle_read(self, pfn: int, nwords: int) -> bytes:
        out = ffi.new("uint64_t[]", max(nwords, 1))
        lib.fp_page_idle_read(self.native, pfn, nwords, out)
        return bytes(ffi.buffer(out, 8 * nwords))

    def page_idle_write(self, pfn: int, data: bytes) -> None:
        words = ffi.new("uint64_t[]", max(1, len(data) // 8))
        ffi.memmove(words, data, len(data) // 8 * 8)
        lib.fp_page_idle_write(self.native, pfn, len(data) // 8, words)
        self.generation += 1

    def swap_pages(self) -> tuple[int, int]:
        """(total, used) pages of the emulated swap device."""
        return int(self.native.swap_total), int(self.native.swap_used)

    def pin_page(self, task: Task, addr: int) -> None:
        """Take an extra reference on the page at addr (as get_user_pages() would):
        migrating it then fails with -EAGAIN."""
        level, entry = self.entry(task, addr)
        pfn = (entry & 0x000FFFFFFFFFF000) >> 12
        if not entry & lib.FP_PAGE_PRESENT:
            raise KernelError(errno.EFAULT, f"no page at {addr:#x}")
        if pfn >= self.native.nr_pfns:  # a kernel frame ([vdso], [vvar]): no struct page here
            raise KernelError(errno.EFAULT, f"the page at {addr:#x} is a kernel frame")
        self.native.pages[pfn].flags |= lib.FP_PG_PINNED

    def migrate_page_at(self, task: Task, addr: int, nid: int) -> bool:
        """Migrate the page mapped at addr to node nid (mm/migrate.c), isolated from its
        LRU first as every caller of migrate_pages() does (the allocation may reclaim);
        False when there is no such page or no room on nid."""
        if task.mm_id is None:
            return False
        level = ffi.new("int32_t *")
        e = lib.fp_lookup(self.native, task.mm_id, addr, level)
        if e == ffi.NULL or not e[0] & lib.FP_PAGE_PRESENT or e[0] & lib.FP_PAGE_SWPENTRY or \
                (level[0] < 4 and not e[0] & lib.FP_PAGE_PSE):
            return False
        pfn = (e[0] & 0x000FFFFFFFFFF000) >> 12
        src = self.page_node(task, addr)
        if src is None:
            return False
        caller = self._idx[self.cpu_node(task.cpu)]
        lib.fp_migrate_to_node(self.native, ffi.new("uint64_t[]", [pfn]), 1, self._idx[src],
                               self._idx[nid], caller, 1)
        self.generation += 1
        e = lib.fp_lookup(self.native, task.mm_id, addr, level)
        return e != ffi.NULL and (e[0] & 0x000FFFFFFFFFF000) >> 12 != pfn  # moved to a new frame

    def range_pages(self, task: Task, start: int, end: int) -> list[tuple[int, int]]:
        """(address, PFN) of every present leaf in [start, end) (a THP once)."""
        if task.mm_id is None:
            return []
        # a buffer for the range's pages, up to 64 Ki of them: a huge sparse range (the
        # whole address space) must not cost one slot per absent page
        cap = max(1, min((max(end, start) - start) // PAGE_SIZE, 1 << 16))
        while True:
            addrs, pfns = ffi.new("uint64_t[]", cap), ffi.new("uint64_t[]", cap)
            n = check(lib.fp_range_pages(self.native, task.mm_id, start, end, addrs, pfns, cap))
            if n <= cap:
                return [(int(addrs[i]), int(pfns[i])) for i in range(n)]
            cap = n  # more leaves than the buffer held: once more, with room for all

    def truth(self, task: Task, start: int, end: int, *, reset: bool = False) -> list[tuple[int, int | None, int]]:
        """Ground truth no real machine gives: (address, node, CPU accesses since the
        last reset) for every present base page of [start, end) (a THP as 512 pages)."""
        rows: list[tuple[int, int | None, int]] = []
        pfns: list[int] = []
        for addr, pfn in self.range_pages(task, start, end):
            huge = self.native.pages[pfn].flags & lib.FP_PG_HEAD if pfn < self.native.nr_pfns else 0
            for i in range(512 if huge else 1):
                if start <= addr + i * PAGE_SIZE < end:
                    rows.append((addr + i * PAGE_SIZE, self.page_node(task, addr), 0))
                    pfns.append(pfn + i)
        counts = ffi.new("uint32_t[]", max(1, len(pfns)))
        lib.fp_access_counts(self.native, ffi.new("uint64_t[]", pfns or [0]), len(pfns), counts,
                             int(reset))
        return [(a, n, int(counts[i])) for i, (a, n, _) in enumerate(rows)]

    def range_stats(self, task: Task, start: int, end: int) -> dict[str, Any]:
        """numa_maps/smaps counts of [start, end): base pages, per node id."""
        out = ffi.new("struct fp_range_stats *")
        if task.mm_id is not None:
            check(lib.fp_range_stats(self.native, task.mm_id, start, end, out))
        stats: dict[str, Any] = {f: int(getattr(out, f)) for f in (
            "pages", "anon", "dirty", "active", "referenced", "swap", "thp", "mapmax", "shared",
            "shared_dirty", "pss", "swap_pss", "kernel_pages", "kernel_referenced", "kernel_dirty")}
        stats["nodes"] = {n.id: int(out.node[i]) for i, n in enumerate(self.nodes) if out.node[i]}
        return stats

    def age_active(self, nid: int) -> None:
        """shrink_active_list() over the whole active lists of node nid: every page
        goes inactive (bar referenced executable page cache) with its PTE bits cleared."""
        lib.fp_age_active(self.native, self._idx[nid])
        self.generation += 1

    def watermarks(self, nid: int) -> tuple[int, int, int]:
        w = self.native.nodes[self._idx[nid]].wmark
        return int(w[0]), int(w[1]), int(w[2])

    def oom_kill(self) -> Task | None:
        """out_of_memory(): kill the task select_bad_process() picks (oom_kill.py), log
        it like the kernel. None when no process can be killed (4.20 panics)."""
        victim = oom_kill.select_victim(self)
        if victim is None:
            return None
        mc = self.mm_counters(victim)
        self.oom_log.append(
            f"Out of memory: Killed process {victim.pid} ({victim.name}) "
            f"total-vm:{mc['total_vm'] * 4}kB, anon-rss:{mc['rss_anon'] * 4}kB, "
            f"file-rss:{mc['rss_file'] * 4}kB, shmem-rss:{mc['rss_shmem'] * 4}kB")
        log.warning("%s", self.oom_log[-1])
        self.native.events[lib.FP_EV_OOM_KILL] += 1
        self.exit(victim.pid)
        return victim

    # ---- reads the file system makes -------------------------------------------
    def idle_pages_read(self, task: Task, pos: int, count: int, flags: int) -> IdleRead:
        """read(2) of /proc/PID/idle_pages (INTERFACES.md 1.2-1.4), in one go; a tail it
        leaves unreported counts as missed at once (no open file to wait on)."""
        steps = self.idle_pages_steps(self._idle, task, pos, count, flags, ALL_PASSES)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                self.idle_tail_settle(task, done.value.tail)
                return done.value

    def idle_tail_settle(self, task: Task, tail: IdleTail | None, next_pos: int | None = None,
                         next_count: int | None = None) -> None:
        """Count a filled read's unreported tail as missed (ground truth, idle_missed),
        unless the file's next read (next_count bytes at next_pos) starts at or before where the
        tail began: a scanner that goes on from its last unit reports those pages after
        all; only those beyond that read's end, present now, count."""
        if tail is None or not task.alive or task.mm_id != tail.mm_id:
            return  # its process (or address space) is gone: nobody to count it for
        pages = tail.pages
        if next_pos is not None and next_count is not None and next_pos <= tail.resume:
            next_end = next_pos + min(next_count, MAX_RW_COUNT) * 8 * PAGE_SIZE  # 1.2
            pages = 0
            if next_end < tail.end:
                spans, n = self.mm(tail.mm_id).spans()
                pages = min(tail.pages, int(lib.fp_idle_present(
                    self.native, tail.mm_id, spans, n, max(next_end, tail.resume), tail.end)))
        if pages:
            lib.fp_idle_missed_add(self.native, tail.mm_id, pages)

    def idle_pages_steps(self, scan: IdleScan, task: Task, pos: int, count: int, flags: int,
                         passes: int) -> Generator[None, int | None, IdleRead]:
        """The same read in steps of `passes` passes: yields between steps (the caller
        may let the kernel change meanwhile; `send(n)` sets the passes of the steps
        after) and returns the read's result. Raises KernelError before the first step."""
        mm_id = task.mm_id if task.alive else None
        scan.start(self, mm_id, pos, count, flags)
        while True:
            same = task.alive and task.mm_id == mm_id  # else the mm's slot may be reused
            more = scan.step(self, mm_id if same else None, passes)
            self.generation += 1  # accessed bits were cleared
            if not more:
                return scan.result(mm_id if same else None)
            passes = (yield) or passes

    def node_stat(self, nid: int) -> list[int]:
        """The native per-node counters (FP_NR_* order), in pages or events."""
        st = self.native.nodes[self._idx[nid]].stat
        return [int(st[i]) for i in range(lib.FP_NR_NODE_STATS)]

    def node_start_pfn(self, nid: int) -> int:
        """The first PFN of node nid (nodes own contiguous PFN ranges, in id order)."""
        return int(self.native.nodes[self._idx[nid]].start_pfn)

    def event(self, index: int) -> int:
        return int(self.native.events[index])

    def mm_counters(self, task: Task) -> dict[str, int]:
        """Per-mm page counts /proc/PID/status prints (pages)."""
        if task.mm_id is None:
            return {}
        c = self.native.mms[task.mm_id]
        mm = self.mm(task.mm_id)
        return {"rss_anon": int(c.rss_anon), "rss_file": int(c.rss_file),
                "rss_shmem": int(c.rss_shmem),
                "nr_tables": int(c.nr_tables), "swap": int(c.nr_swap),
                "hiwater_rss": int(c.hiwater_rss), "total_vm": mm.total_vm_pages,
                "hiwater_vm": max(mm.hiwater_vm, mm.total_vm_pages)}

    def _leaf_pfn(self, task: Task, addr: int) -> int | None:
        """The frame a present leaf maps at addr (a THP's head for a huge one), or None."""
        if task.mm_id is None:
            return None
        level = ffi.new("int32_t *")
        e = lib.fp_lookup(self.native, task.mm_id, addr, level)
        if e == ffi.NULL or not (e[0] & (lib.FP_PAGE_PRESENT | lib.FP_PAGE_PROTNONE)) or \
                e[0] & lib.FP_PAGE_SWPENTRY:
            return None
        if level[0] < 4 and not e[0] & lib.FP_PAGE_PSE:
            return None
        return (e[0] & 0x000FFFFFFFFFF000) >> 12

    def page_node(self, task: Task, addr: int) -> int | None:
        """The node holding the page mapped at addr, or None (ground truth for tests)."""
        pfn = self._leaf_pfn(task, addr)
        for n in self.nodes if pfn is not None else ():
            if self.node_start_pfn(n.id) <= pfn < self.node_start_pfn(n.id) + n.nr_pages:
                return n.id
        return None

    def maps_zero_page(self, task: Task, addr: int) -> bool:
        """addr is mapped by the zero page or the huge zero page (kernel frames)."""
        return self._leaf_pfn(task, addr) in (self.native.zero_pfn, self.native.huge_zero_pfn)

    def entry(self, task: Task, addr: int) -> tuple[int, int]:
        """(level, raw entry) of the leaf or empty slot mapping addr (for tests)."""
        assert task.mm_id is not None
        level = ffi.new("int32_t *")
        e = lib.fp_lookup(self.native, task.mm_id, addr, level)
        return (int(level[0]), int(e[0]) if e != ffi.NULL else 0)


__all__ = ["Kernel", "NodeConfig", "PAGE_SIZE"]
