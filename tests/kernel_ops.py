"""Random kernel operations for property tests: a small 4-node machine and an
interpreter of hypothesis-drawn operations (faults, workloads, scans, reclaim,
migration, fork, exit, mmap, munmap, madvise) over it. Shared by the invariant and TLB differential tests."""
from __future__ import annotations

import os

from hypothesis import strategies as st

from fakeproc.kernel import migrate, mmap
from fakeproc.kernel.kernel import Kernel, NodeConfig
from fakeproc.kernel.mm import Vma
from fakeproc.kernel.native import KernelError
from fakeproc.kernel.workload import Workload

BASE = 0x7F0000000000
RFC_DIST = [[10, 21, 17, 28], [21, 10, 28, 17], [17, 28, 10, 28], [28, 17, 28, 10]]


def rfc_kernel(dram_pages: int = 4096, pmem_pages: int = 8192) -> Kernel:
    """The RFC's topology: DRAM nodes 0, 1 (CPUs 0-1, 2-3) with PMEM peers 2, 3."""
    return Kernel([NodeConfig(0, "dram", dram_pages, (0, 1)), NodeConfig(1, "dram", dram_pages, (2, 3)),
                   NodeConfig(2, "pmem", pmem_pages), NodeConfig(3, "pmem", pmem_pages)], RFC_DIST)
MACHINE = """
distances = [[10, 20, 17, 28], [20, 10, 28, 17], [17, 28, 10, 28], [28, 17, 28, 10]]
[machine]
swap = "{swap}"
[[node]]
type = "dram"
size = "8MiB"
cpus = "0"
[[node]]
type = "dram"
size = "8MiB"
cpus = "1"
[[node]]
type = "pmem"
size = "16MiB"
[[node]]
type = "pmem"
size = "16MiB"
"""

OPS = st.one_of(
    st.tuples(st.just("spawn"), st.integers(1, 6), st.booleans(), st.integers(0, 1)),
    st.tuples(st.just("touch"), st.integers(0, 10), st.integers(0, 4095), st.booleans()),
    st.tuples(st.just("run"), st.integers(0, 10), st.sampled_from(["uniform", "hotcold", "zipf", "seq"])),
    st.tuples(st.just("advance"), st.floats(0.001, 0.05)),
    st.tuples(st.just("scan"), st.integers(0, 10), st.sampled_from([19, 100, 4096, 1 << 16]),
              st.sampled_from([0, os.O_NONBLOCK, os.O_NOFOLLOW])),
    st.tuples(st.just("shrink"), st.integers(0, 3), st.integers(0, 600)),
    st.tuples(st.just("age"), st.integers(0, 3)),
    st.tuples(st.just("kswapd"),),
    st.tuples(st.just("migrate"), st.integers(0, 10), st.integers(0, 4095), st.integers(0, 3)),
    st.tuples(st.just("exit"), st.integers(0, 10)),
    st.tuples(st.just("fork"), st.integers(0, 10)),
    st.tuples(st.just("move_pages"), st.integers(0, 10),
              st.lists(st.tuples(st.integers(0, 1500), st.integers(0, 4)), max_size=20),
              st.sampled_from([0, 2, 4, 0x82])),
    # address-space changes around BASE (MAP_FIXED or a hint there), anywhere else
    st.tuples(st.just("mmap"), st.integers(0, 10), st.integers(1, 1024), st.integers(0, 2047),
              st.sampled_from(["fixed", "hint", "any"])),
    st.tuples(st.just("munmap"), st.integers(0, 10), st.integers(0, 2047), st.integers(1, 1024)),
    st.tuples(st.just("madvise"), st.integers(0, 10), st.integers(0, 2047), st.integers(1, 1024),
              st.sampled_from([4, 14, 15])),
)


class Interpreter:
    """Applies operations to one kernel; pids are handed out in order."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.next_pid = 100

    def pick(self, i: int):  # noqa: ANN201 - a Task or None
        alive = [t for t in self.k.tasks.values() if t.alive]
        return alive[i % len(alive)] if alive else None

    def apply(self, op: tuple) -> None:  # noqa: C901 - one branch per operation
        k, kind, pick = self.k, op[0], self.pick
        if kind == "spawn":
            _, mib, thp, cpu = op
            t = k.spawn(self.next_pid, f"p{self.next_pid}", cpu=cpu)
            self.next_pid += 1
            k.add_vma(t, Vma(BASE, BASE + mib * (1 << 20), thp=thp))
        elif kind == "touch" and (t := pick(op[1])) is not None and (vmas := k.mm(t.mm_id).vmas):
            vma = vmas[op[2] % len(vmas)]
            addr = vma.start + (op[2] * 4096) % (vma.end - vma.start)
            try:
                k.touch(t, addr, write=op[3])
            except KernelError:
                pass  # ENOMEM after an OOM kill of someone else is fine
        elif kind == "run" and (t := pick(op[1])) is not None:
            k.attach_workload(t, Workload(pattern=op[2], rate=3000, seed=op[1]))
        elif kind == "advance":
            k.advance(op[1])
        elif kind == "scan" and (t := pick(op[1])) is not None:
            k.idle_pages_read(t, BASE, op[2], op[3])
        elif kind == "shrink":
            k.shrink_node(op[1], op[2])
        elif kind == "age":
            k.age_active(op[1])
        elif kind == "kswapd":
            k.run_kswapd()
        elif kind == "migrate" and (t := pick(op[1])) is not None and (vmas := k.mm(t.mm_id).vmas):
            vma = vmas[op[2] % len(vmas)]
            addr = vma.start + (op[2] * 4096) % (vma.end - vma.start)
            k.migrate_page_at(t, addr, op[3])
        elif kind == "move_pages" and (t := pick(op[1])) is not None:
            pages = [BASE + p * 4096 for p, _ in op[2]]
            nodes = [n for _, n in op[2]]
            migrate.move_pages(k, t.pid, pages, nodes, [0] * len(pages), op[3])
        elif kind == "fork" and (t := pick(op[1])) is not None:
            k.fork(t.pid, self.next_pid)
            self.next_pid += 1
        elif kind == "exit" and (t := pick(op[1])) is not None:
            k.exit(t.pid)
        elif kind == "mmap" and (t := pick(op[1])) is not None:
            addr = 0 if op[4] == "any" else BASE + op[3] * 4096
            ret = mmap.mmap(k, t, op[2] * 4096, addr, fixed=op[4] == "fixed")
            assert ret > 0 and ret % 4096 == 0, ret
        elif kind == "munmap" and (t := pick(op[1])) is not None:
            assert mmap.munmap(k, t, BASE + op[2] * 4096, op[3] * 4096) == 0
        elif kind == "madvise" and (t := pick(op[1])) is not None:
            mmap.madvise(k, t, BASE + op[2] * 4096, op[3] * 4096, op[4])  # -ENOMEM over holes
