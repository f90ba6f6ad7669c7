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

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tree import Ctx, File


class PageCache:
    """The bytes of each fixed attribute, rendered once (its stat size is their length).
    That the attributes marked fixed never change is checked by tests/test_pagecache.py
    against a kernel that runs, reclaims and ends processes."""

    def __init__(self) -> None:
        self.pages: dict[int, bytes] = {}

    def bytes(self, inode: int, entry: "File", ctx: "Ctx") -> bytes:
        data = self.pages.get(inode)
        if data is None:
            data = self.pages[inode] = entry.render(ctx).encode()
        return data
