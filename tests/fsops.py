"""Syscall helpers the mount tests share."""
from __future__ import annotations

import os

import pytest


def errno_of(fn) -> int:
    """The errno of the OSError fn() raises (fails the test when it raises none)."""
    with pytest.raises(OSError) as e:
        fn()
    return e.value.errno


def refused_access(path, flags: int) -> int:
    """The errno kernfs's open check gives an access mode a sysfs attribute lacks: at
    open() on the main connection, at the first read() or write() under
    /sys/devices/system, whose opens never reach the server (fs/sysmount). Fails the
    test when the refusal comes at the other step, or not at all."""
    no_open = "/sys/devices/system/" in os.fspath(path)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        assert not no_open, f"{path}: open() refused ({e}); only the I/O should be"
        return e.errno
    try:
        assert no_open, f"{path}: open() accepted an access mode the file lacks"
        with pytest.raises(OSError) as e:
            if flags & os.O_ACCMODE == os.O_RDONLY:
                os.read(fd, 4096)
            else:
                os.write(fd, b"1\n")
        return e.value.errno
    finally:
        os.close(fd)


def write_once(path, data: bytes = b"1\n", flags: int = os.O_WRONLY) -> int:
    """open, one write(2), close: what the write returned."""
    fd = os.open(path, flags)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)
