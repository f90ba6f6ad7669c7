"""Let the host kernel's page cache serve read-only sysfs attributes that have not changed.

A FUSE round trip costs tens of µs on a small VM (most of it waking the other CPU),
while the real /sys answers open+read+close in about 5 µs. An attribute opened with
``keep_cache`` is read from the host's page cache, which drops the READ round trip;
OPEN stays, because kernfs's EACCES for a wrong access mode must come from open().

The rule that keeps this exact: every open renders the file. The bytes the page cache
may hold for an inode are the last bytes rendered (``pages``); an open whose rendering
equals them keeps the cache, any other open replaces them, invalidates the inode's
cached size and opens without ``keep_cache`` (the host kernel then drops the inode's
pages). A READ that fills the cache always gets the inode's current bytes, whichever
descriptor asked, so the cache can never hold bytes older than the last change.

What differs from direct_io: the host kernel stops a cached read at the file size, and
shrinks the cached size to the length of a short read. ``stat`` of a cached attribute
therefore shows its length after a read (4096 before), which the interface contract
allows ("where the FUSE read path allows it"). Only read-only attributes shorter than a
page are cached: a write through the page cache would leave the caller's bytes in it.
"""
from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("fakeproc.fs")
PAGE = 4096


def cacheable(path: tuple[str, ...], mode: int) -> bool:
    """A sysfs attribute nobody can write (its bytes change only by rendering)."""
    return path[:1] == ("sys",) and not mode & 0o222


@dataclass
class CachedHandle:
    """An open cached attribute: reads serve the inode's current bytes."""

    cache: "PageCache"
    inode: int
    direct_io = False

    def read(self, off: int, size: int) -> bytes:
        return self.cache.pages[self.inode][off:off + size]

    def write(self, off: int, data: bytes) -> int:  # opened read-only (kernfs check)
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))


class PageCache:
    """The last rendered bytes of each cached inode, and the invalidation on change.

    ``invalidate_attr(inode)`` tells the host kernel to forget the inode's cached
    attributes (pyfuse3.invalidate_inode with attr_only: no page locks are taken, so
    it cannot wait on a READ this thread has yet to answer)."""

    def __init__(self, invalidate_attr: Callable[[int], None]) -> None:
        self.pages: dict[int, bytes] = {}
        self.invalidate_attr = invalidate_attr

    def open(self, inode: int, data: bytes) -> tuple[CachedHandle, bool] | None:
        """The handle and keep_cache for an open that rendered `data`; None when the
        file is too big to cache (served with direct_io instead)."""
        if len(data) >= PAGE:  # a full page never reads short, so its size never shrinks
            return None
        old = self.pages.get(inode)
        if old == data:
            return CachedHandle(self, inode), True
        self.pages[inode] = data
        if old is not None:
            try:
                self.invalidate_attr(inode)  # a cached size would cut the new bytes short
            except OSError as e:
                if e.errno != errno.ENOENT:  # ENOENT: the kernel forgot the inode already
                    log.warning("invalidating inode %d: %s", inode, e)
        return CachedHandle(self, inode), False
