"""fakeproc benchmarks: each figure next to a baseline measured in the same run.

    python -m benchmarks            # the full sizes (minutes)
    python -m benchmarks --quick    # small sizes, seconds: CI runs this so it cannot rot

Machines are noisy: every measurement is repeated and reported as min/median/max,
and compared with a baseline taken in the same run (never with a constant).
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import mmap
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console
from rich.table import Table

from fakeproc.ctl.client import Client
from fakeproc.ctl.protocol import pack_bytes
from fakeproc.fs.server import is_serving

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
    while not is_serving(mnt):  # both connections (/sys/devices/system has its own)
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the mount did not come up")
        time.sleep(0.02)
    return proc, mnt


def unmount(proc: subprocess.Popen, mnt: Path) -> None:
    proc.terminate()
    proc.wait(60)


def machine(pages: int) -> str:
    dram = pages * 4 // 1024 + pages * 8 // (1 << 20) + 256  # the pages, their page tables, slack
    dram += dram % 2  # nodes come in 2 MiB blocks
    return (f'[[node]]\ntype = "dram"\nsize = "{dram}MiB"\ncpus = "0"\n'
            f'[[process]]\npid = 4300001\nname = "bench"\n[[process.vma]]\n'
            f'start = {BASE:#x}\nsize = "{pages * 4}KiB"\npages = "1 accessed, 1 idle, 2 accessed, 4 idle"\n'
            f'repeat = {pages // 8}\n')


LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.mmap.restype = ctypes.c_void_p
LIBC.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
LIBC.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MADV_NOHUGEPAGE, MADV_POPULATE_READ = 15, 22


def zero_page_mapping(pages: int) -> int:
    """A real mapping with `pages` present 4 KiB PTEs that costs no memory: a read
    fault on private anonymous memory maps the shared zero page, so 16 M touched pages
    (64 GiB) fit on any host. THP is off, so every PTE is a 4 KiB one; MADV_POPULATE_READ
    faults them all in with one call. Returns the address (munmap it when done)."""
    size = pages * PAGE
    addr = LIBC.mmap(None, size, mmap.PROT_READ, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap")
    for advice in (MADV_NOHUGEPAGE, MADV_POPULATE_READ):
        if LIBC.madvise(addr, size, advice):
            raise OSError(ctypes.get_errno(), f"madvise({advice})")
    return addr


def scan_all(path: Path, start: int, end: int) -> int:
    """One full idle_pages scan of [start, end) in 1 MiB reads, as a daemon does; the
    pages covered."""
    fd = os.open(path, os.O_RDONLY)
    try:
        pos = start
        while pos < end:
            data = os.pread(fd, 1 << 20, pos)
            if not data:
                break
            pos = int.from_bytes(data[-8:], "big") if data[-9] == 0xA0 else end
    finally:
        os.close(fd)
    return (end - start) // PAGE


def worst_latency(path: str, seconds: float, scan: Callable[[], object] | None = None) -> float:
    """The longest open+read+close of `path` (ms) in `seconds` of back-to-back tries,
    while another thread runs `scan` over and over (when given)."""
    stop = threading.Event()

    def scanner() -> None:
        while not stop.is_set():
            scan()

    thread = threading.Thread(target=scanner) if scan else None
    if thread:
        thread.start()
    worst, end = 0.0, time.perf_counter() + seconds
    try:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            fd = os.open(path, os.O_RDONLY)
            os.read(fd, 4096)
            os.close(fd)
            worst = max(worst, time.perf_counter() - t0)
    finally:
        stop.set()
        if thread:
            thread.join()
    return worst * 1e3


def bench_idle_scan(pages: int, reps: int, tmp: Path) -> list[Result]:
    """A full scan of `pages` mixed hot/cold pages through the mount in 1 MiB reads,
    against the real kernel reading /proc/self/pagemap for as many touched pages; and
    how long the scan holds up another request of the mount (a sysfs attribute read
    while scans run, against the same with no scan: nodeN/meminfo, whose every open
    asks the server, which the scan's thread also serves)."""
    proc, mnt = mount(machine(pages), tmp)
    try:
        path = mnt / "proc/4300001/idle_pages"

        def ours() -> float:
            t0 = time.perf_counter()
            scan_all(path, BASE, BASE + pages * PAGE)
            return (time.perf_counter() - t0) / pages * 1e9

        mine = repeat(ours, reps)
        attr = str(mnt / "sys/devices/system/node/node0/meminfo")
        seconds = 1.0 if pages >= 1 << 24 else 0.3
        stalled = repeat(lambda: worst_latency(attr, seconds, lambda: scan_all(path, BASE, BASE + pages * PAGE)),
                         reps)
        alone = repeat(lambda: worst_latency(attr, seconds), reps)
    finally:
        unmount(proc, mnt)
    addr = zero_page_mapping(pages)

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
    LIBC.munmap(addr, pages * PAGE)
    return [Result(f"idle_pages scan, {pages} pages, 1 MiB reads", "ns/page", mine,
                   "/proc/self/pagemap (real kernel)", base),
            Result("  longest nodeN/meminfo open+read+close while that scan runs", "ms", stalled,
                   "the same with no scan", alone)]


def bench_sysfs(reps: int, tmp: Path) -> list[Result]:
    """open+read+close of a small sysfs attribute through the mount vs the real /sys:
    a fixed one (nodeN/cpulist: no request reaches the server, fs/sysmount), a
    changing one (nodeN/meminfo: one LOOKUP per open), and one on the main connection
    (/sys/bus/node/drivers_autoprobe: OPEN and READ), with the FUSE transport floor
    beside them: a C libfuse server that does no work (benchmarks/fuse_floor.c),
    answering OPEN+READ+RELEASE (direct_io) or OPEN alone (keep_cache), and ours and the
    floor again with client and server on one CPU (on a VM most of a round trip is
    waking the other CPU)."""
    n = 2000
    real = "/sys/devices/system/node/node0/cpulist"
    real_meminfo = "/sys/devices/system/node/node0/meminfo"

    def loop(path: str) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            fd = os.open(path, os.O_RDONLY)
            os.read(fd, 4096)
            os.close(fd)
        return (time.perf_counter() - t0) / n * 1e6

    def on_cpu0(fn: Callable[[], float]) -> float:
        mask = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {0})
        try:
            return fn()
        finally:
            os.sched_setaffinity(0, mask)

    proc, mnt = mount(machine(64), tmp)
    attr = str(mnt / "sys/devices/system/node/node0/cpulist")
    meminfo = str(mnt / "sys/devices/system/node/node0/meminfo")
    bus = str(mnt / "sys/bus/node/drivers_autoprobe")
    try:
        mine = repeat(lambda: loop(attr), reps)
        mine_meminfo = repeat(lambda: loop(meminfo), reps)
        mine_bus = repeat(lambda: loop(bus), reps)
        os.sched_setaffinity(proc.pid, {0})
        mine_cpu0 = repeat(lambda: on_cpu0(lambda: loop(attr)), reps)
        mine_meminfo_cpu0 = repeat(lambda: on_cpu0(lambda: loop(meminfo)), reps)
    finally:
        unmount(proc, mnt)
    base = repeat(lambda: loop(real), reps)
    base_meminfo = repeat(lambda: loop(real_meminfo), reps)
    results = [Result("open+read+close nodeN/cpulist", "µs/file", mine, "the real /sys", base),
               Result("  the same, client and server on one CPU", "µs/file", mine_cpu0,
                      "the real /sys", base),
               Result("open+read+close nodeN/meminfo (changing)", "µs/file", mine_meminfo,
                      "the real /sys", base_meminfo),
               Result("  the same, client and server on one CPU", "µs/file", mine_meminfo_cpu0,
                      "the real /sys", base_meminfo),
               Result("open+read+close /sys/bus/node/drivers_autoprobe (OPEN)", "µs/file",
                      mine_bus, "the real /sys nodeN/cpulist", base)]
    exe = build_fuse_floor(tmp)
    for mode, what in (("direct", "OPEN+READ+RELEASE"), ("cache", "OPEN only")):
        for cpu0 in (False, True):
            with fuse_floor(exe, mode, tmp / f"floor-{mode}-{cpu0}", cpu0) as path:
                ours = repeat(lambda: on_cpu0(lambda: loop(path)) if cpu0 else loop(path), reps)
            results.append(Result(f"  floor: a C FUSE server doing no work, {what}"
                                  + (", one CPU" if cpu0 else ""), "µs/file", ours,
                                  "the real /sys", base))
    return results


def build_fuse_floor(tmp: Path) -> Path:
    """Compile benchmarks/fuse_floor.c against libfuse 3 (pkg-config fuse3)."""
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], check=True,
                           capture_output=True, text=True).stdout.split()
    exe = tmp / "fuse_floor"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(REPO / "benchmarks" / "fuse_floor.c"), *flags],
                   check=True)
    return exe


@contextlib.contextmanager
def fuse_floor(exe: Path, mode: str, mnt: Path, cpu0: bool) -> Iterator[str]:
    """Mount the floor server at mnt (pinned to CPU 0 when cpu0); yield its file."""
    mnt.mkdir()
    proc = subprocess.Popen([str(exe), str(mnt), mode],
                            preexec_fn=(lambda: os.sched_setaffinity(0, {0})) if cpu0 else None)
    try:
        deadline = time.monotonic() + 30
        while not (mnt / "attr").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the FUSE floor server did not come up")
            time.sleep(0.01)
        yield str(mnt / "attr")
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        proc.wait(30)


def bench_touches(big_pages: int, reps: int, tmp: Path) -> list[Result]:
    """Workload touches per second on one core, in-process: (1) a process whose pages
    all fit in cache, against random increments of a Python list (a floor any C path
    must beat); (2) uniform over a big process, against the memory-latency bound:
    random 8-byte read-modify-writes in C over an array with one word per page."""
    sys.path.insert(0, str(REPO))
    from benchmarks.latency import rmw_per_second
    from fakeproc.kernel.native import lib
    from fakeproc.kernel.workload import Workload
    from fakeproc.machine import load

    def rate(pages: int, n: int) -> list[float]:
        k = load(machine(pages))
        wl = Workload(pattern="uniform", rate=1, write=0.0)
        k.attach_workload(k.task(4300001), wl)
        lib.fp_workload_run(k.native, wl._c, min(n, 4 * pages))  # fault in; fill the TLB

        def once() -> float:
            t0 = time.perf_counter()
            lib.fp_workload_run(k.native, wl._c, n)
            return n / (time.perf_counter() - t0)
        return repeat(once, reps)

    import random
    small = 1024
    arr = [0] * small

    def python() -> float:
        m = 200_000
        rnd = random.Random(1)
        t0 = time.perf_counter()
        for _ in range(m):
            arr[rnd.randrange(small)] += 1
        return m / (time.perf_counter() - t0)

    cached = Result(f"simulated touches, uniform over {small} pages (in cache)", "touches/s",
                    rate(small, 20_000_000), "random increments in a Python list", repeat(python, reps),
                    higher_is_better=True)
    n = 5_000_000
    bound = repeat(lambda: rmw_per_second(big_pages, n, tmp / "latency"), reps)
    big = Result(f"simulated touches, uniform over {big_pages} pages", "touches/s", rate(big_pages, n),
                 "random 8-byte RMW in C, one word per page (memory-latency bound)", bound,
                 higher_is_better=True)
    return [cached, big]


# fork, then the child's exit, in a real process with `pages` present PTEs: prints ns/page.
# One written page gives the VMA an anon_vma; without one fork copies no PTEs at all (a
# fault would fill them), so the zero-page PTEs must be copied and zapped like ours.
REAL_FORK = """
import ctypes, mmap, os, sys, time
sys.path.insert(0, {repo!r})
from benchmarks.__main__ import LIBC, zero_page_mapping
addr = zero_page_mapping({pages})
LIBC.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
assert LIBC.mprotect(addr, {pages} * 4096, mmap.PROT_READ | mmap.PROT_WRITE) == 0
ctypes.c_char.from_address(addr).value = b"x"
for _ in range({reps}):
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    print((time.perf_counter() - t0) / {pages} * 1e9, flush=True)
"""


def bench_fork(pages: int, reps: int) -> Result:
    """fork, then the child's exit, of a process with `pages` mapped pages: in-process
    through Kernel (every page gains a second mapper in the reverse map's side table
    and loses it again), against the real kernel doing the same for a process with as
    many present PTEs (copying and zapping them)."""
    sys.path.insert(0, str(REPO))
    from fakeproc.machine import load
    k = load(machine(pages))
    children = iter(range(4300002, 4400000))

    def ours() -> float:
        pid = next(children)
        t0 = time.perf_counter()
        k.fork(4300001, pid)
        k.exit(pid)
        return (time.perf_counter() - t0) / pages * 1e9

    mine = repeat(ours, reps)
    real = subprocess.run([sys.executable, "-c", REAL_FORK.format(repo=str(REPO), pages=pages, reps=reps)],
                          capture_output=True, text=True, check=True, timeout=900)
    return Result(f"fork + the child's exit, {pages} mapped pages", "ns/page", mine,
                  "the real kernel, a process with as many present PTEs",
                  [float(x) for x in real.stdout.split()])


MOVE_PID, MOVE_BATCH, MOVE_PAGES = 4300101, 1024, 1 << 16
MOVE_MACHINE = (f'distances = [[10, 17], [17, 10]]\n'
                f'[[node]]\ntype = "dram"\nsize = "1GiB"\ncpus = "0"\n'
                f'[[node]]\ntype = "pmem"\nsize = "1GiB"\n'
                f'[[process]]\npid = {MOVE_PID}\nname = "mover"\n[[process.vma]]\n'
                f'start = {BASE:#x}\nsize = "{MOVE_PAGES * 4}KiB"\nnode = 0\n'
                f'pages = "{MOVE_PAGES} accessed"\n')
# One timed pass: every page to node 1 and back, in batches of 1024 (a daemon's size).
# The arrays of each batch are built once, outside the timing, as a daemon keeps its
# buffers: PREPARE(pages, nodes) -> args, then CALL(pid, args) -> (ret, status[0]).
# Returns pages/s (an in-process answer) and prints them unless echo is false (a
# subprocess's).
MOVE_LOOP = """
import time
def passes(prepare, call, pid, base, reps, echo=True, targets=(1, 0)):
    addrs, rates = [base + i * 4096 for i in range({pages})], []
    work = [(node, [prepare(addrs[i:i + {batch}], [node] * {batch})
                    for i in range(0, {pages}, {batch})]) for node in targets]
    for _ in range(reps):
        t0 = time.perf_counter()
        for node, batches in work:
            for args in batches:
                ret, first = call(pid, args)
                assert ret == 0 and first == node, (ret, first)
        rates.append(len(targets) * {pages} / (time.perf_counter() - t0))
        if echo:  # a subprocess's answer
            print(rates[-1], flush=True)
    return rates
""".format(pages=MOVE_PAGES, batch=MOVE_BATCH)
# move_pages(2) through ctypes, for the runner and for the real-kernel baseline
SYSCALL_MOVE = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def prepare(addrs, nodes):
    n = len(addrs)
    return (ctypes.c_ulong(n), (ctypes.c_void_p * n)(*addrs), (ctypes.c_int * n)(*nodes),
            (ctypes.c_int * n)())
def call(pid, args):
    n, pages, nodes, status = args
    status[0] = -1000  # so status[0] == node says this call stored it
    ret = libc.syscall(279, pid, n, pages, nodes, status, 2)
    return (ret if ret >= 0 else -ctypes.get_errno()), status[0]
"""


def bench_move_pages(reps: int, tmp: Path) -> list[Result]:
    """move_pages of 1024-page batches on emulated pages, through the control API (packed
    arrays, the protocol's bulk form) and through the runner (seccomp), against the real
    kernel's move_pages on this process's own pages (already on the target node, so its
    batch loop runs without copying)."""
    (tmp / "m.toml").write_text(MOVE_MACHINE)
    (tmp / "ctl").mkdir()
    proc, mnt = mount(MOVE_MACHINE, tmp / "ctl")
    ns: dict = {}
    exec(MOVE_LOOP, ns)  # noqa: S102 - our own constant
    try:
        with Client(mnt, timeout=120) as c:
            def prepare(addrs: list[int], nodes: list[int]) -> tuple[str, str]:
                return (pack_bytes(struct.pack(f"<{len(addrs)}Q", *addrs)),
                        pack_bytes(struct.pack(f"<{len(nodes)}i", *nodes)))

            def ctl(pid: int, args: tuple[str, str]) -> tuple[int, int]:
                r = c.call("move_pages", pid=pid, pages=args[0], nodes=args[1], flags=2, packed=True)
                return r["ret"], struct.unpack("<i", base64.b64decode(r["status"][:8])[:4])[0]
            got = ns["passes"](prepare, ctl, MOVE_PID, BASE, reps, False)
    finally:
        unmount(proc, mnt)
    script = SYSCALL_MOVE + MOVE_LOOP + f"passes(prepare, call, {MOVE_PID}, {BASE:#x}, {reps})\n"
    run = subprocess.run([sys.executable, "-m", "fakeproc", "run", "--paused", "--machine",
                          str(tmp / "m.toml"), "--", sys.executable, "-c", script],
                         capture_output=True, text=True, timeout=900)
    if run.returncode:
        raise RuntimeError(f"move_pages under the runner failed: {run.stderr[-2000:]}")
    runner = [float(x) for x in run.stdout.split()[-reps:]]
    real = SYSCALL_MOVE + MOVE_LOOP + (
        "import mmap\nbuf = mmap.mmap(-1, {n})\n"
        "for i in range(0, {n}, 4096): buf[i] = 1\n"
        "base = ctypes.addressof(ctypes.c_char.from_buffer(buf))\n"
        "passes(prepare, call, 0, base, {reps}, targets=(0, 0))\n").format(n=MOVE_PAGES * PAGE, reps=reps)
    base = subprocess.run([sys.executable, "-c", real], capture_output=True, text=True,
                          check=True, timeout=900)
    baseline = [float(x) for x in base.stdout.split()]
    return [Result("move_pages, 1024-page batches, control API", "pages/s", got,
                   "real move_pages, pages already in place", baseline, higher_is_better=True),
            Result("move_pages, 1024-page batches, under fakeproc run", "pages/s", runner,
                   "real move_pages, pages already in place", baseline, higher_is_better=True)]


def bench_runner_costs(reps: int, tmp: Path) -> list[Result]:
    """What the runner adds to a program's calls (benchmarks/runner_costs.c), the same
    program run under `fakeproc run` and outside it: an intercepted move_pages(2) of
    2 emulated pages against the real one on its own pages, and calls every program
    makes that the filter stops: lseek(SEEK_CUR), read-only opens of a file and of its
    own status."""
    exe = tmp / "runner_costs"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(REPO / "benchmarks" / "runner_costs.c")],
                   check=True)
    (tmp / "m.toml").write_text(MOVE_MACHINE)
    run = subprocess.run([sys.executable, "-m", "fakeproc", "run", "--paused", "--machine",
                          str(tmp / "m.toml"), "--", str(exe), str(MOVE_PID), hex(BASE), str(reps)],
                         capture_output=True, text=True, timeout=900)
    host = subprocess.run([str(exe), "0", "0", str(reps)], capture_output=True, text=True, timeout=900)
    if run.returncode or host.returncode:
        raise RuntimeError(f"runner_costs failed: {run.stderr[-2000:]}{host.stderr[-2000:]}")
    ours = list(zip(*[map(float, line.split()) for line in run.stdout.splitlines()]))
    real = list(zip(*[map(float, line.split()) for line in host.stdout.splitlines()]))
    names = ("move_pages of 2 pages, under fakeproc run", "lseek(SEEK_CUR), under fakeproc run",
             "open+close of a small file, under fakeproc run",
             "open+close of /proc/self/status, under fakeproc run")
    baselines = ("real move_pages of 2 own pages", "the same outside the runner",
                 "the same outside the runner", "the same outside the runner (the host's file)")
    return [Result(n, "ns", list(o), b, list(r)) for n, b, o, r in zip(names, baselines, ours, real)]


TIB_MACHINE = REPO / "benchmarks/machines/1tib.toml"
TIB_PIDS = (4300001, 4300002)


def bench_terabyte(tmp: Path, startup: Result, scan: Result) -> list[Result]:
    """The 1 TiB machine (256 GiB DRAM + 768 GiB PMEM, 266 M pages populated): start-up
    to a usable mount, the host memory it holds (RSS of the server), and a full scan of
    both processes; baselines: the default machine's start-up, 4 KiB per page (what
    the memory itself would take), and the real pagemap rate of the scan benchmark."""
    mnt = tmp / "mnt"
    mnt.mkdir()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fakeproc", "mount", str(mnt), "-f", "--paused",
                             "--machine", str(TIB_MACHINE)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while not is_serving(mnt):
            if proc.poll() is not None:
                raise RuntimeError("the 1 TiB machine did not come up")
            time.sleep(0.05)
        up = time.perf_counter() - t0
        rss = int(next(ln for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                       if ln.startswith("VmRSS:")).split()[1]) * 1024
        spans = []
        for pid in TIB_PIDS:
            line = (mnt / f"proc/{pid}/maps").read_text().splitlines()[0]
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            spans.append((pid, lo, hi))
        pages = sum((hi - lo) // PAGE for _, lo, hi in spans)

        def one_scan() -> float:
            t = time.perf_counter()
            for pid, lo, hi in spans:
                scan_all(mnt / f"proc/{pid}/idle_pages", lo, hi)
            return (time.perf_counter() - t) / pages * 1e9
        scans = repeat(one_scan, 2)
    finally:
        unmount(proc, mnt)
    return [Result("1 TiB machine: start-up to a usable mount", "s", [up], "the default machine",
                   startup.ours),
            Result(f"1 TiB machine: host memory per populated page ({pages} pages)", "B/page",
                   [rss / pages], "the 4 KiB page itself", [float(PAGE)]),
            Result(f"1 TiB machine: full idle_pages scan of {pages} pages", "ns/page", scans,
                   scan.baseline_name, scan.baseline)]


def bench_startup(reps: int, tmp: Path) -> Result:
    """The default machine's start-up to a usable mount vs starting Python itself."""
    def ours() -> float:
        d = Path(tempfile.mkdtemp(dir=tmp))
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "fakeproc", "mount", str(d), "-f", "--paused"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not is_serving(d):
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
    pages = 1 << 16 if args.quick else 1 << 24  # 16 M pages: a 64 GiB process
    results = []
    with tempfile.TemporaryDirectory(prefix="fakeproc-bench-") as d:
        tmp = Path(d)
        for name, fn in (("idle", lambda: bench_idle_scan(pages, reps, tmp / "idle")),
                         ("sysfs", lambda: bench_sysfs(reps, tmp / "sysfs")),
                         ("touches", lambda: bench_touches(pages, reps, tmp / "touches")),
                         ("move", lambda: bench_move_pages(reps, tmp / "move")),
                         ("runner", lambda: bench_runner_costs(reps, tmp / "runner")),
                         ("fork", lambda: [bench_fork(pages // 16, reps)]),
                         ("startup", lambda: [bench_startup(reps, tmp / "startup")])):
            (tmp / name).mkdir(exist_ok=True)
            results.extend(fn())
        if not args.quick:
            (tmp / "tib").mkdir()
            results.extend(bench_terabyte(tmp / "tib", results[-1], results[0]))
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
