"""A walk over the whole mount of the default machine, driven by what the mount lists.

Every directory is listed, every link read and resolved, every regular file stat'ed,
opened, and (when readable) read to EOF in 1-byte, 4 KiB and 7-byte chunks, which must
all give the same bytes. Modes and sizes follow INTERFACES.md 2 ("Stat") and the v4.20
attribute definitions; errnos follow the v4.20 VFS, kernfs and procfs paths.
Memory-block directories beyond the first few are listed but not entered (320 of them).
"""
from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import threading

import pytest

from fsops import errno_of, refused_access, write_once
from mountutil import mounted

pytestmark = pytest.mark.fuse

MEMORY_BLOCKS_ENTERED = 3

# sysfs attributes that are not 0444 (drivers/base/node.c, drivers/base/cpu.c,
# drivers/base/memory.c, drivers/base/bus.c, drivers/base/core.c, mm/hugetlb.c)
SYSFS_MODES = {
    "compact": 0o200,                # node: DEVICE_ATTR(compact, 0200, NULL, sysfs_compact_node)
    "nr_hugepages": 0o644,           # hugetlb per-node: __ATTR_RW
    "uevent": 0o644,                 # device uevent (DEVICE_ATTR_RW); the bus's is below
    "drivers_probe": 0o200,          # bus: BUS_ATTR(drivers_probe, S_IWUSR, ...)
    "drivers_autoprobe": 0o644,
    "state": 0o644,                  # memory block
}
SYSFS_PATH_MODES = {
    ("sys", "bus", "node", "uevent"): 0o200,          # bus_attr_uevent: S_IWUSR
    ("sys", "devices", "system", "cpu", "online"): 0o444,  # _CPU_ATTR(online, ...): 0444
}
# cpuN/online and memoryN/online are 0644 (DEVICE_ATTR_RW(online) of hotpluggable devices)
ONLINE_RW_PARENTS = ("cpu", "memory")

# read-only attributes fixed for the mount's life (the topology): fakeproc serves them
# from the host's page cache, which stops a read at the size, so they stat with their
# length instead of 4096 (fs/pagecache.py; the spec allows it "where the FUSE read path
# allows it")
FIXED = {"type", "peer_node", "cpumap", "cpulist", "distance", "possible", "has_normal_memory",
         "has_memory", "has_cpu", "free_hugepages", "surplus_hugepages", "physical_package_id",
         "core_id", "core_siblings", "core_siblings_list", "thread_siblings",
         "thread_siblings_list", "present", "offline", "kernel_max", "phys_index", "removable",
         "block_size_bytes", "phys_device", "valid_zones"}
FIXED_PATHS = {("sys", "devices", "system", "node", "online"), ("sys", "devices", "system", "cpu", "online")}


def is_fixed(rel: tuple[str, ...]) -> bool:
    return is_sys(rel) and (rel[-1] in FIXED or rel in FIXED_PATHS) and rel[1:3] == ("devices", "system")


# files the spec or the kernel allow to read as empty
EMPTY_OK = {"uevent", "compact", "drivers_probe"}


@pytest.fixture(scope="module")
def walk():
    """Walk the default machine once; yield (mount, dirs, links, files) as lists of
    path tuples relative to the mount, with their lstat results."""
    with mounted(None) as m:
        dirs, links, files = [], [], []

        def visit(rel: tuple[str, ...]) -> None:
            path = m.path.joinpath(*rel)
            names = os.listdir(path)
            assert len(names) == len(set(names)), f"{path}: duplicate names"
            assert "." not in names and ".." not in names
            for name in sorted(names):
                if rel == () and name == "procview":
                    continue  # the runner's merged /proc: its links need the runner's namespace
                child = rel + (name,)
                st = os.lstat(m.path.joinpath(*child))
                if stat.S_ISDIR(st.st_mode):
                    dirs.append((child, st))
                    if (rel[-1:] == ("memory",) and name.startswith("memory")
                            and int(name[6:]) >= MEMORY_BLOCKS_ENTERED):
                        continue
                    visit(child)
                elif stat.S_ISLNK(st.st_mode):
                    links.append((child, st))
                elif stat.S_ISREG(st.st_mode):
                    files.append((child, st))
                else:
                    raise AssertionError(f"{child}: unexpected file type {st.st_mode:o}")

        visit(())
        yield m, dirs, links, files


def is_sys(rel: tuple[str, ...]) -> bool:
    return rel[0] == "sys"


def test_tree_has_the_expected_parts(walk):
    m, dirs, links, files = walk
    names = {"/".join(r) for r, _ in dirs + links + files}
    for p in ("sys/devices/system/node/node3/meminfo", "sys/bus/node/devices/node0",
              "sys/devices/system/cpu/cpu7/topology/core_siblings",
              "sys/devices/system/memory/memory0/phys_index", "proc/meminfo", "proc/vmstat",
              "proc/cpuinfo", "proc/4200001/status", "proc/4200001/task/4200003/maps",
              "proc/4200201/idle_pages"):
        assert p in names, p
    assert len(files) > 150


def test_links_resolve_inside_the_mount(walk):
    m, _, links, _ = walk
    root = os.path.realpath(m.path)
    for rel, st in links:
        path = m.path.joinpath(*rel)
        target = os.readlink(path)
        assert not target.startswith("/"), (rel, target)  # sysfs links are relative
        assert st.st_size == 0, rel  # kernfs never sets a symlink's i_size (as the host's /sys)
        resolved = os.path.realpath(path)
        assert resolved.startswith(root + os.sep), (rel, target)
        assert os.path.exists(resolved), (rel, target)
        assert os.path.isdir(resolved), (rel, target)  # every link here names a directory


def test_directory_modes(walk):
    _, dirs, _, _ = walk
    for rel, st in dirs:
        # kernfs directories are 0755 but for the root (kernfs_create_root(): 0555);
        # procfs's are 0555
        want = 0o755 if is_sys(rel) and rel != ("sys",) else 0o555
        assert stat.S_IMODE(st.st_mode) == want, rel
        assert st.st_size == 0


def test_directory_links_count_subdirectories(walk):
    """kernfs_refresh_inode() and pid_entry_nlink(): 2 and one per subdirectory (/proc
    adds nr_processes(), task/ the threads: both are its subdirectories). By hand for
    the default machine: sys has bus and devices; /proc the 3 processes; a process
    directory its task/; 4200001 has 4 threads."""
    m, dirs, _, _ = walk
    by_hand = {("sys",): 4, ("proc",): 5, ("proc", "4200001"): 3, ("proc", "4200001", "task"): 6,
               ("proc", "4200001", "task", "4200002"): 2}
    for rel, want in by_hand.items():
        assert os.lstat(m.path.joinpath(*rel)).st_nlink == want, rel
    for rel, st in dirs:
        path = m.path.joinpath(*rel)
        subdirs = sum(stat.S_ISDIR(os.lstat(path / n).st_mode) for n in os.listdir(path))
        assert st.st_nlink == 2 + subdirs, rel


def test_dot_and_dotdot_come_first(walk):
    """dir_emit_dots(): getdents lists '.' (the directory's inode) and '..' (its
    parent's) before the entries, on both connections (ls -f keeps getdents' order)."""
    m, _, _, _ = walk
    for rel in [("proc",), ("proc", "4200001", "task"), ("sys",), ("sys", "bus", "node"),
                ("sys", "devices", "system"), ("sys", "devices", "system", "node", "node0")]:
        path = m.path.joinpath(*rel)
        out = subprocess.run(["ls", "-a", "-f", "-i", "-1", str(path)], capture_output=True,
                             text=True, check=True).stdout.split("\n")
        (ino0, name0), (ino1, name1) = out[0].split(), out[1].split()
        assert (name0, name1) == (".", ".."), rel
        assert int(ino0) == os.stat(path).st_ino and int(ino1) == os.stat(path.parent).st_ino, rel
        assert "." not in out[2:] and ".." not in out[2:]


def test_fsync_and_block_size(walk):
    """procfs (and sysctl) files and every directory have no ->fsync: EINVAL; kernfs
    files have noop_fsync(). st_blksize: procfs's 1024-byte blocks, kernfs's page."""
    m, _, _, _ = walk
    cases = {"proc/4200001/status": (errno.EINVAL, 1024), "proc/vmstat": (errno.EINVAL, 1024),
             "sys/devices/system/node/node0/cpulist": (0, 4096),
             "sys/devices/system/node/node0/meminfo": (0, 4096),
             "sys/bus/node/drivers_autoprobe": (0, 4096),
             "proc": (errno.EINVAL, 1024), "proc/4200001": (errno.EINVAL, 1024),
             "sys": (errno.EINVAL, 4096), "sys/devices/system/node": (errno.EINVAL, 4096),
             "sys/bus/node": (errno.EINVAL, 4096)}
    for rel, (err, blksize) in cases.items():
        fd = os.open(m.path / rel, os.O_RDONLY)
        try:
            assert os.fstat(fd).st_blksize == blksize, rel
            for sync in (os.fsync, os.fdatasync):
                try:
                    sync(fd)
                    got = 0
                except OSError as e:
                    got = e.errno
                assert got == err, (rel, sync)
        finally:
            os.close(fd)


def expected_mode(rel: tuple[str, ...]) -> int:
    if not is_sys(rel):
        return {"idle_pages": 0o600, "comm": 0o644, "clear_refs": 0o200, "oom_adj": 0o644,
                "oom_score_adj": 0o644}.get(rel[-1], 0o444)
    if rel in SYSFS_PATH_MODES:
        return SYSFS_PATH_MODES[rel]
    if rel[-1] == "online" and len(rel) >= 3 and rel[-3] in ONLINE_RW_PARENTS:
        return 0o644
    return SYSFS_MODES.get(rel[-1], 0o444)


def test_file_modes_sizes_and_owners(walk):
    m, _, _, files = walk
    wrong = []
    for rel, st in files:
        if stat.S_IMODE(st.st_mode) != expected_mode(rel):
            wrong.append(("/".join(rel), oct(stat.S_IMODE(st.st_mode)), oct(expected_mode(rel))))
        # sysfs attributes stat 4096 bytes, procfs files 0; those the host's page cache
        # serves stat their length (fixed ones, and every readable one under
        # /sys/devices/system: fs/sysmount)
        if is_fixed(rel) or (rel[1:3] == ("devices", "system") and st.st_mode & 0o444):
            assert st.st_size == len(m.read("/".join(rel))) < 4096, rel
        else:
            assert st.st_size == (4096 if is_sys(rel) else 0), rel
        if is_sys(rel) or not rel[1].isdigit():
            assert (st.st_uid, st.st_gid) == (0, 0), rel
    assert wrong == []


def test_process_files_belong_to_the_process(walk):
    _, dirs, _, files = walk
    # redis-server runs as 999:999 in the default machine; memcached as 998:998
    for rel, st in dirs + files:
        if rel[:2] == ("proc", "4200001"):
            assert (st.st_uid, st.st_gid) == (999, 999), rel
        if rel[:2] == ("proc", "4200101"):
            assert (st.st_uid, st.st_gid) == (998, 998), rel


def read_chunks(path, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        out = []
        while True:
            b = os.read(fd, size)
            if not b:
                return b"".join(out)
            assert len(b) <= size
            out.append(b)
    finally:
        os.close(fd)


def readable(rel: tuple[str, ...], st: os.stat_result) -> bool:
    # idle_pages is binary and reading it clears accessed bits (tests of its own)
    return bool(st.st_mode & 0o444) and rel[-1] != "idle_pages"


def test_every_file_opens(walk):
    m, _, _, files = walk
    for rel, st in files:
        flags = os.O_RDONLY if st.st_mode & 0o444 else os.O_WRONLY
        fd = os.open(m.path.joinpath(*rel), flags)
        os.close(fd)


def test_reads_agree_in_any_chunk_size_and_end_with_newline(walk):
    m, _, _, files = walk
    checked = 0
    for rel, st in files:
        if not readable(rel, st):
            continue
        path = m.path.joinpath(*rel)
        whole = read_chunks(path, 4096)
        assert read_chunks(path, 1) == whole, rel
        assert read_chunks(path, 7) == whole, rel
        assert read_chunks(path, 1 << 20) == whole, rel
        if whole:
            assert whole.endswith(b"\0" if rel[-1] == "cmdline" else b"\n"), rel  # argv ends in NUL
        else:
            assert rel[-1] in EMPTY_OK, f"{'/'.join(rel)} is empty"
        whole.decode("ascii")  # every text file here is ASCII
        checked += 1
    assert checked > 150


def test_pread_at_offsets(walk):
    m, _, _, files = walk
    for rel, st in files:
        if not readable(rel, st) or rel[-1] not in ("meminfo", "status", "cpuinfo"):
            continue
        path = m.path.joinpath(*rel)
        whole = read_chunks(path, 1 << 20)
        fd = os.open(path, os.O_RDONLY)
        try:
            for off in (0, 1, 7, len(whole) // 2, len(whole) - 1, len(whole), len(whole) + 4096):
                assert os.pread(fd, 13, off) == whole[off:off + 13], (rel, off)
        finally:
            os.close(fd)


def test_writing_a_proc_file_is_einval(walk):
    # proc_single_file_operations has no write: open succeeds for root, vfs_write says
    # EINVAL (no FMODE_CAN_WRITE)
    m, _, _, _ = walk
    for rel in ("proc/4200001/status", "proc/4200001/task/4200002/status",
                "proc/4200001/maps", "proc/meminfo", "proc/vmstat"):
        assert errno_of(lambda: write_once(m.path / rel)) == errno.EINVAL, rel


# sysfs is a kernfs root with KERNFS_ROOT_EXTRA_OPEN_PERM_CHECK (fs/sysfs/mount.c):
# kernfs_fop_open() refuses to open for writing a file without write bits, and for
# reading a file without read bits, with EACCES even for root (checked on this host:
# open('/sys/devices/system/node/possible', O_WRONLY) -> EACCES).
def test_sysfs_open_checks_the_mode_even_for_root(walk):
    m, _, _, _ = walk
    node = m.sys("devices/system/node")
    for path in (node / "possible", node / "node0" / "meminfo", node / "node0" / "cpumap",
                 m.sys("devices/system/cpu/online")):
        for flags in (os.O_WRONLY, os.O_RDWR):
            assert refused_access(path, flags) == errno.EACCES, path
    for path in (node / "node0" / "compact", m.sys("bus/node/drivers_probe")):
        assert refused_access(path, os.O_RDONLY) == errno.EACCES, path


def test_writing_a_sysfs_attribute_is_refused(walk):
    # Linux refuses at open (EACCES, see above); the value must not change.
    m, _, _, _ = walk
    path = m.sys("devices/system/node/node0/peer_node")
    before = m.read(path.relative_to(m.path))
    assert errno_of(lambda: write_once(path, data=b"3\n")) == errno.EACCES
    assert m.read(path.relative_to(m.path)) == before


def test_missing_entries_are_enoent(walk):
    m, _, _, _ = walk
    for rel in ("sys/devices/system/node/node4", "sys/devices/system/node/node0/access0",
                "sys/devices/system/node/has_high_memory",
                "sys/devices/system/node/has_generic_initiator", "proc/1", "proc/4200099",
                "proc/4200001/task/4200001x", "proc/04200001", "sys/devices/system/cpu/cpu8",
                "sys/devices/system/cpu/cpu01"):
        assert errno_of(lambda: os.stat(m.path / rel)) == errno.ENOENT, rel


def test_cpu0_is_not_hotpluggable(walk):
    # x86 cpu0 has no `online` file by default; the others do (drivers/base/cpu.c)
    m = walk[0]
    cpu = m.sys("devices/system/cpu")
    assert not (cpu / "cpu0" / "online").exists()
    assert (cpu / "cpu1" / "online").read_bytes() == b"1\n"
    assert os.readlink(cpu / "cpu0" / "node0") == "../../node/node0"
    assert os.readlink(cpu / "cpu4" / "node1") == "../../node/node1"


def test_proc_meminfo_direct_map_covers_the_40_gib(walk):
    # 2 x 4 GiB + 2 x 16 GiB = 41943040 kB: the first 2 MiB in 4k pages, 2M pages up
    # to 1 GiB, 1 GiB pages for the other 39 GiB
    m = walk[0]
    lines = m.read("proc/meminfo").decode().splitlines()
    assert lines[-3:] == ["DirectMap4k:        2048 kB", "DirectMap2M:     1046528 kB",
                          "DirectMap1G:    40894464 kB"]


def test_procview_holds_emulated_processes_and_links_for_the_rest(walk):
    # `fakeproc run` binds procview over /proc (tests/test_run.py checks it in use)
    m = walk[0]
    view = m.path / "procview"
    names = set(os.listdir(view))
    assert {"4200001", "meminfo", "vmstat", "self", "1"} <= names
    assert stat.S_ISDIR(os.lstat(view / "4200001").st_mode)
    assert (view / "4200001" / "maps").read_bytes() == m.read("proc/4200001/maps")
    assert stat.S_ISLNK(os.lstat(view / "1").st_mode)
    assert os.readlink(view / "1").endswith(".proc/1")
    assert os.readlink(view / "self") == str(os.getpid())  # the caller's own pid
    # readdir as proc_root_readdir(): the other entries, then every pid in ascending
    # order, the emulated ones among the real ones (what `ps -e` prints in)
    listed = os.listdir(view)
    pids = [n for n in listed if n.isdigit()]
    assert pids == sorted(pids, key=int) and listed[-len(pids):] == pids
    assert "4200001" in pids and "1" in pids


def test_walks_under_sys_are_answered_from_the_kernels_caches():
    """/, /proc itself and everything under /sys are cached (entries and attributes,
    SYS_TIMEOUT), so once looked up, a stat needs no FUSE request. (With a 0 timeout
    on /, as it once had, every open and stat under the mount cost a GETATTR of /
    first.) Checked by stopping the daemon: a stat that needed it would block."""
    with mounted(None) as m:
        paths = [m.sys("devices/system/node/node0/cpulist"), m.path / "proc", m.path]
        for p in paths:
            os.stat(p)
        os.kill(m.proc.pid, signal.SIGSTOP)
        try:
            got: list[int] = []
            t = threading.Thread(target=lambda: got.extend(os.stat(p).st_size for p in paths),
                                 daemon=True)
            t.start()
            t.join(5)
            assert got == [4, 0, 0]  # node0/cpulist: fixed, so its length ("0-3\n")
        finally:
            os.kill(m.proc.pid, signal.SIGCONT)
        t.join(30)
