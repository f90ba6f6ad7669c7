"""FakeprocFS handlers called in-process, for what the mount tests cannot easily set up:
a caller of another uid against a zombie, upstream pagemap's owner, and setattr on
procview links. The rules are checked through the real mount in test_permissions.py
and test_namespace.py; these pin the corners a review found."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pyfuse3
import pytest
import trio

from fakeproc.fs.server import FakeprocFS
from fakeproc.machine import load

MACHINE = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0-1"
[[node]]
type = "pmem"
size = "64MiB"
[[process]]
pid = 50
name = "target"
uid = 1000
gid = 1000
[[process.vma]]
start = 0x7f0000000000
size = "64KiB"
pages = "4 accessed@0"
"""


def caller(uid: int = 0, gid: int = 0) -> SimpleNamespace:
    """A FUSE request's context from no real process (pid 0): its capabilities follow
    its uid (all for root, none for another), as the server assumes then."""
    return SimpleNamespace(uid=uid, gid=gid, pid=0, umask=0o22)


async def inode(fs: FakeprocFS, *names: str) -> int:
    i = pyfuse3.ROOT_INODE
    for n in names:
        i = (await fs.lookup(i, n.encode(), caller())).st_ino
    return i


async def test_a_zombies_maps_open_for_any_uid():
    """mm_access() runs the ptrace check only while the task has an mm."""
    k = load(MACHINE)
    fs = FakeprocFS(k)
    maps = await inode(fs, "proc", "50", "maps")
    with pytest.raises(pyfuse3.FUSEError) as e:
        await fs.open(maps, os.O_RDONLY, caller(2000, 2000))
    assert e.value.errno == errno.EACCES
    k.exit(50, zombie=True)
    await fs.open(maps, os.O_RDONLY, caller(2000, 2000))
    # task_dump_owner(): a task without an mm has its files owned by root
    assert (await fs.getattr(maps, caller())).st_uid == 0


async def test_pagemap_belongs_to_the_process():
    k = load(MACHINE)
    k.upstream = True
    fs = FakeprocFS(k)
    pm = await inode(fs, "proc", "50", "pagemap")
    a = await fs.getattr(pm, caller())
    assert (stat.S_IMODE(a.st_mode), a.st_uid, a.st_gid) == (0o400, 1000, 1000)
    await fs.open(pm, os.O_RDONLY, caller(1000, 1000))
    with pytest.raises(pyfuse3.FUSEError) as e:
        await fs.open(pm, os.O_RDONLY, caller(2000, 2000))
    assert e.value.errno == errno.EACCES


def fields(**on: bool) -> SimpleNamespace:
    names = ("update_atime", "update_mtime", "update_ctime", "update_mode", "update_uid",
             "update_gid", "update_size")
    return SimpleNamespace(**{n: on.get(n, False) for n in names})


async def test_procview_links_keep_their_own_attributes(tmp_path: Path):
    """procview/cpuinfo links into the real procfs; proc/cpuinfo is emulated. A chown
    of the link must not reach the emulated file, and a chmod of the file must not
    change the link (a symlink's mode is 0777)."""
    fs = FakeprocFS(load(MACHINE), realproc=tmp_path)
    emulated, link = await inode(fs, "proc", "cpuinfo"), await inode(fs, "procview", "cpuinfo")
    attr = pyfuse3.EntryAttributes()
    attr.st_uid = attr.st_gid = 1234
    await fs.setattr(link, attr, fields(update_uid=True, update_gid=True), None, caller())
    a = await fs.getattr(emulated, caller())
    assert (a.st_uid, a.st_gid) == (0, 0)
    attr = pyfuse3.EntryAttributes()
    attr.st_mode = stat.S_IFREG | 0o600
    await fs.setattr(emulated, attr, fields(update_mode=True), None, caller())
    assert stat.S_IMODE((await fs.getattr(emulated, caller())).st_mode) == 0o600
    assert (await fs.getattr(link, caller())).st_mode == stat.S_IFLNK | 0o777
