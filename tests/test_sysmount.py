"""The bookkeeping of fs/sysmount's renderings, in-process (the mount tests in
test_pagecache.py exercise the same through the host kernel): one inode per distinct
rendering, kept while the host holds a reference, freed at its last FORGET."""
from __future__ import annotations

import errno

import pyfuse3
import pytest

from fakeproc.fs.server import FakeprocFS
from fakeproc.fs.sysmount import ROOT_INO, SUBTREE, VERSION_BASE, SystemMount
from fakeproc.machine import load_default

MEMINFO = SUBTREE + ("node", "node0", "meminfo")


@pytest.fixture
def sysmount(tmp_path):
    fs = FakeprocFS(load_default())
    return SystemMount(fs, tmp_path)


def render(m: SystemMount, path: tuple[str, ...]) -> int:
    entry, ectx = m.fs._resolve(path)
    return m.render(m.fs.inodes.inode(path), entry, ectx)


def lookup(m: SystemMount, path: tuple[str, ...], reply_ok: bool = True):
    """A LOOKUP of path as the connection answers it; the reply went through or not."""
    parent = m.to_fuse(m.fs.inodes.inode(path[:-1]))
    out, nodeid = m.lookup(parent, path[-1].encode())
    m.replied(nodeid, 0 if reply_ok else -2)
    return out, nodeid


def test_the_same_bytes_keep_their_inode_and_new_bytes_get_a_new_one(sysmount):
    m = sysmount
    first = render(m, MEMINFO)
    assert first >= VERSION_BASE and render(m, MEMINFO) == first
    m.renderings[first].lookups = 1  # the host holds it
    m.fs.kernel.exit(4200201)  # stream's 512 MiB on node 0 are freed: MemFree changes
    second = render(m, MEMINFO)
    assert second == first + 1
    assert m.renderings[first].data != m.renderings[second].data
    assert m.to_main(first) == m.to_main(second) == m.fs.inodes.inode(MEMINFO)


def test_an_old_rendering_lives_until_its_last_forget(sysmount):
    m = sysmount
    old = render(m, MEMINFO)
    m.renderings[old].lookups = 2
    m.fs.kernel.exit(4200201)
    new = render(m, MEMINFO)
    m.renderings[new].lookups = 1
    m.forget(old, 1)
    assert old in m.renderings
    m.forget(old, 1)
    assert old not in m.renderings
    with pytest.raises(pyfuse3.FUSEError) as e:
        m.to_main(old)
    assert e.value.errno == errno.ESTALE
    m.forget(new, 1)  # the latest stays: the next open would render the same bytes
    assert new in m.renderings


def test_an_unreferenced_rendering_is_replaced_at_once(sysmount):
    m = sysmount
    old = render(m, MEMINFO)  # looked up by nobody (lookups 0)
    m.fs.kernel.exit(4200201)
    new = render(m, MEMINFO)
    assert old not in m.renderings and new in m.renderings


def test_the_root_is_the_subtree_and_fixed_files_keep_the_path_inode(sysmount):
    m = sysmount
    assert m.to_main(ROOT_INO) == m.fs.inodes.inode(SUBTREE)
    assert m.to_fuse(m.fs.inodes.inode(SUBTREE)) == ROOT_INO
    cpulist = m.fs.inodes.inode(SUBTREE + ("node", "node0", "cpulist"))
    assert m.to_main(cpulist) == cpulist < VERSION_BASE


def test_lookups_count_replies_that_went_through_and_forget_frees(sysmount):
    m = sysmount
    out, first = lookup(m, MEMINFO)
    assert out.nodeid == first and out.ino == m.fs.inodes.inode(MEMINFO)
    assert out.size == len(m.renderings[first].data) and out.entry_timeout == 0.0
    assert lookup(m, MEMINFO)[1] == first and m.renderings[first].lookups == 2
    assert lookup(m, MEMINFO, reply_ok=False)[1] == first and m.renderings[first].lookups == 2
    m.fs.kernel.exit(4200201)
    _, second = lookup(m, MEMINFO)  # a revalidation that finds new bytes
    m.forget(second, 1)             # the host drops the new node it did not keep...
    assert second in m.renderings   # ...which stays the latest, for its fresh lookup
    assert lookup(m, MEMINFO)[1] == second
    m.forget(first, 2)
    assert first not in m.renderings


def test_a_fixed_attribute_is_its_path_inode(sysmount):
    m = sysmount
    out, nodeid = lookup(m, SUBTREE + ("node", "node0", "cpulist"))
    assert nodeid is None and out.nodeid == out.ino == m.fs.inodes.inode(SUBTREE + ("node", "node0", "cpulist"))
    assert out.entry_timeout == out.attr_timeout == 60.0 and out.size == 4  # "0-3\n"


def test_retire_gives_the_next_open_a_new_inode_for_the_same_bytes(sysmount):
    m = sysmount
    _, first = lookup(m, MEMINFO)
    m.retire(m.fs.inodes.inode(MEMINFO))
    assert first in m.renderings  # the host still holds it
    _, second = lookup(m, MEMINFO)
    assert second != first and m.renderings[second].data == m.renderings[first].data
