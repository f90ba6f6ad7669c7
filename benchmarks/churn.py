"""What a mount keeps of the processes that came and went.

    python -m benchmarks.churn [CYCLES]

Each cycle spawns a 4-thread process, stats and reads five of its files, lists its
directory, its threads' directories and /proc, and kills it. Printed: the server's
resident memory and inode table growth per cycle, with new pids every cycle and, as
the same-run baseline, with one pid used again every cycle (the same requests, no new
names). A mount that kept every process would grow by tens of KB per cycle in the
first and not in the second.
"""
from __future__ import annotations

import os
import sys
from itertools import count
from typing import Iterator

from fakeproc.ctl.client import Client
from fakeproc.testing.mounting import mounted

MACHINE = '[[node]]\ntype = "dram"\nsize = "64MiB"\ncpus = "0"\n'
VMA = [{"start": 0x7F0000000000, "size": "16KiB", "pages": "1 accessed"}]
FILES = ("status", "maps", "smaps", "stat", "numa_maps")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


def cycles(m, c: Client, pids: Iterator[int], n: int) -> None:
    for _ in range(n):
        pid = c.call("spawn", pid=next(pids), name="churn", threads=4, vma=VMA)["pid"]
        for name in FILES:
            os.stat(m.proc_path(f"{pid}/{name}"))
            with open(m.proc_path(f"{pid}/{name}"), "rb") as f:
                f.read()
        os.listdir(m.proc_path(str(pid)))
        for tid in os.listdir(m.proc_path(f"{pid}/task")):
            os.listdir(m.proc_path(f"{pid}/task/{tid}"))
        os.listdir(m.proc_path(""))
        c.call("kill", pid=pid)


def growth(pids: Iterator[int], n: int) -> tuple[float, float]:
    """(KB of server RSS, inode table entries) per cycle, after n // 10 to warm up."""
    with mounted(MACHINE) as m, Client(m.path) as c:
        cycles(m, c, pids, n // 10)
        rss0, ino0 = rss_kb(m.proc.pid), c.call("fs_inodes")["inodes"]
        cycles(m, c, pids, n)
        rss1, ino1 = rss_kb(m.proc.pid), c.call("fs_inodes")["inodes"]
    return (rss1 - rss0) / n, (ino1 - ino0) / n


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    new = growth(count(5_000_000, 4), n)
    same = growth(iter(lambda: 5_000_000, None), n)
    print(f"{n} cycles of spawn, read, list, kill (server growth per cycle):")
    print(f"  new pids:        {new[0]:8.2f} KB RSS  {new[1]:8.2f} inodes")
    print(f"  one pid reused:  {same[0]:8.2f} KB RSS  {same[1]:8.2f} inodes (baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
