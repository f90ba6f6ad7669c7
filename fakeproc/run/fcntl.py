"""fcntl(F_SETFL) and ioctl(FIONBIO) on an idle_pages file, as the RFC kernel sees
them, for programs under `fakeproc run` (INTERFACES.md 1.1, 1.9).

The RFC kernel takes the scan flags from the file's status flags on every read, so
O_NONBLOCK (SCAN_HUGE_PAGE) set or cleared with F_SETFL after open changes the next
read. FUSE never tells the server about F_SETFL. The runner intercepts it (the filter
stops only cmd == F_SETFL): for a descriptor of an emulated idle_pages file it tells
the emulator the new flags of that open file, then lets the call go on to the real
kernel, so F_GETFL agrees. Every other fcntl never leaves the kernel.
"""
from __future__ import annotations

import fcntl
import os
from typing import Any, Callable

from . import seccomp
from .idle_fd import idle_pages_pid, shared_file, tgid_of


def fcntl_handler(set_flags: Callable[[int, int, int, int], Any]) -> Callable[[Any], Any]:
    """A seccomp handler for fcntl(fd, F_SETFL, flags); set_flags(opener tgid, emulated
    pid, fuse_pos, flags) reaches the emulator."""
    def handler(notif: Any) -> Any:
        fd, flags = seccomp._s32(notif.args[0]), seccomp._s32(notif.args[2])
        pid = idle_pages_pid(notif.pid, fd)
        if pid is not None:
            tgid = tgid_of(notif.pid)
            with shared_file(tgid, fd) as dup:
                set_flags(tgid, pid, os.lseek(dup, 0, os.SEEK_CUR), flags)
        return seccomp.Continue()  # the real F_SETFL too: F_GETFL must agree
    return handler


def fionbio_handler(set_flags: Callable[[int, int, int, int], Any]) -> Callable[[Any], Any]:
    """A seccomp handler for ioctl(fd, FIONBIO, &on): the VFS sets or clears O_NONBLOCK
    in the file's status flags, which are the scan flags; the emulator is told the
    flags the file will have, then the real ioctl goes on (an unreadable argument is
    left to it: EFAULT)."""
    def handler(notif: Any) -> Any:
        fd = seccomp._s32(notif.args[0])
        pid = idle_pages_pid(notif.pid, fd)
        if pid is not None:
            try:
                on = int.from_bytes(seccomp.read_mem(notif.pid, notif.args[2], 4), "little")
            except OSError:
                return seccomp.Continue()
            tgid = tgid_of(notif.pid)
            with shared_file(tgid, fd) as dup:
                flags = fcntl.fcntl(dup, fcntl.F_GETFL)
                flags = flags | os.O_NONBLOCK if on else flags & ~os.O_NONBLOCK
                set_flags(tgid, pid, os.lseek(dup, 0, os.SEEK_CUR), flags)
        return seccomp.Continue()
    return handler
