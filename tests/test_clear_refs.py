"""/proc/PID/clear_refs (4.20 fs/proc/task_mmu.c clear_refs_write()) through the mount:
the parse and its errnos, types 1-3 (accessed bits, PG_referenced, PG_young: what
smaps' Referenced counts), 4 (soft-dirty tracking: pagemap bit 55, the write-protect
and its faults, VmFlags `sd`) and 5 (VmHWM). Every expected value is worked out by
hand from the 4.20 code named in each test."""
from __future__ import annotations

import errno
import os
import stat
import struct

import pytest

from fakeproc.ctl.client import Client
from fakeproc.kernel import kvm, task_mmu
from fakeproc.kernel.native import lib
from fakeproc.machine import load
from machines import small_machine
from mountutil import mounted
from test_kvm import QEMU as KVM_MACHINE

pytestmark = pytest.mark.fuse
BASE = 0x7F0000000000
FILE_VA = 0x7F0000100000
PAGE = 4096
MACHINE = small_machine(upstream=True, swap="16KiB")
# pagemap bits 55 and up (>> 55): 0x100 present, 0x80 swap, 0x40 file, 0x2 exclusive,
# 0x1 soft-dirty
PRESENT, PRESENT_SD, SWAP, SWAP_SD, HOLE_SD, ZERO = 0x102, 0x103, 0x80, 0x81, 0x1, 0x100


@pytest.fixture(scope="module")
def m():
    with mounted(MACHINE) as mnt:
        yield mnt


def spawn(c: Client, vmas: list[dict]) -> int:
    return c.call("spawn", name="app", vma=vmas)["pid"]


def write_refs(m, pid: int, data: bytes) -> int:
    fd = os.open(m.proc_path(f"{pid}/clear_refs"), os.O_WRONLY)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def pagemap_top(m, pid: int, addr: int, n: int) -> list[int]:
    """Bits 55-63 of n pagemap entries from addr."""
    fd = os.open(m.proc_path(f"{pid}/pagemap"), os.O_RDONLY)
    try:
        words = struct.unpack(f"<{n}Q", os.pread(fd, 8 * n, addr // PAGE * 8))
    finally:
        os.close(fd)
    return [w >> 55 for w in words]


def vmstat(m, key: str) -> int:
    return next(int(line.split()[1]) for line in m.read("proc/vmstat").decode().splitlines()
                if line.split()[0] == key)


def smaps_field(m, pid: int, vma_start: int, key: str) -> str:
    """The value of `key` in the smaps block of the VMA starting at vma_start."""
    block = m.read(f"proc/{pid}/smaps").decode().split(f"{vma_start:x}-", 1)[1]
    return next(line.split(":", 1)[1] for line in block.splitlines() if line.startswith(key + ":"))


def test_the_file_parses_as_clear_refs_write_does(m):
    """At most PROC_NUMBUF - 1 = 12 bytes are read, and that count is returned;
    strstrip() (isspace(), 0xa0 included) and kstrtoint(,10) parse them; types
    outside 1-5 are EINVAL; kstrtoint() overflow is ERANGE. Mode 0200, no .read."""
    with Client(m.path) as c:
        pid = spawn(c, [{"start": BASE, "size": "8KiB", "pages": "2 accessed"}])
        path = m.proc_path(f"{pid}/clear_refs")
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o200 and st.st_size == 0
        for data, got in ((b"1", 1), (b" 4 \n", 4), (b"+5", 2), (b"1\n\n", 3), (b"\xa02\xa0", 3),
                          (b"1\x009", 3), (b"3" + b" " * 20, 12), (b"0004", 4)):
            assert write_refs(m, pid, data) == got, data
        for data, err in ((b"0", errno.EINVAL), (b"6", errno.EINVAL), (b"-1", errno.EINVAL),
                          (b"4x", errno.EINVAL), (b"four", errno.EINVAL), (b"\n", errno.EINVAL),
                          (b"+-1", errno.EINVAL), (b"-+1", errno.EINVAL), (b"1 2", errno.EINVAL),
                          (b"2147483648", errno.ERANGE), (b"-2147483649", errno.ERANGE),
                          (b"99999999999", errno.ERANGE), (b"1" + b" " * 11 + b"9", 0)):
            if err:
                with pytest.raises(OSError) as e:
                    write_refs(m, pid, data)
                assert e.value.errno == err, data
            else:  # the 13th byte is never read: "1" and blanks
                assert write_refs(m, pid, data) == 12
        fd = os.open(path, os.O_RDONLY)  # root may open it (DAC override); reads fail
        try:
            with pytest.raises(OSError) as e:
                os.read(fd, 16)
            assert e.value.errno == errno.EINVAL
        finally:
            os.close(fd)
        fd = os.open(path, os.O_WRONLY)
        try:
            c.call("kill", pid=pid)
            with pytest.raises(OSError) as e:  # the type is parsed first: "7" is EINVAL
                os.write(fd, b"7")
            assert e.value.errno == errno.EINVAL
            with pytest.raises(OSError) as e:  # get_proc_task() fails
                os.write(fd, b"1")
            assert e.value.errno == errno.ESRCH
        finally:
            os.close(fd)


def test_soft_dirty_tracking(m):
    """clear_refs 4: VM_SOFTDIRTY leaves every VMA (pagemap_pte_hole() and
    pte_to_pagemap_entry() stop reporting it; smaps drops `sd`), every present entry
    is write-protected and cleaned (clear_soft_dirty()), every swap entry cleaned
    (pte_swp_clear_soft_dirty()). Afterwards only pte_mkdirty() sets it again: a store
    fault (wp_page_reuse(), do_anonymous_page()); a load, a read fault and a read
    swap-in do not (do_swap_page() keeps the swap entry's bit). Each store to a
    write-protected page is one more pgfault."""
    with Client(m.path) as c:
        pid = spawn(c, [{"start": BASE, "size": "24KiB",
                         "pages": "1 accessed, 1 dirty, 1 idle, 1 swap"}])
        try:
            assert pagemap_top(m, pid, BASE, 7) == [PRESENT_SD] * 3 + [SWAP_SD, HOLE_SD, HOLE_SD, 0]
            assert smaps_field(m, pid, BASE, "VmFlags") == " rd wr mr mw me ac sd "
            assert write_refs(m, pid, b"4\n") == 2
            assert pagemap_top(m, pid, BASE, 7) == [PRESENT] * 3 + [SWAP, 0, 0, 0]
            assert smaps_field(m, pid, BASE, "VmFlags") == " rd wr mr mw me ac "

            def touch(page: int, write: bool, faults: int, majors: int = 0) -> None:
                pf, maj = vmstat(m, "pgfault"), vmstat(m, "pgmajfault")
                c.call("touch", pid=pid, addr=BASE + page * PAGE, write=write)
                assert (vmstat(m, "pgfault") - pf, vmstat(m, "pgmajfault") - maj) == (faults, majors)

            touch(2, True, 1)    # a store to a write-protected page: reused, soft-dirty
            touch(0, False, 0)   # a load: no fault, no bit
            touch(1, False, 0)   # nor on the page that was dirty before
            touch(4, True, 1)    # a store fault on an empty entry
            touch(5, False, 1)   # a load fault: the zero page, clean, not exclusive
            assert pagemap_top(m, pid, BASE, 6) == [PRESENT, PRESENT, PRESENT_SD, SWAP, PRESENT_SD,
                                                    ZERO]
            touch(5, True, 1)    # then a store: a write-protect fault, the zero page's copy
            touch(5, True, 0)    # writable now: the MMU sets the dirty bit alone
            touch(3, False, 1, 1)  # a read swap-in keeps the swap entry's clean bit
            assert pagemap_top(m, pid, BASE, 6) == [PRESENT, PRESENT, PRESENT_SD, PRESENT,
                                                    PRESENT_SD, PRESENT_SD]
            # tracking again: everything clean; the read-only page stays read-only
            write_refs(m, pid, b"4")
            assert pagemap_top(m, pid, BASE, 6) == [PRESENT] * 6
            touch(2, True, 1)
            touch(3, True, 1)
            assert pagemap_top(m, pid, BASE, 6) == [PRESENT, PRESENT, PRESENT_SD, PRESENT_SD,
                                                    PRESENT, PRESENT]
            assert c.call("check")["problems"] == []
        finally:
            c.call("kill", pid=pid)


def test_a_swapped_page_keeps_its_soft_dirty_bit(m):
    """try_to_unmap_one() moves the PTE's soft-dirty bit into the swap entry
    (pte_swp_mksoft_dirty()); do_swap_page() moves it back. clear_refs 1 takes the
    accessed bits (and nothing else), so that reclaim swaps all four pages."""
    with Client(m.path) as c:
        pid = spawn(c, [{"start": BASE, "size": "16KiB", "pages": "4 idle"}])
        try:
            write_refs(m, pid, b"4")
            c.call("touch", pid=pid, addr=BASE + PAGE, write=True)
            write_refs(m, pid, b"1")
            assert pagemap_top(m, pid, BASE, 4) == [PRESENT, PRESENT_SD, PRESENT, PRESENT]
            c.call("reclaim", node=0, pages=32)
            assert pagemap_top(m, pid, BASE, 4) == [SWAP, SWAP_SD, SWAP, SWAP]
            for page in range(4):
                c.call("touch", pid=pid, addr=BASE + page * PAGE)
            assert pagemap_top(m, pid, BASE, 4) == [PRESENT, PRESENT_SD, PRESENT, PRESENT]
            assert c.call("check")["problems"] == []
        finally:
            c.call("kill", pid=pid)


def test_types_1_2_3_clear_what_smaps_counts_as_referenced(m):
    """clear_refs_pte_range(): ptep_test_and_clear_young(), test_and_clear_page_young()
    and ClearPageReferenced() on each mapped page; clear_refs_test_walk() skips VMAs
    with a file for type 2 and VMAs without one for type 3. smaps' Referenced is
    pte_young() || page_is_young() || PageReferenced()."""
    with Client(m.path) as c:
        pid = spawn(c, [{"start": BASE, "size": "8KiB", "pages": "2 accessed"},
                        {"start": FILE_VA, "size": "8KiB", "perms": "rw-s", "path": "/data",
                         "pages": "2 accessed"}])
        try:
            def referenced() -> tuple[str, str]:
                return (smaps_field(m, pid, BASE, "Referenced").strip(),
                        smaps_field(m, pid, FILE_VA, "Referenced").strip())

            assert referenced() == ("8 kB", "8 kB")
            write_refs(m, pid, b"3")
            assert referenced() == ("8 kB", "0 kB")
            c.call("touch", pid=pid, addr=FILE_VA)
            assert referenced() == ("8 kB", "4 kB")
            write_refs(m, pid, b"2")
            assert referenced() == ("0 kB", "4 kB")
            c.call("touch", pid=pid, addr=BASE + PAGE)
            write_refs(m, pid, b"1")
            assert referenced() == ("0 kB", "0 kB")
            # the accessed bits are gone for idle_pages too: one PTE_IDLE unit of 2
            # pages (0x52) after the SET_HVA record
            fd = os.open(m.proc_path(f"{pid}/idle_pages"), os.O_RDONLY)
            try:
                assert os.pread(fd, 4096, BASE)[9:10] == b"\x52"
            finally:
                os.close(fd)
        finally:
            c.call("kill", pid=pid)


def test_page_young_and_referenced_go_too(m):
    """A page the page_idle bitmap marked keeps its accessed bit as PG_young, which
    smaps counts; type 1 clears PG_young (test_and_clear_page_young()). PG_idle stays."""
    with Client(m.path) as c:
        pid = spawn(c, [{"start": BASE, "size": "4KiB", "pages": "1 accessed"}])
        try:
            fd = os.open(m.proc_path(f"{pid}/pagemap"), os.O_RDONLY)
            try:
                pfn = struct.unpack("<Q", os.pread(fd, 8, BASE // PAGE * 8))[0] & ((1 << 55) - 1)
            finally:
                os.close(fd)
            bitmap = os.open(m.sys("kernel/mm/page_idle/bitmap"), os.O_RDWR)
            try:
                os.pwrite(bitmap, struct.pack("<Q", 1 << pfn % 64), pfn // 64 * 8)
                assert smaps_field(m, pid, BASE, "Referenced").strip() == "4 kB"  # PG_young
                write_refs(m, pid, b"1")
                assert smaps_field(m, pid, BASE, "Referenced").strip() == "0 kB"
                word = struct.unpack("<Q", os.pread(bitmap, 8, pfn // 64 * 8))[0]
                assert word >> pfn % 64 & 1  # still idle
            finally:
                os.close(bitmap)
        finally:
            c.call("kill", pid=pid)


def test_type_5_resets_the_rss_peak(m):
    """reset_mm_hiwater_rss(): VmHWM becomes the current RSS. Reclaim swaps the four
    idle pages (VmRSS 16 kB -> 0) while VmHWM stays 16 kB until the reset."""
    with Client(m.path) as c:
        pid = spawn(c, [{"start": BASE, "size": "16KiB", "pages": "4 idle"}])
        try:
            def hwm_rss() -> tuple[str, str]:
                status = m.read(f"proc/{pid}/status").decode().splitlines()
                get = {line.split(":")[0]: line.split(":\t")[1].strip() for line in status if ":\t" in line}
                return get["VmHWM"], get["VmRSS"]

            assert hwm_rss() == ("16 kB", "16 kB")
            c.call("reclaim", node=0, pages=32)
            assert hwm_rss() == ("16 kB", "0 kB")
            write_refs(m, pid, b"5")
            assert hwm_rss() == ("0 kB", "0 kB")
            c.call("touch", pid=pid, addr=BASE)  # swap-in: the peak follows again
            assert hwm_rss() == ("4 kB", "4 kB")
        finally:
            c.call("kill", pid=pid)


THP_MACHINE = small_machine(upstream=True, swap="4MiB") + """
[[process]]
pid = 90
name = "thp"
[[process.vma]]
start = 0x7f0000000000
size = "4MiB"
thp = true
pages = "2 thp-idle"
"""


def test_a_split_thp_passes_the_bit_to_its_ptes_and_swap_entries():
    """clear_soft_dirty_pmd() write-protects and cleans a huge PMD; the store to it is
    do_huge_pmd_wp_page()'s reuse, pmd_mkdirty(): soft-dirty. Swap-out splits each THP
    (thp_swpout_fallback) through migration entries that keep the bit
    (__split_huge_pmd_locked(), remove_migration_pte()), and swaps the 512 pages with
    it (In-process: the kernel model alone.)"""
    k = load(THP_MACHINE)
    t = k.task(90)
    task_mmu.clear_refs(k, t, task_mmu.CLEAR_REFS_SOFT_DIRTY)
    k.touch(t, BASE + 5 * PAGE, write=True)  # the first THP only
    task_mmu.clear_refs(k, t, task_mmu.CLEAR_REFS_ALL)
    top = [w >> 55 for w in struct.unpack("<1024Q", k.pagemap(t, BASE, 1024))]
    assert top == [PRESENT_SD] * 512 + [PRESENT] * 512
    while k.shrink_node(0, 1024):
        pass
    top = [w >> 55 for w in struct.unpack("<1024Q", k.pagemap(t, BASE, 1024))]
    assert top == [SWAP_SD] * 512 + [SWAP] * 512
    assert k.check() == []


# test_kvm's VMs, the QEMU process's RAM without THPs (the guest's leaves are 4 KiB)
QEMU = KVM_MACHINE.replace('size = "64MiB"\nthp = true\n', 'size = "64MiB"\n')
assert QEMU != KVM_MACHINE


def test_a_vm_keeps_its_ept_bits_for_types_1_to_3_and_loses_its_ept_for_4():
    """Types 1-3 use ptep_test_and_clear_young() (no MMU notifier): the guest's EPT
    accessed bits stay, and an EPT-mode idle_pages read gives what it gives without
    them. Type 4 runs mmu_notifier_invalidate_range_start() over the whole address
    space: KVM zaps every EPT leaf, so a read of 4096 bytes at slot 0's start finds
    no unit there and ends with A0 be64(max(slot 1's start, pos + 4096 x 32 KiB))
    (INTERFACES.md 1.7). A guest access faults its leaf back in."""
    plain, cleared = load(QEMU), load(QEMU)
    task_mmu.clear_refs(cleared, cleared.task(500), task_mmu.CLEAR_REFS_ALL)
    assert cleared.idle_pages_read(cleared.task(500), BASE, 4096, 0).data == \
        plain.idle_pages_read(plain.task(500), BASE, 4096, 0).data
    k = load(QEMU)
    t = k.task(500)
    task_mmu.clear_refs(k, t, task_mmu.CLEAR_REFS_SOFT_DIRTY)
    assert k.idle_pages_read(t, BASE, 4096, 0).data == b"\xa0" + (BASE + (128 << 20)).to_bytes(8, "big")
    kvm.guest_touch(k, t, 0x1000)  # the guest's page 1: one PTE_ACCESSED unit
    assert k.idle_pages_read(t, BASE, 4096, 0).data[:10] == b"\xa0" + (BASE + PAGE).to_bytes(8, "big") + b"\x01"
    # a guest load finds the host page present (get_user_pages(), no fault): it stays
    # write-protected and clean; a guest store is a write fault on it (do_wp_page()):
    # writable and soft-dirty again
    faults = k.event(lib.FP_EV_PGFAULT)
    assert k.entry(t, BASE + PAGE)[1] & (lib.FP_PAGE_RW | lib.FP_PAGE_SOFT_DIRTY) == 0
    kvm.guest_touch(k, t, 0x2000, write=True)
    assert k.event(lib.FP_EV_PGFAULT) == faults + 1
    assert k.entry(t, BASE + 2 * PAGE)[1] & (lib.FP_PAGE_RW | lib.FP_PAGE_SOFT_DIRTY) == \
        lib.FP_PAGE_RW | lib.FP_PAGE_SOFT_DIRTY
    assert k.entry(t, BASE + PAGE)[1] & (lib.FP_PAGE_RW | lib.FP_PAGE_SOFT_DIRTY) == 0
    # the load mapped page 1's EPT leaf read-only (the host entry was): a store through
    # it is an EPT violation too, not a store past the host's write protection
    kvm.guest_touch(k, t, 0x1000, write=True)
    assert k.entry(t, BASE + PAGE)[1] & (lib.FP_PAGE_RW | lib.FP_PAGE_SOFT_DIRTY) == \
        lib.FP_PAGE_RW | lib.FP_PAGE_SOFT_DIRTY
    assert k.event(lib.FP_EV_PGFAULT) == faults + 2
    assert k.check() == []


SHM = small_machine() + """
[[process]]
pid = 95
name = "shm"
[[process.vma]]
start = 0x7f0000000000
size = "8KiB"
kind = "shm"
path = "/dev/zero"
pages = "2 idle"
"""


@pytest.mark.parametrize("track", [False, True])
def test_a_shmem_store_faults_only_under_soft_dirty_tracking(track):
    """4.20 maps shmem writable on a read fault (a shared writable mapping without
    write-notify): a store is no fault. Once clear_refs 4 took VM_SOFTDIRTY,
    vma_wants_writenotify() holds and clear_soft_dirty() write-protected the pages: a
    store is a write-protect fault (wp_page_shared()), in a child forked since too
    (its VMAs keep the flags). The store sets the soft-dirty bit either way."""
    k = load(SHM)
    parent = k.task(95)
    if track:
        task_mmu.clear_refs(k, parent, task_mmu.CLEAR_REFS_SOFT_DIRTY)
    child = k.fork(95, 96)
    for task in (parent, child):
        before = k.event(lib.FP_EV_PGFAULT)
        k.touch(task, BASE + PAGE * (task is child), write=True)
        assert k.event(lib.FP_EV_PGFAULT) - before == int(track)
    sd = [w >> 55 & 1 for w in struct.unpack("<2Q", k.pagemap(child, BASE, 2))]
    assert sd == [int(not track), 1]  # untracked: the child's VMA keeps VM_SOFTDIRTY
    assert k.check() == []
