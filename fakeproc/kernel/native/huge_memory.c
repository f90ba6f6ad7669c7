/*
 * Splitting a transparent huge page into 512 base pages.
 * Linux: mm/huge_memory.c (split_huge_page_to_list, __split_huge_page,
 * __split_huge_page_tail, __split_huge_pmd_locked) and mm/swap.c
 * (lru_add_page_tail), as migrate_pages() uses them when a THP finds no room and
 * shrink_page_list() when a rotational swap device has no cluster for one.
 */
#include <errno.h>
#include <stdlib.h>
#include "internal.h"

struct mappers {
    uint32_t n;
    struct fp_mm **mm;
    uint64_t **pmd, *addr;
};

static void collect(struct fp_kernel *k, struct fp_mm *mm, uint64_t *e, uint64_t addr, void *arg)
{
    struct mappers *m = arg;
    (void)k;
    if (mm && (*e & FP_PAGE_PSE)) {
        m->mm[m->n] = mm;
        m->pmd[m->n] = e;
        m->addr[m->n++] = addr;
    }
}

/* Everything the split of a THP mapped by n > 1 PMDs needs, checked before anything
 * changes: a deposited table behind every PMD, an arena slot for each, and reverse-map
 * room for the tails' further mappers (each tail gets a chain of n - 1). */
static int split_room(struct fp_kernel *k, const struct mappers *m)
{
    for (uint32_t j = 0; j < m->n; j++)
        if (!fp_has_deposit(k, m->pmd[j]))
            return -ENOMEM;
    if (k->nr_free_tables + (k->tables_cap - k->tables_used) < m->n)
        return -ENOMEM;
    return fp_rmap_reserve(k, FP_PAGES_PER_HUGE - 1, (uint64_t)(FP_PAGES_PER_HUGE - 1) * (m->n - 1));
}

/* split_huge_page_to_list() for an isolated anonymous THP: every PMD that maps it
 * becomes the page table deposited with it (__split_huge_pmd_locked()) and head and
 * tails become base pages, each mapped where the THP was, by every mapper (a THP
 * shared after fork stays shared page by page). The tails go on `tails` in the order
 * lru_add_page_tail() appends them to the caller's list (512 - 1 down to 1). 0;
 * -EBUSY for an extra reference (pinned: can_split_huge_page() fails,
 * thp_split_page_failed); -EOPNOTSUPP, with nothing changed or counted, for a THP not
 * isolated or whose split finds no room for its tables. */
int fp_split_huge_page(struct fp_kernel *k, uint64_t pfn, uint64_t *tails)
{
    struct fp_page *head = &k->pages[pfn];
    if (!(head->flags & FP_PG_HEAD) || !(head->flags & FP_PG_ANON) || (head->flags & FP_PG_LRU) ||
        !head->mapcount)
        return -EOPNOTSUPP;
    if (head->flags & FP_PG_PINNED) {
        k->events[FP_EV_THP_SPLIT_PAGE_FAILED]++;
        return -EBUSY;
    }
    uint32_t n = head->mapcount;
    struct mappers m = {0, malloc(n * sizeof(*m.mm)), malloc(n * sizeof(*m.pmd)),
                        malloc(n * sizeof(*m.addr))};
    int err = -EOPNOTSUPP;
    if (!m.mm || !m.pmd || !m.addr)
        goto out;
    fp_rmap_walk(k, pfn, collect, &m); /* the head's first mapper first */
    if (m.n != n || (n > 1 && split_room(k, &m)))
        goto out;
    int64_t t0 = -1;
    for (uint32_t j = 0; j < n; j++) {
        uint64_t e = *m.pmd[j];
        /* the deposited table now maps the 512 pages (n == 1 may take a new table) */
        int64_t t = fp_split_pmd(k, m.mm[j], m.pmd[j]);
        if (t < 0)
            goto out; /* only the first, before anything changed */
        if (m.mm[j]->vm)
            fp_kvm_unmap_hva(k, m.mm[j], m.addr[j], FP_PAGES_PER_HUGE); /* the guest's 2 MiB leaf */
        /* the split freezes each mapping into migration entries (pmd_dirty() ->
         * SetPageDirty(), pmd_write() -> a write entry) and remap_page() installs
         * each PTE as remove_migration_pte() does: old, clean, writable when the PMD
         * was and soft-dirty when it was, with the VMA's protection (a NUMA-hinting
         * PROT_NONE is gone) */
        uint64_t bits = FP_PAGE_PRESENT | (e & (FP_PAGE_RW | FP_PAGE_USER | FP_PAGE_SOFT_DIRTY)), *ptes = fp_table(k, (uint64_t)t);
        if (e & FP_PAGE_DIRTY)
            head->flags |= FP_PG_DIRTY;
        for (uint64_t i = 0; i < FP_PAGES_PER_HUGE; i++)
            ptes[i] = ((pfn + i) << FP_PAGE_SHIFT) | bits;
        if (j == 0)
            t0 = t;
    }
    struct fp_node *node = &k->nodes[fp_pfn_to_node(k, pfn)];
    fp_page_kind_add(node->stat, head, -1); /* one THP of 512 pages out, 512 base pages in */
    uint16_t keep = head->flags & FP_SPLIT_KEEP;
    for (uint64_t i = 0; i < FP_PAGES_PER_HUGE; i++) {
        struct fp_page *p = &k->pages[pfn + i];
        p->flags = (uint16_t)(FP_PG_ALLOCATED | keep);
        p->mapcount = i ? 1 : (uint16_t)n; /* the head keeps its chain of further mappers */
        p->pte = (uint32_t)((uint64_t)t0 * FP_PTRS_PER_TABLE + i);
        p->lru_prev = p->lru_next = FP_LRU_NONE;
        for (uint32_t j = 1; i && j < n; j++)
            fp_rmap_add(k, pfn + i, m.mm[j]->id, m.addr[j] + i * FP_PAGE_SIZE); /* reserved */
        fp_page_kind_add(node->stat, p, +1);
    }
    fp_mark_block_split(node, pfn);
    for (uint64_t i = 1; i < FP_PAGES_PER_HUGE; i++)
        tails[i - 1] = pfn + FP_PAGES_PER_HUGE - i;
    k->tlb_gen++; /* upper-level entries were rewritten: TLBs flush */
    k->events[FP_EV_THP_SPLIT_PAGE]++;
    err = 0;
out:
    free(m.mm);
    free(m.pmd);
    free(m.addr);
    return err;
}

/* __split_huge_zero_page_pmd(): the huge zero PMD becomes its deposited table of 512
 * zero-page PTEs, special, read-only and young (vm_page_prot); thp_split_pmd.
 * Returns the table's index or -ENOMEM. */
int64_t fp_split_huge_zero_pmd(struct fp_kernel *k, struct fp_mm *mm, uint64_t *pmd)
{
    int64_t t = fp_split_pmd(k, mm, pmd);
    if (t < 0)
        return t;
    uint64_t *ptes = fp_table(k, (uint64_t)t);
    for (uint64_t i = 0; i < FP_PAGES_PER_HUGE; i++)
        ptes[i] = (k->zero_pfn << FP_PAGE_SHIFT) | FP_PAGE_PRESENT | FP_PAGE_USER |
                  FP_PAGE_ACCESSED | FP_PAGE_SPECIAL;
    k->tlb_gen++; /* the PMD was rewritten: TLBs flush */
    return t;
}

/* queue_pages_pmd() of migrate_pages(2): a huge zero PMD met on the walk is split
 * (whatever the nodes asked for). 1 when one was split at addr, 0 when none. */
int32_t fp_split_huge_zero_at(struct fp_kernel *k, uint32_t id, uint64_t addr)
{
    struct fp_mm *mm = id < FP_MAX_MMS ? k->mms[id] : NULL;
    int32_t level;
    uint64_t *e = mm ? fp_mm_walk(k, mm, addr, &level) : NULL;
    if (!e || level != 3 || !fp_zero_entry(k, *e))
        return 0;
    int64_t t = fp_split_huge_zero_pmd(k, mm, e);
    return t < 0 ? (int32_t)t : 1;
}
