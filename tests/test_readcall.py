"""fs/readcall.py against real blocked syscalls: a thread of this process waits in
read(2) or readv(2) on a pipe, and the host's /proc says what it asked for."""
from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Callable

import pytest

from fakeproc.fs import readcall


def _blocked(call: Callable[[int], object]):
    """Run call(read end of a new pipe) in a thread until it blocks; yields
    (pipe's inode, write end), then unblocks it."""
    r, w = os.pipe()
    t = threading.Thread(target=call, args=(r,), daemon=True)
    t.start()
    tid = None
    deadline = time.monotonic() + 5
    while tid is None and time.monotonic() < deadline:
        for entry in os.listdir(f"/proc/{os.getpid()}/task"):
            with open(f"/proc/{os.getpid()}/task/{entry}/syscall") as f:
                fields = f.read().split()
            if fields[0] in ("0", "19") and int(fields[1], 16) == r:
                tid = entry
        time.sleep(0.01)
    assert tid is not None, "the thread never blocked"
    return os.fstat(r).st_ino, r, w, t


@pytest.mark.parametrize("call, count", [
    (lambda r: os.read(r, 12345), 12345),
    (lambda r: os.readv(r, [bytearray(100), bytearray(200), bytearray(3)]), 303),
])
def test_finds_the_count_of_a_blocked_read(call, count):
    ino, r, w, t = _blocked(call)
    threads = readcall.Threads(os.getpid())
    try:
        found = threads.find(ino, 0)
        assert found is not None and found.count == count
        assert threads.still_in(found)
        assert threads.find(ino + 1, 0) is None  # another file
        assert threads.find(ino, 4096) is None   # another position
    finally:
        os.write(w, b"x")
        t.join(5)
        os.close(r)
        os.close(w)
    assert not threads.still_in(found)  # back out of that call
    threads.close()


def test_count_is_cut_to_max_rw_count():
    """A vector asking for more than MAX_RW_COUNT is cut to it (import_iovec()). Its
    lengths only pass access_ok(): a pipe read copies just the bytes it has."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(16)

    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    iov = (Iovec * 2)((ctypes.addressof(buf), 3 << 30), (ctypes.addressof(buf), 1 << 30))
    ino, r, w, t = _blocked(lambda r: libc.readv(r, iov, 2))
    threads = readcall.Threads(os.getpid())
    try:
        found = threads.find(ino, 0)
        assert found is not None and found.count == 0x7FFFF000
    finally:
        threads.close()
        os.write(w, b"x")
        t.join(5)
        os.close(r)
        os.close(w)


def test_no_such_process():
    assert readcall.Threads(2**22 + 12345).find(1, 0) is None
