"""`fakeproc report`: the recorded ground truth as a table (rich) and plots (matplotlib).

Input is the control API's `report` data (a live mount) or a saved JSON of it.
"""
from __future__ import annotations

import errno
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def summarize(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per process: windows, accesses, DRAM hit and oracle hit (access-weighted), pages
    demoted by reclaim, moved by syscalls each way, and pages scans silently missed."""
    by_pid: dict[tuple[int, float], list[dict[str, Any]]] = defaultdict(list)
    for s in report["samples"]:  # a pid used again is another process (its start time)
        by_pid[s["pid"], s.get("started", 0.0)].append(s)
    rows = []
    for (pid, _), ss in sorted(by_pid.items()):
        served = sum(s["dram"] + s["pmem"] for s in ss)
        counted = sum(s["total"] for s in ss)
        rows.append({
            "pid": pid, "name": ss[-1]["name"], "windows": sum(s.get("windows", 1) for s in ss), "accesses": served,
            "dram_hit": sum(s["dram"] for s in ss) / served if served else 0.0,
            "oracle_hit": sum(s["oracle_dram"] for s in ss) / counted if counted else 0.0,
            "demoted_reclaim": sum(s["demoted_reclaim"] for s in ss),
            "promoted_syscall": sum(s["promoted_syscall"] for s in ss),
            "demoted_syscall": sum(s["demoted_syscall"] for s in ss),
            "idle_missed": sum(s["idle_missed"] for s in ss)})
    return rows


def print_table(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=140)
    table = Table(title=f"fakeproc ground truth ({report['window']:g} s windows)")
    for col in ("pid", "name", "windows", "DRAM hit", "oracle", "gap", "demoted (reclaim)",
                "promoted (daemon)", "demoted (daemon)", "missed by scans"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for r in summarize(report):
        table.add_row(str(r["pid"]), r["name"], str(r["windows"]), f"{r['dram_hit']:.1%}",
                      f"{r['oracle_hit']:.1%}", f"{r['oracle_hit'] - r['dram_hit']:+.1%}",
                      str(r["demoted_reclaim"]), str(r["promoted_syscall"]),
                      str(r["demoted_syscall"]), str(r["idle_missed"]))
    console.print(table)


def write_plots(report: dict[str, Any], outdir: Path) -> list[Path]:
    """dram_hit.png (DRAM hit vs oracle over time, per process) and heat_PID.png (page
    hotness by address over time, with the DRAM share of each bucket)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    by_pid: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for s in report["samples"]:
        by_pid[s["pid"]].append(s)
    written: list[Path] = []
    if not by_pid:
        return written  # no workload has run a window yet: nothing to draw
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for pid, ss in sorted(by_pid.items()):
        t = [s["t"] for s in ss]
        line, = ax.plot(t, [s["dram_hit"] for s in ss], label=f"{ss[-1]['name']} ({pid})")
        ax.plot(t, [s["oracle_hit"] for s in ss], linestyle="--", color=line.get_color(),
                label=f"oracle, {pid}")
    ax.set(xlabel="virtual time (s)", ylabel="accesses served from DRAM", ylim=(0, 1.05),
           title="DRAM hit ratio vs an oracle placement")
    ax.legend(fontsize="small")
    fig.tight_layout()
    written.append(outdir / "dram_hit.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    for pid, ss in sorted(by_pid.items()):
        if not ss[-1]["heat"]:
            continue
        acc = [[b[0] for b in s["heat"]] for s in ss]
        dram = [[b[1] if b[1] >= 0 else float("nan") for b in s["heat"]] for s in ss]
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
        t0 = ss[0]["t"] - report["window"]  # each sample closes the window before it
        extent = (t0, ss[-1]["t"], 0, len(acc[0]))
        im1 = a1.imshow(list(zip(*acc)), aspect="auto", origin="lower", extent=extent, cmap="magma")
        a1.set(ylabel="address bucket", title=f"{ss[-1]['name']} ({pid}): accesses per bucket")
        fig.colorbar(im1, ax=a1)
        im2 = a2.imshow(list(zip(*dram)), aspect="auto", origin="lower", extent=extent,
                        cmap="RdYlGn", vmin=0, vmax=1)
        a2.set(xlabel="virtual time (s)", ylabel="address bucket", title="share of the bucket on DRAM")
        fig.colorbar(im2, ax=a2)
        fig.tight_layout()
        written.append(outdir / f"heat_{pid}.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


SAMPLE_KEYS = ("t", "pid", "name", "dram", "pmem", "oracle_dram", "total", "demoted_reclaim",
               "demoted_syscall", "promoted_syscall", "idle_missed", "dram_hit", "oracle_hit", "heat")


def check(data: Any) -> dict[str, Any]:
    """data, if it has the shape the table and plots read; else ValueError (another JSON
    file given by mistake would end in a KeyError deep inside them)."""
    if not isinstance(data, dict) or not isinstance(data.get("samples"), list) \
            or not isinstance(data.get("window"), (int, float)):
        raise ValueError("not a fakeproc report (no 'window' and 'samples')")
    for i, s in enumerate(data["samples"]):
        missing = [k for k in SAMPLE_KEYS if not isinstance(s, dict) or k not in s]
        if missing:
            raise ValueError(f"not a fakeproc report (samples[{i}] has no {missing[0]!r})")
    try:
        summarize(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"not a fakeproc report ({e})") from None
    return data


def load(source: str) -> dict[str, Any]:
    """A saved report (JSON file), or the live one of the machine mounted at source."""
    path = Path(source)
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"not JSON: {e}") from None
        return check(data)
    if not path.is_dir():
        raise FileNotFoundError(errno.ENOENT, "neither a saved report nor a mount point")
    from .ctl.client import Client
    with Client(source) as c:
        return c.call("report")
