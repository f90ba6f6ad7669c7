/*
 * Splitting a transparent huge page into 512 base pages.
 * Linux: mm/huge_memory.c (split_huge_page_to_list, __split_huge_page,
 * __split_huge_page_tail, __split_huge_pmd_locked) and mm/swap.c
 * (lru_add_page_tail), as migrate_pages() uses them when a THP finds no room and
 * shrink_page_list() when a rotational swap device has no cluster for one.
 */
#include <errno.h>
#include "internal.h"

/* split_huge_page_to_list() for an isolated anonymous THP that one PMD maps: the PMD
 * becomes the page table deposited with it, one PTE per base page with the PMD's
 * bits (__split_huge_pmd_locked()), and head and tails become base pages, each
 * mapped once. The tails go on `tails` in the order lru_add_page_tail() appends them
 * to the caller's list (512 - 1 down to 1). 0; -EBUSY for an extra reference
 * (pinned: can_split_huge_page() fails, thp_split_page_failed); -EOPNOTSUPP, with
 * nothing counted, for what is not modelled: a THP mapped by more than one process
 * (4.20 splits it by unmapping every mapper) or one not isolated. */
int fp_split_huge_page(struct fp_kernel *k, uint64_t pfn, uint64_t *tails)
{
    struct fp_page *head = &k->pages[pfn];
    int level;
    if (!(head->flags & FP_PG_HEAD) || !(head->flags & FP_PG_ANON) || (head->flags & FP_PG_LRU) ||
        head->mapcount != 1)
        return -EOPNOTSUPP;
    if (head->flags & FP_PG_PINNED) {
        k->events[FP_EV_THP_SPLIT_PAGE_FAILED]++;
        return -EBUSY;
    }
    uint64_t *pmd = fp_rmap_entry(k, head, &level);
    if (!pmd || level != 3)
        return -EOPNOTSUPP;
    struct fp_mm *mm = k->mms[fp_page_owner(k, head)];
    uint64_t addr = fp_page_vaddr(k, head), e = *pmd;
    int64_t t = fp_split_pmd(k, mm, pmd); /* the deposited table now maps the 512 pages */
    if (t < 0)
        return -EOPNOTSUPP;
    if (mm->vm)
        fp_kvm_unmap_hva(k, mm, addr, FP_PAGES_PER_HUGE); /* the guest's 2 MiB leaf goes */
    uint64_t *ptes = fp_table(k, (uint64_t)t);
    /* the split freezes the mapping into migration entries (pmd_dirty() ->
     * SetPageDirty(), pmd_write() -> a write entry) and remap_page() installs
     * each PTE as remove_migration_pte() does: old, clean, writable when the PMD
     * was, with the VMA's protection (a NUMA-hinting PROT_NONE is gone) */
    uint64_t bits = FP_PAGE_PRESENT | (e & (FP_PAGE_RW | FP_PAGE_USER));
    if (e & FP_PAGE_DIRTY)
        head->flags |= FP_PG_DIRTY;
    struct fp_node *node = &k->nodes[fp_pfn_to_node(k, pfn)];
    fp_page_kind_add(node->stat, head, -1); /* one THP of 512 pages out, 512 base pages in */
    uint16_t keep = head->flags & FP_SPLIT_KEEP;
    for (uint64_t i = 0; i < FP_PAGES_PER_HUGE; i++) {
        struct fp_page *p = &k->pages[pfn + i];
        p->flags = (uint16_t)(FP_PG_ALLOCATED | keep);
        p->mapcount = 1;
        p->pte = (uint32_t)((uint64_t)t * FP_PTRS_PER_TABLE + i);
        p->lru_prev = p->lru_next = FP_LRU_NONE;
        ptes[i] = ((pfn + i) << FP_PAGE_SHIFT) | bits;
        fp_page_kind_add(node->stat, p, +1);
    }
    fp_mark_block_split(node, pfn);
    for (uint64_t i = 1; i < FP_PAGES_PER_HUGE; i++)
        tails[i - 1] = pfn + FP_PAGES_PER_HUGE - i;
    k->tlb_gen++; /* an upper-level entry was rewritten: TLBs flush */
    k->events[FP_EV_THP_SPLIT_PAGE]++;
    return 0;
}
