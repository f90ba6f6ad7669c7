/*
 * Page migration: one page (or THP) to another node.
 * Linux: mm/migrate.c (migrate_pages -> unmap_and_move -> move_to_new_page,
 * remove_migration_ptes), used by reclaim's demotion and by move_pages(2).
 *
 * The new page takes the old one's state (anon/file, active, PG_referenced,
 * dirty) and LRU list; its PTE is installed old, with the accessed bit clear
 * (INTERFACES.md 4). Migration counters count a THP as one.
 */
#include <errno.h>
#include <string.h>
#include "internal.h"

#define MIGRATE_KEEP (FP_PG_ANON | FP_PG_SWAPBACKED | FP_PG_ACTIVE | FP_PG_REFERENCED | \
                      FP_PG_DIRTY | FP_PG_EXECMAP | FP_PG_PINNED | FP_PG_IDLE)

/* remove_migration_ptes() for one mapper: the new frame, accessed bit clear; and
 * invalidate_range for a VM: the guest re-faults onto the new page */
static void remap_one(struct fp_kernel *k, struct fp_mm *mm, uint64_t *e, uint64_t addr, void *arg)
{
    uint64_t np = (uint64_t)*(int64_t *)arg;
    *e = (*e & ~(FP_ADDR_MASK | FP_PAGE_ACCESSED)) | (np << FP_PAGE_SHIFT);
    if (mm->vm)
        fp_kvm_unmap_hva(k, mm, addr, fp_page_nr(&k->pages[np]));
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
    if (old->flags & FP_PG_PINNED)
        return -EAGAIN; /* migrate_page_move_mapping(): the refcount is not what it expects */
    int huge = (old->flags & FP_PG_HEAD) != 0;
    struct fp_node *target = &k->nodes[dst];
    uint64_t nr = huge ? FP_PAGES_PER_HUGE : 1;
    if (reason == FP_MR_RECLAIM && target->stat[FP_NR_FREE_PAGES] < target->wmark[FP_WMARK_MIN] + nr) {
        target->kswapd_wake = 1; /* the peer is short too: let its kswapd swap */
        return -ENOMEM;
    }
    int64_t np = fp_alloc_page(k, dst, huge);
    if (np < 0) {
        target->kswapd_wake = 1;
        return -ENOMEM;
    }
    if (target->stat[FP_NR_FREE_PAGES] < target->wmark[FP_WMARK_LOW])
        target->kswapd_wake = 1; /* as any allocation below low would */
    /* __GFP_THISNODE: dst is the preferred node; the caller's node decides local */
    fp_count_alloc(k, caller_node, dst, dst);
    struct fp_page *new = &k->pages[np];
    struct fp_mm *mm = old->owner < FP_MAX_MMS ? k->mms[old->owner] : NULL;
    if (old->flags & FP_PG_LRU) /* else reclaim has it isolated */
        fp_lru_del(k, pfn);
    fp_node_account(k, pfn, -1);
    new->flags |= old->flags & MIGRATE_KEEP;
    new->mapcount = old->mapcount;
    new->owner = old->owner;
    new->vpn = old->vpn;
    fp_node_account(k, (uint64_t)np, +1);
    fp_lru_add(k, (uint64_t)np, fp_page_lru(new)); /* putback: the new page is on an LRU */
    fp_rmap_walk(k, pfn, remap_one, &np); /* every mapper's entry, installed old */
    for (uint64_t i = 0; i < k->nr_rmap_ext; i++) /* the side table follows the page */
        if (k->rmap_ext[i].pfn == pfn)
            k->rmap_ext[i].pfn = (uint64_t)np;

    for (uint64_t i = 0; i < (huge ? FP_PAGES_PER_HUGE : 1); i++) { /* ground truth follows */
        k->access_count[(uint64_t)np + i] = k->access_count[pfn + i];
        k->window_count[(uint64_t)np + i] = k->window_count[pfn + i];
    }
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
    if (k->window_count[pfn + sub] != 2)
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
