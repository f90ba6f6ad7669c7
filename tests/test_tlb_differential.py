"""The workload engine's software TLB (fp_tlb_hit, fp_tlb_miss) and its pipelined loop
(picks drawn ahead, entries filled at draw time, prefetches) against the plain walk:
three kernels run the same random operations, one with its TLBs on, one that also
runs every workload pipelined (`wl_pipeline_pages = 0`), and one with `tlb_off`
(every touch walks the page tables from the PGD, as fp_touch does); all must end in
the same state: page tables (read back through idle_pages, which
reports PMD-level accessed bits), ground-truth counts, events, node counters and
what every workload saw. Operations that clear accessed bits or free tables (scans,
PMD markers, unmapping, reclaim, migration, exit) are in the mix, so a stale TLB
entry would show."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakeproc.kernel import mmap
from fakeproc.kernel.kernel import Kernel
from fakeproc.kernel.mm import Vma
from fakeproc.kernel.native import KernelError, ffi, lib
from fakeproc.kernel.workload import Workload
from fakeproc.machine import load
from kernel_ops import BASE, MACHINE, OPS, Interpreter

TLB_OPS = st.one_of(
    OPS,
    st.tuples(st.just("pmd_bits"), st.integers(0, 10), st.integers(0, 4095), st.booleans()),
    # the PGD or PUD entry's accessed bit cleared: a TLB hit may skip those levels
    # only while their bits are set
    st.tuples(st.just("upper_idle"), st.integers(0, 10), st.sampled_from([1, 2])),
    st.tuples(st.just("unmap"), st.integers(0, 10), st.integers(0, 4095), st.integers(1, 1024)),
)


class TlbInterpreter(Interpreter):
    def apply(self, op: tuple) -> None:
        k = self.k
        if op[0] == "pmd_bits" and (t := self.pick(op[1])) is not None:
            addr = BASE + op[2] * 4096
            try:  # a pmd-idle / pmd-accessed marker: rewrites an upper-level entry
                k.set_table_bits(t, addr, 3, 0 if op[3] else lib.FP_PAGE_ACCESSED,
                                 lib.FP_PAGE_ACCESSED if op[3] else 0)
            except KernelError:
                pass
        elif op[0] == "upper_idle" and (t := self.pick(op[1])) is not None:
            try:
                k.set_table_bits(t, BASE, op[2], 0, lib.FP_PAGE_ACCESSED)
            except KernelError:
                pass
        elif op[0] == "unmap" and (t := self.pick(op[1])) is not None:
            start = BASE + op[2] * 4096  # frees the page tables no VMA needs any more
            assert mmap.munmap(k, t, start, op[3] * 4096) == 0
        else:
            super().apply(op)


def upper_entries(k: Kernel, mm_id: int, start: int, end: int) -> list[int]:
    """The PGD, PUD and PMD entries over [start, end), read from the arena (the leaf
    reads below show PTEs and PMD accessed bits, not the levels a TLB hit skips)."""
    out, tables, pgd = [], k.native.tables, k.native.mms[mm_id].pgd
    for addr in range(start, end, 1 << 21):
        table = pgd
        for level in (1, 2, 3):
            e = tables[table * 512 + ((addr >> (12 + 9 * (4 - level))) & 511)]
            out.append(e)
            if not e & lib.FP_PAGE_PRESENT or e & lib.FP_PAGE_PSE:
                break
            table = (e & 0x000FFFFFFFFFF000) >> 12
    return out


def snapshot(k: Kernel) -> dict:
    n = k.native.nr_pfns
    access, window = ffi.new("uint32_t[]", n), ffi.new("uint16_t[]", n)
    lib.fp_truth_read(k.native, 0, n, access, window)
    state = {"access": list(access), "window": list(window),
             "events": list(k.native.events),
             "nodes": [k.node_stat(nid) for nid in k.node_ids]}
    for t in sorted((t for t in k.tasks.values() if t.alive), key=lambda t: t.pid):
        wl = t.workload
        state[t.pid] = {
            "pages": [(a, pfn, k.entry(t, a)) for v in k.mm(t.mm_id).vmas
                      for a, pfn in k.range_pages(t, v.start, v.end)],
            "upper": [upper_entries(k, t.mm_id, v.start, v.end) for v in k.mm(t.mm_id).vmas],
            "workload": None if wl is None else (wl.touches, wl.faults_failed,
                                                 wl.served_by_node(k.node_ids),
                                                 wl._c.rng, wl._c.seq_pos),
            # last: a full scan that skims idle PMDs reports the PMD-level accessed
            # bits too (and clears them)
            "idle": k.idle_pages_read(t, BASE, 1 << 20, lib.FP_SCAN_SKIM_IDLE).data,
        }
    return state


SETUP = st.lists(st.tuples(st.just("spawn"), st.integers(1, 6), st.booleans(), st.integers(0, 1)),
                 min_size=1, max_size=3)
WORKLOADS = st.lists(st.tuples(st.sampled_from(["uniform", "hotcold", "zipf", "seq"]),
                               st.sampled_from([0.0, 0.3, 1.0])), min_size=3, max_size=3)
ADVANCE = st.tuples(st.just("advance"), st.floats(0.01, 0.1))
SCAN = st.tuples(st.just("scan"), st.integers(0, 10), st.just(1 << 16),
                 st.sampled_from([0, lib.FP_SCAN_SKIM_IDLE]))


@settings(max_examples=int(os.environ.get("FAKEPROC_HYPOTHESIS_EXAMPLES", "200")) // 2,
          deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(swap=st.sampled_from(["0", "4MiB"]), setup=SETUP, workloads=WORKLOADS,
       rounds=st.lists(st.tuples(st.one_of(SCAN, TLB_OPS), ADVANCE), min_size=1, max_size=15))
def test_the_tlb_changes_nothing_but_speed(swap, setup, workloads, rounds):
    """Each round: one operation, then the workloads run (mostly TLB hits)."""
    fast, piped, plain = (load(MACHINE.format(swap=swap)) for _ in range(3))
    piped.native.wl_pipeline_pages = 0
    plain.native.tlb_off = 1
    for k in (fast, piped, plain):
        run = TlbInterpreter(k)
        for op in setup:
            run.apply(op)
        for t, (pattern, write) in zip(list(k.tasks.values()), workloads):
            k.attach_workload(t, Workload(pattern=pattern, rate=200_000, write=write, seed=t.pid))
        run.apply(("advance", 0.05))  # fault everything in: later rounds hit the TLB
        for op, advance in rounds:
            run.apply(op)
            run.apply(advance)
    assert fast.check() == [] and piped.check() == []
    reference = snapshot(plain)
    assert snapshot(fast) == reference
    assert snapshot(piped) == reference


# 8 MiB of DRAM, no swap: a 12 MiB process runs out of memory part-way
SMALL = """
[[node]]
type = "dram"
size = "8MiB"
cpus = "0"
"""


def test_a_pipelined_run_that_runs_out_of_memory_stops_where_the_plain_one_does():
    """The pipelined loop draws 48 picks ahead; when a touch fails (ENOMEM), the
    generator must be rewound to just after that touch, so the next run continues
    the same stream as the plain loop's."""
    states = []
    for pipelined in (False, True):
        k = load(SMALL)
        k.native.wl_pipeline_pages = 0 if pipelined else 1 << 62
        t = k.spawn(100, "big")
        k.add_vma(t, Vma(BASE, BASE + (12 << 20)))
        wl = Workload(pattern="seq", rate=1, seed=7, write=1.0)  # stores: no zero page
        k.attach_workload(t, wl)
        # the first run stops part-way, the second fails at its first touch
        done = [lib.fp_workload_run(k.native, wl._c, n) for n in (4096, 64)]
        states.append((done, wl.touches, wl.faults_failed, wl._c.rng, wl._c.seq_pos,
                       k.node_stat(k.node_ids[0])))
        assert wl.faults_failed >= 1 and wl._c.seq_pos < 3072  # it did stop early
    assert states[0] == states[1]
