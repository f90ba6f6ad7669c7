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

    @property
    def dram_hit(self) -> float:
        return self.dram / (self.dram + self.pmem) if self.dram + self.pmem else 0.0

    @property
    def oracle_hit(self) -> float:
        return self.oracle_dram / self.total if self.total else 0.0


@dataclass
class _Last:
    served: dict[int | None, int]
    mm: tuple[int, int, int, int]


class Recorder:
    """Samples a kernel every ``window`` virtual seconds (driven by the clock)."""

    def __init__(self, kernel: "Kernel", window: float = 1.0) -> None:
        self.kernel = kernel
        self.window = window
        self.samples: list[Sample] = []
        self.heat_ranges: dict[int, tuple[int, int]] = {}
        self._last: dict[int, _Last] = {}
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

    def sample(self, t_now: float, windows: int = 1) -> None:
        k = self.kernel
        tasks = [t for t in k.tasks.values() if t.alive and (t.workload or (t.vm and t.vm.workload))]
        heat = {t.pid: self._heat(t) for t in tasks}
        n_mm = max([t.mm_id for t in tasks if t.mm_id is not None], default=0) + 1
        total, oracle = ffi.new("uint64_t[]", n_mm), ffi.new("uint64_t[]", n_mm)
        check(lib.fp_oracle(k.native, self.dram_capacity(), total, oracle, n_mm))
        types = {n.id: n.type for n in k.nodes}
        for t in tasks:
            assert t.mm_id is not None
            served: dict[int | None, int] = {}
            for wl in (t.workload, t.vm.workload if t.vm else None):
                for nid, n in (wl.served_by_node(k.node_ids) if wl else {}).items():
                    served[nid] = served.get(nid, 0) + n
            mm = self._mm_counters(t)
            last = self._last.get(t.pid, _Last({}, (0, 0, 0, 0)))
            delta = {nid: n - last.served.get(nid, 0) for nid, n in served.items()}
            d_mm = tuple(a - b for a, b in zip(mm, last.mm))
            self._last[t.pid] = _Last(served, mm)
            self.samples.append(Sample(
                t=round(t_now, 6), pid=t.pid, name=t.name,
                dram=sum(n for nid, n in delta.items() if nid is not None and types[nid] == "dram"),
                pmem=sum(n for nid, n in delta.items() if nid is not None and types[nid] == "pmem"),
                oracle_dram=int(oracle[t.mm_id]), total=int(total[t.mm_id]),
                demoted_reclaim=d_mm[0], demoted_syscall=d_mm[1], promoted_syscall=d_mm[2],
                idle_missed=d_mm[3], heat=heat[t.pid], windows=windows))
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
