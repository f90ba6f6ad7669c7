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
