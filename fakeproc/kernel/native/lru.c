/*
 * LRU lists and the counters that follow page state.
 * Linux: mm/swap.c (lru_cache_add, del_page_from_lru_list), include/linux/mm_inline.h
 * (page_lru), mm/rmap.c's counter updates (page_add_new_anon_rmap, page_remove_rmap).
 *
 * invariant: a page is on exactly one list iff FP_PG_LRU is set, and the list's
 * NR_* counter counts its base pages (a THP head counts 512).
 */
#include "internal.h"

static const int lru_stat[FP_NR_LRU_LISTS] = {
    [FP_LRU_INACTIVE_ANON] = FP_NR_INACTIVE_ANON, [FP_LRU_ACTIVE_ANON] = FP_NR_ACTIVE_ANON,
    [FP_LRU_INACTIVE_FILE] = FP_NR_INACTIVE_FILE, [FP_LRU_ACTIVE_FILE] = FP_NR_ACTIVE_FILE,
    [FP_LRU_UNEVICTABLE] = FP_NR_UNEVICTABLE,
};

/* page_lru(): swap-backed pages (anon, shmem) on the anon lists */
int fp_page_lru(const struct fp_page *p)
{
    int base = (p->flags & FP_PG_SWAPBACKED) ? FP_LRU_INACTIVE_ANON : FP_LRU_INACTIVE_FILE;
    return base + ((p->flags & FP_PG_ACTIVE) ? 1 : 0);
}

uint32_t fp_lru_list_of(struct fp_kernel *k, uint64_t pfn)
{
    const struct fp_page *p = &k->pages[pfn];
    return (p->flags & FP_PG_LRU) ? (uint32_t)fp_page_lru(p) : FP_LRU_NONE;
}

/* Add at the head (the most recently used end). */
void fp_lru_add(struct fp_kernel *k, uint64_t pfn, int lru)
{
    struct fp_page *p = &k->pages[pfn];
    struct fp_node *node = &k->nodes[fp_pfn_to_node(k, pfn)];
    uint32_t head = node->lru_head[lru];
    p->lru_prev = FP_LRU_NONE;
    p->lru_next = head;
    if (head != FP_LRU_NONE)
        k->pages[head].lru_prev = (uint32_t)pfn;
    else
        node->lru_tail[lru] = (uint32_t)pfn;
    node->lru_head[lru] = (uint32_t)pfn;
    p->flags |= FP_PG_LRU;
    node->stat[lru_stat[lru]] += fp_page_nr(p);
}

/* Add right after `prev` (toward the tail, the older end), which is on list lru;
 * at the head when prev is FP_LRU_NONE. */
void fp_lru_add_after(struct fp_kernel *k, uint64_t pfn, int lru, uint32_t prev)
{
    if (prev == FP_LRU_NONE) {
        fp_lru_add(k, pfn, lru);
        return;
    }
    struct fp_page *p = &k->pages[pfn], *q = &k->pages[prev];
    struct fp_node *node = &k->nodes[fp_pfn_to_node(k, pfn)];
    p->lru_prev = prev;
    p->lru_next = q->lru_next;
    if (q->lru_next != FP_LRU_NONE)
        k->pages[q->lru_next].lru_prev = (uint32_t)pfn;
    else
        node->lru_tail[lru] = (uint32_t)pfn;
    q->lru_next = (uint32_t)pfn;
    p->flags |= FP_PG_LRU;
    node->stat[lru_stat[lru]] += fp_page_nr(p);
}

void fp_lru_del(struct fp_kernel *k, uint64_t pfn)
{
    struct fp_page *p = &k->pages[pfn];
    struct fp_node *node = &k->nodes[fp_pfn_to_node(k, pfn)];
    int lru = fp_page_lru(p);
    if (p->lru_prev != FP_LRU_NONE)
        k->pages[p->lru_prev].lru_next = p->lru_next;
    else
        node->lru_head[lru] = p->lru_next;
    if (p->lru_next != FP_LRU_NONE)
        k->pages[p->lru_next].lru_prev = p->lru_prev;
    else
        node->lru_tail[lru] = p->lru_prev;
    p->lru_prev = p->lru_next = FP_LRU_NONE;
    p->flags &= ~FP_PG_LRU;
    node->stat[lru_stat[lru]] -= fp_page_nr(p);
}

/* Add sign times a mapped page to the page-kind counters in st; the checker
 * recomputes node counters with the same rule. */
void fp_page_kind_add(uint64_t *st, const struct fp_page *p, int sign)
{
    int64_t nr = sign * (int64_t)fp_page_nr(p);
    if (p->flags & FP_PG_ANON) {
        st[FP_NR_ANON_PAGES] += nr;
        if (p->flags & FP_PG_HEAD)
            st[FP_NR_ANON_THPS] += sign;
        return;
    }
    st[FP_NR_FILE_PAGES] += nr;
    st[FP_NR_MAPPED] += nr;
    if (p->flags & FP_PG_SWAPBACKED)
        st[FP_NR_SHMEM] += nr;
    else if (p->flags & FP_PG_DIRTY)
        st[FP_NR_DIRTY] += nr;
}

/* The page-kind counters of a mapped page on its node (sign +1 or -1). */
void fp_node_account(struct fp_kernel *k, uint64_t pfn, int sign)
{
    fp_page_kind_add(k->nodes[fp_pfn_to_node(k, pfn)].stat, &k->pages[pfn], sign);
}
