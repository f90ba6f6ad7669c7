"""fs/readcall.py against real blocked syscalls: a thread of this process waits in
read(2) or readv(2) on a pipe, and the host's /proc says what it asked for."""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from typing import Callable, Iterator

import pytest

from fakeproc.fs import readcall


@contextlib.contextmanager
def blocked(call: Callable[[int], object]) -> Iterator[tuple[int, threading.Thread]]:
    """Run call(read end of a new pipe) in a thread until it blocks; yields the
    pipe's inode and the thread, then unblocks it (one byte) and closes the pipe."""
    r, w = os.pipe()
    t = threading.Thread(target=call, args=(r,), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 5
        while not _waits_in(r) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _waits_in(r), "the thread never blocked"
        yield os.fstat(r).st_ino, t
    finally:
        os.write(w, b"x")
        t.join(5)
        os.close(r)
        os.close(w)


def _waits_in(fd: int) -> bool:
    """Does a thread of this process wait in read(2) or readv(2) on fd?"""
    for entry in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{entry}/syscall") as f:
            fields = f.read().split()
        if fields[0] in ("0", "19") and int(fields[1], 16) == fd:
            return True
    return False


@pytest.mark.parametrize("call, count", [
    (lambda r: os.read(r, 12345), 12345),
    (lambda r: os.readv(r, [bytearray(100), bytearray(200), bytearray(3)]), 303),
])
def test_finds_the_count_of_a_blocked_read(call, count):
    threads = readcall.Threads(os.getpid())
    kept = readcall._kept
    with blocked(call) as (ino, t):
        [found] = threads.find(ino, 0)
        assert found.count == count
        assert threads.still_in(found) is True
        assert threads.find(ino + 1, 0) == []  # another file
        assert threads.find(ino, 4096) == []   # another position
    assert not t.is_alive()
    deadline = time.monotonic() + 5
    while (now := threads.still_in(found)) is None:  # None: the OS thread is still exiting
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert now is False  # back out of that call (and gone)
    assert readcall._kept > kept
    threads.close()
    assert readcall._kept == kept


def test_count_is_cut_to_max_rw_count():
    """A vector asking for more than MAX_RW_COUNT is cut to it (import_iovec()). Its
    lengths only pass access_ok(): a pipe read copies just the bytes it has."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(16)

    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    iov = (Iovec * 2)((ctypes.addressof(buf), 3 << 30), (ctypes.addressof(buf), 1 << 30))
    threads = readcall.Threads(os.getpid())
    with blocked(lambda r: libc.readv(r, iov, 2)) as (ino, _):
        [found] = threads.find(ino, 0)
    threads.close()
    assert found.count == 0x7FFFF000


def test_kept_descriptors_are_capped(monkeypatch):
    """Past MAX_KEPT a file is opened for each read, and nothing stays open."""
    monkeypatch.setattr(readcall, "MAX_KEPT", readcall._kept)  # no room left
    threads = readcall.Threads(os.getpid())
    with blocked(lambda r: os.read(r, 777)) as (ino, _):
        before = len(os.listdir("/proc/self/fd"))
        [found] = threads.find(ino, 0)
        assert found.count == 777
        assert threads.still_in(found) is True
        assert len(os.listdir("/proc/self/fd")) == before
    threads.close()


def test_the_same_call_made_again_is_another_call():
    """A loop making one read again may show the same syscall line; the thread's
    count of finished reads (/proc/TID/io syscr) tells the calls apart."""
    def twice(r: int) -> None:
        for _ in range(2):
            os.read(r, 5)

    threads = readcall.Threads(os.getpid())
    r, w = os.pipe()
    t = threading.Thread(target=twice, args=(r,), daemon=True)
    t.start()
    try:
        while not _waits_in(r):
            time.sleep(0.01)
        [first] = threads.find(os.fstat(r).st_ino, 0)
        os.write(w, b"x")
        deadline = time.monotonic() + 5
        while (again := threads.find(os.fstat(r).st_ino, 0)) in ([], [first]) and time.monotonic() < deadline:
            time.sleep(0.01)
        [second] = again
        assert second.syscr == first.syscr + 1
        assert threads.still_in(first) is False and threads.still_in(second) is True
    finally:
        os.write(w, b"y")
        t.join(5)
        os.close(r)
        os.close(w)
        threads.close()


def test_no_such_process():
    assert readcall.Threads(2**22 + 12345).find(1, 0) == []
