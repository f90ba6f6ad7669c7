"""Many readers at once on a running machine, with the control API changing it.

16 threads read, for a few seconds, the default machine's idle_pages (1 MiB and small
reads, through /proc/PID and /proc/PID/task/TID), maps, status, numa_maps and the
nodes' meminfo/vmstat, while the clock runs (``--no-paused --rate 5``) and a control
thread calls ``reclaim`` and ``move_pages`` now and then. Checked: no deadlock (every
thread ends within a bounded join), every idle_pages read is a well-formed stream no
longer than asked in which no 4 KiB page is reported twice, every text file looks
like itself, and the invariant checker (``check``) is ok at the end.

Long mode: ``FAKEPROC_LONG=1`` runs the readers for 10 minutes (well over 100 000
reads)::

    FAKEPROC_LONG=1 timeout -s KILL 1200 .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_concurrency.py
"""
from __future__ import annotations

import os
import random
import threading
import time

import pytest

from fakeproc.ctl.client import Client
from mountutil import mounted

pytestmark = pytest.mark.fuse

LONG = os.environ.get("FAKEPROC_LONG") == "1"
DURATION = 600.0 if LONG else 4.0
READERS = 16
JOIN_TIMEOUT = 60.0

PIDS = [4200001, 4200101, 4200201]
TASK_SIZE = 0x7FFFFFFFF000
HEAP = 0x7F3A00000000  # redis-server's 2 GiB populated VMA
UNIT = (4096, 2 << 20, 1 << 30, 4096, 2 << 20, 4096, 2 << 20, 2 << 20, 4096, 2 << 20)


def check_stream(data: bytes, count: int, pos: int) -> int:
    """Well-formed, at most count bytes, no 4 KiB page reported twice. Returns the
    number of runs."""
    assert len(data) <= count, f"{len(data)} bytes for count {count}"
    ranges = []
    cursor, i = pos, 0
    while i < len(data):
        b = data[i]
        if b == 0xA0:
            assert i + 9 <= len(data), f"truncated SET_HVA at byte {i} of {len(data)}"
            cursor = int.from_bytes(data[i + 1:i + 9], "big")
            i += 9
            continue
        t, n = b >> 4, b & 15
        assert t <= 9 and 1 <= n <= 15, f"bad record byte {b:#04x} at byte {i}"
        size = n * UNIT[t]
        ranges.append((cursor, cursor + size))
        cursor += size
        i += 1
    ranges.sort()
    for (s0, e0), (s1, e1) in zip(ranges, ranges[1:]):
        assert s1 >= e0, (f"pages reported twice in one read at pos {pos:#x}: "
                          f"[{s0:#x}, {e0:#x}) and [{s1:#x}, {e1:#x})")
    return len(ranges)


@pytest.mark.timeout(DURATION + 300)
def test_readers_reclaim_and_move_pages_race():
    with mounted(None, extra_args=["--no-paused", "--rate", "5"]) as m:
        tids = {pid: os.listdir(m.proc_path(f"{pid}/task")) for pid in PIDS}
        nodes = sorted(n for n in os.listdir(m.sys("devices/system/node")) if n.startswith("node"))
        vmas = {pid: [(int(a, 16), int(b, 16)) for a, b in
                      (ln.split()[0].split("-") for ln in
                       m.read(f"proc/{pid}/maps").decode().splitlines())]
                for pid in PIDS}
        # [vsyscall] lies above TASK_SIZE: not a place to scan
        vmas = {pid: [v for v in vs if v[0] < TASK_SIZE] for pid, vs in vmas.items()}
        stop = threading.Event()
        errors: list[str] = []
        counts = [0] * READERS

        def idle_read(rng: random.Random) -> None:
            pid = rng.choice(PIDS)
            rel = (f"proc/{pid}/idle_pages" if rng.random() < 0.5 else
                   f"proc/{pid}/task/{rng.choice(tids[pid])}/idle_pages")
            flags = os.O_RDONLY | rng.choice([0, 0, os.O_NONBLOCK, os.O_NOFOLLOW])
            fd = os.open(m.path / rel, flags)
            try:
                for _ in range(rng.randint(1, 4)):
                    if rng.random() < 0.5:
                        count, pos = 1 << 20, (HEAP if pid == PIDS[0] and rng.random() < 0.5
                                               else rng.choice(vmas[pid])[0])
                    else:
                        count = rng.choice([19, 20, 64, 4096])
                        lo, hi = rng.choice(vmas[pid])
                        pos = rng.randrange(lo, hi, 4096)
                    if rng.random() < 0.7:
                        try:
                            check_stream(os.pread(fd, count, pos), count, pos)
                        except OSError as e:
                            raise AssertionError(f"pread({rel}, {count}, {pos:#x}): {e!r}") from e
                        continue
                    # lseek + read, then a sequential read() that continues the scan
                    os.lseek(fd, pos, os.SEEK_SET)
                    for _ in range(2):
                        cur = os.lseek(fd, 0, os.SEEK_CUR)
                        try:
                            check_stream(os.read(fd, count), count, cur)
                        except OSError as e:
                            raise AssertionError(f"read({rel}, {count}) at {cur:#x} "
                                                 f"(after lseek {pos:#x}): {e!r}") from e
            finally:
                os.close(fd)

        def text_read(rng: random.Random) -> None:
            pid = rng.choice(PIDS)
            name = rng.choice(["maps", "status", "numa_maps", "node"])
            if name == "node":
                f = rng.choice(["meminfo", "vmstat"])
                data = m.read(f"sys/devices/system/node/{rng.choice(nodes)}/{f}").decode()
                key = "MemTotal:" if f == "meminfo" else "nr_free_pages "
                assert key in data, data[:200]
                return
            data = m.read(f"proc/{pid}/{name}").decode()
            if name == "status":
                assert data.startswith("Name:\t") and f"\nPid:\t{pid}\n" in data, data[:200]
            else:
                lines = data.splitlines()
                assert lines, name
                for ln in lines:
                    assert int(ln.split()[0].split("-")[0], 16) >= 0, ln

        def reader(k: int) -> None:
            rng = random.Random(k)
            try:
                while not stop.is_set():
                    (idle_read if rng.random() < 0.6 else text_read)(rng)
                    counts[k] += 1
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(f"reader {k}: {e!r}")
                stop.set()

        ctl_calls = [0]

        def controller() -> None:
            rng = random.Random(99)
            try:
                with Client(m.path, timeout=60) as c:
                    while not stop.is_set():
                        r = c.call("reclaim", node=rng.choice([0, 1]), pages=256)
                        assert r["reclaimed"] >= 0, r
                        pages = [HEAP + rng.randrange(0, 1 << 31, 4096) for _ in range(64)]
                        r = c.call("move_pages", pid=PIDS[0], pages=pages,
                                   nodes=[rng.choice([0, 1, 2, 3])] * len(pages), flags=2)
                        assert isinstance(r["ret"], int) and len(r["status"]) == len(pages), r
                        ctl_calls[0] += 2
                        stop.wait(0.05)
            except BaseException as e:  # noqa: BLE001
                errors.append(f"controller: {e!r}")
                stop.set()

        threads = [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(READERS)]
        threads.append(threading.Thread(target=controller, daemon=True))
        for t in threads:
            t.start()
        stop.wait(DURATION)
        stop.set()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        assert not stuck, f"deadlock: {stuck} still running {JOIN_TIMEOUT}s after the stop"
        assert not errors, errors
        assert sum(counts) > READERS and ctl_calls[0] > 0, (counts, ctl_calls)
        print(f"\n{sum(counts)} reads, {ctl_calls[0]} control calls")
        with Client(m.path, timeout=60) as c:
            r = c.call("check")
            assert r["ok"], r["problems"]
            assert c.ping()["pong"]
