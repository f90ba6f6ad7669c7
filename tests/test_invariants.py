"""Property test: random sequences of faults, workload steps, scans, reclaim, migration,
process exits and address-space changes keep the invariant checker (native/check.c)
green, and nothing mapped outside the VMAs."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakeproc.idle_format import decode
from fakeproc.kernel.mm import TASK_SIZE
from fakeproc.kernel.task_mmu import IdleScan
from fakeproc.machine import load
from kernel_ops import MACHINE, OPS, Interpreter


@settings(max_examples=int(os.environ.get("FAKEPROC_HYPOTHESIS_EXAMPLES", "200")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(swap=st.sampled_from(["0", "4MiB"]), ops=st.lists(OPS, min_size=1, max_size=40))
def test_operations_keep_the_invariants(swap, ops):
    k = load(MACHINE.format(swap=swap))
    run = Interpreter(k)
    for op in ops:
        run.apply(op)
        assert k.check() == [], op
        assert nothing_mapped_outside_the_vmas(k), op


def nothing_mapped_outside_the_vmas(k) -> bool:
    """No page, swap entry or kernel frame mapped where a process has no VMA (a munmap
    zaps what it removes; a workload touches only what is mapped)."""
    for t in k.tasks.values():
        if not t.alive:
            continue
        vmas = k.mm(t.mm_id).vmas
        for lo, hi in zip([0] + [v.end for v in vmas], [v.start for v in vmas] + [TASK_SIZE]):
            st_ = k.range_stats(t, lo, hi)
            if lo < hi and (st_["pages"] or st_["swap"] or st_["kernel_pages"]):
                return False
    return True


BIG_MACHINE = """
[[node]]
type = "dram"
size = "160MiB"
cpus = "0"
[[node]]
type = "dram"
size = "32MiB"
cpus = "1"
[[node]]
type = "pmem"
size = "64MiB"
[[node]]
type = "pmem"
size = "64MiB"
[[process]]
pid = 1
name = "big"
[[process.vma]]
start = 0x7f0000000000
size = "96MiB"
pages = "1 accessed, 1 idle, 1 none, 2 dirty"
repeat = 4915
"""
# kernel_ops' operations (on nodes 0-3), the process being read ended more often
BETWEEN = st.one_of(OPS, st.tuples(st.just("exit"), st.just(0)))


@settings(max_examples=int(os.environ.get("FAKEPROC_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(between=st.lists(BETWEEN, min_size=1, max_size=6), passes=st.integers(1, 2),
       flags=st.sampled_from([0, os.O_NONBLOCK]))
def test_a_read_in_steps_survives_changes_between_steps(between, passes, flags):
    """The server lets other requests run between the steps of a read, and they may
    fault, reclaim, migrate, fork or end the process being read: the read goes on (or
    ends early when its address space is gone), its bytes stay well formed and the
    invariants hold. A 96 MiB process in runs of 1-2 pages: ~20 KB of records, three
    or more staging buffers."""
    k = load(BIG_MACHINE)
    run = Interpreter(k)
    task = k.task(1)
    steps = k.idle_pages_steps(IdleScan(), task, 0x7F0000000000, 1 << 20, flags, passes)
    ops = iter(between)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result = done.value
            break
        op = next(ops, None)
        if op is not None:
            run.apply(op)
            assert k.check() == [], op
    runs, _ = decode(result.data)
    assert all(r.addr >= 0x7F0000000000 for r in runs)
    if task.alive:
        assert runs and runs[0].addr == 0x7F0000000000
    assert k.check() == []
