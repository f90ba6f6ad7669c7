"""Render the sysfs attributes that never change once, for the host's page cache.

A FUSE round trip costs tens of µs on a small VM (most of it waking the other CPU),
while the real /sys answers open+read+close in about 5 µs. Attributes whose bytes are
fixed for the mount's life (``File.fixed``: the node and CPU topology; fakeproc has no
hotplug) are rendered once and read from the host's page cache: under
/sys/devices/system by a connection that never sees an open (fs/sysmount.py), on the
main connection (/sys/bus/node, or /sys/devices/system if its own mount is gone)
with ``keep_cache``, where OPEN stays for kernfs's EACCES.

They stat with their exact length instead of sysfs's 4096: with a size above the
length every read is short, and the host kernel keeps the shortened size only when no
attribute update raced with the READ (a concurrent stat does), so readers got the
bytes followed by NULs. Attributes that change are rendered per open instead: on the
main connection into a direct_io handle (rendered again at offset 0), under /sys/devices/system as a new inode
per distinct rendering (fs/sysmount.py), so an open never mixes two renderings.
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
            data = self.pages[inode] = entry.render(ctx).encode("utf-8", "surrogateescape")
        return data

    def drop(self, inode: int) -> None:
        """The inode is gone (forgotten by the host): its bytes go with it."""
        self.pages.pop(inode, None)
