"""Ground truth over time: how well a placement (a tiering daemon's, or none) serves
each emulated process, against an oracle that keeps the hottest pages in DRAM.

Every window of virtual time the Recorder samples, per process with a workload:
the accesses served from DRAM and from PMEM, the share an oracle placement would
have served from DRAM (native/truth.c fp_oracle), pages demoted by reclaim,
pages moved by syscalls (the daemon's own traffic, both directions), pages that
idle_pages reads silently skipped, and a coarse heat map of its address space.
No real machine can count any of this.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .native import check, ffi, lib

if TYPE_CHECKING:
    from .kernel import Kernel
    from .task import Task
    from .workload import Workload

HEAT_BUCKETS = 64
MAX_SAMPLES = 20000  # the oldest are dropped past this (a long-running mount)


@dataclass
class Sample:
    """One process over one window."""

    t: float
    pid: int
    name: str
    dram: int              # accesses served from DRAM nodes
    pmem: int              # accesses served from PMEM nodes
    oracle_dram: int       # accesses an oracle placement would have served from DRAM
    total: int             # accesses counted per page in the window (= dram + pmem)
    demoted_reclaim: int   # pages reclaim moved DRAM -> PMEM
    demoted_syscall: int   # pages move_pages/migrate_pages moved DRAM -> PMEM
    promoted_syscall: int  # pages move_pages/migrate_pages moved PMEM -> DRAM
    idle_missed: int       # present pages idle_pages reads skipped without a report
    heat: list[list[float]] = field(default_factory=list)  # per bucket [accesses, dram share]
    windows: int = 1       # windows it covers (an advance across several gives one sample)
    started: float = 0.0   # the process's start time: a pid used again is another process

    @property
    def dram_hit(self) -> float:
        return self.dram / (self.dram + self.pmem) if self.dram + self.pmem else 0.0

    @property
    def oracle_hit(self) -> float:
        return self.oracle_dram / self.total if self.total else 0.0


@dataclass
class _Last:
    """What a process's counters were at its last sample: the task they are of (a pid
    used again is another task), each workload's touches per node (a workload
    replaced since still counts what it did before it went; a new one starts at 0),
    and its address space's counters."""

    task: "Task"
    served: list[tuple["Workload", dict[int | None, int]]]
    mm: tuple[int, int, int, int]


MM_ZERO = (0, 0, 0, 0)


class Recorder:
    """Samples a kernel every ``window`` virtual seconds (driven by the clock)."""

    def __init__(self, kernel: "Kernel", window: float = 1.0) -> None:
        self.kernel = kernel
        self.window = window
        self.samples: list[Sample] = []
        self.heat_ranges: dict[int, tuple[int, int]] = {}
        self._last: dict[int, _Last] = {}
        self._ended: list[Sample] = []  # the last, partial windows of processes gone since
        self._next = kernel.clock + window

    def dram_capacity(self) -> int:
        """Pages the processes could hold in DRAM: DRAM nodes less their kernel pages
        (page tables of every level, EPT) and the high watermark reserve, i.e. the
        free pages and those anonymous memory and page cache hold."""
        k, cap = self.kernel, 0
        for n in k.nodes:
            if n.type == "dram":
                st = k.node_stat(n.id)
                cap += (st[lib.FP_NR_FREE_PAGES] + st[lib.FP_NR_ANON_PAGES] + st[lib.FP_NR_FILE_PAGES]
                        - k.watermarks(n.id)[2])
        return max(cap, 0)

    def tick(self) -> None:
        """Call after the clock advanced; samples at the window boundary passed. An
        advance across many windows (a long step) gives one sample at the last of them,
        covering them all: its counts are deltas since the sample before."""
        passed = (self.kernel.clock + 1e-9 - self._next) // self.window
        if passed >= 0:
            at = self._next + passed * self.window
            self.sample(at, int(passed) + 1)
            self._next = at + self.window

    def _mm_counters(self, t: "Task") -> tuple[int, int, int, int]:
        c = self.kernel.native.mms[t.mm_id]
        return (int(c.demoted_reclaim), int(c.demoted_syscall), int(c.promoted_syscall),
                int(c.idle_missed))

    def _heat(self, t: "Task") -> list[list[float]]:
        assert t.mm_id is not None
        vmas = self.kernel.mm(t.mm_id).vmas
        wl = t.workload
        chosen = [vmas[i] for i in wl.vma_indices] if wl and wl.vma_indices is not None else \
            [v for v in vmas if v.is_anon_memory]
        if not chosen:
            return []
        start, end = min(v.start for v in chosen), max(v.end for v in chosen)
        self.heat_ranges[t.pid] = (start, end)
        acc, pages, dram = (ffi.new("uint64_t[]", HEAT_BUCKETS) for _ in range(3))
        check(lib.fp_heat(self.kernel.native, t.mm_id, start, end, HEAT_BUCKETS, acc, pages, dram))
        return [[int(acc[i]), (int(dram[i]) / int(pages[i])) if pages[i] else -1.0]
                for i in range(HEAT_BUCKETS)]

    def _workloads(self, t: "Task") -> list["Workload"]:
        return [wl for wl in (t.workload, t.vm.workload if t.vm else None) if wl is not None]

    def _counts(self, t: "Task") -> tuple[dict[int | None, int], tuple[int, ...], _Last]:
        """The task's touches per node and its address space's counters since its last
        sample, and what to remember for the next."""
        last = self._last.get(t.pid)
        if last is None or last.task is not t:
            last = _Last(t, [], MM_ZERO)
        now = self._workloads(t)
        node_ids = self.kernel.node_ids
        delta: dict[int | None, int] = {}
        gone = [wl for wl, _ in last.served if all(wl is not w for w in now)]
        for wl in now + gone:
            before = next((served for w, served in last.served if w is wl), {})
            for nid, n in wl.served_by_node(node_ids).items():
                delta[nid] = delta.get(nid, 0) + n - before.get(nid, 0)
        mm = self._mm_counters(t) if t.mm_id is not None else last.mm
        d_mm = tuple(a - b for a, b in zip(mm, last.mm))
        return delta, d_mm, _Last(t, [(wl, wl.served_by_node(node_ids)) for wl in now], mm)

    def _sample_of(self, t: "Task", t_now: float, delta: dict[int | None, int],
                   d_mm: tuple[int, ...], oracle_dram: int, total: int,
                   heat: list[list[float]], windows: int) -> Sample:
        types = {n.id: n.type for n in self.kernel.nodes}
        return Sample(
            t=round(t_now, 6), pid=t.pid, name=t.name,
            dram=sum(n for nid, n in delta.items() if nid is not None and types[nid] == "dram"),
            pmem=sum(n for nid, n in delta.items() if nid is not None and types[nid] == "pmem"),
            oracle_dram=oracle_dram, total=total, demoted_reclaim=d_mm[0],
            demoted_syscall=d_mm[1], promoted_syscall=d_mm[2], idle_missed=d_mm[3],
            heat=heat, windows=windows, started=t.start_time)

    def workloads_changing(self, t: "Task") -> None:
        """t's workloads are about to be replaced or stopped: a process not sampled yet
        gets its baseline now, so that what the old ones did until now still counts
        (from 0: nothing of theirs was sampled)."""
        last = self._last.get(t.pid)
        if last is None or last.task is not t:
            last = self._last[t.pid] = _Last(t, [], MM_ZERO)
        for wl in self._workloads(t):  # one not sampled yet counts from 0
            if all(wl is not w for w, _ in last.served):
                last.served.append((wl, {}))

    def exiting(self, t: "Task") -> None:
        """t exits now (Kernel.exit, before its address space goes): its last, partial
        window is sampled at the window's end with what it did until now. The
        oracle cannot judge it then (its pages are gone): total and oracle_dram 0."""
        if t.pid not in self._last and not self._workloads(t):
            return
        delta, d_mm, _ = self._counts(t)
        self._last.pop(t.pid, None)
        if any(delta.values()) or any(d_mm):
            self._ended.append(self._sample_of(t, 0.0, delta, d_mm, 0, 0, [], 1))

    def sample(self, t_now: float, windows: int = 1) -> None:
        k = self.kernel
        tasks = [t for t in k.tasks.values() if t.alive and self._workloads(t)]
        # a process seen before that runs no workload now (it was stopped, or the task
        # went without exiting()): sampled while its counts still move
        sampled = {id(t) for t in tasks}
        stopped = [last.task for last in self._last.values() if id(last.task) not in sampled]
        live = tasks + [t for t in stopped if t.alive and t.mm_id is not None]
        heat = {id(t): self._heat(t) for t in live}
        n_mm = max([t.mm_id for t in live if t.mm_id is not None], default=0) + 1
        total, oracle = ffi.new("uint64_t[]", n_mm), ffi.new("uint64_t[]", n_mm)
        check(lib.fp_oracle(k.native, self.dram_capacity(), total, oracle, n_mm))
        for s in self._ended:
            s.t, s.windows = round(t_now, 6), windows
        self.samples.extend(self._ended)
        self._ended.clear()
        for t in tasks + stopped:
            delta, d_mm, last = self._counts(t)
            if id(t) in sampled or (t.alive and t.mm_id is not None):
                self._last[t.pid] = last  # a stopped one keeps its baseline for a restart
            else:
                del self._last[t.pid]
            if id(t) not in sampled and not (any(delta.values()) or any(d_mm)):
                continue
            has_mm = t.alive and t.mm_id is not None
            self.samples.append(self._sample_of(
                t, t_now, delta, d_mm, int(oracle[t.mm_id]) if has_mm else 0,
                int(total[t.mm_id]) if has_mm else 0, heat.get(id(t), []), windows))
        del self.samples[:-MAX_SAMPLES]

    def flush(self) -> None:
        """Close the current, partial window (so a report covers every access)."""
        start = self._next - self.window
        if self.kernel.clock > start + 1e-6:
            self.sample(self.kernel.clock)
            self._next = self.kernel.clock + self.window

    def report(self) -> dict[str, Any]:
        """Everything recorded, as JSON-ready data (what `fakeproc report` renders);
        the current partial window is closed first."""
        self.flush()
        return {"window": self.window,
                "nodes": [{"id": n.id, "type": n.type, "pages": n.nr_pages} for n in self.kernel.nodes],
                "heat_ranges": {str(p): list(r) for p, r in self.heat_ranges.items()},
                "samples": [asdict(s) | {"dram_hit": s.dram_hit, "oracle_hit": s.oracle_hit}
                            for s in self.samples]}
