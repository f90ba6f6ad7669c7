"""A read larger than one FUSE request: the kernel splits it (INTERFACES.md 1.9).

With direct_io a 4 MiB read(2) arrives as 1 MiB READ requests at byte offsets
pos, pos + 1 MiB, ...; the handle treats a READ at the end of its last reply as
a continuation from the cursor that reply left. Expected bytes derived by hand.
"""
from __future__ import annotations

import mmap
import os

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


def test_4mib_read_is_split_and_continued_from_the_cursor(big):
    fd = os.open(big.proc_path("400/idle_pages"), os.O_RDWR)
    try:
        os.lseek(fd, BASE, os.SEEK_SET)
        # a page-aligned buffer: FUSE pins at most 256 user pages per READ, so an
        # unaligned buffer would make the first request 1 MiB minus its page offset
        buf = mmap.mmap(-1, 4 * MIB)
        n = os.readv(fd, [buf])
        data = buf[:n]
        # the first 1 MiB READ is full, so the kernel sends the next at BASE + 1 MiB:
        # a continuation from the cursor (BASE + 32 GiB, past the VMA): only the EOF
        # record; that short reply ends the read(2)
        assert len(data) == MIB + 9
        assert data[:MIB] == expected_first_request()
        assert data[MIB:] == hva(TASK_SIZE)
        assert os.lseek(fd, 0, os.SEEK_CUR) == BASE + MIB + 9  # FUSE: pos + bytes
    finally:
        os.close(fd)


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
