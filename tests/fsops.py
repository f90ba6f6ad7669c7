"""Syscall helpers the mount tests share."""
from __future__ import annotations

import os

import pytest


def errno_of(fn) -> int:
    """The errno of the OSError fn() raises (fails the test when it raises none)."""
    with pytest.raises(OSError) as e:
        fn()
    return e.value.errno


def write_once(path, data: bytes = b"1\n", flags: int = os.O_WRONLY) -> int:
    """open, one write(2), close: what the write returned."""
    fd = os.open(path, flags)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)
