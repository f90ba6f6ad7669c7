"""move_pages(2), get_mempolicy(2), migrate_pages(2) on the kernel model (INTERFACES.md 3).

Expected status arrays are written by hand from the spec's step list. -99 marks an
entry the caller pre-filled, to see which ones the kernel leaves unwritten.
"""
from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakeproc.kernel import migrate, vmstat
from fakeproc.kernel.native import lib
from fakeproc.machine import load

U = -99  # the caller's pre-filled status value
A = 0x7F0000000000        # anon VMA: 4 pages on node 0, 4 on node 2, 2 untouched,
                          # 2 pinned on node 0 (migration fails), then untouched
F = 0x7F0000200000        # rw-p file VMA: 2 present, 2 untouched
S = 0x7F0000400000        # anon VMA: 2 swapped-out pages
V = 0x7F0000600000        # [vvar]
D = 0x7F0000800000        # [vdso]: 1 page
T = 0x7F0000A00000        # THP VMA: one THP on node 0
MACHINE = """
distances = [[10, 21, 17, 28], [21, 10, 28, 17], [17, 28, 10, 28], [28, 17, 28, 10]]
[[node]]
type = "dram"
size = "64MiB"
cpus = "0-1"
[[node]]
type = "dram"
size = "64MiB"
cpus = "2-3"
[[node]]
type = "pmem"
size = "64MiB"
[[node]]
type = "pmem"
size = "2MiB"

[[process]]
pid = 50
name = "target"
[[process.vma]]
start = 0x7f0000000000
size = "64KiB"
pages = "4 accessed@0, 4 idle@2, 2 none, 2 pinned@0"
[[process.vma]]
start = 0x7f0000200000
size = "16KiB"
perms = "rw-p"
path = "/data/file"
pages = "2 accessed"
[[process.vma]]
start = 0x7f0000400000
size = "8KiB"
pages = "2 swap"
[[process.vma]]
start = 0x7f0000600000
size = "16KiB"
perms = "r--p"
kind = "vvar"
[[process.vma]]
start = 0x7f0000800000
size = "8KiB"
perms = "r-xp"
kind = "vdso"
pages = "1 accessed"
[[process.vma]]
start = 0x7f0000a00000
size = "4MiB"
thp = true
pages = "1 thp-accessed@0"
"""
PAGE = 4096
USER = migrate.Caller(1000, 1000, 0)  # an unprivileged caller of another uid


@pytest.fixture
def k():
    return load(MACHINE)


def test_query_mode_statuses(k):
    pages = [A, A + 4 * PAGE, A + 8 * PAGE, F, F + 2 * PAGE, S, V, 0x1000, T, D]
    status = [U] * len(pages)
    assert migrate.move_pages(k, 50, pages, None, status, 0) == 0
    # node, node, untouched anon, file page, untouched file, swapped, [vvar] (no page:
    # the special mapping has ->fault, so follow_page() gives NULL), outside any VMA,
    # a THP, [vdso] (a kernel-image page: node 0)
    assert status == [0, 2, -errno.EFAULT, 0, -errno.ENOENT, -errno.ENOENT, -errno.ENOENT,
                      -errno.EFAULT, 0, 0]


def test_a_vvar_frame_is_efault_and_a_hole_enoent():
    """A mapped [vvar] page is a PFN-map frame: follow_page(FOLL_DUMP) finds no struct
    page (vm_normal_page() is NULL) -> -EFAULT; the hole after it -> -ENOENT (->fault).
    get_mempolicy: -EFAULT for both (get_user_pages() refuses VM_IO | VM_PFNMAP), and
    it faults nothing in. A move: -EFAULT before any lookup (not migratable)."""
    k = load(MACHINE.replace('kind = "vvar"', 'kind = "vvar"\npages = "1 accessed"'))
    status = [U, U]
    assert migrate.move_pages(k, 50, [V, V + PAGE], None, status, 0) == 0
    assert status == [-errno.EFAULT, -errno.ENOENT]
    assert migrate.get_mempolicy_node(k, 50, V + PAGE) == -errno.EFAULT
    assert k.entry(k.task(50), V + PAGE)[1] == 0
    status = [U, U]
    assert migrate.move_pages(k, 50, [V, V + PAGE], [0, 0], status, 2) == 0
    assert status == [-errno.EFAULT, -errno.EFAULT]


def test_move_writes_batches_and_sw_young_marks_only_isolated_pages(k):
    pages = [A, A + PAGE, A + 4 * PAGE, A + 5 * PAGE]
    nodes = [2, 2, 0, 0]
    status = [U] * 4
    assert migrate.move_pages(k, 50, pages, nodes, status, 0x82) == 0
    # batch 1 (node 2): both moved; batch 2 (node 0): both moved; all written
    assert status == [2, 2, 0, 0]
    t = k.task(50)
    assert [k.page_node(t, a) for a in pages] == [2, 2, 0, 0]
    for a in pages:
        pfn = (k.entry(t, a)[1] >> 12) & 0xFFFFFFFFFF
        assert k.native.pages[pfn].flags & lib.FP_PG_REFERENCED  # copied to the new page
    c = vmstat.global_counters(k)
    assert c["pgmigrate_success"] == 4 and c["pgmigrate_fail"] == 0
    assert k.check() == []


def test_pages_already_in_place_are_not_marked_and_a_final_batch_stays_unwritten(k):
    pages = [A, A + PAGE, A + 4 * PAGE]
    nodes = [0, 0, 2]  # all three already there: nothing queued in any batch
    status, written = [U] * 3, []
    assert migrate.move_pages(k, 50, pages, nodes, status, 0x82, written=written) == 0
    # batch 1 is flushed when node changes (written, even with nothing queued);
    # the final batch had nothing queued: status[2] keeps the caller's value
    assert status == [0, 0, U]
    assert written == [(0, 2)]
    t = k.task(50)
    pfn = (k.entry(t, A)[1] >> 12) & 0xFFFFFFFFFF
    assert not k.native.pages[pfn].flags & lib.FP_PG_REFERENCED


def test_queue_errors_flush_the_batch(k):
    pages = [A, A + 8 * PAGE, A + PAGE, S, F]
    nodes = [2, 2, 2, 2, 2]
    status = [U] * 5
    assert migrate.move_pages(k, 50, pages, nodes, status, 2) == 0
    # A: queued; A+8: untouched -> EFAULT, batch {A} migrated, status[0] = 2, batch closed;
    # A+PAGE: new batch at 2, queued; S: swapped -> ENOENT, flush, status[2] = 2;
    # F: new batch, queued, final flush writes status[4]
    assert status == [2, -errno.EFAULT, 2, -errno.ENOENT, 2]


def test_step1_errors_end_the_call_after_flushing(k):
    status = [U] * 3
    r = migrate.move_pages(k, 50, [A, A + PAGE, A + 2 * PAGE], [2, 2, 7], status, 2)
    assert r == -errno.ENODEV
    assert status == [2, 2, U]  # earlier entries fully processed, the bad one untouched
    status = [U] * 2
    assert migrate.move_pages(k, 50, [A + 2 * PAGE, A + 3 * PAGE], [1, 1024], status, 2) == -errno.ENODEV
    assert status == [1, U]


def test_up_front_errors(k):
    s = [U]
    assert migrate.move_pages(k, 50, [A], [2], s, 0x8) == -errno.EINVAL
    assert migrate.move_pages(k, 50, [A], [2], s, 0x100) == -errno.EINVAL
    assert migrate.move_pages(k, 999, [A], [2], s, 2) == -errno.ESRCH
    assert migrate.move_pages(k, 50, [A], [2], s, 4, caller=USER) == -errno.EPERM
    assert s == [U]
    k.exit(50, zombie=True)
    assert migrate.move_pages(k, 50, [A], [2], s, 2) == -errno.EINVAL


def test_vvar_and_vdso_cannot_move(k):
    status = [U, U]
    assert migrate.move_pages(k, 50, [V, D], [2, 2], status, 2) == 0
    assert status == [-errno.EFAULT, -errno.EBUSY]


def test_a_thp_moves_whole_or_is_split_when_the_target_has_no_block(k):
    status = [U]
    assert migrate.move_pages(k, 50, [T], [2], status, 2) == 0
    assert status == [2] and k.page_node(k.task(50), T + 5 * PAGE) == 2
    assert vmstat.global_counters(k)["pgmigrate_success"] == 1  # a THP counts as one
    # node 3 is one free 2 MiB block, but the allocation must leave its min watermark:
    # 49664 pages in all, min_free_kbytes = int_sqrt(49664 * 4 * 16) = 1782, 445 pages,
    # node 3's share 445 * 512 // 49664 = 4; 512 free < 4 + 512: no THP there (no
    # compaction, and reclaim frees no whole block). 4.20's migrate_pages() then splits
    # the THP: the head is retried at once as a base page, the tails are appended to
    # the list from 511 down to 1 (lru_add_page_tail). 508 pages fit above min: the
    # head and the 507 tails 511..5; tail 4 meets ENOMEM, which ends the call, its
    # status unwritten; tails 1..4 stay on node 2, mapped by 4 KiB PTEs now.
    assert tuple(k.native.nodes[3].wmark) == (4, 5, 6)
    status = [U]
    assert migrate.move_pages(k, 50, [T], [3], status, 2) == -errno.ENOMEM
    assert status == [U]
    t = k.task(50)
    assert [k.page_node(t, T + i * PAGE) for i in range(512)] == [3] + [2] * 4 + [3] * 507
    assert k.entry(t, T + 5 * PAGE)[0] == 4  # a PTE: the PMD points to the deposited table
    # the split went through migration entries (unmap_page()'s freeze) and
    # remove_migration_pte() put each page back old and clean: the accessed PMD's bit
    # is gone from the tails left behind
    for i in range(1, 5):
        level, entry = k.entry(t, T + i * PAGE)
        assert level == 4 and entry & lib.FP_PAGE_PRESENT
        assert not entry & (lib.FP_PAGE_ACCESSED | lib.FP_PAGE_DIRTY)
    c = vmstat.global_counters(k)
    assert (c["thp_split_page"], c["thp_split_pmd"]) == (1, 1)
    assert c["pgmigrate_success"] == 1 + 508 and c["pgmigrate_fail"] == 1
    assert k.node_stat(3)[lib.FP_NR_FREE_PAGES] == 4
    assert k.node_stat(2)[lib.FP_NR_ANON_THPS] == 0
    assert k.check() == []
    # the base pages move one by one from now on
    status = [U]
    assert migrate.move_pages(k, 50, [T + PAGE], [0], status, 2) == 0
    assert status == [0] and k.page_node(t, T + PAGE) == 0 and k.page_node(t, T + 2 * PAGE) == 2
    assert k.check() == []


def test_a_split_moves_a_dirty_pmd_to_the_page_flags():
    """__split_huge_pmd_locked(): pmd_dirty() -> SetPageDirty() on the head, which
    __split_huge_page_tail() copies to every tail; the PTEs themselves are clean."""
    k = load(MACHINE.replace('"1 thp-accessed@0"', '"1 thp-dirty@0"'))
    assert migrate.move_pages(k, 50, [T], [3], [U], 2) == -errno.ENOMEM
    t = k.task(50)
    for i in range(1, 5):  # the tails the call left behind (on node 0)
        entry = k.entry(t, T + i * PAGE)[1]
        pfn = (entry & 0x000FFFFFFFFFF000) >> 12
        assert not entry & (lib.FP_PAGE_ACCESSED | lib.FP_PAGE_DIRTY)
        assert k.native.pages[pfn].flags & lib.FP_PG_DIRTY
    assert k.check() == []


def test_migration_leaves_entries_old_and_clean_moved_or_not():
    """__unmap_and_move(): try_to_unmap(TTU_MIGRATION) makes a dirty page PG_dirty and
    remove_migration_ptes() installs pte_mkold(mk_pte()): old and clean, whether the
    page moved (the new frame) or migrate_page_move_mapping() found the pinned page's
    extra reference (-EAGAIN, the old frame back)."""
    k = load(MACHINE.replace('"4 accessed@0, 4 idle@2, 2 none, 2 pinned@0"',
                             '"3 accessed@0, 1 dirty@0, 4 idle@2, 2 none, 2 pinned@0"'))
    t = k.task(50)
    k.touch(t, A + 10 * PAGE, write=True)  # the pinned page: accessed and dirty
    assert migrate.move_pages(k, 50, [A + 3 * PAGE, A + 10 * PAGE], [1, 1], [U, U], 2) == 1
    for addr, node in ((A + 3 * PAGE, 1), (A + 10 * PAGE, 0)):
        entry = k.entry(t, addr)[1]
        assert k.page_node(t, addr) == node
        assert entry & lib.FP_PAGE_PRESENT and entry & lib.FP_PAGE_RW
        assert not entry & (lib.FP_PAGE_ACCESSED | lib.FP_PAGE_DIRTY)
        assert k.native.pages[(entry >> 12) & 0xFFFFFFFFFF].flags & lib.FP_PG_DIRTY
    assert k.check() == []


def test_a_pinned_thp_cannot_be_split_and_the_call_fails_ebusy():
    """can_split_huge_page() refuses a THP with an extra reference: split_huge_page()
    returns -EBUSY (thp_split_page_failed) and 4.20's migrate_pages() returns that rc."""
    k = load(MACHINE)
    k.pin_page(k.task(50), T)
    status = [U]
    assert migrate.move_pages(k, 50, [T], [3], status, 2) == -errno.EBUSY
    assert status == [U] and k.page_node(k.task(50), T) == 0
    c = vmstat.global_counters(k)
    assert c["thp_split_page_failed"] == 1 and c["pgmigrate_fail"] == 1
    assert k.check() == []


SW_YOUNG_MACHINE = """
distances = [[10, 21, 17], [21, 10, 28], [17, 28, 10]]
[[node]]
type = "dram"
size = "4MiB"
cpus = "0"
[[node]]
type = "dram"
size = "4MiB"
cpus = "1"
[[node]]
type = "pmem"
size = "64MiB"

[[process]]
pid = 50
name = "target"
[[process.vma]]
start = 0x7f0000000000
size = "64KiB"
pages = "16 accessed@0"
"""


@pytest.mark.parametrize("sw_young", [True, False])
def test_sw_young_does_not_change_which_pages_reclaim_demotes(sw_young):
    """INTERFACES.md 3 and 4: SW_YOUNG marks the isolated pages PG_referenced, and
    PG_referenced alone never saves an anonymous page. Pages 0-3 are moved node 0 -> 1
    -> 0 with the flags under test, then pages 4-15 without SW_YOUNG, so 0-3 are the
    oldest of node 0's inactive list, accessed bits clear. Node 0's peer is node 2
    (distance 17 < 21). A kswapd that needs two pages (high = free + 2) demotes the
    two at the tail, 0 and 1 (priority 4: 16 >> 4 = 1 page, then priority 3: 15 >> 3
    = 1), marked or not; had PG_referenced kept them, 4 and 5 would go instead."""
    k = load(SW_YOUNG_MACHINE)
    t = k.task(50)
    k.age_active(0)
    first = [A + i * PAGE for i in range(4)]
    rest = [A + i * PAGE for i in range(4, 16)]
    flags = 0x82 if sw_young else 0x2
    for nid in (1, 0):
        assert migrate.move_pages(k, 50, first, [nid] * 4, [U] * 4, flags) == 0
    for nid in (1, 0):
        assert migrate.move_pages(k, 50, rest, [nid] * 12, [U] * 12, 0x2) == 0
    referenced = [bool(k.native.pages[(k.entry(t, a)[1] >> 12) & 0xFFFFFFFFFF].flags
                       & lib.FP_PG_REFERENCED) for a in first]
    assert referenced == [sw_young] * 4
    assert [k.page_node(t, A + i * PAGE) for i in range(16)] == [0] * 16
    k.native.nodes[0].wmark[2] = k.node_stat(0)[lib.FP_NR_FREE_PAGES] + 2
    k.native.nodes[0].kswapd_wake = 1
    k.run_kswapd()
    assert [i for i in range(16) if k.page_node(t, A + i * PAGE) == 2] == [0, 1]
    assert k.check() == []


def test_get_mempolicy_faults_in_and_reports_the_node(k):
    assert migrate.get_mempolicy_node(k, 50, A + 4 * PAGE) == 2
    assert migrate.get_mempolicy_node(k, 50, A + 9 * PAGE) == 0  # faulted in on the CPU's node
    assert migrate.get_mempolicy_node(k, 50, 0x1000) == -errno.EFAULT
    assert migrate.get_mempolicy_node(k, 999, A) == -errno.ESRCH


def test_migrate_pages_moves_a_whole_process(k):
    assert migrate.migrate_pages(k, 50, [0], [1]) == 2  # the two pinned pages stay
    t = k.task(50)
    assert [k.page_node(t, A + i * PAGE) for i in range(8)] == [1] * 4 + [2] * 4
    assert k.page_node(t, T) == 1 and k.page_node(t, F) == 1
    assert k.check() == []


def test_a_page_that_fails_to_migrate_gives_a_positive_return_and_unwritten_status(k):
    # A+10, A+11 are pinned (an extra reference): migrate_pages() fails them with -EAGAIN.
    # Batch 1 (node 2) = {A, A+10}: flushed when the node changes; 1 page left -> the call
    # returns 1 at once, batch 1's status unwritten, the rest never looked at
    pages = [A, A + 10 * PAGE, A + PAGE, A + 2 * PAGE]
    status = [U] * 4
    assert migrate.move_pages(k, 50, pages, [2, 2, 1, 1], status, 0x82) == 1
    assert status == [U, U, U, U]
    t = k.task(50)
    assert k.page_node(t, A) == 2 and k.page_node(t, A + 10 * PAGE) == 0
    assert k.page_node(t, A + PAGE) == 0  # never reached
    c = vmstat.global_counters(k)
    assert c["pgmigrate_success"] == 1 and c["pgmigrate_fail"] == 1
    # in the final batch: migrated pages counted, status unwritten, positive return
    status = [U, U]
    assert migrate.move_pages(k, 50, [A + PAGE, A + 11 * PAGE], [1, 1], status, 2) == 1
    assert status == [U, U]
    assert k.check() == []


def test_a_node_outside_the_cpuset_is_eacces():
    k = load(MACHINE.replace('name = "target"', 'name = "target"\nmems_allowed = "0,2"'))
    status = [U, U, U]
    # A -> node 2 queued; A+1 -> node 1: outside mems_allowed, EACCES at step 1, the
    # batch before it flushed and written, the bad entry untouched
    assert migrate.move_pages(k, 50, [A, A + PAGE, A + 2 * PAGE], [2, 1, 2], status, 2) == -errno.EACCES
    assert status == [2, U, U]
    assert k.zonelist(k.task(50)) == [0]  # DRAM fallback without node 1


def test_mems_allowed_in_status():
    """/proc/PID/status shows the process's own mems_allowed (INTERFACES.md 5): the
    mask over MAX_NUMNODES = 1024 bits (32 groups) and the list, rendered by the file
    system's status file."""
    from fakeproc.fs.server import make_root
    from fakeproc.fs.tree import Ctx, resolve
    k = load(MACHINE.replace('name = "target"', 'name = "target"\nmems_allowed = "0,2"'))
    entry, ctx = resolve(make_root(None), Ctx(k), ("proc", "50", "status"))
    lines = entry.render(ctx).splitlines()
    assert "Mems_allowed:\t" + "00000000," * 31 + "00000005" in lines
    assert "Mems_allowed_list:\t0,2" in lines


FORKED = MACHINE + """
[[process]]
pid = 51
name = "child"
fork_of = 50
"""


def test_pages_shared_after_fork_need_move_all():
    k = load(FORKED)
    parent, child = k.task(50), k.task(51)
    assert k.check() == []
    pfn = (k.entry(parent, A)[1] >> 12) & 0xFFFFFFFFFF
    assert k.native.pages[pfn].mapcount == 2
    status = [U, U]
    # every page is mapped twice now: without MPOL_MF_MOVE_ALL, A+4 (node 2) is -EACCES;
    # A is already on node 0: success, not queued, so the final batch stays unwritten
    assert migrate.move_pages(k, 51, [A + 4 * PAGE, A], [0, 0], status, 2) == 0
    assert status == [-errno.EACCES, U]
    status = [U]
    assert migrate.move_pages(k, 51, [A], [1], status, 4) == 0  # MOVE_ALL (we are capable)
    assert status == [1]
    assert k.page_node(parent, A) == 1 and k.page_node(child, A) == 1  # both mappings follow
    assert k.check() == []


def test_a_thp_shared_after_fork_is_split_in_every_mapping():
    """split_huge_page() unmaps a THP from every process (unmap_page()) and maps its
    pages back (remap_page()), so a THP the child shares with its parent splits in
    both: each PMD becomes its deposited table (thp_split_pmd twice), every page is
    mapped twice. Node 3 takes 508 pages above min (test above): the head and tails
    511..5 move in both mappings; tail 4 meets ENOMEM; tails 1..4 stay on node 0, each
    still shared."""
    k = load(FORKED)
    parent, child = k.task(50), k.task(51)
    status = [U]
    assert migrate.move_pages(k, 51, [T], [3], status, 4) == -errno.ENOMEM  # MOVE_ALL
    want = [3] + [0] * 4 + [3] * 507
    assert [k.page_node(parent, T + i * PAGE) for i in range(512)] == want
    assert [k.page_node(child, T + i * PAGE) for i in range(512)] == want
    for t in (parent, child):
        assert k.entry(t, T + PAGE)[0] == 4  # PTEs now, in both
    pfns = {t.pid: (k.entry(t, T + PAGE)[1] >> 12) & 0xFFFFFFFFFF for t in (parent, child)}
    assert pfns[50] == pfns[51] and k.native.pages[pfns[50]].mapcount == 2
    c = vmstat.global_counters(k)
    assert (c["thp_split_page"], c["thp_split_pmd"]) == (1, 2)
    assert c["pgmigrate_success"] == 508 and c["pgmigrate_fail"] == 1
    assert k.check() == []
    k.exit(50)
    assert k.native.pages[pfns[51]].mapcount == 1 and k.check() == []


def test_a_write_breaks_the_sharing_copy_on_write():
    k = load(FORKED)
    parent, child = k.task(50), k.task(51)
    k.touch(child, A + PAGE, write=True)
    p_pfn = (k.entry(parent, A + PAGE)[1] >> 12) & 0xFFFFFFFFFF
    c_pfn = (k.entry(child, A + PAGE)[1] >> 12) & 0xFFFFFFFFFF
    assert p_pfn != c_pfn
    assert k.native.pages[p_pfn].mapcount == 1 and k.native.pages[c_pfn].mapcount == 1
    assert k.entry(child, A + PAGE)[1] & lib.FP_PAGE_RW
    k.touch(parent, A + PAGE, write=True)  # the parent's page is its own again: reused
    assert (k.entry(parent, A + PAGE)[1] >> 12) & 0xFFFFFFFFFF == p_pfn
    assert k.check() == []
    k.exit(50)                              # the child keeps the shared pages
    assert k.page_node(child, A) == 0 and k.check() == []
    k.exit(51)
    assert k.check() == []


def test_reclaim_sees_every_mapper():
    text = FORKED.replace('size = "64MiB"\ncpus = "0-1"', 'size = "64MiB"\ncpus = "0-1"')
    k = load(text)
    parent, child = k.task(50), k.task(51)
    k.age_active(0)
    k.touch(child, A)            # referenced through the child's PTE only
    k.shrink_node(0, 1 << 20)    # everything else on node 0 is cold
    assert k.page_node(parent, A) == 0             # kept: the child's access counts
    assert k.page_node(parent, A + PAGE) == 2      # demoted, in both mappings
    assert k.page_node(child, A + PAGE) == 2
    assert k.check() == []


# ---- one page twice in a batch; [vdso] (INTERFACES.md 3, step 3) ---------------------

# A: anon VMA, 4 pages on node 0
T2 = 0x7F0000200000       # THP VMA (4 MiB): one THP on node 0, then 2 MiB untouched
D2 = 0x7F0000800000       # [vdso]: page 0 present, page 1 untouched
TWO_NODES = """
distances = [[10, 17], [17, 10]]
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "64MiB"

[[process]]
pid = 50
name = "target"
[[process.vma]]
start = 0x7f0000000000
size = "64KiB"
pages = "4 accessed@0"
[[process.vma]]
start = 0x7f0000200000
size = "4MiB"
thp = true
pages = "1 thp-accessed@0"
[[process.vma]]
start = 0x7f0000800000
size = "8KiB"
perms = "r-xp"
kind = "vdso"
pages = "1 accessed"
"""


@pytest.fixture
def k2():
    return load(TWO_NODES)


def _counters(k):
    c = vmstat.global_counters(k)
    return c["pgmigrate_success"], c["pgmigrate_fail"]


@pytest.mark.parametrize("second", [A, T2 + PAGE], ids=["same-page", "thp-tail"])
def test_a_page_already_queued_is_ebusy(k2, second):
    """Entry 0 isolates the page (its THP head) and queues it. Entry 1 finds the same
    page (a tail's compound head is the head): still on node 0, mapped once, but
    isolate_lru_page() fails on a page already off the LRU -> -EBUSY in status[1];
    that flushes the batch {entry 0}: migrated, status[0] = 1; the batch closes. The
    final flush has nothing queued: return 0."""
    first = A if second == A else T2
    status = [U, U]
    assert migrate.move_pages(k2, 50, [first, second], [1, 1], status, 2) == 0
    assert status == [1, -errno.EBUSY]
    assert k2.page_node(k2.task(50), first) == 1
    assert _counters(k2) == (1, 0)  # migrated once, nothing failed
    assert k2.check() == []


def test_every_base_page_of_a_thp_in_one_call(k2):
    """A daemon passing the 512 base pages of one THP, head first, to node 1:
    entry 0 (head): batch opens at 0, the THP is isolated and queued;
    entry 1 (tail): its head is isolated -> -EBUSY; the batch {THP} is migrated,
      status[0] = 1, the batch closes;
    entry 2: a batch opens at 2; the THP is on node 1 now -> success, not queued;
    entries 3..511: the same, into the batch opened at 2;
    final flush: nothing queued -> return 0, status[2..511] keep the caller's value.
    SW_YOUNG marks the head once (entry 0 isolated it), and the mark moves with it."""
    t = k2.task(50)
    pages = [T2 + i * PAGE for i in range(512)]
    status = [U] * 512
    assert migrate.move_pages(k2, 50, pages, [1] * 512, status, 0x82) == 0
    assert status == [1, -errno.EBUSY] + [U] * 510
    assert k2.page_node(t, T2 + 511 * PAGE) == 1
    assert _counters(k2) == (1, 0)
    pfn = (k2.entry(t, T2)[1] >> 12) & 0xFFFFFFFFFF
    assert k2.native.pages[pfn].flags & lib.FP_PG_REFERENCED
    assert k2.check() == []


def test_every_base_page_of_a_thp_vma_in_one_call(k2):
    """All 1024 base pages of the 4 MiB THP VMA to node 1. Entries 0..511 as in the
    test above, the batch opened at 2 holding only pages already in place; then
    entry 512 (untouched anonymous memory, no page table) -> -EFAULT in status[512];
      the flush migrates nothing (an empty list succeeds) and, 512 > 2, writes
      status[2..511] = 1; the batch closes;
    entries 513..1023: each opens a batch at itself, fails -EFAULT, flushes nothing
      and writes nothing else (i == start);
    final flush: no batch open -> return 0."""
    pages = [T2 + i * PAGE for i in range(1024)]
    status = [U] * 1024
    assert migrate.move_pages(k2, 50, pages, [1] * 1024, status, 0x82) == 0
    assert status == [1, -errno.EBUSY] + [1] * 510 + [-errno.EFAULT] * 512
    assert _counters(k2) == (1, 0)
    assert k2.check() == []


def test_a_pinned_page_twice_is_put_back_on_its_lru(k):
    """A+10 is pinned. Entry 0 isolates and queues it; entry 1 finds it isolated ->
    -EBUSY, written into status[1] before the flush; the flush fails the page
    (-EAGAIN): the call returns 1 at once, status[0] unwritten. The page goes back
    on its LRU (putback), still on node 0."""
    t = k.task(50)
    status = [U, U]
    assert migrate.move_pages(k, 50, [A + 10 * PAGE] * 2, [2, 2], status, 2) == 1
    assert status == [U, -errno.EBUSY]
    assert k.page_node(t, A + 10 * PAGE) == 0
    assert _counters(k) == (0, 1)
    pfn = (k.entry(t, A + 10 * PAGE)[1] >> 12) & 0xFFFFFFFFFF
    assert k.native.pages[pfn].flags & lib.FP_PG_LRU
    assert k.check() == []


def test_enomem_puts_the_rest_of_the_batch_back():
    """Node 3 (one 2 MiB block, min watermark 4: see above) holds 508 pages of another
    process, so 4 are free and an allocation must leave 4. Then A+1, A+2, A+2 to node
    3: entries 0 and 1 are queued; entry 2 finds A+2 isolated -> -EBUSY in status[2];
    the flush fails on A+1 with ENOMEM (direct reclaim of node 3 finds nothing: anon
    pages on PMEM with no swap): the call returns -ENOMEM at once, status[0..1]
    unwritten, and both queued pages go back on their LRU."""
    k = load(MACHINE + """
[[process]]
pid = 51
name = "filler"
[[process.vma]]
start = 0x7e0000000000
size = "2032KiB"
pages = "508 idle@3"
""")
    assert k.node_stat(3)[lib.FP_NR_FREE_PAGES] == 4
    status = [U, U, U]
    pages = [A + PAGE, A + 2 * PAGE, A + 2 * PAGE]
    assert migrate.move_pages(k, 50, pages, [3, 3, 3], status, 2) == -errno.ENOMEM
    assert status == [U, U, -errno.EBUSY]
    assert [k.page_node(k.task(50), a) for a in pages] == [0, 0, 0]
    c = vmstat.global_counters(k)
    assert c["allocstall_normal"] == 1 and c["pgmigrate_fail"] == 1
    assert k.check() == []


def test_a_vdso_page_on_the_target_node_is_in_place(k2):
    """[vdso] page 0 is a kernel-image page, taken to be on node 0 (deviation m).
    To node 0: already there -> success, not queued; the final batch has nothing
    queued -> return 0, status[0] unwritten. To node 1: on no LRU, isolation fails
    -> -EBUSY. Page 1 was never touched: ->fault exists (special_mapping_vmops), so
    follow_page() gives NULL -> -ENOENT, to either node, and to a query."""
    status = [U]
    assert migrate.move_pages(k2, 50, [D2], [0], status, 2) == 0
    assert status == [U]
    assert migrate.move_pages(k2, 50, [D2], [1], status, 2) == 0
    assert status == [-errno.EBUSY]
    status = [U, U]
    assert migrate.move_pages(k2, 50, [D2 + PAGE] * 2, [0, 1], status, 2) == 0
    assert status == [-errno.ENOENT, -errno.ENOENT]
    status = [U, U]
    assert migrate.move_pages(k2, 50, [D2, D2 + PAGE], None, status, 0) == 0
    assert status == [0, -errno.ENOENT]
    assert _counters(k2) == (0, 0)


def test_a_vdso_page_in_place_is_written_when_its_batch_is_flushed(k2):
    """[D, A] to [0, 1]: entry 0 opens a batch for node 0, in place, not queued;
    entry 1 is for node 1: the node-0 batch is flushed (nothing to migrate, success)
    and status[0] = 0 written; a batch opens at 1, A is queued; the final flush
    migrates it and writes status[1] = 1."""
    status = [U, U]
    assert migrate.move_pages(k2, 50, [D2, A], [0, 1], status, 2) == 0
    assert status == [0, 1]
    assert _counters(k2) == (1, 0)


def test_get_mempolicy_faults_in_a_vdso_page(k2):
    """lookup_node()'s get_user_pages() faults the untouched [vdso] page in (its
    kernel-image frame); both pages then report the lowest node, as a query does."""
    assert migrate.get_mempolicy_node(k2, 50, D2 + PAGE) == 0
    assert migrate.get_mempolicy_node(k2, 50, D2) == 0
    status = [U, U]
    assert migrate.move_pages(k2, 50, [D2, D2 + PAGE], None, status, 0) == 0
    assert status == [0, 0]
    assert k2.check() == []


def test_a_bind_to_pmem_nodes_from_a_dram_cpu_prefers_the_peer():
    """INTERFACES.md 4: binding a task to PMEM-only nodes from a DRAM CPU prefers the
    peer. Peers by the 2.2 rule: node 0 takes 2 (17), node 1 then 3 (2 is taken), so
    node 1's peer is 3 although node 2 is nearer to it (17 < 28)."""
    k = load("""
distances = [[10, 30, 17, 28], [30, 10, 17, 28], [17, 17, 10, 30], [28, 28, 30, 10]]
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
[[node]]
type = "dram"
size = "64MiB"
cpus = "1"
[[node]]
type = "pmem"
size = "64MiB"
[[node]]
type = "pmem"
size = "64MiB"
[[process]]
pid = 50
name = "t"
cpu = 1
policy = "bind:2-3"
[[process.vma]]
start = 0x7f0000000000
size = "16KiB"
""")
    assert [k.node(n).peer for n in range(4)] == [2, 3, 0, 1]
    t = k.task(50)
    assert k.zonelist(t) == [3, 2]
    k.touch(t, A, write=True)
    assert k.page_node(t, A) == 3


TWO_TIER_T = """
distances = [[10, 17], [17, 10]]
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "64MiB"
[[process]]
pid = 50
name = "t"
"""  # a DRAM node, its PMEM peer, and process 50 ("t") to give VMAs


def test_an_empty_hugetlb_vma_is_enoent_to_move_pages_and_efault_to_get_mempolicy():
    """A hugetlb VMA is a hugetlbfs file mapping with ->fault: follow_page() of a hole
    is -ENOENT, for a query and a move alike (INTERFACES.md 3). get_mempolicy()'s
    get_user_pages() faults, which needs a huge page: with no pool it fails, -EFAULT,
    and no page is mapped."""
    k = load(TWO_TIER_T + """[[process.vma]]
start = 0x7f0000000000
size = "4MiB"
hugetlb = true
""")
    for nodes in (None, [1]):
        status = [U]
        assert migrate.move_pages(k, 50, [A], nodes, status, 2 if nodes else 0) == 0
        assert status == [-errno.ENOENT]
    assert migrate.get_mempolicy_node(k, 50, A) == -errno.EFAULT
    assert k.page_node(k.task(50), A) is None
    assert k.check() == []


MIGRATE_KINDS = TWO_TIER_T + """[[process.vma]]
start = 0x7f0000000000
size = "8KiB"
pages = "2 accessed@0"
[[process.vma]]
start = 0x7f0000200000
size = "8KiB"
perms = "rw-s"
kind = "shm"
path = "/SYSV00000000"
pages = "2 accessed@0"
[[process.vma]]
start = 0x7f0000400000
size = "8KiB"
perms = "rw-s"
path = "/data/shared"
pages = "2 accessed@0"
"""
KINDS = [0x7F0000000000, 0x7F0000001000, 0x7F0000200000, 0x7F0000201000,
         0x7F0000400000, 0x7F0000401000]


@pytest.mark.parametrize("old, new", [([0], [1]), ([0, 5], [1]), ([0], [1, 5])])
def test_migrate_pages_moves_every_migratable_mapping(old, new):
    """4.20's migrate_pages walks every vma_migratable() VMA: anonymous, shm and shared
    file pages alike. get_nodes() takes any node below MAX_NUMNODES: node 5 (none
    here) has no pages as an old node and is masked off as a new one."""
    k = load(MIGRATE_KINDS)
    t = k.task(50)
    assert migrate.migrate_pages(k, 50, old, new) == 0
    assert [k.page_node(t, a) for a in KINDS] == [1] * 6
    assert k.check() == []


def test_migrate_pages_node_numbers():
    k = load(MIGRATE_KINDS)
    assert migrate.migrate_pages(k, 50, [0], [5]) == -errno.EINVAL      # no new node has memory
    assert migrate.migrate_pages(k, 50, [0], [1024]) == -errno.EINVAL   # >= MAX_NUMNODES
    assert migrate.migrate_pages(k, 50, [1024], [1]) == -errno.EINVAL
    assert [k.page_node(k.task(50), a) for a in KINDS] == [0] * 6


def test_migrate_pages_numbers_old_nodes_as_given():
    """The i-th node of old_nodes (ascending, as given) goes to the i-th new node: with
    node ids 0, 2, 3, old [1, 2] -> new [0, 3] sends node 2 (the second old node) to 3,
    though node 1 does not exist."""
    k = load("""
[[node]]
id = 0
type = "dram"
size = "64MiB"
cpus = "0-1"
[[node]]
id = 2
type = "pmem"
size = "64MiB"
[[node]]
id = 3
type = "pmem"
size = "64MiB"
[[process]]
pid = 50
name = "target"
[[process.vma]]
start = 0x7f0000000000
size = "16KiB"
pages = "4 accessed@2"
""")
    assert migrate.migrate_pages(k, 50, [1, 2], [0, 3]) == 0
    assert [k.page_node(k.task(50), A + i * PAGE) for i in range(4)] == [3] * 4


FOUR_NODES = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0-1"
""" + 3 * """[[node]]
type = "pmem"
size = "64MiB"
""" + """[[process]]
pid = 50
name = "target"
[[process.vma]]
start = 0x7f0000000000
size = "16KiB"
pages = "1 accessed@0, 1 accessed@1, 1 accessed@2, 1 accessed@3"
"""


@pytest.mark.parametrize("old, new, pairs", [
    # equal sizes: the i-th old node to the i-th new one; the last pair first, so each
    # node is emptied before it is filled
    ([0, 1, 2], [1, 2, 3], [(2, 3), (1, 2), (0, 1)]),
    ([0, 2], [2, 3], [(2, 3), (0, 2)]),
    # unequal: old nodes that are new nodes stay, the rest go to new[i % len(new)]
    # (a skipped source stays in tmp, so its node counts as "still a source": 2 and 3
    # here, and no pair breaks the scan early; the last pair that moves is taken)
    ([0, 1, 2, 3], [2, 3], [(1, 3), (0, 2)]),
    ([0, 1, 2], [4, 5], [(0, 4), (1, 5), (2, 4)]),
    # 4.20's own example: [0-7] -> [3,4,5] moves only 0, 1, 2, 6, 7
    ([0, 1, 2, 3, 4, 5, 6, 7], [3, 4, 5], [(7, 4), (6, 3), (2, 5), (1, 4), (0, 3)]),
    ([0, 1], [0, 1], []),  # every node to itself
])
def test_migrate_pages_node_pairs(old, new, pairs):
    """do_migrate_pages()'s pairs, worked by hand from its loop and node_remap()."""
    assert list(migrate.node_pairs(old, new)) == pairs


def test_migrate_pages_leaves_old_nodes_that_are_new_nodes_when_the_sets_differ_in_size():
    """[0, 1, 2, 3] -> [2, 3]: 0 -> 2, 1 -> 3; the pages on 2 and 3 stay (a mapping
    i -> new[i] with the rest to the last would have sent node 2's page to 3). The
    lists are sets, as the syscall's masks: [3, 2] is the same call."""
    k = load(FOUR_NODES)
    t = k.task(50)
    assert migrate.migrate_pages(k, 50, [3, 2, 1, 0], [3, 2]) == 0
    assert [k.page_node(t, A + i * PAGE) for i in range(4)] == [2, 3, 2, 3]
    k = load(FOUR_NODES)
    assert migrate.migrate_pages(k, 50, [0, 1, 2], [1, 2, 3]) == 0
    assert [k.page_node(k.task(50), A + i * PAGE) for i in range(4)] == [1, 2, 3, 3]
    assert vmstat.global_counters(k)["pgmigrate_success"] == 3  # each page moved once
    assert k.check() == []


def test_migrate_pages_stops_at_the_first_page_without_room():
    """4.20's migrate_pages(): -ENOMEM from the allocation ends the call with -ENOMEM
    (the rest of the list is put back, pgmigrate_fail counts that one page), and
    do_migrate_pages() returns it. Node 3 has 512 free pages (2 MiB, nothing else on
    it) and a min watermark of 4 pages (64 * 3 + 2 MiB: 49664 pages, min_free_kbytes
    int_sqrt(49664 * 64) = 1782, 445 pages, 445 * 512 // 49664 = 4): 508 pages move,
    the 509th of the process's 600 on node 1 (queued in address order) meets ENOMEM."""
    k = load(FOUR_NODES.replace('size = "64MiB"\n[[process]]', 'size = "2MiB"\n[[process]]')
             .replace('size = "16KiB"', 'size = "2400KiB"')
             .replace('pages = "1 accessed@0, 1 accessed@1, 1 accessed@2, 1 accessed@3"',
                      'pages = "600 accessed@1"'))
    t = k.task(50)
    # node ids 0-3 are node indexes 0-3 here; the PMEM node of 2 MiB is node 3
    assert k.node_stat(3)[lib.FP_NR_FREE_PAGES] == 512
    assert tuple(k.native.nodes[3].wmark) == (4, 5, 6)
    assert migrate.migrate_pages(k, 50, [1], [3]) == -errno.ENOMEM
    assert [k.page_node(t, A + i * PAGE) for i in range(600)] == [3] * 508 + [1] * 92
    c = vmstat.global_counters(k)
    assert c["pgmigrate_success"] == 508 and c["pgmigrate_fail"] == 1
    assert k.check() == []


ADDRS = [A + i * PAGE for i in range(14)] + [F, F + 3 * PAGE, S, V, D, T, T + PAGE, 0x1000,
                                             (1 << 64) - PAGE, 1 << 63]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ADDRS), st.sampled_from([-1, 0, 1, 2, 3, 4, 1 << 30])),
                max_size=24),
       st.booleans(), st.sampled_from([0, 2, 0x82, 4]))
def test_packed_arrays_are_the_same_call(entries, query, flags):
    """move_pages with packed arrays (the control API's and the runner's bulk form, which
    go to C without the list checks) leaves the same status, return and placement as
    with lists, on the same machine."""
    pages, targets = [a for a, _ in entries], [n for _, n in entries]
    listed, packed = load(MACHINE), load(MACHINE)
    status = [U] * len(pages)
    ret = migrate.move_pages(listed, 50, pages, None if query else targets, status, flags)
    raw, written = bytearray(struct.pack(f"<{len(pages)}i", *[U] * len(pages))), []
    got = migrate.move_pages(packed, 50, struct.pack(f"<{len(pages)}Q", *pages),
                             None if query else struct.pack(f"<{len(pages)}i", *targets), raw, flags,
                             written=written)
    assert (got, list(struct.unpack(f"<{len(pages)}i", raw))) == (ret, status)
    # the stored entries are those that left U (-99 is no status value); runs are
    # sorted, disjoint and not touching
    stored = {i for a, b in written for i in range(a, b)}
    assert stored == {i for i, s in enumerate(status) if s != U}
    assert all(b1 < a2 for (_, b1), (a2, _) in zip(written, written[1:]))
    assert _placement(packed) == _placement(listed)
    assert packed.check() == []


def _placement(k) -> list[tuple[int, int, int]]:
    """Each address's PTE, node and page flags (SW_YOUNG's referenced bit among them)."""
    t, out = k.task(50), []
    for a in ADDRS[:-2]:
        pte, node = k.entry(t, a)[1], k.page_node(t, a)
        pfn = (pte >> 12) & 0xFFFFFFFFFF  # node RAM only: [vdso] frames lie outside it
        out.append((pte, node, k.native.pages[pfn].flags if node is not None else 0))
    return out


def test_packed_arrays_of_different_lengths_are_refused(k):
    with pytest.raises(ValueError):
        migrate.move_pages(k, 50, struct.pack("<2Q", A, A + PAGE), struct.pack("<i", 1),
                           bytearray(8), 2)
    with pytest.raises(ValueError):
        migrate.move_pages(k, 50, struct.pack("<2Q", A, A + PAGE), None, bytearray(4), 0)


PROMOTE_INTO_FULL_DRAM = """
distances = [[10, 17], [17, 10]]
[[node]]
type = "dram"
size = "8MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "64MiB"

[[process]]
pid = 60
name = "cold"
[[process.vma]]
start = 0x7e0000000000
size = "8MiB"
pages = "2004 idle@0"

[[process]]
pid = 61
name = "hot"
cpu = 0
[[process.vma]]
start = 0x7f0000000000
size = "256KiB"
pages = "64 accessed@1"
"""


def test_a_move_into_a_full_dram_node_reclaims_it_first():
    """alloc_new_node_page() is GFP_HIGHUSER_MOVABLE | __GFP_THISNODE: below its min
    watermark the target node is reclaimed directly, and a DRAM node's reclaim demotes
    its cold pages to its PMEM peer, so a promotion into a full DRAM node succeeds.
    By hand: 18432 pages, min_free_kbytes int_sqrt(18432 * 64) = 1086, 271 pages, node
    0's min 271 * 2048 // 18432 = 30, low 30 + max(30 >> 2, 2048 * 10 // 10000) = 37.
    Node 0 holds PFN 0 (reserved at boot), 2004 cold pages and the page tables of both
    processes (a PGD, PUD and PMD each, 4 PTE tables for the 2004 pages, 1 for the 64):
    1 + 2004 + 3 + 4 + 3 + 1 = 2016, so 32 free: two pages fit above min, the third needs reclaim. (The tables
    came from the allocator too: from 36 free on, below low, above min.) Before, the
    move took the 32 free pages and failed with ENOMEM."""
    k = load(PROMOTE_INTO_FULL_DRAM)
    assert tuple(k.native.nodes[0].wmark) == (30, 37, 44)
    assert k.node_stat(0)[lib.FP_NR_FREE_PAGES] == 32
    hot = [0x7F0000000000 + i * PAGE for i in range(64)]
    status = [U] * 64
    assert migrate.move_pages(k, 61, hot, [0] * 64, status, 2) == 0
    assert status == [0] * 64
    assert [k.page_node(k.task(61), a) for a in hot] == [0] * 64
    c = vmstat.global_counters(k)
    demoted = sum(k.page_node(k.task(60), 0x7E0000000000 + i * PAGE) == 1 for i in range(2004))
    assert c["allocstall_normal"] >= 1 and demoted >= 64 - 2
    assert c["pgmigrate_success"] == 64 + demoted
    assert k.node_stat(0)[lib.FP_NR_FREE_PAGES] >= 30  # never below min
    assert k.check() == []
