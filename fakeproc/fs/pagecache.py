"""Let the host kernel's page cache serve the sysfs attributes that never change.

A FUSE round trip costs tens of µs on a small VM (most of it waking the other CPU),
while the real /sys answers open+read+close in about 5 µs. An attribute opened with
``keep_cache`` is read from the host's page cache, which drops the READ round trip;
OPEN stays, because kernfs's EACCES for a wrong access mode must come from open().

Only attributes whose bytes are fixed for the mount's life (``File.fixed``: the node
and CPU topology; fakeproc has no hotplug) are cached, and they stat with their exact
length instead of sysfs's 4096. Both halves are needed for exactness under concurrent
readers: with a size above the length, every read is short, and the host kernel keeps
the shortened size only when no attribute update raced with the READ (a concurrent
stat does), so readers got the bytes followed by NULs; and bytes that change cannot
be cached at all, since the page cache holds one copy per file while every open must
see one whole rendering (a held descriptor could get the head of one rendering and
the tail of the next). Attributes that change stay on ``direct_io``.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Callable


@dataclass
class CachedHandle:
    """An open fixed attribute: its bytes, for the READ that fills the page cache."""

    data: bytes
    direct_io = False

    def read(self, off: int, size: int) -> bytes:
        return self.data[off:off + size]

    def write(self, off: int, data: bytes) -> int:  # opened read-only (kernfs check)
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))


class PageCache:
    """The bytes of each fixed attribute, rendered once (its stat size is their length).
    That the attributes marked fixed never change is checked by tests/test_pagecache.py
    against a kernel that runs, reclaims and ends processes."""

    def __init__(self) -> None:
        self.pages: dict[int, bytes] = {}

    def bytes(self, inode: int, render: Callable[[], bytes]) -> bytes:
        data = self.pages.get(inode)
        if data is None:
            data = self.pages[inode] = render()
        return data

    def open(self, inode: int, render: Callable[[], bytes]) -> CachedHandle:
        """The handle for an open: the stored bytes (rendered at the first use only)."""
        return CachedHandle(self.bytes(inode, render))
