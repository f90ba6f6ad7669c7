"""`fakeproc demo`: mount the default machine, show it working, unmount.

Every step reads the mount with real syscalls or real tools, as a user would.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from .idle_format import decode, page_counts

REDIS = 4200001
REDIS_HEAP_VMA = 0x7F3A00000000  # 2 GiB, its first 10% hot


def _run(console: Console, title: str, argv: list[str], env: dict[str, str] | None = None,
         max_lines: int = 40) -> bool:
    console.rule(f"[bold]{title}")
    console.print(f"$ {shlex.join(argv)}", style="dim", markup=False)  # pastable into a shell
    if shutil.which(argv[0]) is None:
        console.print(f"({argv[0]} is not installed; skipped)")
        return True
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    lines = (r.stdout + r.stderr).splitlines()
    for line in lines[:max_lines]:
        console.print(line, markup=False, highlight=False)
    if len(lines) > max_lines:
        console.print(f"... ({len(lines) - max_lines} more lines)", style="dim")
    return r.returncode == 0


def _show_file(console: Console, path: Path, max_lines: int = 12) -> None:
    console.print(f"$ cat {shlex.quote(str(path))}", style="dim", markup=False)
    text = path.read_text()
    for line in text.splitlines()[:max_lines]:
        console.print(line, markup=False, highlight=False)


def _scan(path: Path, pos: int, count: int) -> bytes:
    fd = os.open(path, os.O_RDWR)
    try:
        os.lseek(fd, pos, os.SEEK_SET)
        return os.read(fd, count)
    finally:
        os.close(fd)


def _scan_vma(path: Path, start: int, end: int, count: int) -> list:
    """The daemon's loop: read, decode, continue from the decoded cursor."""
    runs, pos = [], start
    while pos < end:
        chunk, pos = decode(_scan(path, pos, count))
        if not chunk:
            break
        runs += chunk
    return runs


def _idle_pages(console: Console, mnt: Path) -> None:
    console.rule("[bold]/proc/PID/idle_pages: hot and cold pages of redis-server")
    path = mnt / "proc" / str(REDIS) / "idle_pages"
    count = 1 << 20  # 1 MiB reads, as the RFC's daemon makes
    _scan_vma(path, REDIS_HEAP_VMA, REDIS_HEAP_VMA + (2 << 30), count)
    console.print("a first scan cleared the accessed bits; the workload runs for 0.3 s ...")
    time.sleep(0.3)
    data = _scan(path, REDIS_HEAP_VMA, count)
    console.print(f"read(fd, buf, {count}) at {REDIS_HEAP_VMA:#x} returned {len(data)} bytes, starting:")
    for off in range(0, min(len(data), 48), 16):
        console.print(f"  {off:04x}  " + " ".join(f"{b:02x}" for b in data[off:off + 16]))
    runs = decode(data)[0]
    console.print("accessed share per 128 MiB of the 2 GiB VMA (the first ~10% is the hot set):")
    for i in range(16):
        lo, hi = REDIS_HEAP_VMA + i * (128 << 20), REDIS_HEAP_VMA + (i + 1) * (128 << 20)
        counts = page_counts([r for r in runs if lo <= r.addr < hi])
        total = sum(counts.values()) or 1
        share = counts.get("PTE_ACCESSED", 0) / total
        console.print(f"  {lo:#x}  {'#' * round(share * 40):<40} {share:5.0%}")


def _daemon(console: Console, fakeproc: list[str]) -> bool:
    """The example tiering daemon, unmodified, under `fakeproc run`, and the ground truth."""
    examples = Path(__file__).resolve().parents[1] / "examples"
    if not (examples / "tiering_daemon.py").exists():
        return True  # an installed package without the source tree's examples
    console.rule("[bold]fakeproc run: a tiering daemon against a machine short of DRAM")
    with tempfile.TemporaryDirectory(prefix="fakeproc-demo-") as out:
        argv = [*fakeproc, "run", "--machine", str(examples / "tiering.toml"), "--report", out, "--",
                sys.executable, str(examples / "tiering_daemon.py"), "--pid", "4300001", "--rounds", "4"]
        console.print("$ fakeproc run --machine examples/tiering.toml --report DIR -- "
                      "python examples/tiering_daemon.py --pid 4300001 --rounds 4", style="dim",
                      markup=False)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        console.print(r.stdout + r.stderr, markup=False, highlight=False)
        console.print("The daemon promoted the hot pages it found on PMEM through move_pages(2),"
                      " which the runner intercepted; the table is what no real machine can tell.")
        return r.returncode == 0


def run_demo(mountpoint: str) -> int:
    console = Console(highlight=False, soft_wrap=True)
    mnt = Path(mountpoint).resolve()
    mnt.mkdir(parents=True, exist_ok=True)
    fakeproc = [sys.executable, "-m", "fakeproc"]
    console.rule("[bold]fakeproc demo: the RFC's 2 DRAM + 2 PMEM machine")
    r = subprocess.run([*fakeproc, "mount", str(mnt)], capture_output=True, text=True, timeout=120)
    console.print(r.stdout + r.stderr, markup=False, highlight=False)
    if r.returncode != 0:
        return r.returncode
    ok = True
    try:
        node = mnt / "sys/devices/system/node"
        console.rule("[bold]the node tree")
        console.print(" ".join(sorted(os.listdir(node))), markup=False)
        for f in ("node0/type", "node0/peer_node", "node2/type", "node2/peer_node", "node0/distance",
                  "node0/cpumap", "has_cpu", "has_memory"):
            console.print(f"{f:<18} {(node / f).read_text()!r}", markup=False, highlight=False)
        _show_file(console, node / "node0/meminfo", max_lines=17)
        bind = f"mount --make-rprivate / && mount --bind {shlex.quote(str(node))} /sys/devices/system/node && "
        ok &= _run(console, "numactl --hardware (private mount namespace, node tree bound)",
                   ["unshare", "-m", "sh", "-c", bind + "numactl --hardware"])
        ok &= _run(console, "numastat", ["unshare", "-m", "sh", "-c", bind + "numastat"])
        ok &= _run(console, "lscpu --sysroot", ["lscpu", "--sysroot", str(mnt)], max_lines=14)
        console.rule(f"[bold]/proc/{REDIS}/maps")
        _show_file(console, mnt / "proc" / str(REDIS) / "maps", max_lines=20)
        _idle_pages(console, mnt)
    finally:
        subprocess.run([*fakeproc, "umount", str(mnt)], timeout=60, check=False)
    ok &= _daemon(console, fakeproc)
    console.rule("[bold]done: unmounted")
    console.print("Mount it yourself: .venv/bin/fakeproc mount mount/   (stop: .venv/bin/fakeproc umount mount/)")
    return 0 if ok else 1
