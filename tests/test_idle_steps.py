"""Long idle_pages reads are walked in steps (fs/idle_pages.py): other requests of the
mount run between them, and the bytes are those of the read in one go.

The machine: one process whose 512 MiB VMA (131072 pages, 256 PMDs) alternates
accessed and idle pages, so every page is one record byte (`01` PTE_ACCESSED, `51`
PTE_IDLE: runs of one, never merged). Worked out from INTERFACES.md 1.3: a staging
buffer holds 8000 - 9 (tail room) = 7991 bytes: a SET_HVA and 7982 units. The unit
that does not fit is page 7982 of the pass, inside its 16th PMD; the next pass
starts there, but that PMD was the last one visited, so the rest of it is skipped
("the rest of a PMD lost"): every pass covers 8192 pages and reports 7982. Sixteen
passes cover the VMA, and the read ends with one more SET_HVA. That is 16 staging
buffers, and the tests make every step one pass.
"""
from __future__ import annotations

import mmap
import os
import threading
import time

import pytest
import trio

from fakeproc.fs import idle_pages
from fakeproc.fs.idle_pages import IdlePagesHandle
from fakeproc.machine import load
from mountutil import mounted

BASE = 0x7F0000000000
PAGES = 131072
MACHINE = f"""
[[node]]
type = "dram"
size = "640MiB"
cpus = "0"

[[process]]
pid = 100
name = "alternating"

[[process.vma]]
start = {BASE:#x}
size = "512MiB"
pages = "1 accessed, 1 idle"
repeat = {PAGES // 2}
"""


def check_bytes(data: bytes) -> None:
    """The 16 passes worked out above, then a SET_HVA past the VMA."""
    passes = b"".join(b"\xa0" + (BASE + k * 8192 * 4096).to_bytes(8, "big") + b"\x01\x51" * 3991
                      for k in range(16))
    assert data[:-9] == passes
    assert data[-9] == 0xA0 and int.from_bytes(data[-8:], "big") >= BASE + (512 << 20)


async def test_other_tasks_run_between_the_steps_of_a_long_read(monkeypatch):
    monkeypatch.setattr(idle_pages, "FIRST_STEP_PASSES", 1)
    monkeypatch.setattr(idle_pages, "MAX_STEP_PASSES", 1)
    kernel = load(MACHINE)
    handle = IdlePagesHandle(kernel, kernel.task(100), os.O_RDONLY)
    turns = 0

    async def other_request() -> None:
        nonlocal turns
        while True:
            turns += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_request)
        await trio.lowlevel.checkpoint()
        before = turns
        data = await handle.read_async(BASE, 1 << 20)
        during = turns - before
        nursery.cancel_scope.cancel()
    assert during >= 16  # turns between every two of the 17 passes (a pass a step)
    check_bytes(data)
    again = load(MACHINE)  # the same read in one go, on an identical kernel
    assert data == again.idle_pages_read(again.task(100), BASE, 1 << 20, os.O_RDONLY).data


@pytest.mark.fuse
def test_a_stepped_read_through_the_mount_is_the_read_in_one_go():
    with mounted(MACHINE) as m:
        fd = os.open(m.proc_path("100/idle_pages"), os.O_RDONLY)
        buf = mmap.mmap(-1, 1 << 20)  # page-aligned: FUSE sends one 1 MiB READ (INTERFACES.md 1.9)
        try:
            data = bytes(buf[:os.preadv(fd, [buf], BASE)])
        finally:
            os.close(fd)
            buf.close()
    check_bytes(data)
    kernel = load(MACHINE)
    assert data == kernel.idle_pages_read(kernel.task(100), BASE, 1 << 20, os.O_RDONLY).data


IDLE_PAGES = 4 << 20  # 16 GiB of idle pages: one read walks all of them (~10 ms)
IDLE_MACHINE = f"""
[[node]]
type = "dram"
size = "17GiB"
cpus = "0"

[[process]]
pid = 100
name = "idle"

[[process.vma]]
start = {BASE:#x}
size = "16GiB"
pages = "1 idle"
repeat = {IDLE_PAGES}
"""


@pytest.mark.fuse
def test_the_mount_answers_other_requests_while_a_long_read_walks():
    """A thread reads a sysfs attribute back to back while the main thread reads
    idle_pages; count the attribute reads that end inside an idle_pages read.

    Walked in one go, the server answers nothing until the walk ends: at most the one
    attribute read already in flight ends inside (0 or 1 seen). Walked in steps, one
    ends at almost every step boundary (15-16 seen in a ~12 ms read). Ordering only,
    no time limit; the best of five reads must show four."""
    with mounted(IDLE_MACHINE) as m:
        attr = str(m.path / "sys/devices/system/node/node0/meminfo")
        ended: list[float] = []
        stop = threading.Event()

        def read_attr_back_to_back() -> None:
            while not stop.is_set():
                fd = os.open(attr, os.O_RDONLY)
                os.read(fd, 4096)
                os.close(fd)
                ended.append(time.perf_counter())

        fd = os.open(m.proc_path("100/idle_pages"), os.O_RDONLY)
        buf = mmap.mmap(-1, 1 << 20)
        reader = threading.Thread(target=read_attr_back_to_back)
        reader.start()
        inside = []
        try:
            for _ in range(5):
                t0 = time.perf_counter()
                assert os.preadv(fd, [buf], BASE) > 0
                t1 = time.perf_counter()
                inside.append(sum(t0 < t < t1 for t in list(ended)))
        finally:
            stop.set()
            reader.join()
            os.close(fd)
            buf.close()
    assert max(inside) >= 4, inside
