"""/proc/PID/idle_pages through the real mount: hand-written byte vectors (INTERFACES.md 1).

Each expected stream below was worked out by hand from the spec's algorithm
(the derivation is in the comment next to it), never produced by fakeproc.
Scenario: tests/scenarios/idle_pages.toml, one process per test.
"""
from __future__ import annotations

import errno
import fcntl
import os
import pathlib

import pytest

from mountutil import mounted

pytestmark = pytest.mark.fuse

SCENARIO = (pathlib.Path(__file__).parent / "scenarios" / "idle_pages.toml").read_text()
TASK_SIZE = 0x7FFFFFFFF000
BASE = 0x7F0000000000
PAGE = 4096


def hva(addr: int) -> bytes:
    """A SET_HVA record: 0xA0 + the address big-endian."""
    return b"\xa0" + addr.to_bytes(8, "big")


TAIL_EOF = bytes.fromhex("A0 00 00 7F FF FF FF F0 00")  # SET_HVA(TASK_SIZE): the end of a scan


@pytest.fixture(scope="module")
def mnt():
    with mounted(SCENARIO) as m:
        yield m


def scan(m, pid: int | str, pos: int, count: int = 4096, flags: int = os.O_RDWR,
         file: str = "idle_pages") -> bytes:
    fd = os.open(m.proc_path(f"{pid}/{file}"), flags)
    try:
        os.lseek(fd, pos, os.SEEK_SET)
        return os.read(fd, count)
    finally:
        os.close(fd)


def test_worked_example_and_second_scan(mnt):
    # 1.4: 3 x PTE_ACCESSED, 7 x PTE_IDLE, 6 contiguous holes, then EOF
    assert scan(mnt, 100, BASE) == bytes.fromhex(
        "A0 00 00 7F 00 00 00 00 00 03 57 86 A0 00 00 7F FF FF FF F0 00")
    # the first scan cleared the three accessed bits: all ten present pages idle
    assert scan(mnt, 100, BASE) == hva(BASE) + bytes.fromhex("5A 86") + TAIL_EOF


def test_scan_huge_page_reports_table_as_one_unit_and_keeps_ptes(mnt):
    # O_NONBLOCK: one PMD_IDLE_PTES unit; cursor rounds up to the 2 MiB end; the
    # next pass finds no VMA -> TASK_SIZE tail
    assert scan(mnt, 101, BASE, flags=os.O_RDWR | os.O_NONBLOCK) == hva(BASE) + b"\x71" + TAIL_EOF
    # PTEs were not visited, so their accessed bits are intact
    assert scan(mnt, 101, BASE) == hva(BASE) + bytes.fromhex("03 57 86") + TAIL_EOF


def test_scan_skim_idle_skips_idle_table_and_noatime_is_ignored(mnt):
    # the table PMD's accessed bit is clear: O_NOFOLLOW reports PMD_IDLE_PTES, PTEs untouched
    assert scan(mnt, 104, BASE, flags=os.O_RDWR | os.O_NOFOLLOW) == hva(BASE) + b"\x71" + TAIL_EOF
    assert scan(mnt, 104, BASE) == hva(BASE) + bytes.fromhex("03 57 86") + TAIL_EOF
    # O_NOATIME (SCAN_DIRTY_PAGE) is ignored by RFC v2: a plain scan
    assert scan(mnt, 104, BASE, flags=os.O_RDWR | os.O_NOATIME) == \
        hva(BASE) + bytes.fromhex("5A 86") + TAIL_EOF


def test_skim_idle_descends_an_accessed_table(mnt):
    # holes: 5 none (leading, dropped), 2 accessed, 3 none (contiguous), 1 idle, 5 none
    assert scan(mnt, 120, BASE, flags=os.O_RDONLY | os.O_NOFOLLOW) == \
        hva(BASE + 5 * PAGE) + bytes.fromhex("02 83 51 85") + TAIL_EOF


def test_run_merging_at_15_and_16(mnt):
    assert scan(mnt, 110, BASE) == (
        hva(BASE) + b"\x0f"
        + hva(BASE + 0x200000) + b"\x0f\x01"
        + hva(BASE + 0x400000) + b"\x5f\x5f\x51"
        + TAIL_EOF)


def test_count_19_leaves_room_for_no_unit_but_clears_the_bit(mnt):
    # limit = 19 - 9 = 10: the SET_HVA+unit needs used + 10 < limit -> full at PTE 0,
    # whose accessed bit was already cleared; end = BASE + 19 * 32 KiB
    assert scan(mnt, 102, BASE, count=19) == hva(BASE + 19 * 0x8000)
    # PTE 0 lost its bit: 1 idle, 2 accessed, 7 idle, 6 holes
    assert scan(mnt, 102, BASE) == hva(BASE) + bytes.fromhex("51 02 57 86") + TAIL_EOF


def test_user_buffer_fills_then_sequential_reads_continue(mnt):
    fd = os.open(mnt.proc_path("103/idle_pages"), os.O_RDWR)
    try:
        os.lseek(fd, BASE, os.SEEK_SET)
        # limit 11: A0 addr 03 (10 bytes), 57 (used 10 < 11), the hole at PTE 10 does not
        # fit; the next pass (limit 0) re-enters the same PMD, which last_va skips, so it
        # adds nothing and the read ends at end = BASE + 20 * 32 KiB
        assert os.read(fd, 20) == hva(BASE) + bytes.fromhex("03 57") + hva(BASE + 20 * 0x8000)
        # FUSE deviation (1.9): the position is pos + bytes, not the cursor
        assert os.lseek(fd, 0, os.SEEK_CUR) == BASE + 20
        # a plain read() without lseek continues from the cursor: nothing after it
        assert os.read(fd, 4096) == TAIL_EOF
        assert os.read(fd, 4096) == b""  # at TASK_SIZE: end of file
    finally:
        os.close(fd)


def test_a_read_continues_from_its_cursor_after_preads_elsewhere(mnt):
    """pread() leaves the file position alone (1.2): the next read() goes on from the
    cursor of the read() before it, whatever the preads between returned."""
    far = 0x7F1000000000  # the second VMA: 2 accessed pages
    fd = os.open(mnt.proc_path("105/idle_pages"), os.O_RDONLY)
    try:
        os.lseek(fd, BASE, os.SEEK_SET)
        # as for pid 103: the cursor is end = BASE + 20 x 32 KiB
        assert os.read(fd, 20) == hva(BASE) + bytes.fromhex("03 57") + hva(BASE + 20 * 0x8000)
        # a scan elsewhere: 2 x PTE_ACCESSED, then no VMA after it; and one at TASK_SIZE
        assert os.pread(fd, 4096, far) == hva(far) + b"\x02" + TAIL_EOF
        assert os.pread(fd, 4096, TASK_SIZE) == b""
        assert os.lseek(fd, 0, os.SEEK_CUR) == BASE + 20
        # from the cursor BASE + 0xA0000, end = cursor + 20 x 32 KiB: the next VMA lies
        # beyond it, so the read is its SET_HVA, and the read after it scans from there
        # (the pread cleared both accessed bits)
        assert os.read(fd, 20) == hva(far)
        assert os.read(fd, 4096) == hva(far) + b"\x52" + TAIL_EOF
    finally:
        os.close(fd)


def test_thp_accessed_idle_then_table(mnt):
    # 3 THPs (accessed, idle, accessed), then a table with 2 accessed PTEs and
    # 510 contiguous holes (34 x 15) up to the VMA's end
    first = hva(BASE) + bytes.fromhex("11 61 11 02") + b"\x8f" * 34 + TAIL_EOF
    assert scan(mnt, 130, BASE) == first
    assert scan(mnt, 130, BASE) == hva(BASE) + bytes.fromhex("63 52") + b"\x8f" * 34 + TAIL_EOF


def test_pud_unit_ends_the_walk_and_rounds_down(mnt):
    gib = 1 << 30
    # one PUD_PRESENT unit; the cursor (2 GiB) is past end (1 GiB + 128 MiB): no tail
    assert scan(mnt, 140, gib) == hva(gib) + b"\x21"
    # a start inside the PUD: the SET_HVA lies below pos
    assert scan(mnt, 140, gib + 0x1000) == hva(gib) + b"\x21"
    # the second PUD: restart at 3 GiB equals the cursor, so again no tail
    assert scan(mnt, 140, 2 * gib) == hva(2 * gib) + b"\x21"
    assert scan(mnt, 140, 3 * gib) == TAIL_EOF


def test_which_vmas_are_walked(mnt):
    # r-xp file: skipped; anon: walked; shared anon: skipped; rw-p file: walked;
    # rw-s file: skipped; hugetlb: silent; [vdso]: walked
    assert scan(mnt, 150, BASE) == (
        hva(BASE + 0x200000) + b"\x01"
        + hva(BASE + 0x600000) + b"\x02"
        + hva(BASE + 0xC00000) + b"\x51\x01"
        + TAIL_EOF)


def test_duplicate_pmd_skips_the_later_vma(mnt):
    # VMA 2 shares VMA 1's 2 MiB region: not reported by this read; the read ends at end
    assert scan(mnt, 160, BASE) == hva(BASE) + bytes.fromhex("02 86") + hva(BASE + 0x8000000)
    # a read starting at VMA 2 reports it (last_va starts at 0 on every read)
    assert scan(mnt, 160, BASE + 0x8000) == hva(BASE + 0x8000) + bytes.fromhex("03 85") + TAIL_EOF


def test_first_2mib_never_reported(mnt):
    assert scan(mnt, 170, 0x1000) == hva(0x1000 + 0x8000000)


def test_end_of_address_space(mnt):
    start = 0x7FFFFFFF0000
    # leading holes dropped; the last unit ends at TASK_SIZE; the next pass finds no
    # VMA and nothing added, so the tail is max(TASK_SIZE, end) = end, beyond TASK_SIZE
    assert scan(mnt, 180, start) == hva(0x7FFFFFFFD000) + b"\x02" + hva(start + 0x8000000)
    assert scan(mnt, 180, TASK_SIZE) == b""
    assert scan(mnt, 180, TASK_SIZE + 0x1000) == b""


def test_next_vma_beyond_the_scan_range(mnt):
    assert scan(mnt, 190, BASE) == hva(BASE) + b"\x02" + hva(0x7F1000000000)


def test_staging_chunk_fills_inside_a_page_table(mnt):
    # alternating accessed/idle pages: chunk 1 holds A0 + 7982 unit bytes (7991);
    # page 7982 (in PMD 15) does not fit, the rest of PMD 15 is lost, the next pass
    # starts with a SET_HVA at PMD 16 and reports PMDs 16-19 (2048 pages)
    first = (hva(BASE) + b"\x01\x51" * 3991 + hva(BASE + 8192 * PAGE)
             + b"\x01\x51" * 1024 + TAIL_EOF)
    assert scan(mnt, 200, BASE, count=1 << 20) == first
    # next scan: everything reported before is idle now; page 7982 lost its bit
    # anyway; pages 7983..8191 kept theirs (never reported): 7984 idle pages
    # (532 x 15 + 4), then 01 51 x 104 (the last 51 merges with the 2048 idle
    # pages of PMDs 16-19: 2049 = 136 x 15 + 9)
    second = (hva(BASE) + b"\x5f" * 532 + b"\x54" + b"\x01\x51" * 103 + b"\x01"
              + b"\x5f" * 136 + b"\x59" + TAIL_EOF)
    assert scan(mnt, 200, BASE, count=1 << 20) == second


def test_threads_share_the_address_space(mnt):
    worked = bytes.fromhex("A0 00 00 7F 00 00 00 00 00 03 57 86 A0 00 00 7F FF FF FF F0 00")
    assert scan(mnt, "210/task/211", BASE) == worked
    assert scan(mnt, 210, BASE) == hva(BASE) + bytes.fromhex("5A 86") + TAIL_EOF
    assert sorted(os.listdir(mnt.proc_path("210/task"))) == ["210", "211", "212"]
    # /proc/TID is reachable but not listed, as in Linux
    assert os.path.isdir(mnt.proc_path("212"))
    assert "212" not in os.listdir(mnt.path / "proc")


def test_argument_errnos(mnt):
    fd = os.open(mnt.proc_path("100/idle_pages"), os.O_RDWR)
    try:
        with pytest.raises(OSError) as e:
            os.pread(fd, 4096, BASE + 1)
        assert e.value.errno == errno.EINVAL
        with pytest.raises(OSError) as e:
            os.pread(fd, 18, BASE)
        assert e.value.errno == errno.EINVAL
        assert os.pread(fd, 0, BASE + 1) == b""  # count 0 wins over alignment
        assert os.pread(fd, 4096, TASK_SIZE) == b""
        with pytest.raises(OSError) as e:
            os.pwrite(fd, b"x", BASE)
        assert e.value.errno == errno.EINVAL
        # deviation z: vfs_write() refuses a file without ->write (EINVAL) before it
        # looks at the count; the host's FUSE driver answers a zero-length write itself
        assert os.write(fd, b"") == 0
        with pytest.raises(OSError) as e:
            fcntl.ioctl(fd, 0x5401)  # TCGETS
        assert e.value.errno == errno.ENOTTY
        # lseek: SEEK_SET/SEEK_CUR return the new position, no range check
        assert os.lseek(fd, BASE, os.SEEK_SET) == BASE
        assert os.lseek(fd, 4096, os.SEEK_CUR) == BASE + 4096
    finally:
        os.close(fd)
    fd = os.open(mnt.proc_path("100/idle_pages"), os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            os.write(fd, b"x")
        assert e.value.errno == errno.EBADF
    finally:
        os.close(fd)


def test_seek_end_is_the_documented_fuse_deviation(mnt):
    # The RFC kernel answers SEEK_END with EINVAL; FUSE answers lseek itself from the
    # reported size (0) and never asks the server (docs/interfaces.md). The kernel
    # model's own llseek is tested in test_kernel_model.py.
    fd = os.open(mnt.proc_path("100/idle_pages"), os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_END) == 0
    finally:
        os.close(fd)


def test_mode_owner_and_missing_pid(mnt):
    st = os.stat(mnt.proc_path("100/idle_pages"))
    assert oct(st.st_mode) == "0o100600"
    assert st.st_size == 0
    with pytest.raises(FileNotFoundError):
        os.open(mnt.proc_path("99999/idle_pages"), os.O_RDONLY)


def test_zombie_opens_but_reads_esrch(mnt):
    fd = os.open(mnt.proc_path("220/idle_pages"), os.O_RDWR)
    try:
        with pytest.raises(OSError) as e:
            os.pread(fd, 4096, BASE)
        assert e.value.errno == errno.ESRCH
        # checks 1-4 come before the address-space check
        with pytest.raises(OSError) as e:
            os.pread(fd, 4096, BASE + 1)
        assert e.value.errno == errno.EINVAL
    finally:
        os.close(fd)


EXITING = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"

[[process]]
pid = 300
name = "short-lived"
exit_at = 0.3
[[process.vma]]
start = 0x7f0000000000
size = "16KiB"
pages = "4 accessed"
"""


def test_exited_process_gives_esrch_then_enoent():
    import time
    with mounted(EXITING, extra_args=["--no-paused"]) as m:
        fd = os.open(m.proc_path("300/idle_pages"), os.O_RDWR)
        try:
            deadline = time.monotonic() + 20
            while os.path.exists(m.proc_path("300")):
                assert time.monotonic() < deadline, "the process never exited"
                time.sleep(0.05)
            with pytest.raises(OSError) as e:
                os.pread(fd, 4096, BASE)
            assert e.value.errno == errno.ESRCH
        finally:
            os.close(fd)
        with pytest.raises(FileNotFoundError):
            os.open(m.proc_path("300/idle_pages"), os.O_RDONLY)


TWO_VMAS = """
[[node]]
type = "dram"
size = "1GiB"
cpus = "0-1"

[[process]]
pid = 100
name = "two"
[[process.vma]]
start = 0x7f0000000000
size = "16KiB"
pages = "2 accessed, 2 idle"
[[process.vma]]
start = 0x7f1000000000
size = "16KiB"
pages = "4 accessed"
"""


def test_a_failed_read_does_not_move_the_position():
    """1.2: on an error the position does not move. The first read reports the first
    VMA and stops at the second: A0 BASE, 02 (2 x PTE_ACCESSED), 52 (2 x PTE_IDLE),
    A0 be64(0x7f1000000000). A read of 18 bytes fails (count < 19). The next plain
    read goes on from 0x7f1000000000: A0 be64(it), 04, then the end of the address
    space."""
    with mounted(TWO_VMAS) as m:
        fd = os.open(m.proc_path("100/idle_pages"), os.O_RDWR)
        try:
            os.lseek(fd, BASE, os.SEEK_SET)
            assert os.read(fd, 4096) == hva(BASE) + b"\x02\x52" + hva(0x7F1000000000)
            with pytest.raises(OSError) as e:
                os.read(fd, 18)
            assert e.value.errno == errno.EINVAL
            assert os.read(fd, 4096) == hva(0x7F1000000000) + b"\x04" + TAIL_EOF
        finally:
            os.close(fd)
