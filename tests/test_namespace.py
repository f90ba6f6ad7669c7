"""Operations on names and inode attributes under the mount, as root, with real
syscalls and tools: the errnos of 4.20's VFS over kernfs (/sys) and procfs (/proc).

Neither has ->create, ->mknod, ->link, ->symlink or ->unlink; kernfs's ->mkdir,
->rmdir and ->rename refuse without syscall_ops (sysfs has none). So on /sys
open(O_CREAT) of a new name is EACCES (lookup_open), mknod(S_IFREG) EACCES
(vfs_create), and the rest EPERM. procfs's ->lookup() answers a name it lacks with
-ENOENT instead of a negative dentry, so every new name there fails with ENOENT
before the operation is tried (measured on this host's /proc too); what acts on
existing names (unlink, rmdir, rename over a name) is EPERM. Attributes: kernfs_iop_setattr() keeps mode, owner and times and ignores
a size; proc_setattr() (/proc/PID) refuses a mode; proc_notify_change() (/proc's own
files) keeps them. Expected values are written by hand from those rules and the
default machine (pid 4200001 runs as uid 999, gid 999).
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
import subprocess

import pytest

from fsops import errno_of, refused_access
from mountutil import mounted

pytestmark = pytest.mark.fuse

NODE = "sys/devices/system/node"
PID = "proc/4200001"


@pytest.fixture(scope="module")
def mnt():
    with mounted(None) as m:
        yield m


def run(*argv: str) -> tuple[int, str]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return r.returncode, r.stderr


@pytest.mark.parametrize("rel, want, message", [
    (NODE, errno.EACCES, "Permission denied"), (f"{NODE}/node0", errno.EACCES, "Permission denied"),
    ("sys/bus/node", errno.EACCES, "Permission denied"),
    ("proc", errno.ENOENT, "No such file or directory"), (PID, errno.ENOENT, "No such file or directory"),
    (f"{PID}/task/4200002", errno.ENOENT, "No such file or directory")])
def test_creating_a_file_is_refused(mnt, rel, want, message):
    new = mnt.path / rel / "newfile"
    for flags in (os.O_WRONLY | os.O_CREAT, os.O_RDWR | os.O_CREAT | os.O_EXCL,
                  os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
        assert errno_of(lambda: os.open(new, flags, 0o644)) == want, flags
    assert errno_of(lambda: os.mknod(new, stat.S_IFREG | 0o644)) == want
    code, err = run("touch", str(new))
    assert code == 1 and message in err, err
    assert errno_of(lambda: os.stat(new)) == errno.ENOENT


def test_names_cannot_be_made_or_removed(mnt):
    for rel, file, subdir in ((NODE, "node0/type", "node0/power"), (NODE, "possible", "power"),
                              ("proc", "meminfo", "4200101"), (PID, "status", "task")):
        d = mnt.path / rel
        before = (d / file).read_bytes()
        ops = {
            "mkdir": lambda: os.mkdir(d / "newdir"),
            "rmdir": lambda: os.rmdir(d / subdir),
            "unlink": lambda: os.unlink(d / file),
            "rename": lambda: os.rename(d / file, d / "renamed"),
            "rename over": lambda: os.rename(d / file, d / subdir / "x"),
            "symlink": lambda: os.symlink("target", d / "newlink"),
            "link": lambda: os.link(d / file, d / "newlink"),
            "mkfifo": lambda: os.mkfifo(d / "fifo"),
            "mknod chr": lambda: os.mknod(d / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3)),
        }
        want = dict.fromkeys(ops, errno.EPERM)
        if rel.startswith("proc"):  # a new name: procfs's lookup fails first
            want.update(dict.fromkeys(("mkdir", "rename", "rename over", "symlink", "link", "mkfifo",
                                       "mknod chr"), errno.ENOENT))
        assert {op: errno_of(fn) for op, fn in ops.items()} == want, rel
        # what the VFS answers before asking the file system
        assert errno_of(lambda: os.mkdir(d / subdir)) == errno.EEXIST
        assert errno_of(lambda: os.open(d / file, os.O_WRONLY | os.O_CREAT | os.O_EXCL)) == errno.EEXIST
        assert errno_of(lambda: os.rmdir(d / file)) == errno.ENOTDIR
        assert errno_of(lambda: os.unlink(d / subdir)) == errno.EISDIR
        assert (d / file).read_bytes() == before
        for name in ("newdir", "renamed", "newlink", "fifo", "null"):
            assert not os.path.lexists(d / name)


def test_tools_report_operation_not_permitted(mnt):
    node0 = mnt.path.joinpath(f"{NODE}/node0")
    for argv in (["rm", "-f", str(node0 / "type")], ["mkdir", str(node0 / "d")],
                 ["mv", str(node0 / "type"), str(node0 / "type2")],
                 ["ln", "-s", "x", str(node0 / "l")], ["rmdir", str(node0 / "power")]):
        code, err = run(*argv)
        assert code == 1 and "Operation not permitted" in err, (argv, err)
    assert (node0 / "type").read_bytes() == b"dram\n"


RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def renameat2(old, new, flags: int) -> int:
    """renameat2(2): 0 or the errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, os.fsencode(old), -100, os.fsencode(new), flags) == 0:  # AT_FDCWD
        return 0
    return ctypes.get_errno()


def test_renameat2_flags(mnt):
    # kernfs_iop_rename() refuses any flag (EINVAL) before it looks for syscall_ops;
    # procfs has no ->rename (EPERM) but a new name fails its lookup first (ENOENT);
    # NOREPLACE onto a name is the VFS's EEXIST
    node0, pid = mnt.path.joinpath(f"{NODE}/node0"), mnt.path / PID
    assert [renameat2(node0 / "type", node0 / "new", RENAME_NOREPLACE),
            renameat2(node0 / "type", node0 / "cpulist", RENAME_EXCHANGE),
            renameat2(node0 / "type", node0 / "cpulist", RENAME_NOREPLACE),
            renameat2(pid / "status", pid / "new", RENAME_NOREPLACE),
            renameat2(pid / "status", pid / "maps", RENAME_EXCHANGE),
            renameat2(pid / "status", pid / "maps", RENAME_NOREPLACE)] == \
        [errno.EINVAL, errno.EINVAL, errno.EEXIST, errno.ENOENT, errno.EPERM, errno.EEXIST]


def test_links_and_renames_between_sys_and_proc_are_exdev(mnt):
    # two mounts on a real machine (do_renameat2, do_linkat: EXDEV), except that
    # do_linkat() looks the new name up first, which procfs fails with ENOENT (this
    # host gives the same). /sys/devices/system is a mount of its own here, so a link
    # from it is EXDEV before any lookup reaches the server (deviation s)
    src, main = mnt.path.joinpath(f"{NODE}/node0/type"), mnt.path / "sys/bus/node/uevent"
    for fn in (os.rename, os.link):
        assert errno_of(lambda: fn(mnt.path / PID / "status", mnt.path.joinpath(f"{NODE}/x"))) == errno.EXDEV
        assert errno_of(lambda: fn(src, mnt.path / PID / "x")) == errno.EXDEV
    assert errno_of(lambda: os.rename(main, mnt.path / PID / "x")) == errno.EXDEV
    assert errno_of(lambda: os.link(main, mnt.path / PID / "x")) == errno.ENOENT


def test_sysfs_keeps_mode_owner_and_times(mnt):
    distance = mnt.path.joinpath(f"{NODE}/node1/distance")
    os.chmod(distance, 0o600)
    os.chown(distance, 1000, 1001)
    os.utime(distance, ns=(1_000_000_001, 2_000_000_002))
    st = os.stat(distance)
    assert (st.st_mode, st.st_uid, st.st_gid) == (stat.S_IFREG | 0o600, 1000, 1001)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_001, 2_000_000_002)
    # kernfs keeps any timespec64: times past 2262 and before 1678 too (no int64 ns)
    far, before = 10_000_000_000 * 10**9 + 7, -10_000_000_000 * 10**9 + 9
    os.utime(distance, ns=(far, before))
    assert (os.stat(distance).st_atime_ns, os.stat(distance).st_mtime_ns) == (far, before)
    assert distance.read_bytes() == b"21 10 28 17\n"
    node1 = mnt.path.joinpath(f"{NODE}/node1")
    os.chmod(node1, 0o700)
    assert stat.S_IMODE(os.stat(node1).st_mode) == 0o700
    assert [stat.S_IMODE(os.lstat(node1 / n).st_mode) for n in ("distance", "meminfo")] == [0o600, 0o444]


def test_sysfs_open_check_follows_chmod(mnt):
    # kernfs_fop_open checks the inode's mode; a 0444 device attribute has no store
    # (dev_attr_store: EIO), a 0644 one made 0444 cannot be opened for writing
    peer = mnt.path.joinpath(f"{NODE}/node0/peer_node")
    os.chmod(peer, 0o644)
    fd = os.open(peer, os.O_WRONLY)
    try:
        assert errno_of(lambda: os.write(fd, b"3\n")) == errno.EIO
    finally:
        os.close(fd)
    assert peer.read_bytes() == b"2\n"
    nr = mnt.path.joinpath(f"{NODE}/node0/hugepages/hugepages-2048kB/nr_hugepages")
    os.chmod(nr, 0o444)
    assert refused_access(nr, os.O_WRONLY) == errno.EACCES
    os.chmod(nr, 0o644)
    fd = os.open(nr, os.O_WRONLY)
    try:
        assert os.write(fd, b"1\n") == 2
    finally:
        os.close(fd)


def test_truncating_a_sysfs_attribute_is_ignored(mnt):
    # kernfs_iop_setattr: "this ignores size changes" (the sizes under
    # /sys/devices/system are the renderings' lengths: fs/sysmount)
    for rel, size, data in (("node2/meminfo", None, None), ("node2/type", 5, b"pmem\n"),
                            ("node2/hugepages/hugepages-2048kB/nr_hugepages", 2, b"0\n")):
        path = mnt.path.joinpath(f"{NODE}/{rel}")
        before = path.read_bytes()
        os.truncate(path, 0)
        os.truncate(path, 100000)
        assert os.stat(path).st_size == (len(before) if size is None else size), rel
        if data is not None:
            assert path.read_bytes() == before == data, rel


def test_proc_pid_refuses_chmod_and_forgets_chown(mnt):
    # proc_setattr(): ATTR_MODE is EPERM; pid_revalidate() resets the owner
    for rel in (f"{PID}/status", PID, f"{PID}/task/4200002/maps", f"{PID}/task"):
        path = mnt.path / rel
        mode = os.stat(path).st_mode
        assert errno_of(lambda: os.chmod(path, 0o600)) == errno.EPERM, rel
        os.chown(path, 0, 0)
        st = os.stat(path)
        assert (st.st_mode, st.st_uid, st.st_gid) == (mode, 999, 999), rel
    status = mnt.path / PID / "status"
    os.truncate(status, 0)
    assert status.read_bytes().startswith(b"Name:\tredis-server\n")


def test_proc_files_keep_chmod(mnt):
    # proc_notify_change() stores the mode and owner in the proc_dir_entry
    vmstat = mnt.path / "proc/vmstat"
    os.chmod(vmstat, 0o400)
    os.chown(vmstat, 5, 6)
    st = os.stat(vmstat)
    assert (st.st_mode, st.st_uid, st.st_gid) == (stat.S_IFREG | 0o400, 5, 6)
    assert vmstat.read_bytes().startswith(b"nr_free_pages ")


def test_o_direct_is_einval_and_no_xattrs_are_set(mnt):
    """do_dentry_open(): no ->direct_IO in procfs or kernfs, so O_DIRECT is EINVAL
    after ->open()'s own checks. No xattr is set anywhere: listxattr is empty; kernfs
    keeps security.* and trusted.* (ENODATA), anything else has no handler
    (EOPNOTSUPP), on procfs every name. Measured the same on this host."""
    # (under /sys/devices/system no open reaches the server: deviation s)
    for rel in (f"{PID}/status", "proc/meminfo", "sys/bus/node/drivers_autoprobe", f"{PID}/maps"):
        assert errno_of(lambda: os.open(mnt.path / rel, os.O_RDONLY | os.O_DIRECT)) == errno.EINVAL, rel
    # deviation s: there the open succeeds, and a write of more than a page is EIO
    fd = os.open(mnt.path / "sys/devices/system/cpu/cpu1/online", os.O_WRONLY | os.O_DIRECT)
    try:
        assert os.write(fd, b"1") == 1
        assert errno_of(lambda: os.write(fd, b"1" * 5000)) == errno.EIO
    finally:
        os.close(fd)
    for rel, kept in ((f"{PID}/status", False), ("proc", False), ("sys/bus/node", True),
                      ("sys/bus/node/drivers_autoprobe", True), (f"{NODE}/online", True),
                      (NODE, True)):
        path = mnt.path / rel
        assert os.listxattr(path) == [], rel
        for name in ("security.selinux", "trusted.x", "user.x"):
            want = errno.ENODATA if kept and not name.startswith("user.") else errno.EOPNOTSUPP
            assert errno_of(lambda: os.getxattr(path, name)) == want, (rel, name)
