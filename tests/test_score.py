"""Ground truth and scoring (kernel/score.py, native/truth.c): hand-computed cases."""
from __future__ import annotations

import os
import pathlib

import pytest

from fakeproc.ctl.client import Client
from fakeproc.idle_format import decode
from fakeproc.kernel import migrate
from fakeproc.kernel.native import lib
from fakeproc.machine import load
from machines import small_machine
from mountutil import mounted

BASE = 0x7F0000000000
PAGE = 4096
SCENARIO = (pathlib.Path(__file__).parent / "scenarios" / "idle_pages.toml").read_text()


def missed(k, pid: int) -> int:
    return int(k.native.mms[k.task(pid).mm_id].idle_missed)


def test_pages_a_scan_silently_skips_are_counted():
    k = load(SCENARIO)
    # pid 200: alternating pages; a 1 MiB read loses the rest of PMD 15 (pages
    # 7982..8191, all present) when the first staging chunk fills
    k.idle_pages_read(k.task(200), BASE, 1 << 20, 0)
    assert missed(k, 200) == 210
    # a 100-byte read: 82 units fit (limit 91); pass 2 re-enters PMD 0 and skips pages
    # 82..511 (430); it cannot start PMD 1, so the read ends with A0 be64(end), end =
    # page 800: pages 512..799 (288) go unreported too
    k2 = load(SCENARIO)
    data = k2.idle_pages_read(k2.task(200), BASE, 100, 0).data
    assert data[:9] == b"\xa0" + BASE.to_bytes(8, "big") and len(data) == 100
    assert missed(k2, 200) == 430 + 288


def test_a_read_left_too_little_room_counts_its_tail():
    """count 8006: the first pass fills 7991 bytes (A0 + 7982 units, pages 0..7981);
    15 bytes of room leave the next pass no room for a SET_HVA, so the read ends with
    A0 be64(end) at 8000 bytes, 6 short, end = 8006 * 8 = 64048 pages on. Every page
    from 7982 up to the VMA's end (10240 pages: 40 MiB) went unreported: 2258, the
    same as a read that filled its buffer would count (it was 210: only the rest of
    PMD 15)."""
    k = load(SCENARIO)
    r = k.idle_pages_read(k.task(200), BASE, 8006, 0)
    assert len(r.data) == 8000 and r.data[-9:] == b"\xa0" + (BASE + 64048 * PAGE).to_bytes(8, "big")
    assert missed(k, 200) == 10240 - 7982


def test_a_19_byte_read_counts_only_its_own_range():
    """count 19 leaves room for no unit: the read is A0 be64(end), end = pos + 19 * 8
    pages, and the 152 present pages there are missed, not those below pos (a VMA
    below it, whole, was counted too when the tail started at address 0)."""
    k = load(NODE64 + TWO_VMAS)
    r = k.idle_pages_read(k.task(400), HIGH, 19, 0)
    assert r.data == b"\xa0" + (HIGH + 152 * PAGE).to_bytes(8, "big")
    assert missed(k, 400) == 152


NODE64 = '[[node]]\ntype = "dram"\nsize = "1GiB"\ncpus = "0"\n'
HIGH = 0x7F1000000000
TWO_VMAS = f"""
[[process]]
pid = 400
name = "p"
[[process.vma]]
start = {BASE:#x}
size = "64MiB"
pages = "16384 accessed"
[[process.vma]]
start = {HIGH:#x}
size = "64MiB"
pages = "16384 accessed"
"""


MACHINE = """
distances = [[10, 17], [17, 10]]
[[node]]
type = "dram"
size = "16MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "64MiB"
[[process]]
pid = 10
name = "app"
[[process.vma]]
start = 0x7f0000000000
size = "32MiB"
pages = "8192 idle@1"
[process.workload]
pattern = "hotcold"
hot = 0.1
hot_access = 0.9
rate = 20000
"""


def test_dram_hit_oracle_and_the_daemons_traffic():
    k = load(MACHINE)
    rec = k.record(window=1.0)
    k.advance(1.0)
    first = rec.samples[-1]
    assert first.dram == 0 and first.pmem == 20000      # everything on PMEM
    assert first.dram_hit == 0.0
    assert first.oracle_hit > 0.9                        # the 819 hot pages would fit
    hot = [BASE + i * PAGE for i in range(819)]
    assert migrate.move_pages(k, 10, hot, [0] * 819, [0] * 819, 0x82) == 0
    k.advance(1.0)
    second = rec.samples[-1]
    assert second.promoted_syscall == 819 and second.demoted_syscall == 0
    assert second.dram_hit > 0.85                        # ~0.9 of the accesses are hot
    # in hindsight every page touched in a window (819 hot + ~1700 cold) fits in DRAM
    assert second.oracle_hit == 1.0 and second.total == 20000
    assert k.check() == []


def test_an_advance_across_windows_is_one_sample_that_says_how_many():
    """Sampling each of the windows a long advance crosses cost ~2 ms apiece (a step of
    1e9 s froze the mount): one sample covers them all, with the accesses of them all,
    and the report counts windows, not samples."""
    from fakeproc.report import summarize
    k = load(MACHINE)
    rec = k.record(window=1.0)
    k.advance(5.0)                # windows 1-5 in one advance: 5 x 20000 touches
    k.advance(1.0)                # window 6
    assert [(s.t, s.windows, s.pmem) for s in rec.samples] == [(5.0, 5, 100000), (6.0, 1, 20000)]
    (row,) = summarize(rec.report())
    assert row["windows"] == 6 and row["accesses"] == 120000


def test_dram_capacity_leaves_out_every_table_page_and_the_high_reserve():
    # DRAM node 0: 16 MiB = 4096 pages; app's tables come from node 0 (its CPU's
    # node): PGD, PUD, PMD and 16 PTE tables (32 MiB of 4 KiB pages) = 19 pages, of
    # which only the 16 PTE tables are PageTables; the capacity must not count any,
    # nor PFN 0, which x86 reserves at boot
    k = load(MACHINE)
    rec = k.record(window=1.0)
    high = k.watermarks(0)[2]
    assert k.node_stat(0)[lib.FP_NR_PAGETABLE] == 16
    assert rec.dram_capacity() == 4096 - 1 - 19 - high


ALTERNATING = """
[[node]]
type = "dram"
size = "128MiB"
cpus = "0"
[[process]]
pid = 300
name = "alt"
[[process.vma]]
start = 0x7f0000000000
size = "64MiB"
pages = "1 accessed, 1 idle"
repeat = 8192
[process.workload]
rate = 0
"""


def _scan_4k(m, recover: bool) -> int:
    """One scan of the 64 MiB VMA in 4 KiB reads; a full read is followed by one from
    the end of its last unit (recover) or from its trailing SET_HVA. Returns the reads."""
    fd = os.open(m.proc_path("300/idle_pages"), os.O_RDONLY)
    pos, reads = BASE, 0
    try:
        while data := os.pread(fd, 4096, pos):
            reads += 1
            runs, cursor = decode(data)
            pos = runs[-1].addr + runs[-1].size if recover and len(data) == 4096 else cursor
    finally:
        os.close(fd)
    return reads


@pytest.mark.fuse
@pytest.mark.parametrize("recover, reads, want", [(True, 5, 0), (False, 2, 12306)])
def test_missed_pages_are_those_no_later_read_reports(recover, reads, want):
    """A 4 KiB read of alternating pages holds 4078 units (limit 4087 after A0 + 8),
    then steps over the rest of its range to A0 be64(end), end = 32768 pages on: pages
    4078..16383 of the VMA, 12306 present pages. A scanner that goes on from its last
    unit reports them in its next reads (five reads, the last one short and ending at
    TASK_SIZE): nothing missed. One that goes on from end (past the VMA: a second read
    gives the EOF record) has missed all 12306; the read after it is judged when that
    one starts."""
    with mounted(ALTERNATING) as m, Client(m.path) as c:
        c.call("report")  # the recording starts
        assert _scan_4k(m, recover) == reads
        c.call("clock", action="step", seconds=1)
        samples = [s for s in c.call("report")["samples"] if s["pid"] == 300]
        assert sum(s["idle_missed"] for s in samples) == want


# A process touching its 1024 pages in order, once each per second: pages 0-511 are
# on DRAM, 512-1023 on PMEM. So a whole window is 512 DRAM + 512 PMEM touches, and
# half a window from page 0 is 512 DRAM touches.
SEQ = small_machine(dram="256MiB", pmem="256MiB") + """
[[process]]
pid = 100
name = "app"
[[process.vma]]
start = 0x7f0000000000
size = "4MiB"
pages = "512 idle@0, 512 idle@1"
[process.workload]
pattern = "seq"
rate = 1024
"""
SEQ_WORKLOAD = {"pattern": "seq", "rate": 1024}


def served(rec) -> list[tuple[float, int, int, int]]:
    return [(s.t, s.pid, s.dram, s.pmem) for s in rec.samples]


def test_a_replaced_workload_counts_what_each_did_in_the_window():
    """set_workload (`fakeproc ctl workload`) builds a new workload whose counters
    start at 0. The window it happens in has the old one's 512 touches (pages
    0-511, DRAM) and the new one's 512 (pages 0-511 again: it starts from page 0):
    1024 DRAM, 0 PMEM. It gave -512/-512 when the recorder took the new counts less
    the old's."""
    from fakeproc.machine import set_workload
    k = load(SEQ)
    rec = k.record(window=1.0)
    k.advance(1.0)
    k.advance(0.5)
    set_workload(k, k.task(100), dict(SEQ_WORKLOAD))
    k.advance(0.5)
    k.advance(1.0)
    assert served(rec) == [(1.0, 100, 512, 512), (2.0, 100, 1024, 0), (3.0, 100, 512, 512)]


def test_a_stopped_workload_gives_its_last_window_and_keeps_the_counts_baseline():
    """Stopping a workload (set_workload None) mid-window: that window has its 512
    touches; a later restart starts from 0 again, and the daemon's moves between are
    counted once."""
    from fakeproc.machine import set_workload
    k = load(SEQ)
    rec = k.record(window=1.0)
    k.advance(1.0)
    k.advance(0.5)
    set_workload(k, k.task(100), None)
    k.advance(0.5)
    assert migrate.move_pages(k, 100, [BASE + 600 * PAGE], [0], [0], 0x82) == 0
    k.advance(1.0)                                     # no workload: only the move
    set_workload(k, k.task(100), dict(SEQ_WORKLOAD))
    k.advance(1.0)                                     # page 600 is on DRAM now
    assert [(s.t, s.dram, s.pmem, s.promoted_syscall) for s in rec.samples] == [
        (1.0, 512, 512, 0), (2.0, 512, 0, 0), (3.0, 0, 0, 1), (4.0, 513, 511, 0)]


def test_a_process_that_exits_mid_window_keeps_its_last_half_window():
    """exit half way through a window: its 512 touches (pages 0-511, DRAM) are
    sampled at the window's end; the oracle cannot judge pages that are gone
    (total and oracle 0). It had no sample at all before."""
    from fakeproc.report import summarize
    k = load(SEQ)
    rec = k.record(window=1.0)
    k.advance(1.0)
    k.advance(0.5)
    k.exit(100)
    k.advance(0.5)
    last = rec.samples[-1]
    assert served(rec) == [(1.0, 100, 512, 512), (2.0, 100, 512, 0)]
    assert (last.total, last.oracle_dram) == (0, 0)
    (row,) = summarize(rec.report())
    assert row["accesses"] == 1536 and row["dram_hit"] == 1024 / 1536


def test_a_pid_used_again_is_another_process():
    """A process spawned with the pid of one that exited starts from 0: its first
    window is 512 + 512 (it was 0 + 0, its counts less the old process's); the report
    shows the two as two rows."""
    from fakeproc.machine import add_process
    from fakeproc.report import summarize
    k = load(SEQ)
    rec = k.record(window=1.0)
    k.advance(1.0)
    k.exit(100)
    add_process(k, {"pid": 100, "name": "again",
                    "vma": [{"start": BASE, "size": "4MiB", "pages": "512 idle@0, 512 idle@1"}],
                    "workload": dict(SEQ_WORKLOAD)}, "spawn")
    k.advance(1.0)
    assert served(rec) == [(1.0, 100, 512, 512), (2.0, 100, 512, 512)]
    rows = summarize(rec.report())
    assert [(r["pid"], r["name"], r["accesses"]) for r in rows] == [(100, "app", 1024), (100, "again", 1024)]


def test_workloads_changed_before_the_first_sample_still_count():
    """Replaced at 0.25 s and again at 0.5 s, then sampled at 1.0: 256 + 256 + 512
    touches, all from page 0 on (each new workload starts there), all DRAM. Stopped
    at 0.5 s after a replacement at 0.25 s: 256 + 256. Both were lost when nothing
    of the process had been sampled yet."""
    from fakeproc.machine import set_workload
    k = load(SEQ)
    rec = k.record(window=1.0)
    k.advance(0.25)
    set_workload(k, k.task(100), dict(SEQ_WORKLOAD))
    k.advance(0.25)
    set_workload(k, k.task(100), dict(SEQ_WORKLOAD))
    k.advance(0.5)
    assert served(rec) == [(1.0, 100, 1024, 0)]
    k2 = load(SEQ)
    rec2 = k2.record(window=1.0)
    k2.advance(0.25)
    set_workload(k2, k2.task(100), dict(SEQ_WORKLOAD))
    k2.advance(0.25)
    set_workload(k2, k2.task(100), None)
    k2.advance(0.5)
    assert served(rec2) == [(1.0, 100, 512, 0)]


def test_an_exit_sampled_with_a_long_step_says_how_many_windows():
    k = load(SEQ)
    rec = k.record(window=1.0)
    k.advance(0.5)
    k.exit(100)
    k.advance(3.0)
    assert [(s.t, s.windows, s.dram) for s in rec.samples] == [(3.0, 3, 512)]
