"""`fakeproc top`: a live view of a mounted machine, per node and per process.

Everything comes from the mount itself and its control socket, never from the kernel
objects: /sys/devices/system/node/nodeN/{meminfo,type}, /proc/vmstat, and the control
commands `clock status`, `list` and `report`.

What each column means (sizes in MiB, rates per *virtual* second):

Nodes
  total, free, anon, active(anon), inactive(anon)
      MemTotal, MemFree, AnonPages, Active(anon), Inactive(anon) of the node's meminfo.
  anon Δ/s
      the change of the node's AnonPages since the previous refresh, divided by the
      virtual time that passed (blank on the first refresh or while the clock is stopped).
Machine line
  migrations/s    delta of /proc/vmstat pgmigrate_success between refreshes, per virtual s.
  demotions/s     sum over processes of `demoted_reclaim` in the latest `report` window
                  (pages reclaim demoted to PMEM), divided by that window's length (a
                  `report` closes the running window early, so it can be short).
  promotions/s    likewise for `promoted_syscall` (pages a daemon moved to DRAM).
  daemon demotions/s  likewise for `demoted_syscall`.
Processes
  RSS and RSS per node from `list` (rss, rss_nodes); DRAM hit = dram / (dram + pmem)
  accesses of the process's latest `report` window (its "hot fraction" served from
  DRAM), oracle = what an oracle placement of the same DRAM would have served.
"""
from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .ctl.client import Client, clock_state
from .ctl.protocol import CtlError

PAGE_KB = 4
MEMINFO_FIELDS = ("MemTotal", "MemFree", "AnonPages", "Active(anon)", "Inactive(anon)")
PLAIN_WIDTH = 160  # columns of a snapshot printed to a file or pipe


def mib(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def read_meminfo(path: Path) -> dict[str, int]:
    """A node meminfo file as {field: kB} ("Node N Field:  value kB")."""
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"Node\s+\d+\s+(\S+):\s+(\d+)", line)
        if m:
            out[m[1]] = int(m[2])
    return out


def read_vmstat(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


@dataclass
class NodeInfo:
    id: int
    type: str
    meminfo: dict[str, int]


@dataclass
class Snapshot:
    """One refresh: what the mount and the control API said, plus rates against the
    previous snapshot."""
    clock: dict[str, Any]
    nodes: list[NodeInfo]
    vmstat: dict[str, int]
    procs: list[dict[str, Any]]
    report: dict[str, Any]
    anon_rate: dict[int, float | None] = field(default_factory=dict)  # kB per virtual s
    migrate_rate: float | None = None  # pages per virtual s

    @property
    def now(self) -> float:
        return float(self.clock.get("now", 0.0))

    def latest_window(self) -> tuple[float | None, list[dict[str, Any]]]:
        samples = self.report.get("samples") or []
        if not samples:
            return None, []
        t = max(s["t"] for s in samples)
        return t, [s for s in samples if s["t"] == t]

    def latest_by_pid(self) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for s in self.report.get("samples") or []:
            if s["pid"] not in out or s["t"] >= out[s["pid"]]["t"]:
                out[s["pid"]] = s
        return out

    def window_rates(self) -> dict[str, float | None]:
        """Pages per virtual second in the latest report window, summed over processes.

        That window can be shorter than the recorder's: `report` closes the running
        one early. Its length is the time since the window before it ended (the first
        one starts at 0, when the clock does)."""
        t, ss = self.latest_window()
        keys = ("demoted_reclaim", "promoted_syscall", "demoted_syscall")
        if t is None:
            return {k: None for k in keys}
        window = float(self.report.get("window") or 1.0)
        earlier = [s["t"] for s in self.report["samples"] if s["t"] < t]
        covers = max(s.get("windows", 1) for s in ss)  # a long step's one sample covers several
        length = t - max(earlier) if earlier else min(window * covers, t)
        if length <= 0:
            return {k: None for k in keys}
        return {k: sum(s[k] for s in ss) / length for k in keys}


def node_dirs(mountpoint: Path) -> list[tuple[int, Path]]:
    base = mountpoint / "sys/devices/system/node"
    found = [(int(p.name[4:]), p) for p in base.iterdir() if re.fullmatch(r"node\d+", p.name)]
    return sorted(found)


def take_snapshot(mountpoint: Path, client: Client, prev: Snapshot | None) -> Snapshot:
    clock = client.call("clock", action="status")
    nodes = []
    for nid, d in node_dirs(mountpoint):
        ntype = (d / "type").read_text().strip() if (d / "type").exists() else "?"
        nodes.append(NodeInfo(nid, ntype, read_meminfo(d / "meminfo")))
    snap = Snapshot(clock=clock, nodes=nodes, vmstat=read_vmstat(mountpoint / "proc/vmstat"),
                    procs=client.call("list"), report=client.call("report"))
    if prev is not None:
        dt = snap.now - prev.now
        if dt > 0:
            before = {n.id: n.meminfo.get("AnonPages", 0) for n in prev.nodes}
            snap.anon_rate = {n.id: (n.meminfo.get("AnonPages", 0) - before[n.id]) / dt
                              for n in nodes if n.id in before}
            if "pgmigrate_success" in snap.vmstat and "pgmigrate_success" in prev.vmstat:
                snap.migrate_rate = (snap.vmstat["pgmigrate_success"]
                                     - prev.vmstat["pgmigrate_success"]) / dt
    return snap


def _rate(v: float | None, unit: str = "") -> str:
    return "-" if v is None else f"{v:,.0f}{unit}"


def render(snap: Snapshot, mountpoint: str, plain: bool = False) -> Group:
    style = box.SIMPLE_HEAD if plain else box.HEAVY_HEAD
    clk = snap.clock
    state = clock_state(clk)
    wr = snap.window_rates()
    t, _ = snap.latest_window()
    header = Text(
        f"fakeproc top — {mountpoint}   virtual time {snap.now:.2f} s ({state}, rate "
        f"{clk.get('rate', 0):g})\n"
        f"migrations/s {_rate(snap.migrate_rate)}   "
        f"demotions/s (reclaim) {_rate(wr['demoted_reclaim'])}   "
        f"promotions/s (daemon) {_rate(wr['promoted_syscall'])}   "
        f"demotions/s (daemon) {_rate(wr['demoted_syscall'])}   "
        f"[pages; window ending t={'-' if t is None else f'{t:.2f}'}]")  # as the virtual time

    nt = Table(title="nodes (MiB)", title_justify="left", box=style)
    for col in ("node", "type", "total", "free", "anon", "active(anon)", "inactive(anon)",
                "anon Δ/s"):
        nt.add_column(col, justify="left" if col in ("node", "type") else "right")
    for n in snap.nodes:
        mi = n.meminfo
        ar = snap.anon_rate.get(n.id)
        nt.add_row(f"node{n.id}", n.type, *(mib(mi.get(k, 0)) for k in MEMINFO_FIELDS),
                   "-" if ar is None else f"{ar / 1024:+.1f}")

    node_ids = [n.id for n in snap.nodes]
    latest = snap.latest_by_pid()
    pt = Table(title="processes (RSS in MiB; DRAM hit and oracle of the latest window)",
               title_justify="left", box=style)
    pid_width = max((len(str(p["pid"])) for p in snap.procs), default=3)
    for col in ("pid", "name", "state", "RSS", *(f"node{i}" for i in node_ids), "DRAM hit", "oracle"):
        # a pid is never cut short on a narrow terminal (the name column gives way)
        pt.add_column(col, justify="left" if col in ("name", "state") else "right",
                      min_width=pid_width if col == "pid" else None, no_wrap=col == "pid")
    for p in snap.procs:
        s = latest.get(p["pid"])
        per_node = p.get("rss_nodes") or {}
        pt.add_row(str(p["pid"]), p["name"], p.get("state", ""), mib(p.get("rss", 0) * PAGE_KB),
                   *(mib(per_node.get(str(i), 0) * PAGE_KB) for i in node_ids),
                   "-" if s is None else f"{s['dram_hit']:.1%}",
                   "-" if s is None else f"{s['oracle_hit']:.1%}")
    return Group(header, nt, pt)


def run_top(mountpoint: str, interval: float = 1.0, iterations: int | None = None,
            console: Console | None = None) -> int:
    """Refresh every `interval` wall seconds, `iterations` times (None: until Ctrl-C).

    On a terminal the view updates in place (rich Live); otherwise each refresh is
    printed as one plain snapshot. Returns 0, or 1 when the mount cannot be read.
    """
    mnt = Path(mountpoint)
    interval = max(0.0, interval)
    if console is None:
        console = Console() if sys.stdout.isatty() else Console(width=PLAIN_WIDTH, no_color=True)
    live = console.is_terminal
    prev: Snapshot | None = None
    n = 0
    try:
        with Client(mnt, timeout=30.0) as client:
            view = Live(console=console, auto_refresh=False, transient=False) if live else None
            try:
                if view is not None:
                    view.start()
                while iterations is None or n < iterations:
                    if n:
                        time.sleep(interval)
                    prev = take_snapshot(mnt, client, prev)
                    group = render(prev, os.fspath(mountpoint), plain=not live)
                    if view is not None:
                        view.update(group, refresh=True)
                    else:
                        console.print(group)
                        console.print()
                    n += 1
            finally:
                if view is not None:
                    view.stop()
    except KeyboardInterrupt:
        return 0
    except (CtlError, OSError) as e:
        print(f"fakeproc top: {mountpoint}: {e}", file=sys.stderr)
        return 1
    return 0
