/*
 * Range walks over one address space that produce statistics or page lists, or
 * clear reference bits.
 * Linux: mm/pagewalk.c as used by fs/proc/task_mmu.c (smaps_pte_range,
 * gather_pte_stats for numa_maps, clear_refs_pte_range) and mm/mempolicy.c
 * (queue_pages_range).
 */
#include <errno.h>
#include <string.h>
#include "internal.h"

typedef void (*leaf_fn)(struct fp_kernel *k, uint64_t *e, uint64_t addr, uint64_t nr, void *arg);
/* a swap or migration entry */
typedef void (*swap_fn)(const struct fp_kernel *k, uint64_t *e, void *arg);

/* a base page in smaps' Pss units (bytes << PSS_SHIFT) */
#define PSS_PAGE (FP_PAGE_SIZE << FP_PSS_SHIFT)

struct walker {
    struct fp_kernel *k;
    uint64_t start, end;
    leaf_fn leaf;
    swap_fn swap;
    void *arg;
};

static void walk(struct walker *w, uint64_t table, int level, uint64_t base)
{
    uint64_t span = 1ULL << (12 + 9 * (4 - level));
    uint64_t *t = fp_table(w->k, table);
    for (unsigned i = 0; i < FP_PTRS_PER_TABLE; i++) {
        uint64_t lo = base + i * span, e = t[i];
        if (!e || lo + span <= w->start || lo >= w->end)
            continue;
        if (!fp_entry_present(e)) {
            if ((e & FP_PAGE_SWPENTRY) && w->swap)
                w->swap(w->k, &t[i], w->arg);
            continue;
        }
        if (level == 4 || (e & FP_PAGE_PSE))
            w->leaf(w->k, &t[i], lo, span >> FP_PAGE_SHIFT, w->arg);
        else
            walk(w, fp_entry_addr(e), level + 1, lo);
    }
}

static int walk_range(struct fp_kernel *k, uint32_t id, uint64_t start, uint64_t end,
                      leaf_fn leaf, swap_fn swap, void *arg)
{
    struct fp_mm *mm = id < FP_MAX_MMS ? k->mms[id] : NULL;
    if (!mm)
        return -ESRCH;
    struct walker w = {k, start, end, leaf, swap, arg};
    if (mm->pgd)
        walk(&w, mm->pgd, 1, 0);
    return 0;
}

int fp_walk_leaves(struct fp_kernel *k, uint32_t id, uint64_t start, uint64_t end, fp_leaf_fn leaf,
                   void *arg)
{
    return walk_range(k, id, start, end, leaf, NULL, arg);
}

static void stats_leaf(struct fp_kernel *k, uint64_t *e, uint64_t addr, uint64_t nr, void *arg)
{
    struct fp_range_stats *s = arg;
    uint64_t pfn = fp_entry_addr(*e);
    int nid = fp_pfn_to_node(k, pfn);
    (void)addr;
    if (nid < 0) { /* device memory (DAX) and special frames have no struct page here */
        if (fp_kernel_page(k, *e)) {
            s->kernel_pages += nr;
            s->kernel_referenced += (*e & FP_PAGE_ACCESSED) ? nr : 0;
            s->kernel_dirty += (*e & FP_PAGE_DIRTY) ? nr : 0;
        }
        return;
    }
    const struct fp_page *p = &k->pages[pfn];
    s->pages += nr;
    s->node[nid] += nr;
    if (p->flags & FP_PG_ANON)
        s->anon += nr;
    if ((*e & FP_PAGE_DIRTY) || (p->flags & FP_PG_DIRTY))
        s->dirty += nr;
    if (p->flags & (FP_PG_ACTIVE | FP_PG_UNEVICTABLE))
        s->active += nr;
    if ((*e & FP_PAGE_ACCESSED) || (p->flags & (FP_PG_REFERENCED | FP_PG_YOUNG)))
        s->referenced += nr; /* smaps: pte_young() || page_is_young() || PageReferenced() */
    if ((p->flags & FP_PG_HEAD) && (p->flags & FP_PG_ANON))
        s->thp += nr;
    if (p->mapcount > s->mapmax)
        s->mapmax = p->mapcount;
    if (p->mapcount > 1) {
        s->shared += nr;
        if ((*e & FP_PAGE_DIRTY) || (p->flags & FP_PG_DIRTY))
            s->shared_dirty += nr;
    }
    s->pss += nr * (PSS_PAGE / (p->mapcount > 1 ? p->mapcount : 1));
}

/* smaps_pte_entry() for a swap entry: SwapPss divides by the slot's count */
static void stats_swap(const struct fp_kernel *k, uint64_t *e, void *arg)
{
    struct fp_range_stats *s = arg;
    if (!fp_is_swap(*e))
        return;
    uint32_t count = fp_swap_count(k, fp_entry_addr(*e));
    s->swap++;
    s->swap_pss += PSS_PAGE / (count > 1 ? count : 1);
}

int32_t fp_range_stats(struct fp_kernel *k, uint32_t id, uint64_t start, uint64_t end,
                       struct fp_range_stats *out)
{
    memset(out, 0, sizeof(*out));
    return walk_range(k, id, start, end, stats_leaf, stats_swap, out);
}

struct page_list {
    uint64_t *addrs, *pfns, max, n;
};

static void list_leaf(struct fp_kernel *k, uint64_t *e, uint64_t addr, uint64_t nr, void *arg)
{
    struct page_list *l = arg;
    (void)k;
    (void)nr;
    if (l->n < l->max) {
        l->addrs[l->n] = addr;
        l->pfns[l->n] = fp_entry_addr(*e);
    }
    l->n++;
}

int64_t fp_range_pages(struct fp_kernel *k, uint32_t id, uint64_t start, uint64_t end,
                       uint64_t *addrs, uint64_t *pfns, uint64_t max)
{
    struct page_list l = {addrs, pfns, max, 0};
    int r = walk_range(k, id, start, end, list_leaf, NULL, &l);
    return r < 0 ? r : (int64_t)l.n; /* all of them: more than max says "call again" */
}

/* clear_refs_pte_range() for CLEAR_REFS_ALL/ANON/MAPPED: a present entry loses its
 * accessed bit (ptep_test_and_clear_young(), no MMU notifier: a guest's EPT keeps
 * its bits), its page PG_young and PG_referenced; vm_normal_page() finds no page
 * behind a special entry. A 1 GiB device-DAX leaf is left as it is. */
static void clear_young_leaf(struct fp_kernel *k, uint64_t *e, uint64_t addr, uint64_t nr, void *arg)
{
    uint64_t pfn = fp_entry_addr(*e);
    (void)addr;
    (void)arg;
    if ((*e & FP_PAGE_SPECIAL) || nr > FP_PAGES_PER_HUGE)
        return;
    *e &= ~(uint64_t)FP_PAGE_ACCESSED;
    if (fp_pfn_to_node(k, pfn) >= 0)
        k->pages[pfn].flags &= (uint16_t)~(FP_PG_YOUNG | FP_PG_REFERENCED);
}

/* clear_soft_dirty() and clear_soft_dirty_pmd() for CLEAR_REFS_SOFT_DIRTY: a present
 * entry is write-protected and loses its soft-dirty bit (its next store faults and
 * sets it again), a swap or migration entry loses its soft-dirty bit */
static void clear_soft_dirty_leaf(struct fp_kernel *k, uint64_t *e, uint64_t addr, uint64_t nr,
                                  void *arg)
{
    (void)k;
    (void)addr;
    (void)arg;
    if (nr <= FP_PAGES_PER_HUGE)
        *e &= ~(uint64_t)(FP_PAGE_RW | FP_PAGE_SOFT_DIRTY);
}

static void clear_soft_dirty_swap(const struct fp_kernel *k, uint64_t *e, void *arg)
{
    (void)k;
    (void)arg;
    *e &= ~(uint64_t)FP_PAGE_SOFT_DIRTY;
}

int32_t fp_clear_refs(struct fp_kernel *k, uint32_t id, uint64_t start, uint64_t end,
                      int32_t soft_dirty)
{
    if (!soft_dirty)
        return walk_range(k, id, start, end, clear_young_leaf, NULL, NULL);
    int32_t r = walk_range(k, id, start, end, clear_soft_dirty_leaf, clear_soft_dirty_swap, NULL);
    if (r == 0) {
        struct fp_mm *mm = k->mms[id]; /* walk_range() found it */
        mm->track_soft_dirty = 1;
        /* mmu_notifier_invalidate_range_start(): KVM zaps the guest's EPT entries
         * of the range; the guest faults them back in through the host's entries */
        if (mm->vm)
            fp_kvm_unmap_hva(k, mm, start, (end - start) >> FP_PAGE_SHIFT);
    }
    return r;
}
