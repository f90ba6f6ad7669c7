"""The inode table: a per-process path is freed when the host kernel forgets its
inode, so a mount that outlives many processes does not grow; fixed paths keep
their numbers. The table's rules by hand, then through a real mount (the host sends
FORGET when a /proc dentry, whose entry timeout is 0, dies with its last user).
"""
from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys
import threading
import time

import pytest

from fakeproc.ctl.client import Client
from fakeproc.fs.proc_flush import ProcFlush, prune_message
from fakeproc.fs.tree import InodeTable, per_process
from mountutil import mounted

SMALL = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
"""
VMA = [{"start": 0x7f0000000000, "size": "16KiB", "pages": "1 accessed"}]


@pytest.mark.parametrize("path, want", [
    (("proc", "4200001"), True), (("proc", "4200001", "task", "4200002", "status"), True),
    (("procview", "17", "maps"), True), (("hostview", "status", "17"), True),
    (("proc",), False), (("proc", "meminfo"), False), (("proc", "self"), False),
    (("proc", "sys", "vm", "numa_balancing"), False), (("hostview", "status"), False),
    (("sys", "devices", "system", "node", "node0", "meminfo"), False), ((), False)])
def test_which_paths_are_per_process(path, want):
    assert per_process(path) is want


def test_a_per_process_inode_lives_until_its_last_forget():
    t = InodeTable()
    status = ("proc", "5", "status")
    ino = t.inode(status)
    assert ino == 2 and t.inode(status) == 2 and t.path(2) == status
    t.looked_up(ino)
    t.looked_up(ino)
    assert not t.forget(ino, 1) and t.path(ino) == status
    assert t.forget(ino, 1)
    assert t.path(ino) is None and status not in t.by_path
    assert t.inode(status) == 3  # a new number, as procfs's next iget gives
    assert not t.forget(2, 1)    # a stale FORGET changes nothing


def test_fixed_paths_are_never_freed():
    t = InodeTable()
    meminfo = ("proc", "meminfo")
    ino = t.inode(meminfo)
    t.looked_up(ino)
    assert not t.forget(ino, 1) and not t.unused(ino)
    assert t.path(ino) == meminfo and t.lookups == {}


def test_an_inode_never_handed_out_is_freed_unless_held():
    t = InodeTable()
    a, b = t.inode(("proc", "5")), t.inode(("proc", "6"))
    t.looked_up(b)
    assert t.unused(a) and t.path(a) is None
    assert not t.unused(b) and t.path(b) == ("proc", "6")


PRUNE = pytest.mark.skipif(
    tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2]) < (6, 18),
    reason="the host kernel has no FUSE_NOTIFY_PRUNE (Linux 6.18): released processes' "
           "inodes go only under its memory pressure")


@PRUNE
@pytest.mark.fuse
def test_processes_that_come_and_go_leave_no_inodes_behind():
    with mounted(SMALL) as m, Client(m.path) as c:
        pids = iter(range(5_000_000, 6_000_000))  # new ids: a reused one would reuse its paths

        def cycle(n: int) -> None:
            for _ in range(n):
                pid = c.call("spawn", pid=next(pids), name="x", vma=VMA)["pid"]
                for f in ("status", "maps", "smaps", "numa_maps"):
                    os.stat(m.proc_path(f"{pid}/{f}"))
                    with open(m.proc_path(f"{pid}/{f}"), "rb") as fp:
                        assert fp.read()
                assert "idle_pages" in os.listdir(m.proc_path(str(pid)))
                assert str(pid) in os.listdir(m.proc_path(""))
                c.call("kill", pid=pid)

        cycle(20)
        warm = settled(c)
        assert warm["per_process"] == 0, warm
        cycle(150)  # interned for good, these would add 150 x 16 paths
        after = settled(c)
        assert after == warm, (warm, after)


def settled(c: Client) -> dict[str, int]:
    """fs_inodes once the host has forgotten every released process's inodes (its
    FORGETs come as requests of their own, after the kill has returned)."""
    deadline = time.monotonic() + 10
    while (counts := c.call("fs_inodes"))["per_process"] and time.monotonic() < deadline:
        time.sleep(0.02)
    return counts


@pytest.mark.fuse
def test_a_held_directory_keeps_its_inode_through_forgets_of_others():
    with mounted(SMALL) as m, Client(m.path) as c:
        pid = c.call("spawn", name="held", vma=VMA)["pid"]
        dfd = os.open(m.proc_path(str(pid)), os.O_RDONLY | os.O_DIRECTORY)
        try:
            for other in range(5_000_000, 5_000_050):  # each listing hands out every pid's inode
                c.call("spawn", pid=other, name="x", vma=VMA)
                assert str(pid) in os.listdir(m.proc_path(""))
                c.call("kill", pid=other)
            fd = os.open("status", os.O_RDONLY, dir_fd=dfd)
            try:
                assert f"Pid:\t{pid}\n".encode() in os.pread(fd, 4096, 0)
            finally:
                os.close(fd)
            ino = os.fstat(dfd).st_ino
            assert os.stat(m.proc_path(str(pid))).st_ino == ino  # the host still holds it
            c.call("kill", pid=pid)
            assert os.fstat(dfd).st_ino == ino  # released while open: still the host's
            assert c.call("fs_inodes")["per_process"] >= 1
        finally:
            os.close(dfd)
        if PRUNE.args[0]:
            return
        c.call("spawn", pid=6_000_000, name="x", vma=VMA)
        c.call("kill", pid=6_000_000)  # a later release prunes what the closed one left
        assert settled(c)["per_process"] == 0


def test_the_prune_message_bytes():
    # struct fuse_out_header {len 16 + 16 + 2 x 8 = 48, error FUSE_NOTIFY_PRUNE = 9, unique 0},
    # struct fuse_notify_prune_out {count 2, padding, spare}, then the two node ids
    want = bytes.fromhex(
        "30000000" "09000000" "0000000000000000"
        "02000000" "00000000" "0000000000000000"
        "0700000000000000" "0001000000000000")
    assert prune_message([7, 256]) == want


def test_a_process_directory_is_pruned_children_first():
    t = InodeTable()
    names = [("proc", "9"), ("proc", "9", "task"), ("proc", "9", "task", "9", "status"),
             ("proc", "9", "status"), ("proc", "10", "status")]
    inos = [t.inode(p) for p in names]
    for ino in inos:
        t.looked_up(ino)
    assert t.held_under(("proc", "9")) == [inos[2], inos[1], inos[3], inos[0]]
    assert t.held_under(("proc", "10")) == [inos[4]]


@pytest.mark.fuse
def test_fstat_of_a_reaped_process_shows_the_inode_it_had():
    """generic_fillattr() of the in-core inode; pid_getattr() (/proc/PID and
    /proc/PID/task/TID) puts root as the owner when the task is gone."""
    with mounted(SMALL) as m, Client(m.path) as c:
        pid = 5_000_000
        c.call("spawn", pid=pid, name="x", uid=999, gid=998, threads=2, vma=VMA)
        paths = [str(pid), f"{pid}/task", f"{pid}/task/{pid + 1}", f"{pid}/status",
                 f"{pid}/task/{pid + 1}/maps"]
        fds = [os.open(m.proc_path(p), os.O_RDONLY) for p in paths]
        try:
            before = [os.fstat(fd) for fd in fds]
            assert [(s.st_uid, s.st_gid) for s in before] == [(999, 998)] * 5
            c.call("kill", pid=pid)
            after = [os.fstat(fd) for fd in fds]
            assert [(s.st_uid, s.st_gid) for s in after] == [
                (0, 0), (999, 998), (0, 0), (999, 998), (999, 998)]
            for b, a in zip(before, after):
                assert (a.st_ino, a.st_mode, a.st_nlink, a.st_size) == \
                       (b.st_ino, b.st_mode, b.st_nlink, b.st_size)
            with pytest.raises(FileNotFoundError):
                os.stat(m.proc_path(paths[3]))  # a path walk finds nothing
            with pytest.raises(FileNotFoundError):
                os.open("status", os.O_RDONLY, dir_fd=fds[0])  # nor one from the directory
            with pytest.raises(ProcessLookupError):
                os.pread(fds[3], 4096, 0)  # get_proc_task() fails: ESRCH
        finally:
            for fd in fds:
                os.close(fd)


def test_a_pid_used_again_gets_new_inodes():
    """procfs ties a process's inodes to its struct pid: the old ones stay with it."""
    t = InodeTable()
    first, second = object(), object()
    d = ("proc", "5")
    old = t.inode(d, first)
    t.looked_up(old)  # held, as an open directory holds it
    assert t.inode(d, first) == old and t.owned_by(old, first)
    new = t.inode(d, second)
    assert new != old and t.inode(d, second) == new
    assert not t.owned_by(old, second) and t.path(old) == d  # still held, but not its
    assert t.forget(old, 1) and t.by_path[d] == new  # its FORGET frees only it


@pytest.mark.fuse
def test_a_directory_held_across_pid_reuse_sees_nothing_of_the_new_process():
    """An open /proc/PID keeps its process: after the pid is used again, an openat()
    from it is ENOENT and getdents() fails ENOENT (which glibc's readdir() ends the
    listing on, as for a dead process), while /proc/PID itself is the new one."""
    getdents64 = ctypes.CDLL(None, use_errno=True).syscall
    with mounted(SMALL) as m, Client(m.path) as c:
        pid = 5_000_100
        c.call("spawn", pid=pid, name="first", vma=VMA)
        dfd = os.open(m.proc_path(str(pid)), os.O_RDONLY | os.O_DIRECTORY)
        try:
            ino = os.fstat(dfd).st_ino
            c.call("kill", pid=pid)
            c.call("spawn", pid=pid, name="second", vma=VMA)
            with pytest.raises(FileNotFoundError):
                os.open("comm", os.O_RDONLY, dir_fd=dfd)
            buf = ctypes.create_string_buffer(4096)
            os.lseek(dfd, 0, os.SEEK_SET)
            assert getdents64(217, dfd, buf, 4096) == -1 and ctypes.get_errno() == errno.ENOENT
            assert os.fstat(dfd).st_ino == ino
            assert m.read(f"proc/{pid}/comm") == b"second\n"
            assert os.stat(m.proc_path(str(pid))).st_ino != ino
        finally:
            os.close(dfd)


@pytest.mark.fuse
def test_a_live_process_never_loses_its_entries_while_others_churn():
    """Readers walk /proc while processes are spawned and killed (each release prunes,
    each prune brings FORGETs): a process that stays alive must always be found."""
    live = 4_500_000
    errors: list[str] = []
    with mounted(SMALL) as m, Client(m.path) as c:
        c.call("spawn", pid=live, name="live", threads=2, vma=VMA)
        stop = threading.Event()

        def walk() -> None:
            while not stop.is_set():
                for name in filter(str.isdigit, os.listdir(m.proc_path(""))):
                    try:
                        os.stat(m.proc_path(f"{name}/status"))
                    except FileNotFoundError:
                        if name == str(live):
                            errors.append("listed live pid not found")

        def read_live() -> None:
            dfd = os.open(m.proc_path(str(live)), os.O_RDONLY | os.O_DIRECTORY)
            try:
                while not stop.is_set():
                    for rel in ("status", f"task/{live + 1}/maps", "numa_maps"):
                        fd = os.open(rel, os.O_RDONLY, dir_fd=dfd)
                        try:
                            if not os.pread(fd, 65536, 0) and rel != "numa_maps":
                                errors.append(f"{rel}: empty")
                        finally:
                            os.close(fd)
                    with open(m.proc_path(f"{live}/smaps"), "rb") as f:
                        f.read()
            except OSError as e:
                errors.append(f"live process: {e!r}")
            finally:
                os.close(dfd)

        readers = [threading.Thread(target=f) for f in (walk, walk, read_live)]
        for t in readers:
            t.start()
        try:
            for pid in range(5_000_000, 5_000_400):
                c.call("spawn", pid=pid, name="x", vma=VMA)
                c.call("kill", pid=pid)
        finally:
            stop.set()
            for t in readers:
                t.join(30)
        assert not errors, errors[:5]
        c.call("spawn", pid=6_000_000, name="x", vma=VMA)
        c.call("kill", pid=6_000_000)
        held = settled_to(c, lambda n: n["per_process"] <= 24)
        assert held["per_process"] <= 24, held  # the live process's entries at most


def settled_to(c: Client, done) -> dict[str, int]:
    deadline = time.monotonic() + 10
    while not done(counts := c.call("fs_inodes")) and time.monotonic() < deadline:
        time.sleep(0.02)
    return counts


@PRUNE
@pytest.mark.fuse
def test_a_listing_read_in_parts_numbers_no_process_that_is_gone():
    """getdents in several READDIRPLUS requests: processes released between them are
    skipped without being numbered (they are never handed to the host)."""
    with mounted(SMALL) as m, Client(m.path) as c:
        base = settled(c)["inodes"]
        for _ in range(3):
            pids = range(5_000_000, 5_000_300)
            for pid in pids:
                c.call("spawn", pid=pid, name="x", vma=VMA)
            with os.scandir(m.proc_path("")) as it:
                next(it)  # the first request's entries
                for pid in pids:
                    c.call("kill", pid=pid)
                rest = [e.name for e in it]
            assert len(rest) < 299  # the later requests found them gone
            assert settled(c)["inodes"] <= base + 2, (base, c.call("fs_inodes"))


@pytest.mark.fuse
def test_a_zombies_files_are_roots():
    """task_dump_owner(): without an mm, every entry but a mode-0555 directory of the
    task is root's."""
    with mounted(SMALL) as m, Client(m.path) as c:
        pid = 5_000_000
        c.call("spawn", pid=pid, name="x", uid=999, gid=998, threads=2, vma=VMA)
        c.call("kill", pid=pid, zombie=True)
        owners = {rel: (st.st_uid, st.st_gid) for rel in
                  (str(pid), f"{pid}/status", f"{pid}/maps", f"{pid}/clear_refs", f"{pid}/task",
                   f"{pid}/task/{pid + 1}", f"{pid}/task/{pid + 1}/comm", f"{pid + 1}")
                  for st in [os.stat(m.proc_path(rel))]}
        assert owners == {str(pid): (999, 998), f"{pid}/status": (0, 0), f"{pid}/maps": (0, 0),
                          f"{pid}/clear_refs": (0, 0), f"{pid}/task": (999, 998),
                          f"{pid}/task/{pid + 1}": (999, 998),
                          f"{pid}/task/{pid + 1}/comm": (0, 0), f"{pid + 1}": (999, 998)}


def test_what_stays_held_is_tried_again_after_1_2_4_128_releases():
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        t = InodeTable()
        pinned = t.inode(("proc", "9"))
        t.looked_up(pinned)
        flush = ProcFlush(t, w)
        sent_at = []
        flush(9, (9,))  # release 1
        for release in range(1, 400):
            if release > 1:
                flush.gone([])  # another process's release, nothing of it held
            try:
                data = os.read(r, 65536)
            except BlockingIOError:
                continue
            assert data == prune_message([pinned])
            sent_at.append(release)
        assert sent_at == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    finally:
        os.close(r)
        os.close(w)


@PRUNE
@pytest.mark.fuse
def test_real_processes_listed_under_the_runner_are_pruned_once_a_listing_misses_them():
    """procview/ (the program's /proc under `fakeproc run`) lists real pids too, whose
    exits the kernel model never sees: a listing without one prunes its entries."""
    script = ("for r in $(seq {rounds}); do p=; "
              "for i in $(seq 40); do sleep 60 & p=\"$p $!\"; done; ls /proc >/dev/null; "
              "kill $p; wait; done; ls /proc >/dev/null")
    with mounted(SMALL) as m, Client(m.path) as c:
        base = [sys.executable, "-m", "fakeproc", "run", "--mount", str(m.path), "--", "sh", "-c"]
        held = []
        for rounds in (1, 5):
            r = subprocess.run([*base, script.format(rounds=rounds)], capture_output=True,
                               text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            held.append(c.call("fs_inodes")["per_process"])
        assert held[1] <= held[0] + 20, held  # kept, the 160 more sleeps would be there
