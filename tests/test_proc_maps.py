"""/proc/PID/numa_maps, smaps and smaps_rollup through the mount (INTERFACES.md 5),
hand-written from the scenario below."""
from __future__ import annotations

import os

import pytest

from fakeproc.ctl.client import Client
from mountutil import mounted

pytestmark = pytest.mark.fuse

MACHINE = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "64MiB"

[[process]]
pid = 60
name = "maps"
[[process.vma]]
start = 0x7f0000000000
size = "32KiB"
pages = "3 accessed, 2 dirty@1, 1 swap"
[[process.vma]]
start = 0x7f0000200000
size = "4MiB"
thp = true
pages = "1 thp-accessed"
[[process.vma]]
start = 0x7f0000800000
size = "16KiB"
perms = "r-xp"
path = "/usr/lib/libz.so"
pages = "2 accessed"
[[process.vma]]
start = 0x7ffe00000000
size = "8KiB"
kind = "stack"
pages = "1 dirty"

[[process]]
pid = 61
name = "bound"
policy = "bind:0-1"
[[process.vma]]
start = 0x7f0000000000
size = "8KiB"

[[process]]
pid = 63
name = "local"
policy = "local"
[[process.vma]]
start = 0x7f0000000000
size = "4KiB"
pages = "1 dirty"
[[process.vma]]
start = 0x7f0000400000
size = "4MiB"
hugetlb = true
[[process.vma]]
start = 0x7ffff7fd0000
size = "8KiB"
perms = "r-xp"
kind = "vdso"
pages = "2 accessed"
"""

SMAPS_ANON = """\
7f0000000000-7f0000008000 rw-p 00000000 00:00 0 
Size:                 32 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                  20 kB
Pss:                  20 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:        12 kB
Private_Dirty:         8 kB
Referenced:           20 kB
Anonymous:            20 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  4 kB
SwapPss:               4 kB
Locked:                0 kB
ProtectionKey:         0
VmFlags: rd wr mr mw me ac sd 
"""


@pytest.fixture(scope="module")
def m():
    with mounted(MACHINE) as mnt:
        yield mnt


def test_numa_maps(m):
    assert m.read("proc/60/numa_maps").decode() == (
        "7f0000000000 default anon=5 dirty=2 N0=3 N1=2 kernelpagesize_kB=4\n"
        "7f0000200000 default anon=512 N0=512 kernelpagesize_kB=4\n"
        "7f0000800000 default file=/usr/lib/libz.so mapped=2 active=0 N0=2 kernelpagesize_kB=4\n"
        "7ffe00000000 default stack anon=1 dirty=1 N0=1 kernelpagesize_kB=4\n")


def test_numa_maps_policy_and_empty_vma(m):
    assert m.read("proc/61/numa_maps").decode() == "7f0000000000 bind:0-1\n"


def test_numa_maps_local_policy(m):
    # MPOL_LOCAL is MPOL_PREFERRED with MPOL_F_LOCAL inside; mpol_to_str() prints "local"
    assert m.read("proc/63/numa_maps").decode().splitlines()[0] == (
        "7f0000000000 local anon=1 dirty=1 N0=1 kernelpagesize_kB=4")


def test_hugetlb_vmflags(m):
    # hugetlbfs_file_mmap() sets VM_HUGETLB | VM_DONTEXPAND; hugetlb is never VM_ACCOUNT
    text = m.read("proc/63/smaps").decode()
    block = text.split("7f0000400000-7f0000800000 ")[1]
    assert "\nVmFlags: rd wr mr mw me de ht sd \n" in block


def test_smaps_anon_vma_and_thp(m):
    text = m.read("proc/60/smaps").decode()
    assert text.startswith(SMAPS_ANON)
    thp = text.split("7f0000200000-7f0000600000 rw-p 00000000 00:00 0 \n")[1]
    lines = thp.splitlines()
    assert lines[0] == "Size:               4096 kB"
    assert lines[3] == "Rss:                2048 kB"
    assert lines[7] == "Private_Clean:      2048 kB"
    assert lines[10] == "Anonymous:          2048 kB"
    assert lines[12] == "AnonHugePages:      2048 kB"
    assert lines[20] == "VmFlags: rd wr mr mw me ac sd hg "


VSYSCALL_SMAPS = (
    "ffffffffff600000-ffffffffff601000 r-xp 00000000 00:00 0" + " " * 18 + "[vsyscall]\n"
    "Size:                  4 kB\nKernelPageSize:        4 kB\nMMUPageSize:           4 kB\n"
    + "".join(f"{k + ':':<16}       0 kB\n" for k in (
        "Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty",
        "Referenced", "Anonymous", "LazyFree", "AnonHugePages", "ShmemPmdMapped",
        "Shared_Hugetlb"))
    + "Private_Hugetlb:       0 kB\n"  # 17 characters, then %7lu
    + "".join(f"{k + ':':<16}       0 kB\n" for k in ("Swap", "SwapPss", "Locked"))
    + "ProtectionKey:         0\nVmFlags: rd ex \n")


def test_smaps_ends_with_the_gate_vma(m):
    """show_smap() runs for get_gate_vma() too (m_next() returns it after the mm's
    VMAs, as for maps): a walk of nothing (the gate VMA has no mm), VM_READ | VM_EXEC.
    numa_maps skips it (show_numa_map(): no mm) and smaps_rollup walks only mm->mmap."""
    text = m.read("proc/60/smaps").decode()
    assert text.endswith(VSYSCALL_SMAPS) and text.count("[vsyscall]") == 1
    assert "vsyscall" not in m.read("proc/60/numa_maps").decode()


def test_smaps_rollup(m):
    lines = m.read("proc/60/smaps_rollup").decode().splitlines()
    assert lines[0] == "7f0000000000-7ffe00002000 ---p 00000000 00:00 0" + " " * 26 + "[rollup]"
    # 5 + 512 + 2 + 1 pages
    assert lines[1] == "Rss:                2080 kB"
    assert lines[8] == "Anonymous:          2072 kB"
    assert lines[14] == "Swap:                  4 kB"


FORKED = MACHINE + """
[[process]]
pid = 62
name = "child"
fork_of = 60
"""


def test_shared_pages_after_fork_in_numa_maps_and_smaps():
    with mounted(FORKED) as mnt:
        # the child shares every anonymous page: mapped twice (mapmax=2)
        lines = mnt.read("proc/62/numa_maps").decode().splitlines()
        assert lines[0] == "7f0000000000 default anon=5 dirty=2 mapmax=2 N0=3 N1=2 kernelpagesize_kB=4"
        smaps = mnt.read("proc/62/smaps").decode().splitlines()
        # 5 shared pages, 2 of them dirty: Pss = 20 kB / 2; no private pages. The
        # child's entries are old (copy_one_pte: pte_mkold) and no page has
        # PG_referenced (anonymous faults do not set it): nothing Referenced
        assert smaps[5:11] == ["Pss:                  10 kB", "Shared_Clean:         12 kB",
                               "Shared_Dirty:          8 kB", "Private_Clean:         0 kB",
                               "Private_Dirty:         0 kB", "Referenced:            0 kB"]


def test_a_forked_child_scans_idle_and_the_parent_keeps_its_bits():
    """fork marks the child's copies old (pte_mkold, and pmd_mkold for a THP), the
    parent's stay accessed: the child's first idle_pages scan reports every page idle
    (INTERFACES.md 1.4 derivation: 5 present pages, then the swap entry and the two
    untouched pages as 3 contiguous holes, the THP's PMD, then the empty second 2 MiB
    of that VMA and the unwalked r-xp file: a pass that adds nothing ends at end =
    pos + 4096 x 32 KiB)."""
    base, thp = 0x7F0000000000, 0x7F0000200000
    end = base + 4096 * 0x8000
    with mounted(FORKED) as mnt:
        def scan(pid: int) -> bytes:
            fd = os.open(mnt.proc_path(f"{pid}/idle_pages"), os.O_RDONLY)
            try:
                return os.pread(fd, 4096, base)
            finally:
                os.close(fd)
        hva = lambda a: b"\xa0" + a.to_bytes(8, "big")  # noqa: E731
        assert scan(62) == hva(base) + bytes.fromhex("55 83") + hva(thp) + b"\x61" + hva(end)
        assert scan(60) == hva(base) + bytes.fromhex("05 83") + hva(thp) + b"\x11" + hva(end)


def test_status_vmlib_counts_the_vdso(m):
    """VmLib = exec_vm - text: __install_special_mapping() adds [vdso] (VM_EXEC, not
    VM_WRITE) to exec_vm; process 63 has no text, so 8 kB of VmLib, 0 of VmExe."""
    lines = m.read("proc/63/status").decode().splitlines()
    assert "VmExe:\t       0 kB" in lines
    assert "VmLib:\t       8 kB" in lines


VDSO = MACHINE + """
[[process]]
pid = 64
name = "vdso"
[[process.vma]]
start = 0x7ffff7fcc000
size = "16KiB"
perms = "r--p"
kind = "vvar"
pages = "1 accessed"
[[process.vma]]
start = 0x7ffff7fd0000
size = "8KiB"
perms = "r-xp"
kind = "vdso"
pages = "2 accessed"

[[process]]
pid = 65
name = "vdso-child"
fork_of = 64
"""


def _smaps_block(text: str, start: str) -> dict[str, str]:
    block = text.split(start, 1)[1].split("VmFlags", 1)[0].splitlines()[1:]
    return {k: v.strip() for k, v in (line.split(":", 1) for line in block)}


def test_vdso_pages_count_in_smaps_and_rssfile_and_vvar_pages_do_not():
    """4.20: a [vdso] page is a kernel-image page that vdso_fault() maps with a normal
    PTE (finish_fault: MM_FILEPAGES), so vm_normal_page() finds it: smaps counts it
    (as private, Pss = Rss: kernel frames keep no map count here), so do RssFile and
    VmRSS; numa_maps skips it (PageReserved). A [vvar] page is vm_insert_pfn()'s special
    PTE of a VM_PFNMAP mapping: counted nowhere. By hand, for 2 accessed [vdso] pages
    and 1 [vvar] page; the forked child maps them too, old (pte_mkold)."""
    with mounted(VDSO) as mnt:
        smaps = mnt.read("proc/64/smaps").decode()
        vdso = _smaps_block(smaps, "7ffff7fd0000-7ffff7fd2000 r-xp 00000000 00:00 0")
        assert {k: vdso[k] for k in ("Size", "Rss", "Pss", "Shared_Clean", "Private_Clean",
                                     "Private_Dirty", "Referenced", "Anonymous")} == {
            "Size": "8 kB", "Rss": "8 kB", "Pss": "8 kB", "Shared_Clean": "0 kB",
            "Private_Clean": "8 kB", "Private_Dirty": "0 kB", "Referenced": "8 kB",
            "Anonymous": "0 kB"}
        vvar = _smaps_block(smaps, "7ffff7fcc000-7ffff7fd0000 r--p 00000000 00:00 0")
        assert (vvar["Size"], vvar["Rss"], vvar["Pss"], vvar["Referenced"]) == ("16 kB", "0 kB", "0 kB", "0 kB")
        assert mnt.read("proc/64/numa_maps").decode() == "7ffff7fcc000 default\n7ffff7fd0000 default\n"
        status = mnt.read("proc/64/status").decode()
        for line in ("RssAnon:\t       0 kB", "RssFile:\t       8 kB", "VmRSS:\t       8 kB",
                     "VmHWM:\t       8 kB"):
            assert line in status.splitlines()
        assert mnt.read("proc/64/smaps_rollup").decode().splitlines()[1] == "Rss:                   8 kB"
        child = _smaps_block(mnt.read("proc/65/smaps").decode(), "7ffff7fd0000-7ffff7fd2000 r-xp")
        assert (child["Rss"], child["Referenced"]) == ("8 kB", "0 kB")
        assert "RssFile:\t       8 kB" in mnt.read("proc/65/status").decode().splitlines()
        from fakeproc.ctl.client import Client
        with Client(mnt.path, timeout=30) as c:
            assert c.call("check")["problems"] == []


SHARED_WRITES = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"

[[process]]
pid = 60
name = "writer"
[[process.vma]]
start = 0x7f3a00000000
size = "12KiB"
kind = "shm"
path = "/SYSV00000000"
pages = "2 dirty, 1 accessed"
[[process.vma]]
start = 0x7f3b00000000
size = "8KiB"
kind = "file"
path = "/data/shared.db"
perms = "rw-s"
pages = "2 accessed"

[[process]]
pid = 61
name = "child"
fork_of = 60
"""


def test_a_store_dirties_shared_pages_as_4_20_does():
    """do_shared_fault() -> fault_dirty_shared_page(): a shmem page a store faulted in
    is PG_dirty, so a forked child, whose copied PTEs are clean (copy_one_pte() cleans
    shared mappings), still counts it dirty (numa_maps' and smaps' pte_dirty() ||
    PageDirty()); the read-faulted third is clean in both. A store to a clean
    read-faulted page of a shared file mapping goes through wp_page_shared(): PG_dirty
    and one more page in the node's Dirty."""
    with mounted(SHARED_WRITES) as m:
        for pid in (60, 61):
            shm = m.read(f"proc/{pid}/numa_maps").decode().splitlines()[0]
            assert shm == ("7f3a00000000 default file=/SYSV00000000 dirty=2 mapped=3 mapmax=2 "
                           "active=0 N0=3 kernelpagesize_kB=4"), pid
            first = m.read(f"proc/{pid}/smaps").decode().split("VmFlags", 1)[0]
            assert "Shared_Clean:          4 kB" in first and "Shared_Dirty:          8 kB" in first
        node = "sys/devices/system/node/node0/meminfo"
        assert "Node 0 Dirty:                 0 kB" in m.read(node).decode()
        with Client(m.path) as c:
            c.touch(60, 0x7F3B00000000, write=True)
        assert "Node 0 Dirty:                 4 kB" in m.read(node).decode()
        line = m.read("proc/60/numa_maps").decode().splitlines()[1]
        assert line == ("7f3b00000000 default file=/data/shared.db dirty=1 mapped=2 mapmax=2 "
                        "active=0 N0=2 kernelpagesize_kB=4")


def test_a_clean_page_cache_page_is_mapped_read_only_and_a_private_store_copies_it():
    """A machine file's clean page of a private writable file mapping is page cache,
    mapped read-only as 4.20 maps it: a store faults (do_wp_page()) and gets an
    anonymous copy, which RssAnon counts, instead of writing the page cache."""
    from fakeproc.kernel.native import lib
    from fakeproc.machine import load
    k = load(SHARED_WRITES.replace('perms = "rw-s"', 'perms = "rw-p"').split("[[process]]\npid = 61")[0])
    t = k.task(60)
    addr = 0x7F3B00000000
    before = k.entry(t, addr)[1]
    assert not before & lib.FP_PAGE_RW
    k.touch(t, addr, write=True)
    after = k.entry(t, addr)[1]
    assert after & lib.FP_PAGE_RW and after & lib.FP_PAGE_DIRTY
    assert (after >> 12) != (before >> 12)
    counters = k.mm_counters(t)
    assert (counters["rss_anon"], counters["rss_file"]) == (1, 1)
    assert k.check() == []


def test_the_summary_shows_vmrss_with_shmem(tmp_path):
    """`fakeproc check` (and mount) print each process's VmRSS: RssAnon + RssFile +
    RssShmem, here 3 shmem pages and 2 page-cache pages = 20 KiB for both."""
    import subprocess
    import sys
    path = tmp_path / "m.toml"
    path.write_text(SHARED_WRITES)
    out = subprocess.run([sys.executable, "-m", "fakeproc", "check", str(path)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "pid 60       writer           threads 1   rss     20 KiB  workload none" in out
    assert "pid 61       child            threads 1   rss     20 KiB  workload none" in out


DENYWRITE = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"

[[process]]
pid = 70
name = "app"
[[process.vma]]
start = 0x400000
size = "4KiB"
kind = "file"
path = "/usr/bin/app"
perms = "r-xp"
[[process.vma]]
start = 0x600000
size = "4KiB"
kind = "file"
path = "/usr/bin/app"
perms = "rw-p"
[[process.vma]]
start = 0x7f0000000000
size = "4KiB"
kind = "file"
path = "/lib/x86_64-linux-gnu/libc-2.28.so"
perms = "r-xp"
[[process.vma]]
start = 0x7f0000200000
size = "4KiB"
kind = "file"
path = "/lib/x86_64-linux-gnu/ld-2.28.so"
perms = "r-xp"
"""


def test_the_executable_and_its_interpreter_are_denywrite():
    """binfmt_elf maps the executable's segments and the interpreter with
    MAP_DENYWRITE (VM_DENYWRITE, bit 11: `dw`); ld.so maps the libraries with
    mmap(2), which drops the flag."""
    with mounted(DENYWRITE) as m:
        flags = [line for line in m.read("proc/70/smaps").decode().splitlines()
                 if line.startswith("VmFlags:")]
    assert flags == ["VmFlags: rd ex mr mw me dw sd ",
                     "VmFlags: rd wr mr mw me dw ac sd ",
                     "VmFlags: rd ex mr mw me sd ",
                     "VmFlags: rd ex mr mw me dw sd ",
                     "VmFlags: rd ex "]  # the gate VMA
