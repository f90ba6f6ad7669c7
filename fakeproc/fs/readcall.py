"""The read(2) behind a FUSE READ request, from the host's /proc.

FUSE passes a READ's offset and size, not the count of the syscall that caused it: a
read larger than one request (256 pinned user pages, so 1 MiB, or less when the buffer
is not page aligned: an `os.read(fd, 1 << 20)` arrives as 1 MiB minus the buffer's
page offset, then the rest) comes as several. An idle_pages read is one scan whose
bytes depend on its count (INTERFACES.md 1.2: the range ends at pos + count * 32 KiB),
so the handle asks the thread that is blocked in it: /proc/TID/syscall shows the
syscall and its arguments, /proc/PID/fdinfo/FD the file's inode and position (which
read(2) moves only when it returns).

Linux: fs/proc/base.c proc_pid_syscall(), fs/proc/fd.c seq_show(), fs/read_write.c
(MAX_RW_COUNT, and import_iovec() cutting a vector's total to it).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from ..kernel.task_mmu import MAX_RW_COUNT

READ, PREAD64, READV, PREADV, PREADV2 = 0, 17, 19, 295, 327
UIO_MAXIOV = 1024
REQUEST_PAGES = 256  # user pages FUSE pins for one READ (max_pages)
# descriptors all Threads keep open together: past this a file is opened for each
# read (a daemon with many threads and many open idle_pages files must not take the
# server to its RLIMIT_NOFILE)
MAX_KEPT = 256
_kept = 0


@dataclass(frozen=True)
class ReadCall:
    """One thread's read syscall. ``line`` is its /proc/TID/syscall line, the same
    (stack and instruction pointers included) for as long as it stays in that call;
    a loop making the same call again can show the same line, so the call is also
    known by the thread's count of finished read syscalls (``syscr`` of
    /proc/TID/io, which moves only when one returns). ``buf`` is the user buffer of
    a read or pread (None for a vector): its first READ carries up to 256 pages of
    it."""

    tid: str
    line: bytes
    count: int
    syscr: int
    buf: int | None = None

    def first_read_size(self) -> int | None:
        """The size of this call's first FUSE READ, when it is known."""
        if self.buf is None:
            return None
        return min(self.count, REQUEST_PAGES * 4096 - (self.buf & 4095))


class Threads:
    """The /proc files of one process's threads that say what they are blocked in,
    kept open: a pread of an open seq file renders it anew, ten times cheaper than an
    open (an fdinfo file finds its descriptor's file anew at each read, too)."""

    def __init__(self, tgid: int) -> None:
        self.tgid = tgid
        self._syscall: dict[str, int] = {}
        self._fdinfo: dict[tuple[str, int], int] = {}
        self._io: dict[str, int] = {}

    def find(self, ino: int, pos: int) -> list[ReadCall]:
        """The threads blocked in a read of the file with inode `ino` that starts at
        `pos` (none where the host's /proc does not say: a thread that left
        meanwhile, an fdinfo without ``ino``)."""
        try:
            tids = os.listdir(f"/proc/{self.tgid}/task")
        except OSError:
            return []
        for kept in (self._syscall, self._io):
            for gone in kept.keys() - set(tids):
                _drop(kept, gone)
        found = []
        for tid in tids:
            line = self._read(self._syscall, tid, f"task/{tid}/syscall")
            call = self._read_call(tid, line, ino, pos) if line else None
            if call is not None:
                found.append(call)
        return found

    def still_in(self, call: ReadCall) -> bool | None:
        """Is the thread still in the same call (not back out and in a new one)? None
        while it runs (between two READs of its call, or out of it): /proc shows no
        syscall of a running task."""
        line = self._read(self._syscall, call.tid, f"task/{call.tid}/syscall")
        if line == b"running\n":
            return None
        return line == call.line and self._syscr(call.tid) == call.syscr

    def close(self) -> None:
        for fds in (self._syscall, self._fdinfo, self._io):
            for key in list(fds):
                _drop(fds, key)

    def _read(self, fds: dict, key: object, name: str) -> bytes | None:
        """The file's bytes now, through a descriptor kept in `fds` (while fewer than
        MAX_KEPT are); None when it cannot be read (the thread or descriptor is gone)."""
        global _kept
        fd = fds.get(key)
        if fd is None:
            try:
                fd = os.open(f"/proc/{self.tgid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            if _kept >= MAX_KEPT:
                try:
                    return os.pread(fd, 4096, 0)
                except OSError:
                    return None
                finally:
                    os.close(fd)
            fds[key] = fd
            _kept += 1
        try:
            return os.pread(fd, 4096, 0)
        except OSError:
            _drop(fds, key)
            return None

    def _read_call(self, tid: str, line: bytes, ino: int, pos: int) -> ReadCall | None:
        fields = line.split()
        if len(fields) < 7 or fields[0] not in _READS:
            return None  # "running", "-1 sp pc" (not in a syscall), another syscall
        nr = int(fields[0])
        fd, a1, a2, a3 = (int(x, 16) for x in fields[1:5])
        info = self._fdinfo_of(tid, fd)
        if info.get(b"ino") != ino:
            return None
        # read and readv start at the file position, and so does preadv2 at offset -1;
        # the p-variants at their argument
        at_file_pos = nr in (READ, READV) or (nr == PREADV2 and a3 == 2**64 - 1)
        if (info.get(b"pos") if at_file_pos else a3) != pos:
            return None
        count = a2 if nr in (READ, PREAD64) else _iov_total(self.tgid, a1, a2)
        syscr = self._syscr(tid)
        if count is None or syscr is None:
            return None
        return ReadCall(tid, line, min(count, MAX_RW_COUNT), syscr, a1 if nr in (READ, PREAD64) else None)

    def _syscr(self, tid: str) -> int | None:
        """The thread's finished read syscalls (/proc/TID/io)."""
        for row in (self._read(self._io, tid, f"task/{tid}/io") or b"").splitlines():
            if row.startswith(b"syscr:"):
                return int(row.split()[1])
        return None

    def _fdinfo_of(self, tid: str, fd: int) -> dict[bytes, int]:
        """pos and ino of the thread's descriptor (its own table: a thread that did
        unshare(CLONE_FILES) has one)."""
        return _fields(self._read(self._fdinfo, (tid, fd), f"task/{tid}/fdinfo/{fd}") or b"")


_READS = {str(nr).encode() for nr in (READ, PREAD64, READV, PREADV, PREADV2)}


def _drop(fds: dict, key: object) -> None:
    """Close a kept descriptor."""
    global _kept
    os.close(fds.pop(key))
    _kept -= 1


def _fields(text: bytes) -> dict[bytes, int]:
    """pos and ino of an fdinfo file."""
    out = {}
    for row in text.splitlines():
        key, _, value = row.partition(b":")
        if key in (b"pos", b"ino"):
            out[key] = int(value)
    return out


def _iov_total(tgid: int, iov: int, iovcnt: int) -> int | None:
    """The bytes a vector of `iovcnt` struct iovec at `iov` asks for, read from the
    process's memory; None when it cannot be read."""
    if not 0 < iovcnt <= UIO_MAXIOV:
        return None
    try:
        fd = os.open(f"/proc/{tgid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.pread(fd, 16 * iovcnt, iov)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(raw) != 16 * iovcnt:
        return None
    return sum(length for _base, length in struct.iter_unpack("<QQ", raw))
