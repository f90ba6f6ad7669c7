"""Machine-file text the tests share: the [machine] table and one DRAM node on CPU 0,
with a PMEM node after it when asked."""
from __future__ import annotations


def small_machine(*, dram: str = "64MiB", pmem: str | None = None, upstream: bool = False,
                  swap: str | None = None) -> str:
    lines = ["[machine]"] if upstream or swap else []
    lines += ["upstream = true"] if upstream else []
    lines += [f'swap = "{swap}"'] if swap else []
    lines += ["[[node]]", 'type = "dram"', f'size = "{dram}"', 'cpus = "0"']
    lines += ["[[node]]", 'type = "pmem"', f'size = "{pmem}"'] if pmem else []
    return "\n".join(lines) + "\n"
