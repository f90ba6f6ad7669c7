/*
 * Page migration: one page (or THP) to another node.
 * Linux: mm/migrate.c (migrate_pages -> unmap_and_move -> move_to_new_page,
 * remove_migration_ptes), used by reclaim's demotion and by move_pages(2).
 *
 * The new page takes the old one's state (anon/file, active, PG_referenced,
 * dirty) and LRU list; its PTE is installed old, with the accessed bit clear
 * (INTERFACES.md 4), and clean: try_to_unmap() moved a dirty bit to PG_dirty.
 * Migration counters count a THP as one.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"


struct remap {
    uint64_t pfn;  /* the frame the mappings get back: the new page, or the old one */
    int dirty;     /* some entry was dirty */
};

/* try_to_unmap(TTU_MIGRATION) + remove_migration_ptes() for one mapper: a dirty entry
 * makes the page PG_dirty; the entry comes back old and clean (pte_mkold(mk_pte()) with
 * the write bit of the migration entry); for a VM the unmap's invalidate_range zaps
 * the guest's entry, which re-faults onto the page */
static void remap_one(struct fp_kernel *k, struct fp_mm *mm, uint64_t *e, uint64_t addr, void *arg)
{
    struct remap *r = arg;
    r->dirty |= (*e & FP_PAGE_DIRTY) != 0;
    *e = (*e & ~(FP_ADDR_MASK | FP_PAGE_ACCESSED | FP_PAGE_DIRTY)) | (r->pfn << FP_PAGE_SHIFT);
    if (mm->vm)
        fp_kvm_unmap_hva(k, mm, addr, fp_page_nr(&k->pages[r->pfn]));
}

/* Every mapping of pfn through a migration and back to frame `to` (pfn itself when the
 * migration failed after unmapping); PG_dirty on `to` if an entry was dirty, counted
 * as set_page_dirty() counts it (dirty page cache in NR_FILE_DIRTY). */
static void remap(struct fp_kernel *k, uint64_t pfn, uint64_t to)
{
    struct remap r = {to, 0};
    fp_rmap_walk(k, pfn, remap_one, &r);
    struct fp_page *p = &k->pages[to];
    if (r.dirty && !(p->flags & FP_PG_DIRTY)) {
        uint64_t *st = k->nodes[fp_pfn_to_node(k, to)].stat;
        fp_page_kind_add(st, p, -1);
        p->flags |= FP_PG_DIRTY;
        fp_page_kind_add(st, p, +1);
    }
}

int32_t fp_migrate_page(struct fp_kernel *k, uint64_t pfn, int32_t dst, int32_t caller_node,
                        int32_t reason, uint64_t *new_pfn)
{
    struct fp_page *old = &k->pages[pfn];
    int level;
    if (dst < 0 || dst >= k->nr_nodes || pfn >= k->nr_pfns)
        return -EINVAL;
    uint64_t *e = fp_rmap_entry(k, old, &level);
    if (!e)
        return -EFAULT;
    int huge = (old->flags & FP_PG_HEAD) != 0;
    struct fp_node *target = &k->nodes[dst];
    int64_t np;
    if (reason != FP_MR_PROMOTE) {
        /* alloc_new_node_page() (move_pages, migrate_pages and the RFC's demotion):
         * GFP_HIGHUSER_MOVABLE | __GFP_THISNODE, or GFP_TRANSHUGE for a THP, the page
         * allocator on dst alone: watermarks, kswapd, direct reclaim of dst (inside
         * reclaim: the reserves instead, for a base page), never an OOM kill. The
         * page is isolated, so reclaim does not see it. */
        int16_t only = (int16_t)dst;
        int32_t got;
        np = fp_alloc_in_order(k, caller_node, &only, 1, dst, huge, &got);
        if (np < 0)
            return -ENOMEM;
    } else {
        np = fp_alloc_page(k, dst, huge);
        if (np < 0) {
            target->kswapd_wake = 1;
            return -ENOMEM;
        }
        if (target->stat[FP_NR_FREE_PAGES] < target->wmark[FP_WMARK_LOW])
            target->kswapd_wake = 1; /* as any allocation below low would */
        /* __GFP_THISNODE: dst is the preferred node; the caller's node decides local */
        fp_count_alloc(k, caller_node, dst, dst);
    }
    if (old->flags & FP_PG_PINNED) {
        /* unmap_and_move() allocated first and unmapped the page; then
         * migrate_page_move_mapping() finds a reference it does not expect: the new
         * page is freed again and the mappings come back to the old one, old */
        fp_free_page(k, (uint64_t)np);
        remap(k, pfn, pfn);
        return -EAGAIN;
    }
    if (fp_rmap_move_room(k, pfn, (uint64_t)np)) {
        /* the host is out of memory: reported as no room on dst (a shared THP is then
         * split and its pages tried alone), which only a host without memory sees */
        fp_free_page(k, (uint64_t)np);
        return -ENOMEM;
    }
    struct fp_page *new = &k->pages[np];
    struct fp_mm *mm = k->mms[fp_page_owner(k, old)];
    if (old->flags & FP_PG_LRU) /* else reclaim or move_pages(2) has it isolated */
        fp_lru_del(k, pfn);
    fp_node_account(k, pfn, -1);
    new->flags |= old->flags & FP_MIGRATE_KEEP;
    new->mapcount = old->mapcount;
    new->pte = old->pte;
    fp_node_account(k, (uint64_t)np, +1);
    fp_lru_add(k, (uint64_t)np, fp_page_lru(new)); /* putback: the new page is on an LRU */
    fp_reclaim_stat_add(k, (uint64_t)np);
    remap(k, pfn, (uint64_t)np); /* every mapper's entry, installed old */
    fp_rmap_move(k, pfn, (uint64_t)np); /* the side table follows the page */

    /* ground truth follows */
    memcpy(&k->truth[np], &k->truth[pfn], fp_page_nr(new) * sizeof(struct fp_truth));
    int src_dram = k->nodes[fp_pfn_to_node(k, pfn)].is_dram, dst_dram = k->nodes[dst].is_dram;
    if (mm && src_dram != dst_dram) {
        uint64_t n = fp_page_nr(new);
        if (src_dram)
            *(reason == FP_MR_RECLAIM ? &mm->demoted_reclaim : &mm->demoted_syscall) += n;
        else if (reason == FP_MR_SYSCALL)
            mm->promoted_syscall += n;
        else if (reason == FP_MR_PROMOTE)
            mm->promoted_kernel += n;
    }
    fp_free_page(k, pfn);
    k->events[FP_EV_PGMIGRATE_SUCCESS]++;
    if (new_pfn)
        *new_pfn = (uint64_t)np;
    return 0;
}

/* NUMA balancing in memory-tiering mode (upstream 5.18+, numa_balancing & 2): an
 * access to a slow-tier page that is hot in this window (its second access) is a
 * promotion candidate; it moves to the accessing task's DRAM node when that node
 * has room above its high watermark. Counted as the kernel counts it. */
void fp_numa_hint(struct fp_kernel *k, struct fp_mm *mm, uint64_t addr)
{
    int level;
    uint64_t *e = fp_mm_leaf(k, mm, addr, &level);
    if (!e)
        return;
    uint64_t pfn = fp_entry_addr(*e);
    if (pfn >= k->nr_pfns)
        return;
    uint64_t sub = level == 3 ? (addr >> FP_PAGE_SHIFT) % FP_PAGES_PER_HUGE : 0;
    if (k->truth[pfn + sub].window != 2)
        return;
    k->events[FP_EV_NUMA_HINT_FAULTS]++;
    k->events[FP_EV_PGPROMOTE_CANDIDATE]++;
    int32_t dst = -1;
    if (mm->local_node >= 0 && k->nodes[mm->local_node].is_dram)
        dst = mm->local_node;
    for (int i = 0; dst < 0 && i < mm->nr_zonelist; i++)
        if (k->nodes[mm->zonelist[i]].is_dram)
            dst = mm->zonelist[i];
    if (dst < 0)
        return;
    const struct fp_node *node = &k->nodes[dst];
    uint64_t nr = fp_page_nr(&k->pages[pfn]);
    if (node->stat[FP_NR_FREE_PAGES] < node->wmark[FP_WMARK_HIGH] + nr)
        return;
    if (fp_migrate_page(k, pfn, dst, dst, FP_MR_PROMOTE, NULL) == 0) {
        k->events[FP_EV_PGPROMOTE_SUCCESS]++;
        k->events[FP_EV_NUMA_PAGES_MIGRATED]++;
    }
}

/* ---- move_pages(2): do_pages_move() / do_pages_stat() of 4.20 --------------- */

struct page_look {
    int err;        /* 0, EFAULT or ENOENT (positive) */
    uint64_t pfn;   /* the entry's frame: a THP's head */
    int32_t nid;    /* node index, -1 outside node RAM */
};

static const struct fp_move_vma *find_vma(const struct fp_move_vma *v, uint32_t n, uint64_t addr)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) { /* the first VMA ending above addr */
        uint32_t mid = (lo + hi) / 2;
        if (v[mid].end <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && v[lo].start <= addr ? &v[lo] : NULL;
}

/* follow_page(FOLL_GET | FOLL_DUMP) */
static struct page_look follow_page(struct fp_kernel *k, const struct fp_mm *mm,
                                    const struct fp_move_vma *vma, uint64_t addr)
{
    struct page_look r = {0, 0, -1};
    int32_t level;
    /* a mapping with ->fault: a file (or shmem), or a special mapping ([vdso], [vvar]) */
    int has_fault = vma->kind != FP_MV_ANON;
    const uint64_t *e = fp_mm_walk(k, mm, addr, &level);
    uint64_t entry = e ? *e : 0;
    int leaf = level == 4 || (entry & FP_PAGE_PSE);
    if (!entry || (!leaf && (entry & (FP_PAGE_PRESENT | FP_PAGE_PROTNONE)))) {
        /* no_page_table(): anonymous memory (no ->fault) says EFAULT, the others NULL */
        r.err = has_fault ? ENOENT : EFAULT;
    } else if (!(entry & (FP_PAGE_PRESENT | FP_PAGE_PROTNONE)) || (entry & FP_PAGE_SWPENTRY)) {
        /* a swap or migration entry: a PMD-level one in anonymous memory is EFAULT */
        r.err = level < 4 && !has_fault ? EFAULT : ENOENT;
    } else if (fp_zero_entry(k, entry)) {
        r.err = EFAULT; /* FOLL_DUMP: the zero page and the huge zero page */
    } else {
        r.pfn = fp_entry_addr(entry);
        r.nid = fp_pfn_to_node(k, r.pfn);
    }
    return r;
}

/* add_page_for_migration(): 1 when queued, 0 when already on the target node,
 * else the negative status of the entry. vdso_dst: the target is the node that
 * holds [vdso]'s kernel-image pages. */
static int queue_page(struct fp_kernel *k, const struct fp_mm *mm, const struct fp_move_vma *vmas,
                      uint32_t nr_vmas, uint64_t addr, int32_t dst, int vdso_dst, uint32_t flags,
                      uint64_t *pfn)
{
    const struct fp_move_vma *vma = find_vma(vmas, nr_vmas, addr);
    if (!vma || vma->kind == FP_MV_VVAR) /* no VMA, or VM_IO | VM_PFNMAP */
        return -EFAULT;
    struct page_look look = follow_page(k, mm, vma, addr);
    if (look.err)
        return -look.err;
    if (look.nid < 0 && vma->kind != FP_MV_VDSO) /* device-DAX is not migratable */
        return -EFAULT;
    if (look.nid < 0) /* [vdso]: in place on its node, else not on an LRU */
        return vdso_dst ? 0 : -EBUSY;
    if (look.nid == dst)
        return 0;
    struct fp_page *p = &k->pages[look.pfn];
    if (p->mapcount > 1 && !(flags & FP_MPOL_MF_MOVE_ALL))
        return -EACCES;
    if (!(p->flags & FP_PG_LRU)) /* isolate_lru_page(): off the LRU, or queued already */
        return -EBUSY;
    if (flags & FP_MPOL_MF_SW_YOUNG)
        p->flags |= FP_PG_REFERENCED; /* only pages actually isolated get it */
    fp_lru_del(k, look.pfn); /* isolated: a later entry for it (or a tail) is busy */
    *pfn = look.pfn;
    return 1;
}

/* putback_lru_page(): a queued page that did not move goes back on its LRU */
static void putback(struct fp_kernel *k, uint64_t pfn)
{
    fp_lru_add(k, pfn, fp_page_lru(&k->pages[pfn]));
    fp_reclaim_stat_add(k, pfn); /* putback_lru_page() */
}

/* 4.20's migrate_pages() over isolated pages (do_move_pages_to_node(),
 * migrate_to_node()): up to ten passes over the list. A page that moves or fails
 * leaves it; a pinned one (-EAGAIN) stays for the next pass. No room for a THP
 * (-ENOMEM): it is split, the head retried at once as a base page and the tails
 * appended to the list; a THP that cannot be split (pinned) ends the call with the
 * split's -EBUSY, and no room for a base page with -ENOMEM. Returns 0, the pages
 * left unmigrated (those still pinned after ten passes count), or that -errno;
 * pgmigrate_fail counts the failures (when the call ends early: not the pinned ones
 * waiting for a pass). Every page that did not move is put back on its LRU.
 * `reason` is the caller's (FP_MR_SYSCALL, or FP_MR_RECLAIM for the RFC's demotion,
 * which calls migrate_pages() too); `moved`, when given, gets the base pages moved. */
int64_t fp_migrate_list(struct fp_kernel *k, uint64_t *list, uint64_t n, int32_t dst,
                        int32_t caller, int32_t reason, uint64_t *moved)
{
    uint64_t *heap = NULL, cap = n; /* list is the caller's scratch until a split needs room */
    int64_t failed = 0, retry = 1, err = 0;
    uint64_t i = 0, kept = 0;
    for (int pass = 0; pass < 10 && retry; pass++) {
        retry = 0;
        kept = 0;
        for (i = 0; i < n; i++) {
            uint64_t nr = fp_page_nr(&k->pages[list[i]]);
            int32_t r = fp_migrate_page(k, list[i], dst, caller, reason, NULL);
            if (r == -ENOMEM && (k->pages[list[i]].flags & FP_PG_HEAD)) {
                int split = -EOPNOTSUPP;
                if (cap < n + FP_PAGES_PER_HUGE - 1) { /* room for the tails at the end */
                    uint64_t want = 2 * cap > n + FP_PAGES_PER_HUGE ? 2 * cap : n + FP_PAGES_PER_HUGE;
                    uint64_t *grown = heap ? realloc(heap, want * sizeof(uint64_t))
                                           : malloc(want * sizeof(uint64_t));
                    if (grown) {
                        if (!heap)
                            memcpy(grown, list, n * sizeof(uint64_t));
                        list = heap = grown;
                        cap = want;
                    }
                }
                if (cap >= n + FP_PAGES_PER_HUGE - 1)
                    split = fp_split_huge_page(k, list[i], list + n);
                if (!split) {
                    n += FP_PAGES_PER_HUGE - 1;
                    nr = 1;
                    r = fp_migrate_page(k, list[i], dst, caller, reason, NULL);
                } else if (split == -EBUSY) {
                    r = -EBUSY;
                }
            }
            if (!r) {
                if (moved)
                    *moved += nr;
                continue;
            }
            if (r == -EAGAIN) {
                list[kept++] = list[i];
                retry++;
                continue;
            }
            failed++;
            if (r == -ENOMEM || r == -EBUSY) {
                err = r;
                break;
            }
            putback(k, list[i]);
        }
        if (err)
            break;
        n = kept;
    }
    if (err) { /* the pages kept for a next pass, this one and the rest go back */
        for (uint64_t j = 0; j < kept; j++)
            putback(k, list[j]);
        for (uint64_t j = i; j < n; j++)
            putback(k, list[j]);
    } else {
        for (uint64_t j = 0; j < n; j++)
            putback(k, list[j]);
        failed += retry;
    }
    free(heap);
    k->events[FP_EV_PGMIGRATE_FAIL] += (uint64_t)failed;
    return err ? err : failed;
}

/* migrate_to_node(): pfns are the mm's present leaves in address order; those on
 * node index src (with move_all clear: mapped once) are isolated, in place (one off
 * its LRU is skipped, as migrate_page_add() does), and migrated to dst. */
int64_t fp_migrate_to_node(struct fp_kernel *k, uint64_t *pfns, uint64_t n, int32_t src,
                           int32_t dst, int32_t caller, int32_t move_all)
{
    uint64_t nq = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t pfn = pfns[i];
        if (pfn >= k->nr_pfns || fp_pfn_to_node(k, pfn) != src)
            continue;
        const struct fp_page *p = &k->pages[pfn];
        if ((!move_all && p->mapcount > 1) || !(p->flags & FP_PG_LRU))
            continue;
        fp_lru_del(k, pfn);
        pfns[nq++] = pfn;
    }
    return nq ? fp_migrate_list(k, pfns, nq, dst, caller, FP_MR_SYSCALL, NULL) : 0;
}

int64_t fp_move_pages(struct fp_kernel *k, uint32_t id, const struct fp_move_vma *vmas,
                      uint32_t nr_vmas, uint64_t n, const uint64_t *pages, const int32_t *nodes,
                      const int16_t *node_index, const int32_t *node_ids, int32_t vdso_node,
                      uint32_t flags, int32_t caller, int32_t *status, uint64_t *scratch)
{
    const struct fp_mm *mm = id < FP_MAX_MMS ? k->mms[id] : NULL;
    if (!nodes) { /* do_pages_stat() */
        for (uint64_t i = 0; i < n; i++) {
            const struct fp_move_vma *vma = find_vma(vmas, nr_vmas, pages[i]);
            struct page_look look = vma ? follow_page(k, mm, vma, pages[i])
                                        : (struct page_look){EFAULT, 0, -1};
            if (look.err)
                status[i] = -look.err;
            else if (look.nid >= 0)
                status[i] = node_ids[look.nid];
            else /* [vdso]: kernel-image pages, node 0's memory; DAX has no node */
                status[i] = vma->kind == FP_MV_VDSO ? vdso_node : -EFAULT;
        }
        return 0;
    }
    int64_t err = 0;
    uint64_t start = 0, nq = 0, i;
    int32_t batch = -1; /* the open batch's node id, -1 none */
    for (i = 0; i < n; i++) {
        int32_t node = nodes[i];
        int16_t idx = node >= 0 && node < FP_MAX_NUMNODES ? node_index[node] : -1;
        if (idx == -1) {
            err = -ENODEV;
            break;
        }
        if (idx == -2) { /* outside the task's cpuset */
            err = -EACCES;
            break;
        }
        if (batch < 0) {
            batch = node;
            start = i;
        } else if (batch != node) {
            int64_t r = fp_migrate_list(k, scratch, nq, node_index[batch], caller, FP_MR_SYSCALL, NULL);
            if (r)
                return r;
            for (uint64_t j = start; j < i; j++)
                status[j] = batch;
            batch = node;
            start = i;
            nq = 0;
        }
        int q = queue_page(k, mm, vmas, nr_vmas, pages[i], idx, node == vdso_node, flags,
                           &scratch[nq]);
        if (q > 0) {
            nq++;
        } else if (q < 0) {
            status[i] = q;
            int64_t r = fp_migrate_list(k, scratch, nq, node_index[batch], caller, FP_MR_SYSCALL, NULL);
            if (r)
                return r;
            for (uint64_t j = start; j < i; j++)
                status[j] = batch;
            batch = -1;
            nq = 0;
        }
    }
    if (batch < 0 || !nq)
        return err;
    int64_t r = fp_migrate_list(k, scratch, nq, node_index[batch], caller, FP_MR_SYSCALL, NULL);
    if (r == 0)
        for (uint64_t j = start; j < i; j++)
            status[j] = batch;
    return err ? err : r;
}

uint64_t fp_status_written(int32_t *status, const int32_t *old, uint64_t n, uint64_t *runs)
{
    uint64_t nr = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (status[i] == FP_STATUS_UNWRITTEN) {
            status[i] = old[i];
        } else if (nr && runs[2 * nr - 1] == i) {
            runs[2 * nr - 1] = i + 1;
        } else {
            runs[2 * nr] = i;
            runs[2 * nr + 1] = i + 1;
            nr++;
        }
    }
    return nr;
}
