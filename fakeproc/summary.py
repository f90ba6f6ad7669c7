"""The text `fakeproc mount` and `fakeproc check` print: what was mounted, how to stop it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .fs.formats import node_list

if TYPE_CHECKING:
    from .kernel.kernel import Kernel


def _gib(nbytes: int) -> str:
    return f"{nbytes / (1 << 30):g} GiB"


def describe(kernel: "Kernel", mountpoint: str) -> str:
    lines = [f"fakeproc: emulated machine on {mountpoint}"]
    lines.append(f"  {len(kernel.nodes)} nodes, {len(kernel.online_cpus)} CPUs:")
    for n in kernel.nodes:
        cpus = node_list(n.cpus).strip() or "-"
        dist = " ".join(str(kernel.distance(n.id, m)) for m in kernel.node_ids)
        lines.append(f"    node{n.id}  {n.type}  {_gib(n.size_bytes):>9}  cpus {cpus:<8} "
                     f"peer_node {n.peer:>2}  distances {dist}")
    lines.append(f"  {len(kernel.tasks)} processes:")
    for t in sorted(kernel.tasks.values(), key=lambda t: t.pid):
        mc = kernel.mm_counters(t)
        rss = (mc.get("rss_anon", 0) + mc.get("rss_file", 0)) * 4096
        wl = t.workload.pattern if t.workload else "none"
        lines.append(f"    pid {t.pid:<8} {t.name:<16} threads {len(t.tids):<3} "
                     f"rss {_gib(rss):>12}  workload {wl}")
    lines.append(f"  try: cat {mountpoint}/sys/devices/system/node/node0/meminfo")
    lines.append(f"  stop: fusermount3 -u {mountpoint}   (or Ctrl-C / SIGTERM in the foreground)")
    return "\n".join(lines)
