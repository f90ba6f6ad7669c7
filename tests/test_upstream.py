"""The later upstream interfaces (INTERFACES.md 6) on an `upstream = true` machine,
through the mount, with values worked out by hand from the scenario."""
from __future__ import annotations

import errno
import os
import pathlib
import struct
import subprocess

import pytest

from fakeproc.ctl.client import Client
from fakeproc.kernel.native import lib
from fakeproc.machine import load
from machines import small_machine
from mountutil import mounted

pytestmark = pytest.mark.fuse
BASE = 0x7F0000000000
MACHINE = """
[machine]
upstream = true
[[node]]
type = "dram"
size = "4MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "4MiB"
[[process]]
pid = 4300001
name = "app"
[[process.vma]]
start = 0x7f0000000000
size = "16KiB"
pages = "2 accessed, 1 idle@1, 1 swap"
"""
# node 0 holds PFNs 0-1023, node 1 1024-2047; PFN 0 is reserved at boot (as x86 does).
# The first PTE set-up builds the page tables from node 0 (PGD 1, PUD 2, PMD 3, PTE 4),
# then the pages: 5, 6 and, on node 1, 1024.
UPTODATE, LRU, ACTIVE, BUDDY, MMAP, ANON, SWAPBACKED, IDLE, PGTABLE = 3, 5, 6, 10, 11, 12, 14, 25, 26
ANON_PAGE = sum(1 << b for b in (UPTODATE, LRU, ACTIVE, MMAP, ANON, SWAPBACKED))
NOPAGE, RESERVED = 20, 32


@pytest.fixture(scope="module")
def m():
    with mounted(MACHINE) as mnt:
        yield mnt


def u64s(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 8}Q", data))


def pread(path, n: int, off: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, off)
    finally:
        os.close(fd)


def test_memory_tiers_and_demotion_enabled(m):
    assert m.read("sys/devices/virtual/memory_tiering/memory_tier4/nodelist") == b"0\n"
    assert m.read("sys/devices/virtual/memory_tiering/memory_tier22/nodelist") == b"1\n"
    knob = m.sys("kernel/mm/numa/demotion_enabled")
    # a text attribute stats as one page (sysfs_create_file: PAGE_SIZE); the
    # page_idle bitmap, a binary attribute of size 0, as 0
    assert os.stat(knob).st_size == 4096 and os.stat(m.sys("kernel/mm/page_idle/bitmap")).st_size == 0
    assert knob.read_bytes() == b"true\n"
    knob.write_bytes(b"false\n")
    assert knob.read_bytes() == b"false\n"
    # 5.15's store compares prefixes: "true"/"1" on, "false"/"0" off, else EINVAL
    for word, after in ((b"maybe\n", None), (b"Y\n", None), (b" false\n", None), (b"10\n", b"true\n"),
                        (b"0x1\n", b"false\n"), (b"truest\n", b"true\n"), (b"falsehood", b"false\n")):
        if after is None:
            with pytest.raises(OSError) as e:
                knob.write_bytes(word)
            assert e.value.errno == errno.EINVAL, word
        else:
            knob.write_bytes(word)
            assert knob.read_bytes() == after, word
    knob.write_bytes(b"1")
    assert knob.read_bytes() == b"true\n"


def test_pagemap(m):
    # present|soft-dirty|exclusive|PFN for the three pages, swapped|soft-dirty for the
    # fourth with swap type 0 and offset 1 (slot 0 is the swap header: the first slot
    # handed out is 1) in bits 0-4 and 5-54: 1 << 5 = 0x20; a page of no VMA is 0 (the
    # one before the VMA, the one after it)
    got = u64s(pread(m.proc_path("4300001/pagemap"), 48, BASE // 4096 * 8 - 8))
    assert [hex(v) for v in got] == ["0x0", "0x8180000000000005", "0x8180000000000006",
                                     "0x8180000000000400", "0x4080000000000020", "0x0"]
    with pytest.raises(OSError) as e:
        pread(m.proc_path("4300001/pagemap"), 8, BASE // 4096 * 8 + 3)
    assert e.value.errno == errno.EINVAL


def test_pagemap_holes_in_a_vma_are_soft_dirty_and_an_exited_process_reads_nothing(m):
    """Every VMA starts with VM_SOFTDIRTY: pagemap_pte_hole() and an empty PTE give
    PM_SOFT_DIRTY (bit 55) inside it. After the process is gone pagemap_read() finds
    no mm and returns 0 bytes, before its alignment check."""
    with Client(m.path) as c:
        pid = c.call("spawn", name="holes", vma=[{"start": BASE, "size": "16KiB",
                                                   "pages": "1 none, 1 accessed"}])["pid"]
        path = m.proc_path(f"{pid}/pagemap")
        fd = os.open(path, os.O_RDONLY)
        try:
            got = u64s(os.pread(fd, 40, BASE // 4096 * 8))
            assert got[0] == got[2] == got[3] == 1 << 55 and got[4] == 0
            assert got[1] >> 55 == 0x103  # present, exclusive, soft-dirty
            c.call("kill", pid=pid)
            assert os.pread(fd, 8, BASE // 4096 * 8) == b""
            assert os.pread(fd, 4, 3) == b""
        finally:
            os.close(fd)


def test_kpageflags_and_the_page_idle_bitmap(m):
    kpf = m.proc_path("kpageflags")
    # PFN 0 is PG_reserved (memblock's); PGD, PUD and PMD (PFNs 1-3) are plain kernel
    # pages: no flag; the PTE table (4) is PageTable (pgtable_page_ctor())
    assert u64s(pread(kpf, 40, 0)) == [1 << RESERVED, 0, 0, 0, 1 << PGTABLE]
    assert u64s(pread(kpf, 16, 5 * 8)) == [ANON_PAGE, ANON_PAGE]
    # free pages: BUDDY on every one, the first page of a chunk (PageBuddy) and the
    # rest (is_free_buddy_page()): PFN 100 of the split block 0, node 0's whole second
    # block (512-1023), 1025 next to node 1's page, node 1's whole block (1536-2047)
    assert u64s(pread(kpf, 8, 100 * 8)) == [1 << BUDDY]
    assert u64s(pread(kpf, 16, 512 * 8)) == [1 << BUDDY, 1 << BUDDY]
    assert u64s(pread(kpf, 8, 1025 * 8)) == [1 << BUDDY]
    assert u64s(pread(kpf, 24, 1535 * 8)) == [1 << BUDDY, 1 << BUDDY, 1 << BUDDY]
    assert u64s(pread(kpf, 8, 2047 * 8)) == [1 << BUDDY]
    assert u64s(pread(kpf, 8, 1024 * 8)) == [ANON_PAGE]
    assert pread(kpf, 8, 2048 * 8) == b""                   # at the last PFN's end
    bitmap = m.sys("kernel/mm/page_idle/bitmap")
    fd = os.open(bitmap, os.O_RDWR)
    try:
        # marking PFNs 0-63 idle clears their pages' accessed bits first
        # (page_idle_clear_pte_refs); page tables and free pages are not LRU pages
        os.pwrite(fd, struct.pack("<Q", (1 << 64) - 1), 0)
        assert u64s(os.pread(fd, 8, 0)) == [(1 << 5) | (1 << 6)]
        assert u64s(pread(kpf, 8, 6 * 8)) == [ANON_PAGE | 1 << IDLE]
        with Client(m.path) as c:
            c.call("touch", pid=4300001, addr=BASE)          # page 5 is young again
        assert u64s(os.pread(fd, 8, 0)) == [1 << 6]
        with pytest.raises(OSError) as e:
            os.pread(fd, 4, 0)
        assert e.value.errno == errno.EINVAL
        assert os.pread(fd, 8, 32 * 8) == b""               # PFN 2048 and up: nothing
    finally:
        os.close(fd)


# page_mapcount() of typed pages in 4.20: page_type (-1 less the type's bit) + 1
BUDDY_COUNT = (1 << 64) - 128                  # PG_buddy 0x80: 0xffffff7f + 1
TABLE_COUNT = (1 << 64) - 1024                 # PG_table 0x400: 0xfffffbff + 1


def test_kpagecount(m):
    """page_mapcount() per PFN: the reserved PFN 0 and the upper tables 0, the PTE
    table and each free buddy chunk's first page their page_type's negative count
    (4.20 skips only PageSlab), a mapped page 1, the rest of a free chunk 0; past the
    end nothing."""
    kpc = m.proc_path("kpagecount")
    assert os.stat(kpc).st_mode & 0o777 == 0o400
    assert u64s(pread(kpc, 56, 0)) == [0, 0, 0, 0, TABLE_COUNT, 1, 1]
    assert u64s(pread(kpc, 16, 7 * 8)) == [BUDDY_COUNT, BUDDY_COUNT]
    assert u64s(pread(kpc, 16, 512 * 8)) == [BUDDY_COUNT, 0]
    assert u64s(pread(kpc, 24, 1023 * 8)) == [0, 1, BUDDY_COUNT]  # 1023: inside block 512's chunk
    assert u64s(pread(kpc, 24, 1535 * 8)) == [BUDDY_COUNT, BUDDY_COUNT, 0]
    assert pread(kpc, 8, 2048 * 8) == b""


def test_the_runners_proc_shows_the_emulated_kpage_files_and_hides_the_hosts_kpagecgroup(m):
    """Under `fakeproc run` /proc is procview: kpageflags and kpagecount are the emulated
    ones, and the host's kpagecgroup (host PFNs' cgroups) is not mixed in."""
    view = m.path / "procview"
    names = os.listdir(view)
    assert "kpagecount" in names and "kpageflags" in names and "kpagecgroup" not in names
    assert not os.path.lexists(view / "kpagecgroup")
    assert not os.path.islink(view / "kpagecount")
    assert u64s(pread(view / "kpagecount", 8, 5 * 8)) == [1]


@pytest.mark.parametrize("name", ["kpagecount", "kpageflags"])
def test_kpage_reads_cut_the_count_before_checking_it(m, name):
    """4.20's readers cut the count to what is left before max_pfn (2048 here), then
    demand 8-byte multiples; a position past the end wraps the unsigned cut, so the
    read is whole and reports holes (no page: count 0, flags KPF_NOPAGE)."""
    path = m.proc_path(name)
    hole = 0 if name == "kpagecount" else 1 << NOPAGE
    assert pread(path, 4, 2048 * 8) == b""              # cut to 0 first: no EINVAL
    assert len(pread(path, 12, 2047 * 8)) == 8          # cut to 8
    assert u64s(pread(path, 16, 2050 * 8)) == [hole, hole]  # (2049 is the zero page)
    assert u64s(pread(path, 8, 1 << 40)) == [hole]
    for n, off in ((4, 0), (8, 4), (4, 2050 * 8), (12, 2046 * 8)):
        with pytest.raises(OSError) as e:
            pread(path, n, off)
        assert e.value.errno == errno.EINVAL, (n, off)


FORKED = small_machine(dram="8MiB", upstream=True) + """
[[process]]
pid = 10
name = "parent"
[[process.vma]]
start = 0x7f0000000000
size = "4KiB"
pages = "1 accessed"
[[process.vma]]
start = 0x7f0000200000
size = "2MiB"
thp = true
pages = "1 thp-accessed"
[[process]]
pid = 11
name = "child"
fork_of = 10
"""


def test_kpagecount_counts_every_mapping_after_fork():
    """A page shared copy-on-write counts both mappings; a THP's head and tails each
    count the PMDs mapping it (__page_mapcount()); a store in the child copies, and
    each copy counts 1 again."""
    with mounted(FORKED) as mnt, Client(mnt.path) as c:
        def pfn(pid: int, addr: int) -> int:
            return u64s(pread(mnt.proc_path(f"{pid}/pagemap"), 8, addr // 4096 * 8))[0] & ((1 << 55) - 1)

        def count(p: int) -> int:
            return u64s(pread(mnt.proc_path("kpagecount"), 8, p * 8))[0]

        page, thp = pfn(10, BASE), pfn(10, BASE + (2 << 20))
        assert (pfn(11, BASE), pfn(11, BASE + (2 << 20))) == (page, thp) and thp % 512 == 0
        assert [count(p) for p in (page, thp, thp + 1, thp + 511)] == [2, 2, 2, 2]
        c.touch(11, BASE, write=True)
        c.touch(11, BASE + (2 << 20) + 4096, write=True)
        copy, thp_copy = pfn(11, BASE), pfn(11, BASE + (2 << 20))
        assert copy != page and thp_copy != thp
        assert [count(p) for p in (page, copy, thp, thp + 511, thp_copy, thp_copy + 1)] == [1] * 6


ZEROS = small_machine(dram="8MiB", upstream=True) + """
[[process]]
pid = 12
name = "reader"
[[process.vma]]
start = 0x7f0000000000
size = "4KiB"
[[process.vma]]
start = 0x7f0000200000
size = "2MiB"
thp = true
"""


def test_kpageflags_of_the_zero_pages():
    """A load of untouched private memory maps the zero page (a reserved kernel page:
    ZERO_PAGE, RESERVED) or the huge zero page (compound, ZERO_PAGE and THP, not
    anonymous, off the LRU); they lie past the RAM here, readable since 4.20 does not
    cut reads that start past the end. Neither counts a mapping."""
    ZERO, HEAD = 24, 15
    with mounted(ZEROS) as mnt, Client(mnt.path) as c:
        c.touch(12, BASE)
        c.touch(12, BASE + (2 << 20) + 8192)
        pagemap = mnt.proc_path("12/pagemap")
        zero = u64s(pread(pagemap, 8, BASE // 4096 * 8))[0] & ((1 << 55) - 1)
        huge = u64s(pread(pagemap, 8, (BASE + (2 << 20)) // 4096 * 8))[0] & ((1 << 55) - 1)
        assert zero >= 2048 and huge % 512 == 0 and huge > zero
        kpf, kpc = mnt.proc_path("kpageflags"), mnt.proc_path("kpagecount")
        assert u64s(pread(kpf, 8, zero * 8)) == [1 << ZERO | 1 << RESERVED]
        assert u64s(pread(kpf, 24, huge * 8)) == [1 << HEAD | 1 << THP | 1 << ZERO] + \
            [1 << TAIL | 1 << THP | 1 << ZERO] * 2
        assert u64s(pread(kpf, 8, (huge + 512) * 8)) == [1 << NOPAGE]
        assert u64s(pread(kpc, 8, zero * 8)) == u64s(pread(kpc, 8, huge * 8)) == [0]


def test_reading_the_bitmap_looks_only_at_pages_marked_idle(m):
    """page_idle_bitmap_read() clears references only of a page marked idle: a reader
    of the bitmap must not take accessed bits from the idle_pages scans (nor reclaim)."""
    with Client(m.path) as c:
        pid = c.call("spawn", name="twin", vma=[{"start": BASE, "size": "8KiB",
                                                  "pages": "2 accessed"}])["pid"]
        try:
            fd = os.open(m.sys("kernel/mm/page_idle/bitmap"), os.O_RDONLY)
            try:
                os.pread(fd, 256, 0)  # every PFN: none of these two was marked
            finally:
                os.close(fd)
            idle = os.open(m.proc_path(f"{pid}/idle_pages"), os.O_RDONLY)
            try:  # both still accessed: one PTE_ACCESSED unit of 2
                assert os.pread(idle, 4096, BASE)[9:10] == b"\x02"
            finally:
                os.close(idle)
        finally:
            c.call("kill", pid=pid)


BIG = MACHINE.replace('size = "4MiB"\ncpus', 'size = "256MiB"\ncpus')


def test_a_bitmap_read_or_write_moves_at_most_a_page():
    """kernfs hands a bin attribute at most PAGE_SIZE per read(2) or write(2); a write
    takes the words up to the last PFN. 256 + 4 MiB = 66560 PFNs: 8320 bytes."""
    with mounted(BIG) as mnt:
        fd = os.open(mnt.sys("kernel/mm/page_idle/bitmap"), os.O_RDWR)
        try:
            assert len(os.pread(fd, 1 << 16, 0)) == 4096
            assert os.pwrite(fd, bytes(1 << 16), 0) == 4096
            assert len(os.pread(fd, 4096, 8192)) == 128       # the last 1024 PFNs
            assert os.pwrite(fd, bytes(16), 8312) == 8        # one word left
            with pytest.raises(OSError) as e:
                os.pwrite(fd, bytes(8), 8320)
            assert e.value.errno == errno.ENXIO
        finally:
            os.close(fd)


def test_absent_on_an_rfc_machine():
    with mounted(MACHINE.replace("upstream = true", "upstream = false")) as mnt:
        for rel in ("sys/kernel", "sys/devices/virtual", "proc/kpageflags", "proc/kpagecount",
                    "proc/4300001/pagemap"):
            assert not (mnt.path / rel).exists(), rel


TIERING = """
distances = [[10, 17], [17, 10]]
[machine]
upstream = true
numa_balancing = 2
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "64MiB"
[[process]]
pid = 4300001
name = "app"
[[process.vma]]
start = 0x7f0000000000
size = "8MiB"
pages = "2048 idle@1"
[process.workload]
pattern = "hotcold"
hot = 0.05
hot_access = 0.95
rate = 20000
"""


def test_numa_balancing_mode_2_promotes_hot_pmem_pages():
    from fakeproc.machine import load
    from fakeproc.kernel import vmstat
    k = load(TIERING)
    t = k.task(4300001)
    k.advance(1.0)
    c = vmstat.global_counters(k)
    hot = range(102)  # 5% of 2048 pages
    on_dram = sum(1 for i in hot if k.page_node(t, BASE + i * 4096) == 0)
    assert on_dram > 90                              # the hot set moved to DRAM
    assert c["pgpromote_success"] >= on_dram
    assert c["pgpromote_candidate"] >= c["pgpromote_success"] > 0
    assert c["numa_pages_migrated"] == c["pgpromote_success"]
    assert k.check() == []
    k2 = load(TIERING.replace("numa_balancing = 2", "numa_balancing = 0"))
    k2.advance(1.0)
    assert vmstat.global_counters(k2)["pgpromote_success"] == 0


def test_numa_balancing_file_and_upstream_vmstat():
    with mounted(TIERING) as mnt:
        knob = mnt.proc_path("sys/kernel/numa_balancing")
        assert knob.read_bytes() == b"2\n"
        knob.write_bytes(b"3\n")
        assert knob.read_bytes() == b"3\n"
        with pytest.raises(OSError) as e:
            knob.write_bytes(b"7\n")
        assert e.value.errno == errno.EINVAL
        lines = mnt.read("proc/vmstat").decode().splitlines()
        assert [l.split()[0] for l in lines[-4:]] == ["pgpromote_success", "pgpromote_candidate",
                                                      "pgdemote_kswapd", "pgdemote_direct"]


def test_numa_balancing_parses_as_proc_dointvec_minmax(m):
    """Vectors from 4.20's __do_proc_dointvec() and proc_get_long(): base 0, a space, tab
    or newline after the number, the count less what is left over; nothing at a
    position past 0 (a read: EOF; a write: ignored, its count returned)."""
    path = m.proc_path("sys/kernel/numa_balancing")
    fd = os.open(path, os.O_RDWR)
    try:
        for data, ret, value in ((b"0x2", 3, b"2"), (b"1 2", 2, b"1"), (b"  3\n\t ", 6, b"3"),
                                 (b"-0", 2, b"0"), (b"18446744073709551618\n", 21, b"2")):
            assert os.pwrite(fd, data, 0) == ret, data
            assert os.pread(fd, 8, 0) == value + b"\n", data
        for data in (b"+2", b"0_1", b"1\r", b"010", b"4", b"-1", b"  ", b"1\0"):
            with pytest.raises(OSError) as e:
                os.pwrite(fd, data, 0)
            assert e.value.errno == errno.EINVAL, data
        assert os.pwrite(fd, b"0", 1) == 1 and os.pread(fd, 8, 0) == b"2\n"
        assert (os.pread(fd, 1, 0), os.pread(fd, 8, 1)) == (b"2", b"")
    finally:
        os.close(fd)


def test_a_page_at_most_moves_through_kernfs(m):
    """kernfs hands a store and a bin attribute at most PAGE_SIZE of a call, and cuts the
    count before page_idle checks that it is a multiple of 8."""
    demotion = m.sys("kernel/mm/numa/demotion_enabled")
    fd = os.open(demotion, os.O_WRONLY)
    try:
        assert os.write(fd, b"true" + b" " * 4996) == 4096
    finally:
        os.close(fd)
    fd = os.open(m.sys("kernel/mm/page_idle/bitmap"), os.O_RDWR)
    try:
        assert len(os.pread(fd, 4100, 0)) == 256  # 2048 PFNs: 32 words, cut to them
        with pytest.raises(OSError) as e:
            os.pread(fd, 4, 0)
        assert e.value.errno == errno.EINVAL
    finally:
        os.close(fd)


def test_writable_files_take_echo_and_truncate(m):
    # kernfs_iop_setattr and proc_sys_setattr accept and ignore a size; sh's
    # `echo X > file` opens with O_TRUNC
    demotion = m.sys("kernel/mm/numa/demotion_enabled")
    balancing = m.proc_path("sys/kernel/numa_balancing")
    bitmap = m.sys("kernel/mm/page_idle/bitmap")
    r = subprocess.run(["sh", "-c", f"echo false > {demotion} && echo 2 > {balancing}"],
                       capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stderr) == (0, "")
    assert (demotion.read_bytes(), balancing.read_bytes()) == (b"false\n", b"2\n")
    for path in (demotion, balancing, bitmap):
        os.truncate(path, 0)
    assert (demotion.read_bytes(), balancing.read_bytes()) == (b"false\n", b"2\n")
    fd = os.open(bitmap, os.O_RDWR | os.O_TRUNC)
    try:
        assert os.pwrite(fd, (1 << 5).to_bytes(8, "little"), 0) == 8  # PFN 5: an LRU page
        assert u64s(os.pread(fd, 8, 0))[0] & 1 << 5  # idle now (the machine is paused)
    finally:
        os.close(fd)
    assert os.stat(bitmap).st_size == 0  # page_idle_attr: a bin_attribute of size 0
    demotion.write_bytes(b"true\n")
    balancing.write_bytes(b"0\n")


# an upstream machine of a 16 MiB DRAM node and a 16 MiB PMEM node
TWO_TIERS = """
[machine]
upstream = true
[[node]]
type = "dram"
size = "16MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "16MiB"
"""
TWINS = TWO_TIERS + """
[[process]]
pid = 600
name = "plain"
[[process.vma]]
start = 0x7f0000000000
size = "24KiB"
pages = "6 idle"
[[process]]
pid = 601
name = "watched"
[[process.vma]]
start = 0x7f0000000000
size = "24KiB"
pages = "6 idle"
"""


def test_the_accessed_bit_page_idle_takes_still_counts_for_reclaim():
    """page_idle_clear_pte_refs_one() keeps a young PTE it clears as PG_young, and
    page_referenced() counts it: marking pages idle must not make reclaim demote pages
    that were just used. Two twins, pages 0-3 used; only 601's are then marked idle;
    reclaim keeps the used pages of both on DRAM (node 0), demotes the rest."""
    from fakeproc.kernel import migrate
    k = load(TWINS)
    k.age_active(0)  # everything to the inactive list, references cleared
    for pid in (600, 601):
        for i in range(4):
            k.touch(k.task(pid), BASE + i * 4096)
    pfns = [(k.entry(k.task(601), BASE + i * 4096)[1] >> 12) & 0xFFFFFFFFFF for i in range(6)]
    for pfn in pfns:
        k.page_idle_write(pfn // 64 * 64, struct.pack("<Q", 1 << pfn % 64))
    k.shrink_node(0, 100000)
    nodes = {}
    for pid in (600, 601):
        status = [0] * 6
        migrate.move_pages(k, pid, [BASE + i * 4096 for i in range(6)], None, status, 0)
        nodes[pid] = status
    assert nodes == {600: [0, 0, 0, 0, 1, 1], 601: [0, 0, 0, 0, 1, 1]}
    assert k.check() == []


def test_page_idle_sees_and_clears_guest_accesses():
    """ptep_clear_young_notify() reaches KVM (kvm_age_hva): marking a VM's host pages
    idle clears their EPT accessed bits too, and a guest access afterwards ends the
    mark. QEMU's slot 0: 6 guest pages (3 accessed, 2 idle, 1 dirty) at gpa 0."""
    from fakeproc.kernel import kvm
    from test_kvm import QEMU, RAM
    k = load(QEMU.replace("[[node]]", "[machine]\nupstream = true\n[[node]]", 1))
    t = k.task(500)
    pfns = [(k.entry(t, RAM + i * 4096)[1] >> 12) & 0xFFFFFFFFFF for i in range(6)]
    for pfn in pfns:
        k.page_idle_write(pfn // 64 * 64, struct.pack("<Q", 1 << pfn % 64))
    assert not kvm.ept_entry(k, t, 0)[1] & lib.FP_EPT_ACCESSED

    def idle(pfn: int) -> bool:
        return bool(struct.unpack("<Q", k.page_idle_read(pfn // 64 * 64, 1))[0] >> pfn % 64 & 1)
    assert [idle(p) for p in pfns] == [True] * 6
    kvm.guest_touch(k, t, 0x1000)  # the guest reads its page 1
    assert [idle(p) for p in pfns] == [True, False, True, True, True, True]


FLAGS = TWO_TIERS + """
[[process]]
pid = 700
name = "flags"
[[process.vma]]
start = 0x7f0000000000
size = "8KiB"
pages = "2 accessed"
[[process.vma]]
start = 0x7f0000200000
size = "8KiB"
perms = "rw-p"
path = "/data/file"
pages = "1 idle"
[[process.vma]]
start = 0x7f0000400000
size = "2MiB"
thp = true
pages = "1 thp-accessed"
"""
FILE_VA, THP_VA = 0x7F0000200000, 0x7F0000400000
REFERENCED, THP, TAIL = 2, 22, 16


def _pfn(k, addr: int) -> int:
    return (k.entry(k.task(700), addr)[1] >> 12) & 0xFFFFFFFFFF


def _mark_idle(k, pfn: int) -> None:
    k.page_idle_write(pfn // 64 * 64, struct.pack("<Q", 1 << pfn % 64))


def _kpf(k, pfn: int) -> int:
    return struct.unpack("<Q", k.kpageflags(pfn, 1))[0]


def test_page_idle_young_counts_once_per_mapping_and_smaps_sees_it():
    """page_referenced_one(): a mapping is referenced once whatever made it young
    (its PTE, PG_young), so a file page touched, marked idle and touched again is
    kept (PG_referenced set), not activated, as without the mark (page_check_references:
    one reference, PageReferenced clear). smaps' Referenced counts PG_young."""
    k = load(FLAGS)
    t = k.task(700)
    # anon page 0: its accessed bit taken by page_idle, kept as PG_young: still
    # Referenced, as page 1 whose accessed bit is set
    _mark_idle(k, _pfn(k, BASE))
    assert k.range_stats(t, BASE, BASE + 8192)["referenced"] == 2
    k.touch(t, FILE_VA)
    pfn = _pfn(k, FILE_VA)
    _mark_idle(k, pfn)
    k.touch(t, FILE_VA)
    k.shrink_node(0, 100000)
    assert _kpf(k, pfn) & (1 << ACTIVE | 1 << REFERENCED) == 1 << REFERENCED


def test_a_reference_ends_the_idle_mark_and_migration_keeps_idle_and_young():
    """Reclaim's page_referenced() clears PG_idle on a reference (the bitmap then says
    not idle, though the accessed bit is gone); migrate_page_states() copies PG_idle
    and PG_young to the new page."""
    k = load(FLAGS)
    t = k.task(700)
    a, b = _pfn(k, BASE), _pfn(k, BASE + 4096)
    _mark_idle(k, a)
    _mark_idle(k, b)
    k.touch(t, BASE)
    k.age_active(0)  # anon pages start active: aging runs page_referenced() on them
    word = struct.unpack("<Q", k.page_idle_read(a // 64 * 64, 1))[0]
    assert (word >> a % 64 & 1, word >> b % 64 & 1) == (0, 1)
    # page 1: touched, then marked idle: idle and young (page_idle took its bit); move it
    k.touch(t, BASE + 4096)
    _mark_idle(k, b)
    assert k.range_stats(t, BASE + 4096, BASE + 8192)["referenced"] == 1
    status = [0]
    from fakeproc.kernel import migrate
    assert migrate.move_pages(k, 700, [BASE + 4096], [1], status, 2) == 0 and status == [1]
    new = _pfn(k, BASE + 4096)
    assert new != b and _kpf(k, new) & 1 << IDLE
    assert k.range_stats(t, BASE + 4096, BASE + 8192)["referenced"] == 1  # PG_young kept
    assert k.check() == []


def test_a_thp_tail_shows_only_its_own_flags():
    """stable_page_flags() of a tail: its own page->flags hold none of the head's; the
    compound page gives MMAP and ANON, and THP; the head shows the rest."""
    k = load(FLAGS)
    head = _pfn(k, THP_VA)
    assert head % 512 == 0
    _mark_idle(k, head)
    assert _kpf(k, head + 5) == (1 << TAIL | 1 << THP | 1 << MMAP | 1 << ANON)
    assert _kpf(k, head) & (1 << IDLE | 1 << UPTODATE | 1 << LRU) == 1 << IDLE | 1 << UPTODATE | 1 << LRU


SPECIAL = TWO_TIERS + """
[[process]]
pid = 800
name = "special"
[[process.vma]]
start = 0x7f0000600000
size = "8KiB"
perms = "r--p"
kind = "vvar"
pages = "1 accessed"
[[process.vma]]
start = 0x7f0000800000
size = "8KiB"
perms = "r-xp"
kind = "vdso"
pages = "1 accessed"
"""


def test_pagemap_of_vvar_and_vdso():
    """[vvar] is VM_PFNMAP: walk_page_test() hands it to pagemap_pte_hole(), so its
    mapped frame reads as a soft-dirty hole; a [vdso] page is present, a kernel page
    (not anonymous: PM_FILE) that every process maps (never PM_MMAP_EXCLUSIVE)."""
    k = load(SPECIAL)
    t = k.task(800)
    vvar = struct.unpack("<2Q", k.pagemap(t, 0x7F0000600000, 2))
    assert vvar == (1 << 55, 1 << 55)
    vdso = struct.unpack("<2Q", k.pagemap(t, 0x7F0000800000, 2))
    pfn = (k.entry(t, 0x7F0000800000)[1] >> 12) & 0xFFFFFFFFFF
    assert vdso == (1 << 63 | 1 << 61 | 1 << 55 | pfn, 1 << 55)


def _kpc(k, pfn: int) -> int:
    return struct.unpack("<Q", k.kpagecount(pfn, 1))[0]


def test_kpagecount_marks_the_buddy_allocators_chunks():
    """PageBuddy (kpagecount's -128) marks the first page of each free chunk, up to order
    10 (4 MiB, MAX_ORDER 11 on x86_64), by hand: a fresh 8 MiB node is two order-10
    chunks (PFNs 0 and 1024), but PFN 0 is reserved at boot: that splits block 0 (its
    free pages are order-0 chunks, split blocks never merge back) and leaves block 1
    (512) an order-9 chunk of its own; a THP in block 2 leaves block 3 (1536) alone. A node that starts
    on an odd block (node 1 at PFN 512, after a 2 MiB node 0) cannot merge its first
    block with PFN 0. kpageflags shows BUDDY on every free page meanwhile."""
    from fakeproc.kernel.kernel import Kernel, NodeConfig
    from fakeproc.kernel.mm import Vma

    buddy = BUDDY_COUNT
    k = Kernel([NodeConfig(0, "dram", 2048, (0,))], [[10]])
    assert [_kpc(k, p) for p in (0, 1, 2, 512, 513, 1024, 1536)] == [0, buddy, buddy, buddy, 0, buddy, 0]
    t = k.spawn(10, "t", cpu=0)
    k.add_vma(t, Vma(BASE, BASE + (4 << 20), thp=True))
    k.add_vma(t, Vma(BASE + (4 << 20), BASE + (4 << 20) + 4096))
    k.touch(t, BASE + (4 << 20), write=True)  # PGD, PUD, PMD, PTE tables and the page
    # PFNs 1-5 in use (the tables, the page), 6-511 free order-0 chunks
    assert [_kpc(k, p) for p in (5, 6, 511, 512, 513)] == [1, buddy, buddy, buddy, 0]
    k.touch(t, BASE, write=True)  # a THP: the next whole block from the stack, block 1
    assert k.entry(t, BASE)[1] >> 12 & 0xFFFFFFFFFF == 512
    k.touch(t, BASE + (2 << 20), write=True)  # and block 2
    assert k.entry(t, BASE + (2 << 20))[1] >> 12 & 0xFFFFFFFFFF == 1024
    assert [_kpc(k, p) for p in (1536, 1537)] == [buddy, 0]
    two = Kernel([NodeConfig(0, "dram", 512, (0,)), NodeConfig(1, "dram", 1536, (1,))],
                 [[10, 20], [20, 10]])
    assert [_kpc(two, p) for p in (0, 1, 512, 1024, 1536)] == [0, buddy, buddy, buddy, 0]
    assert {struct.unpack("<Q", two.kpageflags(p, 1))[0] for p in range(1, 2048)} == {1 << BUDDY}


SPLIT = MACHINE.replace('size = "4MiB"\ncpus', 'size = "512MiB"\ncpus').replace(
    'type = "pmem"\nsize = "4MiB"', 'type = "pmem"\nsize = "512MiB"')  # 262144 PFNs: 2 MiB of entries


@pytest.fixture(scope="module")
def kpf(tmp_path_factory):
    out = tmp_path_factory.mktemp("kpf") / "kpf"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(pathlib.Path(__file__).parent / "c" / "kpf.c")],
                   check=True)
    return str(out)


def test_a_read_fuse_splits_is_checked_as_one_call(kpf):
    """FUSE brings a read of more than one request (1 MiB, less the buffer's offset in
    its page) as several READs, cut at any byte when the buffer is not 8-byte aligned.
    The kernel checks the read(2) as one call: the same bytes whatever the buffer's
    address (2 MiB into a buffer at page offset 0, 4 or 100: pieces of 1 MiB - 4, 1 MiB
    and 4 bytes), and EINVAL for a count that is not a multiple of 8 (1 MiB + 4: it
    returned the first 1 MiB), as for a small one."""
    with mounted(SPLIT) as m:
        def run(path, *args: object) -> str:
            return subprocess.run([kpf, str(path), *map(str, args)], capture_output=True, text=True,
                                  check=True).stdout.strip()
        for name in ("kpageflags", "kpagecount"):
            path = m.proc_path(name)
            aligned = run(path, 0, 2 << 20)
            assert aligned.startswith(f"ret={2 << 20} errno=0")
            assert run(path, 4, 2 << 20) == aligned and run(path, 100, 2 << 20) == aligned
            assert run(path, 0, (1 << 20) + 4) == "ret=-1 errno=22 sum=0"
            assert run(path, 0, 12) == "ret=-1 errno=22 sum=0"
        pagemap = m.proc_path("4300001/pagemap")
        at = 0x7F0000000000 // 4096 * 8 - (1 << 20)   # 1 MiB of entries before the VMA's
        aligned = run(pagemap, 0, 2 << 20, at)
        assert aligned.startswith(f"ret={2 << 20} errno=0") and run(pagemap, 4, 2 << 20, at) == aligned
        assert run(pagemap, 0, (1 << 20) + 4, at) == "ret=-1 errno=22 sum=0"
