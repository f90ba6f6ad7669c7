"""A read larger than one FUSE request: the kernel splits it (INTERFACES.md 1.9).

With direct_io a 4 MiB read(2) arrives as 1 MiB READ requests at byte offsets
pos, pos + 1 MiB, ...; a 1 MiB read into a buffer that is not page aligned arrives
as 1 MiB minus the buffer's page offset, then the rest. The handle finds the count
the blocked read(2) asked for (fs/readcall.py) and scans once with it, as the
kernel's one read does; a READ it cannot match (a pread of 1 MiB at the end of the
last reply, from a page-aligned buffer) is a continuation from the cursor the
reply before left. Expected bytes derived by hand.
"""
from __future__ import annotations

import mmap
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mountutil import mounted

pytestmark = pytest.mark.fuse

TASK_SIZE = 0x7FFFFFFFF000
BASE = 0x7F0000000000
PAGE = 4096
MIB = 1 << 20

# 4.5 GiB of alternating accessed/idle pages: one record byte per page
BIG = """
[[node]]
type = "dram"
size = "5GiB"
cpus = "0"

[[process]]
pid = 400
name = "big"
[[process.vma]]
start = 0x7f0000000000
size = "4608MiB"
pages = "1 accessed, 1 idle"
repeat = 589824
"""


def hva(addr: int) -> bytes:
    return b"\xa0" + addr.to_bytes(8, "big")


def expected_first_request() -> bytes:
    """The kernel's read(fd, buf, 1 MiB) at BASE, derived from 1.4 by hand.

    Passes 0..130 have 8000-byte staging (limit 7991): A0 + 7982 units covering
    pages 8192k .. 8192k+7981; the unit that does not fit lies inside PMD 16k+15,
    whose rest is lost, so pass k+1 starts at page 8192(k+1). After 131 passes
    1046821 bytes are out and 1755 remain: limit 1746 takes A0 + 1737 units. The
    next pass has limit 0, adds nothing, and the read ends with A0 be64(end),
    end = BASE + 1 MiB * 32 KiB: exactly 1 MiB in all.
    """
    out = b"".join(hva(BASE + 8192 * k * PAGE) + b"\x01\x51" * 3991 for k in range(131))
    out += hva(BASE + 8192 * 131 * PAGE) + b"\x01\x51" * 868 + b"\x01"
    out += hva(BASE + MIB * 32 * 1024)
    assert len(out) == MIB
    return out


@pytest.fixture(scope="module")
def big():
    with mounted(BIG, timeout=60) as m:
        yield m


def expected_whole_read(count: int) -> bytes:
    """read(fd, buf, count) at BASE for a count that covers the whole VMA, by hand
    from 1.4: 1179648 pages = 144 x 8192, so 144 full passes (A0 + 7982 units, the
    rest of the last PMD lost); the pass after the last starts inside that PMD,
    which last_va skips, adds nothing, and the read ends with A0 be64(end)."""
    out = b"".join(hva(BASE + 8192 * k * PAGE) + b"\x01\x51" * 3991 for k in range(144))
    return out + hva(BASE + count * 32 * 1024)


def test_4mib_read_is_one_scan(big):
    fd = os.open(big.proc_path("400/idle_pages"), os.O_RDWR)
    try:
        os.lseek(fd, BASE, os.SEEK_SET)
        buf = mmap.mmap(-1, 4 * MIB)
        n = os.readv(fd, [buf])
        # four READs' worth asked for: the first READ scans with the 4 MiB count and
        # gets its first 1 MiB, the second the rest (short, so FUSE sends no third)
        assert buf[:n] == expected_whole_read(4 * MIB)
        assert n == 144 * 7991 + 9
        assert os.lseek(fd, 0, os.SEEK_CUR) == BASE + n  # FUSE: pos + bytes
    finally:
        os.close(fd)


@pytest.mark.parametrize("page_offset", [48, 4095])
def test_unaligned_1mib_read_is_one_scan(page_offset):
    """FUSE pins at most 256 user pages a READ: a 1 MiB buffer at a page offset
    arrives as 1 MiB minus that offset, then the rest. The read(2) still returns
    the kernel's 1 MiB, and the next read goes on from its cursor. (A fresh machine:
    the expected bytes are those of a first scan.)"""
    with mounted(BIG, timeout=60) as m:
        fd = os.open(m.proc_path("400/idle_pages"), os.O_RDONLY)
        try:
            _unaligned_reads(fd, page_offset)
        finally:
            os.close(fd)


def _unaligned_reads(fd: int, page_offset: int) -> None:
    os.lseek(fd, BASE, os.SEEK_SET)
    area = mmap.mmap(-1, 2 * MIB)
    view = memoryview(area)[page_offset:page_offset + MIB]
    assert os.readv(fd, [view]) == MIB
    assert bytes(view) == expected_first_request()
    # the next read, a plain read(2) into a Python bytes object (never page
    # aligned), goes on from the cursor the first left (BASE + 32 GiB, past the
    # VMA): the EOF record
    assert os.read(fd, MIB) == hva(TASK_SIZE)
    # again from BASE: the first read cleared every bit it reported, and the unit
    # that did not fit (page 7982) lost its bit too: pages 0..7983 are idle (532 x 15
    # + 4), 7984 keeps its accessed bit. Runs of idle pages fit the whole VMA in
    # less than 1 MiB now, so the read ends at TASK_SIZE.
    os.lseek(fd, BASE, os.SEEK_SET)
    again = os.read(fd, MIB)
    assert again[:9 + 534] == hva(BASE) + b"\x5f" * 532 + b"\x54\x01"
    assert len(again) < MIB and again.endswith(hva(TASK_SIZE))
    del view
    area.close()


def test_same_read_through_pread_chunks_matches():
    """The daemon's own pattern on a fresh machine: 1 MiB preads, each at the cursor
    decoded from the reply before (its last SET_HVA). They return the bytes of the
    split 4 MiB read above: the full first request, then at the cursor (BASE + 32 GiB,
    past the VMA) only the EOF record. A scan after them sees what they reported as
    idle."""
    buf = mmap.mmap(-1, MIB)  # page-aligned, as in the test above: one READ per pread

    def pread(fd: int, pos: int) -> bytes:
        return bytes(buf[:os.preadv(fd, [buf], pos)])

    with mounted(BIG, timeout=60) as m:
        fd = os.open(m.proc_path("400/idle_pages"), os.O_RDONLY)
        try:
            first = pread(fd, BASE)
            assert first == expected_first_request()
            assert first[-9] == 0xA0
            cursor = int.from_bytes(first[-8:], "big")
            assert cursor == BASE + MIB * 32 * 1024
            assert pread(fd, cursor) == hva(TASK_SIZE)
            again = pread(fd, BASE)
        finally:
            os.close(fd)
            buf.close()
    # pass 0: pages 0..7981 were reported (now idle), 7982 lost its bit, 7983..8191
    # were never reported and keep their pattern: 7984 idle (532 x 15 + 4), then
    # 01 51 ... up to page 8191; PMD 16 starts idle again and merges
    assert again.startswith(hva(BASE) + b"\x5f" * 532 + b"\x54" + b"\x01\x51" * 103 + b"\x01\x5f")


def test_a_read_fuse_stopped_early_leaves_nothing_for_the_next(tmp_path):
    """FUSE stops a read whose second MiB it cannot pin (EFAULT) after the first READ;
    the read(2) right after it, with the same registers, starts at FUSE's position
    (BASE + 1 MiB) and must scan from there, not get the first read's unused bytes.
    (A fresh machine: its first scan fills more than one READ.)"""
    exe = tmp_path / "split_read"
    src = Path(__file__).parent / "c" / "split_read.c"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    with mounted(BIG, timeout=60) as m:
        out = subprocess.run([str(exe), str(m.proc_path("400/idle_pages")), hex(BASE)],
                             capture_output=True, text=True, timeout=60, check=True).stdout.split()
    # the first read: its first READ's bytes, the whole read's head
    assert out[0] == str(MIB) and out[1] == hva(BASE).hex()
    # the second: a scan of its own from FUSE's position, as an address (the first
    # read's rest, 102137 bytes of 01 51 ..., would start with no SET_HVA)
    assert out[3] == hva(BASE + MIB).hex() and int(out[2]) != 1150713 - MIB


TWO = """
[[node]]
type = "dram"
size = "10GiB"
cpus = "0-1"

[[process]]
pid = 400
name = "two"
[[process.vma]]
start = 0x7f0000000000
size = "4608MiB"
pages = "1 accessed, 1 idle"
repeat = 589824
[[process.vma]]
start = 0x7f2000000000
size = "4608MiB"
pages = "1 accessed, 1 idle"
repeat = 589824
"""


def whole_read_at(base: int, count: int) -> bytes:
    """expected_whole_read() for a VMA of BIG's shape starting at base."""
    out = b"".join(hva(base + 8192 * k * PAGE) + b"\x01\x51" * 3991 for k in range(144))
    return out + hva(base + count * 32 * 1024)


def test_threads_reading_one_file_at_once_each_get_their_own_read():
    """Two threads, one open file, a 2 MiB pread each into 64 GiB-apart VMAs (128 GiB
    apart: their ranges do not meet, so neither read's bits change the other's
    bytes). Each read(2) is two READs; their rests are kept apart."""
    with mounted(TWO, timeout=60) as m:
        fd = os.open(m.proc_path("400/idle_pages"), os.O_RDONLY)
        out: dict[int, bytes] = {}
        both = threading.Barrier(2)

        def read_at(pos: int) -> None:
            buf = mmap.mmap(-1, 2 * MIB)
            both.wait()
            out[pos] = bytes(buf[:os.preadv(fd, [buf], pos)])

        second = BASE + (128 << 30)
        threads = [threading.Thread(target=read_at, args=(p,)) for p in (BASE, second)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        finally:
            os.close(fd)
    assert out[BASE] == whole_read_at(BASE, 2 * MIB)
    assert out[second] == whole_read_at(second, 2 * MIB)


HOLEY = BIG.replace('"1 accessed, 1 idle"', '"1 accessed, 1 none"')


def _blocked_in_read(tid: int) -> bool:
    with open(f"/proc/{os.getpid()}/task/{tid}/syscall") as f:
        return f.read().split()[0] in ("17", "295", "327")


@pytest.mark.parametrize("second_at", [BASE, BASE + MIB])
def test_a_second_thread_reading_where_the_first_did_or_goes_on(second_at):
    """Thread A preads 2 MiB at BASE; once it waits, thread B preads 2 MiB at BASE
    (the same place) or at BASE + 1 MiB (where A's second READ comes). Each gets what
    one whole read gives in that order: A the first scan of the machine, B the one
    after it (the in-process kernel, the same machine, says which bytes those are)."""
    from fakeproc.machine import load
    k = load(HOLEY)
    want_a = k.idle_pages_read(k.task(400), BASE, 2 * MIB, 0).data
    want_b = k.idle_pages_read(k.task(400), second_at, 2 * MIB, 0).data
    assert len(want_a) > MIB and len(want_b) > 9  # both reads are two READs or more
    with mounted(HOLEY, timeout=60) as m:
        fd = os.open(m.proc_path("400/idle_pages"), os.O_RDONLY)
        out: dict[str, bytes] = {}

        def read(name: str, pos: int) -> None:
            buf = mmap.mmap(-1, 2 * MIB)
            out[name] = bytes(buf[:os.preadv(fd, [buf], pos)])

        a = threading.Thread(target=read, args=("a", BASE))
        b = threading.Thread(target=read, args=("b", second_at))
        try:
            a.start()
            while a.is_alive() and (a.native_id is None or not _blocked_in_read(a.native_id)):
                time.sleep(0.0002)
            b.start()
            a.join(60)
            b.join(60)
        finally:
            os.close(fd)
    assert out["a"] == want_a
    assert out["b"] == want_b
