/*
 * Reverse maps: which (address space, address) pairs map a page.
 * Linux: mm/rmap.c (page_add_anon_rmap, page_remove_rmap, rmap_walk). The first
 * mapper is kept in struct fp_page as the arena index of its entry (4 bytes: the
 * table's owner and base address give the mm and the address), so the common case
 * costs nothing; further mappers (pages shared after fork) sit in a side table,
 * searched linearly: fine for the few shared pages a scenario makes.
 * invariant: mapcount == 1 + the side-table entries with this pfn.
 */
#include <errno.h>
#include <stdlib.h>
#include "internal.h"

/* the arena index of the entry that maps (or will map) addr in mm: a PTE, or for a
 * THP the PMD (a THP is only ever installed in an empty PMD) */
static uint32_t entry_of(struct fp_kernel *k, uint32_t mm, uint64_t addr)
{
    int32_t level;
    const uint64_t *e = fp_mm_walk(k, k->mms[mm], addr, &level);
    return (uint32_t)fp_entry_index(k, e);
}

int fp_rmap_add(struct fp_kernel *k, uint64_t pfn, uint32_t mm, uint64_t addr)
{
    struct fp_page *p = &k->pages[pfn];
    if (!p->mapcount) {
        p->pte = entry_of(k, mm, addr);
    } else {
        if (k->nr_rmap_ext == k->cap_rmap_ext) {
            uint64_t cap = k->cap_rmap_ext ? 2 * k->cap_rmap_ext : 64;
            struct fp_rmap_ext *n = realloc(k->rmap_ext, cap * sizeof(*n));
            if (!n)
                return -ENOMEM;
            k->rmap_ext = n;
            k->cap_rmap_ext = cap;
        }
        k->rmap_ext[k->nr_rmap_ext++] = (struct fp_rmap_ext){pfn, addr >> FP_PAGE_SHIFT, mm, 0};
    }
    p->mapcount++;
    return 0;
}

static int64_t find_ext(const struct fp_kernel *k, uint64_t pfn, int64_t mm, uint64_t vpn)
{
    for (uint64_t i = 0; i < k->nr_rmap_ext; i++) {
        const struct fp_rmap_ext *x = &k->rmap_ext[i];
        if (x->pfn == pfn && (mm < 0 || (x->mm == (uint32_t)mm && x->vpn == vpn)))
            return (int64_t)i;
    }
    return -1;
}

void fp_rmap_del(struct fp_kernel *k, uint64_t pfn, uint32_t mm, uint64_t addr)
{
    struct fp_page *p = &k->pages[pfn];
    uint64_t vpn = addr >> FP_PAGE_SHIFT;
    int64_t i;
    if (fp_page_owner(k, p) == mm && fp_page_vaddr(k, p) == addr) {
        i = p->mapcount > 1 ? find_ext(k, pfn, -1, 0) : -1;
        if (i >= 0) /* another mapper becomes the first */
            p->pte = entry_of(k, k->rmap_ext[i].mm, k->rmap_ext[i].vpn << FP_PAGE_SHIFT);
    } else {
        i = find_ext(k, pfn, mm, vpn);
    }
    if (i >= 0)
        k->rmap_ext[i] = k->rmap_ext[--k->nr_rmap_ext];
    p->mapcount--;
}

int fp_rmap_is_mapper(const struct fp_kernel *k, uint64_t pfn, uint32_t mm, uint64_t addr)
{
    const struct fp_page *p = &k->pages[pfn];
    uint64_t vpn = addr >> FP_PAGE_SHIFT;
    return (p->mapcount && fp_page_owner(k, p) == mm && fp_page_vaddr(k, p) == addr) ||
           find_ext(k, pfn, mm, vpn) >= 0;
}

uint64_t *fp_mm_leaf(struct fp_kernel *k, const struct fp_mm *mm, uint64_t addr, int *level)
{
    uint64_t *e = fp_mm_walk(k, mm, addr, level);
    return e && fp_entry_present(*e) ? e : NULL;
}

/* Call fn for every mapping of pfn. The mappers are collected first, so fn may
 * change the reverse map (unmap). Returns how many there were. */
int fp_rmap_walk(struct fp_kernel *k, uint64_t pfn, fp_rmap_fn fn, void *arg)
{
    const struct fp_page *p = &k->pages[pfn];
    uint32_t n = p->mapcount, got = 0;
    if (!n)
        return 0;
    uint32_t *mms = malloc(n * sizeof(uint32_t));
    uint64_t *vpns = malloc(n * sizeof(uint64_t));
    if (!mms || !vpns) {
        free(mms);
        free(vpns);
        return -ENOMEM;
    }
    mms[got] = fp_page_owner(k, p);
    vpns[got++] = fp_page_vaddr(k, p) >> FP_PAGE_SHIFT;
    for (uint64_t i = 0; i < k->nr_rmap_ext && got < n; i++)
        if (k->rmap_ext[i].pfn == pfn) {
            mms[got] = k->rmap_ext[i].mm;
            vpns[got++] = k->rmap_ext[i].vpn;
        }
    for (uint32_t i = 0; i < got; i++) {
        struct fp_mm *mm = mms[i] < FP_MAX_MMS ? k->mms[mms[i]] : NULL;
        int level;
        uint64_t addr = vpns[i] << FP_PAGE_SHIFT;
        uint64_t *e = fp_mm_leaf(k, mm, addr, &level);
        if (e && fp_entry_addr(*e) == pfn)
            fn(k, mm, e, addr, arg);
    }
    free(mms);
    free(vpns);
    return (int)got;
}
