"""The reverse map of pages shared after fork (native/rmap.c). Further mappers sit in a
side table, chained per PFN behind a hash of PFNs. Forks, exits in every order and
migrations of shared pages must keep the invariant checker green (it walks every
chain: mapcount == 1 + chain length, every side-table entry on its page's chain), and
every task that is left must still map its pages."""
from __future__ import annotations

import itertools

import pytest

from fakeproc.machine import load

BASE = 0x7F0000000000
PAGES = 64
MACHINE = f"""
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "64MiB"
[[process]]
pid = 100
name = "parent"
[[process.vma]]
start = {BASE:#x}
size = "{PAGES * 4}KiB"
pages = "{PAGES} accessed"
"""


def pages_of(k, pid: int) -> list[tuple[int, int]]:
    return k.range_pages(k.task(pid), BASE, BASE + PAGES * 4096)


def family():
    """The parent, two children and a grandchild: every page mapped four times."""
    k = load(MACHINE)
    k.fork(100, 101)
    k.fork(100, 102)
    k.fork(101, 103)
    assert k.check() == []
    return k


@pytest.mark.parametrize("order", list(itertools.permutations([100, 101, 102, 103])))
def test_exits_in_any_order_keep_the_reverse_map(order):
    k = family()
    shared = pages_of(k, 100)
    assert len(shared) == PAGES
    alive = {100, 101, 102, 103}
    for pid in order:
        k.exit(pid)
        alive.discard(pid)
        assert k.check() == [], pid
        for other in alive:
            assert pages_of(k, other) == shared
    assert k.mem_usage()["populated"] == 0


def test_a_shared_page_migrates_with_all_its_mappers():
    k = family()
    (addr, old), *_ = pages_of(k, 102)
    assert k.migrate_page_at(k.task(102), addr, 1)
    new = pages_of(k, 100)[0][1]
    assert new != old
    for pid in (100, 101, 102, 103):  # every mapper follows
        assert pages_of(k, pid)[0] == (addr, new)
    assert k.check() == []
    for pid in (103, 100, 102):  # the chain moved with the page: exits still find it
        k.exit(pid)
        assert k.check() == []
    assert pages_of(k, 101)[0] == (addr, new)
