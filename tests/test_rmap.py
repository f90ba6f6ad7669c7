"""The reverse map of pages shared after fork (native/rmap.c). Further mappers sit in a
side table, chained per PFN, each chain's head found by PFN in a block of 512 heads
(allocated with its first chain, freed with its last). Forks, exits in every order and
migrations of shared pages must keep the invariant checker green (it walks every
chain: mapcount == 1 + chain length, every side-table entry on its page's chain), and
every task that is left must still map its pages."""
from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


def sized(pages: int) -> str:
    return MACHINE.replace(f'size = "{PAGES * 4}KiB"\npages = "{PAGES} accessed"',
                           f'size = "{pages * 4}KiB"\npages = "{pages} accessed"')


OPS = st.lists(st.tuples(st.sampled_from(["fork", "exit", "migrate"]), st.integers(0, 7),
                         st.integers(0, 1023)), min_size=1, max_size=30)


@settings(max_examples=int(os.environ.get("FAKEPROC_HYPOTHESIS_EXAMPLES", "200")) // 2,
          deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pages=st.sampled_from([24, 1024]), ops=OPS)
def test_random_forks_exits_and_migrations_keep_the_reverse_map(pages, ops):
    """Shared pages by the thousand: blocks of chain heads are made and freed (24
    pages lie in one block, 1024 span several) as processes exit, while migrations
    move chains between PFNs and blocks."""
    k = load(sized(pages))
    alive, next_pid = [100], 101
    for kind, who, page in ops:
        pid = alive[who % len(alive)] if alive else None
        if kind == "fork" and pid is not None:
            k.fork(pid, next_pid)
            alive.append(next_pid)
            next_pid += 1
        elif kind == "exit" and pid is not None:
            k.exit(pid)
            alive.remove(pid)
        elif kind == "migrate" and pid is not None:
            addr = BASE + page % pages * 4096
            node = 1 - k.page_node(k.task(pid), addr)
            k.migrate_page_at(k.task(pid), addr, node)
        assert k.check() == [], (kind, pid)
    # every page is one page, whoever maps it (fork shares, nothing writes)
    views = {pid: k.range_pages(k.task(pid), BASE, BASE + pages * 4096) for pid in alive}
    assert len({tuple(v) for v in views.values()}) <= 1


def test_the_checker_finds_a_wrong_count_of_chains_or_mappers():
    k = load(MACHINE)
    k.fork(100, 101)
    assert k.check() == []
    k.native.rmap_chains += 1
    assert any(f"1 blocks and {PAGES} chains, counted 1 and {PAGES + 1}" in p for p in k.check())
    k.native.rmap_chains -= 1
    pfn = pages_of(k, 100)[0][1]
    k.native.pages[pfn].mapcount += 1  # the page walk and the chain both disagree now
    assert k.check() == [f"pfn {pfn}: mapcount 3, but 2 page-table entries map it",
                         "2 problem(s) in all"]
