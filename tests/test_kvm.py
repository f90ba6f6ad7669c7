"""Virtual machines: EPT-mode /proc/PID/idle_pages (INTERFACES.md 1.7) with hand-written
bytes through the mount, and the EPT's part in guest accesses and host reclaim."""
from __future__ import annotations

import errno
import os

import pytest

from fakeproc.kernel import kvm
from fakeproc.kernel.native import lib
from fakeproc.machine import load
from mountutil import mounted

TASK_SIZE = 0x7FFFFFFFF000
RAM = 0x7F0000000000        # the QEMU process's guest RAM VMA (64 MiB)
SLOT1_HVA = 0x7F0002000000  # slot 1 lives 32 MiB into it: a 30 MiB gap of no slot
SLOT1_GPA = 0x100000000

QEMU = """
[[node]]
type = "dram"
size = "128MiB"
cpus = "0-1"

[[process]]
pid = 500
name = "qemu-system-x86"
[[process.vma]]
start = 0x7f0000000000
size = "64MiB"
thp = true
[process.vm]
[[process.vm.slot]]
gpa = 0
size = "2MiB"
hva = 0x7f0000000000
pages = "3 accessed, 2 idle, 1 dirty"
[[process.vm.slot]]
gpa = 0x100000000
size = "4MiB"
hva = 0x7f0002000000
pages = "1 thp-accessed, 2 accessed"

[[process]]
pid = 510
name = "qemu-no-ad"
[[process.vma]]
start = 0x7f0000000000
size = "4MiB"
[process.vm]
ept_ad = false
[[process.vm.slot]]
gpa = 0
size = "4MiB"
hva = 0x7f0000000000

[[process]]
pid = 520
name = "qemu-no-root"
[[process.vma]]
start = 0x7f0000000000
size = "4MiB"
[process.vm]
root_valid = false
[[process.vm.slot]]
gpa = 0
size = "4MiB"
hva = 0x7f0000000000
pages = "4 accessed"
"""


def hva(addr: int) -> bytes:
    return b"\xa0" + addr.to_bytes(8, "big")


def scan(m, pid: int, pos: int, count: int = 4096) -> bytes:
    fd = os.open(m.proc_path(f"{pid}/idle_pages"), os.O_RDWR | os.O_NONBLOCK)  # flags ignored
    try:
        os.lseek(fd, pos, os.SEEK_SET)
        return os.read(fd, count)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def m():
    with mounted(QEMU) as mnt:
        yield mnt


@pytest.mark.fuse
def test_two_slots_with_a_gap(m):
    # slot 0 (gpa 0 at RAM): 3 accessed, 2 idle, the dirty one reported accessed (no dirty
    # reporting in RFC v2), then 506 empty PTEs as contiguous holes (33 x 15 + 11); the
    # next pass starts in the gap: no slot, nothing added, the read ends at
    # max(next slot start, end) = end = RAM + 128 MiB
    first = hva(RAM) + bytes.fromhex("03 52 01") + b"\x8f" * 33 + b"\x8b" + hva(RAM + 0x8000000)
    assert scan(m, 500, RAM) == first
    # slot 1 from its start: a 2 MiB EPT leaf (THP) accessed, then a table with 2 accessed
    # PTEs and 510 holes, then no slot above: TASK_SIZE
    assert scan(m, 500, SLOT1_HVA) == (hva(SLOT1_HVA) + bytes.fromhex("11 02") + b"\x8f" * 34
                                       + hva(TASK_SIZE))
    # a start inside the 2 MiB leaf: the SET_HVA is rounded down in guest-physical space
    assert scan(m, 500, SLOT1_HVA + 0x1000) == (hva(SLOT1_HVA) + bytes.fromhex("61 52")
                                                + b"\x8f" * 34 + hva(TASK_SIZE))
    # the first scan cleared slot 0's accessed bits
    assert scan(m, 500, RAM) == hva(RAM) + b"\x56" + b"\x8f" * 33 + b"\x8b" + hva(RAM + 0x8000000)


@pytest.mark.fuse
def test_a_start_outside_every_slot(m):
    # in the gap: nothing added; the tail is max(next slot start, end)
    assert scan(m, 500, RAM + 0x200000, count=20) == hva(SLOT1_HVA)
    assert scan(m, 500, RAM + 0x200000) == hva(RAM + 0x200000 + 0x8000000)


@pytest.mark.fuse
def test_a_vm_that_cannot_be_walked(m):
    with pytest.raises(OSError) as e:
        scan(m, 510, RAM)
    assert e.value.errno == errno.EINVAL
    # an invalid root yields no units: the read ends as for a start outside the slots
    assert scan(m, 520, RAM) == hva(TASK_SIZE)


def test_guest_accesses_set_ept_bits_and_host_reclaim_sees_them():
    k = load(QEMU)
    t = k.task(500)
    gpa = 0x10000  # unmapped: an EPT violation faults the host page in first
    kvm.guest_touch(k, t, gpa, write=True)
    level, entry = kvm.ept_entry(k, t, gpa)
    assert level == 4 and entry & lib.FP_EPT_ACCESSED and entry & lib.FP_EPT_DIRTY
    assert k.page_node(t, RAM + gpa) == 0
    # host reclaim's page_referenced() clears the EPT accessed bit (kvm_age_hva)
    k.age_active(0)
    _, entry = kvm.ept_entry(k, t, gpa)
    assert not entry & lib.FP_EPT_ACCESSED
    # migrating the host page zaps the EPT leaf; the next guest access maps the new page
    assert k.migrate_page_at(t, RAM + gpa, 0)
    assert kvm.ept_entry(k, t, gpa)[1] == 0
    kvm.guest_touch(k, t, gpa)
    assert kvm.ept_entry(k, t, gpa)[1] & lib.FP_EPT_ACCESSED
    assert k.check() == []
    k.exit(500)  # the VM and its EPT go with the process
    assert k.check() == []


GUEST_WORKLOAD = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"

[[process]]
pid = 500
name = "qemu-system-x86"
[[process.vma]]
start = 0x7f0000000000
size = "1MiB"
[process.vm]
[[process.vm.slot]]
gpa = 0
size = "1MiB"
hva = 0x7f0000000000
pages = "256 idle"
[process.vm.workload]
pattern = "uniform"
rate = 2000
"""


def test_guest_workload_touches_guest_memory_only_through_the_ept():
    """Every guest page is mapped (host PTE and EPT leaf), none accessed. 2000 uniform
    guest touches over 256 pages miss a given page with probability 0.04 %: the EPT
    leaves get their accessed bits, the host PTEs keep theirs clear (a CPU in guest
    mode walks the EPT, not the host's tables), and no host fault happens."""
    k = load(GUEST_WORKLOAD)
    t = k.task(500)
    pages = range(256)

    def ept_young() -> int:
        return sum(bool(kvm.ept_entry(k, t, i * 4096)[1] & lib.FP_EPT_ACCESSED) for i in pages)

    def host_ptes() -> list[int]:
        return [k.entry(t, RAM + i * 4096)[1] for i in pages]

    before = host_ptes()
    assert all(e & lib.FP_PAGE_PRESENT and not e & lib.FP_PAGE_ACCESSED for e in before)
    assert ept_young() == 0
    k.advance(1.0)
    assert t.vm is not None and t.vm.workload is not None and t.vm.workload.touches == 2000
    assert ept_young() >= 250
    assert host_ptes() == before
    assert k.check() == []


def test_a_host_thp_behind_4k_ept_leaves_is_zapped_whole():
    # gpa 0x1000 at a 2 MiB-aligned hva: host THPs, but guest and host alignment differ,
    # so the EPT maps them with 4 KiB leaves; moving the THP must zap every one of them
    text = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
[[node]]
type = "dram"
size = "64MiB"
cpus = "1"
[[process]]
pid = 600
name = "qemu"
[[process.vma]]
start = 0x7f0000000000
size = "8MiB"
thp = true
[process.vm]
[[process.vm.slot]]
gpa = 0x1000
size = "4MiB"
hva = 0x7f0000000000
"""
    k = load(text)
    t = k.task(600)
    for gpa in (0x1000, 0x2000, 0x80000):
        kvm.guest_touch(k, t, gpa)
    assert kvm.ept_entry(k, t, 0x2000)[0] == 4
    assert k.entry(t, RAM)[0] == 3                      # the host page is a THP
    assert k.check() == []
    assert k.migrate_page_at(t, RAM, 1)
    assert [kvm.ept_entry(k, t, g)[1] for g in (0x1000, 0x2000, 0x80000)] == [0, 0, 0]
    assert k.check() == []


FULL_SLOT = f"""
[[node]]
type = "dram"
size = "1GiB"
cpus = "0-1"

[[process]]
pid = 1
name = "qemu"
[[process.vma]]
start = 0x7f0000000000
size = "64MiB"
[process.vm]
[[process.vm.slot]]
gpa = 0
size = "64MiB"
hva = 0x7f0000000000
pages = "{', '.join(['1 accessed, 1 idle'] * 8192)}"
[[process.vma]]
start = 0x7f1000000000
size = "8KiB"
[[process.vm.slot]]
gpa = 0x10000000
size = "8KiB"
hva = 0x7f1000000000
"""


def test_an_ept_read_that_fills_ends_at_end():
    """INTERFACES.md 1.4 and 1.7, EPT mode (unit types and format as task mode). Each
    guest page is one record byte (01, 51 alternate, never merge). count 4096: pass 1
    has room for 4096 - 9 = 4087 bytes: A0 + 4078 units; page 4078 does not fit and is
    the restart. s < end, so pass 2 runs with room 0, adds nothing, and s := max(s,
    end): the read ends A0 be64(end), end = BASE + 4096 x 32 KiB, not the next slot
    (0x7f1000000000) nor TASK_SIZE. count 19: the first unit already has no room, so
    the read is exactly A0 be64(BASE + 19 x 32 KiB)."""
    k = load(FULL_SLOT)
    t = k.task(1)
    base = 0x7F0000000000
    r = k.idle_pages_read(t, base, 4096, os.O_RDWR)
    assert r.data == (b"\xa0" + base.to_bytes(8, "big") + b"\x01\x51" * 2039
                      + b"\xa0" + (base + 4096 * 32 * 1024).to_bytes(8, "big"))
    assert r.pos == base + 4096 * 32 * 1024
    k = load(FULL_SLOT)
    r = k.idle_pages_read(k.task(1), base, 19, os.O_RDWR)
    assert r.data == b"\xa0" + (base + 19 * 32 * 1024).to_bytes(8, "big")


def test_ept_pages_are_not_page_tables():
    """kvm_mmu_alloc_page() takes EPT pages from KVM's own cache (__get_free_page()):
    not PageTable, not in NR_PAGETABLE. The host's PGD, PUD and PMD are not counted
    either: PageTables is the host's one PTE table (the 1 MiB VMA), while the host's
    other 3 tables and the EPT's 4 (PML4, PDPT, PD, PT for guest page 0-255) are used
    memory in no counter."""
    k = load(GUEST_WORKLOAD)
    st = k.node_stat(0)
    assert st[lib.FP_NR_PAGETABLE] == 1
    assert st[lib.FP_NR_ANON_PAGES] == 256
    assert st[lib.FP_NR_FREE_PAGES] == 16384 - 1 - 256 - 1 - 3 - 4  # PFN 0 reserved at boot
    assert k.check() == []
