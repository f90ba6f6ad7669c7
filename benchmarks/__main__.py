"""fakeproc benchmarks: each figure next to a baseline measured in the same run.

    python -m benchmarks            # the full sizes (minutes)
    python -m benchmarks --quick    # small sizes, seconds: CI runs this so it cannot rot

Machines are noisy: every measurement is repeated and reported as min/median/max,
and compared with a baseline taken in the same run (never with a constant).
"""
from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
PAGE = 4096
BASE = 0x7F0000000000


@dataclass
class Result:
    name: str
    unit: str
    ours: list[float]
    baseline_name: str
    baseline: list[float]
    higher_is_better: bool = False

    def ratio(self) -> float:
        """How many times better ours is than the baseline (medians)."""
        o, b = statistics.median(self.ours), statistics.median(self.baseline)
        return (o / b) if self.higher_is_better else (b / o)


def repeat(fn: Callable[[], float], n: int) -> list[float]:
    return [fn() for _ in range(n)]


def mount(machine_text: str, tmp: Path) -> tuple[subprocess.Popen, Path]:
    (tmp / "m.toml").write_text(machine_text)
    mnt = tmp / "mnt"
    mnt.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "fakeproc", "mount", str(mnt), "-f", "--paused",
                             "--machine", str(tmp / "m.toml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while not (mnt / "sys/devices/system/node/online").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the mount did not come up")
        time.sleep(0.02)
    return proc, mnt


def unmount(proc: subprocess.Popen, mnt: Path) -> None:
    proc.terminate()
    proc.wait(60)


def machine(pages: int) -> str:
    dram = pages * 4 // 1024 + pages * 8 // (1 << 20) + 256  # the pages, their page tables, slack
    return (f'[[node]]\ntype = "dram"\nsize = "{dram}MiB"\ncpus = "0"\n'
            f'[[process]]\npid = 4300001\nname = "bench"\n[[process.vma]]\n'
            f'start = {BASE:#x}\nsize = "{pages * 4}KiB"\npages = "1 accessed, 1 idle, 2 accessed, 4 idle"\n'
            f'repeat = {pages // 8}\n')


def bench_idle_scan(pages: int, reps: int, tmp: Path) -> Result:
    """A full scan of `pages` mixed hot/cold pages through the mount in 1 MiB reads,
    against the real kernel reading /proc/self/pagemap for as many touched pages."""
    proc, mnt = mount(machine(pages), tmp)
    try:
        path = mnt / "proc/4300001/idle_pages"

        def ours() -> float:
            fd = os.open(path, os.O_RDONLY)
            t0 = time.perf_counter()
            pos, end = BASE, BASE + pages * PAGE
            while pos < end:
                data = os.pread(fd, 1 << 20, pos)
                if not data:
                    break
                pos = int.from_bytes(data[-8:], "big") if data[-9] == 0xA0 else end
            dt = time.perf_counter() - t0
            os.close(fd)
            return dt / pages * 1e9

        mine = repeat(ours, reps)
    finally:
        unmount(proc, mnt)
    buf = mmap.mmap(-1, pages * PAGE)
    for i in range(0, pages * PAGE, PAGE):
        buf[i] = 1
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))

    def pagemap() -> float:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        t0 = time.perf_counter()
        off, end = addr // PAGE * 8, (addr // PAGE + pages) * 8
        while off < end:
            off += len(os.pread(fd, min(1 << 20, end - off), off))
        dt = time.perf_counter() - t0
        os.close(fd)
        return dt / pages * 1e9

    base = repeat(pagemap, reps)
    return Result(f"idle_pages scan, {pages} pages, 1 MiB reads", "ns/page", mine,
                  "/proc/self/pagemap (real kernel)", base)


def bench_sysfs(reps: int, tmp: Path) -> Result:
    """open+read+close of a small sysfs attribute through the mount vs the real /sys."""
    proc, mnt = mount(machine(64), tmp)
    n = 2000

    def loop(path: str) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            fd = os.open(path, os.O_RDONLY)
            os.read(fd, 4096)
            os.close(fd)
        return (time.perf_counter() - t0) / n * 1e6

    try:
        mine = repeat(lambda: loop(str(mnt / "sys/devices/system/node/node0/cpulist")), reps)
    finally:
        unmount(proc, mnt)
    base = repeat(lambda: loop("/sys/devices/system/node/node0/cpulist"), reps)
    return Result("open+read+close nodeN/cpulist", "µs/file", mine, "the real /sys", base)


def bench_touches(pages: int, reps: int) -> Result:
    """Workload touches per second (hot set in cache), in-process, against a Python
    loop of the same number of random increments (a floor any C path must beat)."""
    sys.path.insert(0, str(REPO))
    from fakeproc.kernel.workload import Workload
    from fakeproc.machine import load
    k = load(machine(pages))
    t = k.task(4300001)
    wl = Workload(pattern="hotcold", rate=1, hot=0.01, hot_access=1.0, write=0.0)
    k.attach_workload(t, wl)
    from fakeproc.kernel.native import lib
    n = 2_000_000

    def ours() -> float:
        t0 = time.perf_counter()
        lib.fp_workload_run(k.native, wl._c, n)
        return n / (time.perf_counter() - t0)

    import random
    arr = [0] * pages

    def python() -> float:
        m = 200_000
        rnd = random.Random(1)
        t0 = time.perf_counter()
        for _ in range(m):
            arr[rnd.randrange(pages)] += 1
        return m / (time.perf_counter() - t0)

    return Result("simulated touches, hot set in cache", "touches/s", repeat(ours, reps),
                  "random increments in a Python list", repeat(python, reps), higher_is_better=True)


def bench_startup(reps: int, tmp: Path) -> Result:
    """The default machine's start-up to a usable mount vs starting Python itself."""
    def ours() -> float:
        d = Path(tempfile.mkdtemp(dir=tmp))
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "fakeproc", "mount", str(d), "-f", "--paused"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (d / "sys/devices/system/node/online").exists():
            time.sleep(0.005)
        dt = time.perf_counter() - t0
        proc.terminate()
        proc.wait(60)
        return dt

    def python() -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import trio, pyfuse3"], check=True)
        return time.perf_counter() - t0

    return Result("start-up of the default machine", "s", repeat(ours, reps),
                  "python -c 'import trio, pyfuse3'", repeat(python, reps))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (CI)")
    args = p.parse_args()
    reps = 3
    pages = 1 << 16 if args.quick else 1 << 20  # 4 GiB; issue 5 wants 16 M pages (64 GiB)
    results = []
    with tempfile.TemporaryDirectory(prefix="fakeproc-bench-") as d:
        tmp = Path(d)
        for name, fn in (("idle", lambda: bench_idle_scan(pages, reps, tmp / "idle")),
                         ("sysfs", lambda: bench_sysfs(reps, tmp / "sysfs")),
                         ("touches", lambda: bench_touches(pages, reps)),
                         ("startup", lambda: bench_startup(reps, tmp / "startup"))):
            (tmp / name).mkdir(exist_ok=True)
            results.append(fn())
    table = Table(title=f"fakeproc benchmarks ({'quick' if args.quick else 'full'}; "
                        f"min / median / max of {reps})")
    for col in ("measurement", "ours", "baseline", "baseline is", "ours vs baseline"):
        table.add_column(col)

    def mmm(xs: list[float]) -> str:
        return " / ".join(f"{x:.3g}" for x in (min(xs), statistics.median(xs), max(xs)))

    for r in results:
        table.add_row(r.name, f"{mmm(r.ours)} {r.unit}", f"{mmm(r.baseline)} {r.unit}",
                      r.baseline_name, f"{r.ratio():.2f}x better" if r.ratio() >= 1
                      else f"{1 / r.ratio():.2f}x worse")
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
