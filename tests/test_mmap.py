"""mmap, munmap and madvise of emulated processes (kernel/mmap.py) through the control
socket, read back through the mount. Expected values are worked out by hand from
4.20's mm/mmap.c and mm/madvise.c: where a new mapping lands, which VMAs join or
split, which page tables free_pgtables() frees, what a partial unmap of a THP does."""
from __future__ import annotations

import errno
import struct

import pytest

from fakeproc.ctl.client import Client
from machines import small_machine
from mountutil import mounted
from test_clear_refs import smaps_field
from test_zero_page import status, vmstat

pytestmark = pytest.mark.fuse
BASE = 0x7F0000000000
MIB = 1 << 20
# one 4-page VMA (PGD, PUD, PMD and PTE tables: PFNs 1-4 after the reserved PFN 0,
# its pages 5-8), a THP VMA, and the stack, far above mmap_base (0x7ffff7fff000)
MACHINE = small_machine(dram="16MiB", upstream=True) + """
[[process]]
pid = 10
name = "app"
[[process.vma]]
start = 0x7f0000000000
size = "16KiB"
pages = "4 accessed"
[[process.vma]]
start = 0x7f0000200000
size = "2MiB"
thp = true
pages = "1 thp-accessed"
[[process.vma]]
start = 0x7ffffffde000
size = "132KiB"
kind = "stack"
"""


@pytest.fixture()
def m():
    with mounted(MACHINE) as mnt:
        yield mnt


def page_tables(kb: int) -> str:
    return f"Node 0 {'PageTables:':<16}{kb:8d} kB"


def maps(m, pid: int = 10) -> list[str]:
    return [line.split()[0] for line in m.read(f"proc/{pid}/maps").decode().splitlines()][:-1]  # no [vsyscall]


def test_mmap_lands_below_mmap_base_and_joins_its_neighbour(m):
    """unmapped_area_topdown(): the highest gap below mmap_base (TASK_SIZE - 128 MiB,
    no randomisation) that holds the length; a second anonymous mapping ends where the
    first starts and has its flags, so vma_merge() makes one VMA of them."""
    with Client(m.path) as c:
        assert c.call("mmap", pid=10, length=8192)["ret"] == 0x7FFFF7FFD000
        line = next(x for x in m.read("proc/10/maps").decode().splitlines() if x.startswith("7ffff7ffd000"))
        assert line == "7ffff7ffd000-7ffff7fff000 rw-p 00000000 00:00 0 "
        assert c.call("mmap", pid=10, length=4096)["ret"] == 0x7FFFF7FFC000
        assert maps(m)[-2:] == ["7ffff7ffc000-7ffff7fff000", "7ffffffde000-7ffffffff000"]
        # a hint where there is room is taken as it is (rounded down to a page)
        assert c.call("mmap", pid=10, length=4096, addr=0x600000000123)["ret"] == 0x600000000000
        # a hint inside a mapping is not: the next gap down from mmap_base
        assert c.call("mmap", pid=10, length=4096, addr=BASE + 4096)["ret"] == 0x7FFFF7FFB000
        # VmSize: 16 KiB + 2 MiB + 132 KiB, then + 12 KiB + 4 KiB + 4 KiB
        assert status(m, 10, "VmSize") == f"{16 + 2048 + 132 + 20} kB"
        assert c.call("mmap", pid=10, length=4096, addr=BASE, noreplace=True)["ret"] == -errno.EEXIST
        assert c.call("mmap", pid=10, length=0)["ret"] == -errno.EINVAL
        assert c.call("mmap", pid=10, length=4096, addr=BASE + 1, fixed=True)["ret"] == -errno.EINVAL
        assert c.call("mmap", pid=10, length=4096, perms="rw-s")["ret"] == -errno.EINVAL
        assert c.call("check")["problems"] == []


def test_munmap_splits_a_vma_and_a_fixed_mapping_joins_it_again(m):
    """munmap of the second page: two VMAs with one anon_vma (__split_vma()); the page
    is freed (RssAnon 4 pages + a THP less 4 kB). MAP_FIXED over the hole: the new
    range joins both halves (their anon_vma is the same), VmPeak keeps the most ever."""
    with Client(m.path) as c:
        before = status(m, 10, "VmSize")
        assert c.call("munmap", pid=10, addr=BASE + 4096, length=4096)["ret"] == 0
        assert maps(m)[:2] == ["7f0000000000-7f0000001000", "7f0000002000-7f0000004000"]
        assert status(m, 10, "RssAnon") == f"{3 * 4 + 2048} kB"
        assert status(m, 10, "VmPeak") == before
        assert status(m, 10, "VmSize") == f"{16 + 2048 + 132 - 4} kB"
        assert c.call("mmap", pid=10, length=4096, addr=BASE + 4096, fixed=True)["ret"] == BASE + 4096
        assert maps(m)[0] == "7f0000000000-7f0000004000"
        assert status(m, 10, "VmSize") == before
        # MAP_FIXED over mapped pages replaces them: the 3 pages left go too
        assert c.call("mmap", pid=10, length=16384, addr=BASE, fixed=True)["ret"] == BASE
        assert status(m, 10, "RssAnon") == "2048 kB"
        # unaligned start, nothing to unmap, a length of 0
        assert c.call("munmap", pid=10, addr=BASE + 1, length=4096)["ret"] == -errno.EINVAL
        assert c.call("munmap", pid=10, addr=BASE, length=0)["ret"] == -errno.EINVAL
        assert c.call("munmap", pid=10, addr=0x500000000000, length=4096)["ret"] == 0
        assert c.call("check")["problems"] == []


def test_munmap_frees_the_page_tables_no_mapping_needs(m):
    """free_pgtables() between the neighbours (floor: the previous VMA's end, ceiling:
    the next one's start), by hand. The 16 KiB VMA shares the PUD and PMD tables with
    the THP VMA 2 MiB above it, which needs its PMD entry (ceiling 0x7f0000200000):
    only the PTE table goes. Unmapping the THP VMA then leaves nothing below the stack
    in that 512 GiB: its deposited table, the PMD and the PUD table go too."""
    with Client(m.path) as c:
        # PUD, PMD, PTE, the THP's deposit; the stack has no pages, so no tables
        assert status(m, 10, "VmPTE") == "16 kB"
        node0 = "devices/system/node/node0/meminfo"
        assert page_tables(8) in m.read(f"sys/{node0}").decode()
        assert c.call("munmap", pid=10, addr=BASE, length=16384)["ret"] == 0
        assert status(m, 10, "VmPTE") == "12 kB"
        assert page_tables(4) in m.read(f"sys/{node0}").decode()
        kpf = m.proc_path("kpageflags")
        with open(kpf, "rb", buffering=0) as f:
            f.seek(4 * 8)
            assert struct.unpack("<Q", f.read(8))[0] == 1 << 10  # PFN 4, the PTE table: free (BUDDY)
        assert c.call("munmap", pid=10, addr=BASE + 2 * MIB, length=2 * MIB)["ret"] == 0
        assert status(m, 10, "VmPTE") == "0 kB" and status(m, 10, "RssAnon") == "0 kB"
        assert page_tables(0) in m.read(f"sys/{node0}").decode()


def test_madvise_dontneed_frees_pages_and_keeps_the_tables(m):
    with Client(m.path) as c:
        assert c.call("madvise", pid=10, addr=BASE, length=16384, advice="dontneed")["ret"] == 0
        assert status(m, 10, "RssAnon") == "2048 kB" and status(m, 10, "VmPTE") == "16 kB"
        assert maps(m)[0] == "7f0000000000-7f0000004000"
        # the next touch faults a new page in
        faults = vmstat(m)["pgfault"]
        c.call("touch", pid=10, addr=BASE, write=True)
        assert vmstat(m)["pgfault"] == faults + 1 and status(m, 10, "RssAnon") == "2052 kB"
        # a hole in the range: the mapped parts are advised, then -ENOMEM
        assert c.call("madvise", pid=10, addr=BASE, length=MIB, advice="dontneed")["ret"] == -errno.ENOMEM
        assert status(m, 10, "RssAnon") == "2048 kB"
        assert c.call("madvise", pid=10, addr=BASE + 1, length=4096, advice="dontneed")["ret"] == -errno.EINVAL
        assert c.call("madvise", pid=10, addr=BASE, length=4096, advice=99)["ret"] == -errno.EINVAL
        assert c.call("madvise", pid=10, addr=BASE, length=0, advice="dontneed")["ret"] == 0


def test_a_partial_unmap_of_a_thp_splits_it(m):
    """4.20 splits the PMD (thp_split_pmd) and queues the page for a deferred split
    (thp_deferred_split_page); the emulation splits the page at once (thp_split_page):
    511 base pages stay mapped, AnonHugePages is 0."""
    with Client(m.path) as c:
        thp = 0x7F0000200000
        before = vmstat(m)
        assert c.call("munmap", pid=10, addr=thp + 3 * 4096, length=4096)["ret"] == 0
        after = vmstat(m)
        assert {k: after[k] - before[k] for k in ("thp_split_pmd", "thp_split_page",
                                                  "thp_deferred_split_page")} == \
            {"thp_split_pmd": 1, "thp_split_page": 1, "thp_deferred_split_page": 1}
        assert status(m, 10, "RssAnon") == f"{16 + 2044} kB"
        assert smaps_field(m, 10, thp, "AnonHugePages").strip() == "0 kB"
        assert smaps_field(m, 10, thp, "Rss").strip() == "12 kB"
        assert smaps_field(m, 10, thp + 4 * 4096, "Rss").strip() == f"{2048 - 16} kB"
        assert "AnonHugePages:         0 kB" in m.read("proc/meminfo").decode()
        assert c.call("check")["problems"] == []


def test_madvise_nohugepage_splits_off_a_vma_and_hugepage_joins_it_back(m):
    """madvise_behavior(): the advised range becomes a VMA of its own with VM_NOHUGEPAGE
    (smaps `nh`, no `hg`); MADV_HUGEPAGE on it makes its flags equal to its neighbours'
    again, and vma_merge() joins them (one anon_vma, split from one VMA)."""
    with Client(m.path) as c:
        assert c.call("mmap", pid=10, length=6 * MIB, addr=0x600000000000)["ret"] == 0x600000000000
        assert c.call("madvise", pid=10, addr=0x600000000000, length=6 * MIB, advice="hugepage")["ret"] == 0
        c.call("touch", pid=10, addr=0x600000000000, write=True)  # a THP: the VMA has an anon_vma
        mid = 0x600000000000 + 2 * MIB
        assert c.call("madvise", pid=10, addr=mid, length=2 * MIB, advice="nohugepage")["ret"] == 0
        assert [x for x in maps(m) if x.startswith("6000")] == [
            "600000000000-600000200000", "600000200000-600000400000", "600000400000-600000600000"]
        assert smaps_field(m, 10, mid, "VmFlags").split() == "rd wr mr mw me ac sd nh".split()
        assert smaps_field(m, 10, 0x600000000000, "VmFlags").split() == "rd wr mr mw me ac sd hg".split()
        assert c.call("madvise", pid=10, addr=mid, length=2 * MIB, advice="hugepage")["ret"] == 0
        assert [x for x in maps(m) if x.startswith("6000")] == ["600000000000-600000600000"]
        assert c.call("check")["problems"] == []


def test_a_workload_touches_only_what_is_still_mapped(m):
    """After a munmap the workload's regions are what is left of its VMAs: no page is
    faulted in where nothing is mapped (a program touching there would crash)."""
    with Client(m.path) as c:
        pid = c.call("spawn", name="w", vma=[{"start": BASE, "size": "4MiB"}],
                     workload={"pattern": "uniform", "rate": 20000, "write": 1.0})["pid"]
        c.call("clock", action="step", seconds=0.05)
        assert c.call("munmap", pid=pid, addr=BASE + 2 * MIB, length=2 * MIB)["ret"] == 0
        c.call("clock", action="step", seconds=0.5)
        assert maps(m, pid) == ["7f0000000000-7f0000200000"]
        # 10000 stores over 512 pages (a load would map the zero page): each page is hit
        assert smaps_field(m, pid, BASE, "Rss").strip() == "2048 kB"
        assert status(m, pid, "RssAnon") == "2048 kB"
        assert c.call("check")["problems"] == []


def test_munmap_in_a_forked_child_leaves_the_parents_pages(m):
    """The child's unmap takes its mappings only: the parent's pages count one
    mapping again (kpagecount 2 -> 1)."""
    with Client(m.path) as c:
        child = c.call("spawn", name="child", fork_of=10)["pid"]
        kpc = m.proc_path("kpagecount")

        def count(pfn: int) -> int:
            with open(kpc, "rb", buffering=0) as f:
                f.seek(pfn * 8)
                return struct.unpack("<Q", f.read(8))[0]

        assert [count(p) for p in (5, 6, 7, 8)] == [2, 2, 2, 2]
        assert c.call("munmap", pid=child, addr=BASE, length=8192)["ret"] == 0
        assert [count(p) for p in (5, 6, 7, 8)] == [1, 1, 2, 2]
        assert status(m, 10, "RssAnon") == f"{16 + 2048} kB"
        assert c.call("check")["problems"] == []


def test_the_command_line(m):
    import subprocess
    import sys
    cli = [sys.executable, "-m", "fakeproc", "ctl", "--mount", str(m.path)]
    r = subprocess.run([*cli, "mmap", "10", "8KiB"], capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, "0x7ffff7ffd000\n"), r.stderr
    r = subprocess.run([*cli, "madvise", "10", "0x7ffff7ffd000", "8192", "hugepage"], capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, ""), r.stderr
    r = subprocess.run([*cli, "munmap", "10", "0x7ffff7ffd001", "4096"], capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (1, "fakeproc ctl: munmap: EINVAL: Invalid argument\n")
    r = subprocess.run([*cli, "mmap", "10", "4KiB", "--addr", hex(BASE), "--noreplace", "--json"],
                       capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (1, '{"ret": -17}\n')


def test_a_vms_guest_memory_keeps_its_mappings_but_takes_a_balloon():
    """Deviation x: munmap, MAP_FIXED and MADV_(NO)HUGEPAGE over a memory slot's host
    memory are EBUSY; MADV_DONTNEED frees the host pages, and the EPT leaves with them
    (the MMU notifier), so the guest's next access faults a new page in."""
    from fakeproc.kernel import kvm, mmap
    from fakeproc.machine import load
    from test_kvm import QEMU

    k = load(QEMU)
    t = k.task(500)
    assert mmap.munmap(k, t, 0x7F0000000000, 4096) == -errno.EBUSY
    assert mmap.mmap(k, t, 4096, 0x7F0000001000, fixed=True) == -errno.EBUSY
    assert mmap.madvise(k, t, 0x7F0000000000, 4096, mmap.MADV_NOHUGEPAGE) == -errno.EBUSY
    assert mmap.munmap(k, t, 0x7F0000000000 + 48 * MIB, 4096) == 0  # outside both slots
    level, leaf = kvm.ept_entry(k, t, 0)
    assert leaf & 1 and level == 4
    rss = k.mm_counters(t)["rss_anon"]
    assert mmap.madvise(k, t, 0x7F0000000000, 4096, mmap.MADV_DONTNEED) == 0
    assert k.mm_counters(t)["rss_anon"] == rss - 1
    assert kvm.ept_entry(k, t, 0)[1] == 0  # the EPT leaf went with the host page
    kvm.guest_touch(k, t, 0)
    assert k.mm_counters(t)["rss_anon"] == rss and k.check() == []


def test_splitting_a_vma_across_a_thp_splits_it_and_keeps_its_pages(m):
    """vma_adjust_trans_huge(): a VMA split inside a huge PMD splits the PMD (here the
    page too, deviation v); every page stays mapped, now in two VMAs."""
    with Client(m.path) as c:
        thp = 0x7F0000200000
        before = vmstat(m)
        assert c.call("madvise", pid=10, addr=thp, length=4096, advice="nohugepage")["ret"] == 0
        after = vmstat(m)
        assert (after["thp_split_pmd"] - before["thp_split_pmd"],
                after["thp_split_page"] - before["thp_split_page"]) == (1, 1)
        assert maps(m)[1:3] == ["7f0000200000-7f0000201000", "7f0000201000-7f0000400000"]
        assert status(m, 10, "RssAnon") == f"{16 + 2048} kB"
        assert smaps_field(m, 10, thp, "Rss").strip() == "4 kB"
        assert smaps_field(m, 10, thp + 4096, "AnonHugePages").strip() == "0 kB"
        child = c.call("spawn", name="child", fork_of=10)["pid"]  # each PMD maps within one VMA
        assert status(m, child, "RssAnon") == f"{16 + 2048} kB"
        assert c.call("check")["problems"] == []
