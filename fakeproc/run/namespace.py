"""The private mount namespace `fakeproc run` puts a program in.

In a forked child, before exec: a new mount namespace (unshare(CLONE_NEWNS)),
all mounts made private so nothing leaks to the host, the real procfs bound at
the mount's ``realproc`` directory, then the emulated trees bound over the real
ones: /sys/devices/system/node, /sys/devices/system/cpu, /sys/bus/node, and the
merged /proc view (emulated pids + links into the real procfs) over /proc.
Linux: unshare(2), mount(2) with MS_BIND | MS_REC and MS_PRIVATE.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_libc.unshare.argtypes = [ctypes.c_int]

# (path in the mount, where it goes); the order matters: realproc before /proc
BINDS = (
    ("sys/devices/system/node", "/sys/devices/system/node"),
    ("sys/devices/system/cpu", "/sys/devices/system/cpu"),
    ("sys/bus/node", "/sys/bus/node"),
)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def bind(src: str | Path, dst: str | Path, recursive: bool = False) -> None:
    flags = MS_BIND | (MS_REC if recursive else 0)
    _check(_libc.mount(os.fsencode(src), os.fsencode(dst), None, flags, None),
           f"bind {src} on {dst}")


def enter(mountpoint: Path, realproc: Path) -> None:
    """Make this process's view the emulated machine's. Call in the child only."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    bind("/proc", realproc, recursive=True)  # the real procfs, for the procview links
    for rel, dst in BINDS:
        if os.path.isdir(dst):
            bind(mountpoint / rel, dst)
    bind(mountpoint / "procview", "/proc")
