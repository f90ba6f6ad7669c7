"""The text `fakeproc mount` and `fakeproc check` print: what was mounted, how to stop it."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .fs.formats import node_list

if TYPE_CHECKING:
    from .kernel.kernel import Kernel


def _size(nbytes: int) -> str:
    """4096 -> '4 KiB', 3 << 30 -> '3 GiB', 1536 MiB -> '1.5 GiB'."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            return f"{nbytes / (1 << shift):.4g} {unit}"
    return f"{nbytes} B"


def _count(n: int, one: str, many: str | None = None) -> str:
    """1 node, 2 nodes; 1 process, 0 processes."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def describe(kernel: "Kernel", mountpoint: str | None) -> str:
    """The machine's nodes and processes; with a mount point, how to use and stop it."""
    where = f" on {mountpoint}" if mountpoint else ""
    lines = [f"fakeproc: emulated machine{where}"]
    lines.append(f"  {_count(len(kernel.nodes), 'node')}, {_count(len(kernel.online_cpus), 'CPU')}:")
    for n in kernel.nodes:
        cpus = node_list(n.cpus).strip() or "-"
        dist = " ".join(str(kernel.distance(n.id, m)) for m in kernel.node_ids)
        lines.append(f"    node{n.id}  {n.type}  {_size(n.size_bytes):>9}  cpus {cpus:<8} "
                     f"peer_node {n.peer:>2}  distances {dist}")
    lines.append(f"  {_count(len(kernel.tasks), 'process', 'processes')}:")
    for t in sorted(kernel.tasks.values(), key=lambda t: t.pid):
        mc = kernel.mm_counters(t)
        rss = sum(mc.get(key, 0) for key in ("rss_anon", "rss_file", "rss_shmem")) * 4096  # VmRSS
        wl = t.workload.pattern if t.workload else "none"
        lines.append(f"    pid {t.pid:<8} {t.name:<16} threads {len(t.tids):<3} "
                     f"rss {_size(rss):>10}  workload {wl}")
    use = kernel.mem_usage()
    # the ground-truth counters are allocated for every PFN but untouched (so not
    # resident) until the page is first accessed: said apart from the rest
    held = sum(v for k, v in use.items() if k not in ("populated", "truth"))
    pages = sum(n.size_bytes for n in kernel.nodes) // 4096
    lines.append(f"  host memory held: {_size(held)} ({held / pages:.1f} B per emulated 4 KiB page)")
    lines.append(f"  and up to {_size(use['truth'])} of access counts, as pages are touched")
    if mountpoint:
        first = kernel.nodes[0].id
        meminfo = os.path.join(mountpoint, f"sys/devices/system/node/node{first}/meminfo")  # MNT/ too
        lines.append(f"  try: cat {meminfo}")
        lines.append(f"  stop: fakeproc umount {mountpoint}   (or Ctrl-C / SIGTERM in the foreground)")
    return "\n".join(lines)
