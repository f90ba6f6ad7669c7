"""seq_read()'s cut of multi-record files (fs/seq_file.c, 4.20): maps, numa_maps,
smaps and vmstat return whole records of less than a page per read, whatever the
read asks for. Vectors worked by hand from the rules in fakeproc/fs/seq_file.py."""
from __future__ import annotations

import os

import pytest

from fakeproc.fs.seq_file import SeqFile, lines, vma_blocks
from machines import small_machine
from mountutil import mounted

LINE = b"x" * 49 + b"\n"  # 50-byte records


def cursor(data: bytes, pos: int = 0) -> SeqFile:
    s = SeqFile()
    s.reset(data, lines(data), pos)
    return s


def reads(s: SeqFile, pos: int, counts: list[int]) -> list[int]:
    got = []
    for count in counts:
        out = s.read(pos, count)
        got.append(len(out))
        pos += len(out)
    return got


def test_a_large_read_returns_the_records_that_fit_a_page():
    # 81 x 50 = 4050 < 4096, 82 x 50 = 4100 does not fit; 100 records: 81 then 19
    assert reads(cursor(LINE * 100), 0, [65536, 65536, 65536]) == [4050, 950, 0]


def test_small_reads_return_what_they_ask_and_keep_the_rest():
    s = cursor(LINE * 100)
    # 100: records 0-1 fill it exactly; 30: record 2 goes in, 20 bytes stay in the buffer;
    # 100: those 20, then records 3-4 (100 bytes, >= the 80 still asked), 80 of them
    assert reads(s, 0, [100, 30, 100]) == [100, 30, 100]
    assert s.buf_end == 250 and s.next_rec == 5
    assert s.read(230, 65536) == (LINE * 100)[230:250 + 81 * 50]  # 20 left, then 81 records


def test_a_record_larger_than_the_buffer_doubles_it_for_good():
    data = b"y" * 4999 + b"\n" + LINE * 400
    s = cursor(data)
    # the buffer doubles to 8192 for the 5000-byte record; 63 x 50 more fit (8150 < 8192)
    assert reads(s, 0, [65536]) == [5000 + 63 * 50]
    assert s.size == 8192
    assert reads(s, 8150, [65536]) == [163 * 50]  # 163 x 50 = 8150, 164 x 50 = 8200


def test_a_read_elsewhere_walks_to_its_position():
    # inside record 1: its last 25 bytes are the buffer, then 81 whole records
    assert len(cursor(LINE * 100, 75).read(75, 65536)) == 25 + 81 * 50
    # at record 2's start: nothing buffered, 81 records from there
    assert len(cursor(LINE * 100, 100).read(100, 65536)) == 81 * 50
    # past the end: nothing
    assert cursor(LINE * 100, 9000).read(9000, 100) == b""


def test_record_splitters():
    assert lines(b"a\nbb\nccc") == [2, 5, 8] and lines(b"") == []
    smaps = b"1000-2000 rw-p x\nSize: 4 kB\n3000-4000 r--p y\nSize: 8 kB\n"
    assert vma_blocks(smaps) == [28, 56]


# ---- through the mount ------------------------------------------------------------

MACHINE = small_machine() + """
[[process]]
pid = 70
name = "many"
""" + "".join(f"[[process.vma]]\nstart = {0x7f0000000000 + i * 0x2000:#x}\nsize = \"4KiB\"\n"
              f"pages = \"1 accessed\"\n" for i in range(120))


@pytest.fixture(scope="module")
def m():
    with mounted(MACHINE) as mnt:
        yield mnt


def chunks(path: str, count: int) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        out = []
        while data := os.read(fd, count):
            out.append(data)
        return out
    finally:
        os.close(fd)


def whole_records_under_a_page(records: list[bytes]) -> list[int]:
    """The greedy cut of seq_read() for records that each fit a page."""
    cut, size = [], 0
    for r in records:
        if size and size + len(r) >= 4096:
            cut.append(size)
            size = 0
        size += len(r)
    return cut + [size]


@pytest.mark.fuse
@pytest.mark.parametrize("name", ["maps", "numa_maps", "smaps"])
def test_a_large_read_of_a_vma_file_returns_whole_vmas_under_a_page(m, name):
    text = m.read(f"proc/70/{name}")
    split = vma_blocks if name == "smaps" else lines
    ends = split(text)
    records = [text[a:b] for a, b in zip([0] + ends, ends)]
    assert len(records) >= 120
    got = chunks(str(m.path / "proc/70" / name), 65536)
    assert b"".join(got) == text and len(got) > 1
    assert [len(c) for c in got] == whole_records_under_a_page(records)


@pytest.mark.fuse
def test_maps_lines_by_hand(m):
    """120 anonymous one-page VMAs: each maps line is 49 bytes (12 + 1 + 12 address
    digits and dash, ' rw-p', ' 00000000', ' 00:00', ' 0', a space, the newline);
    83 lines (4067 bytes) fit a page, 84 (4116) do not. So a 1 MiB read returns 4067."""
    text = m.read("proc/70/maps")
    first = text.split(b"\n")[0] + b"\n"
    assert first == b"7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n" and len(first) == 49
    got = chunks(str(m.path / "proc/70/maps"), 1 << 20)
    assert len(got[0]) == 4067 and got[0] == text[:4067]
    assert b"".join(got) == text


@pytest.mark.fuse
def test_small_reads_cross_records(m):
    got = chunks(str(m.path / "proc/70/maps"), 100)
    assert all(len(c) == 100 for c in got[:-1]) and b"".join(got) == m.read("proc/70/maps")
