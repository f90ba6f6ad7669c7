/*
 * Ground truth for scoring placement: what an oracle would have kept in DRAM.
 * No kernel counterpart: a real machine cannot count every access.
 *
 * fp_oracle() takes the accesses of the current window (truth[].window, per base
 * page), picks the hottest pages that fit in `dram_pages` (a counting sort over
 * the saturating 16-bit counts), and reports per address space how many of its
 * accesses that oracle placement would have served from DRAM; then it starts a
 * new window. Pages with equal counts at the threshold are taken in PFN order.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define NBUCKETS 65536

/* Calls fn(pfn, owner) for every base page of every mapped data page. */
#define FOR_EACH_MAPPED(k, body)                                                    \
    for (int n_ = 0; n_ < (k)->nr_nodes; n_++) {                                   \
        const struct fp_node *node_ = &(k)->nodes[n_];                             \
        for (uint64_t pfn_ = node_->start_pfn; pfn_ < node_->start_pfn + node_->nr_pages;) { \
            const struct fp_page *p_ = &(k)->pages[pfn_];                          \
            uint64_t nr_ = (p_->flags & FP_PG_HEAD) ? FP_PAGES_PER_HUGE : 1;        \
            if ((p_->flags & FP_PG_ALLOCATED) && p_->mapcount && !(p_->flags & FP_PG_TAIL)) \
                for (uint64_t i_ = 0; i_ < nr_; i_++) {                            \
                    uint64_t pfn = pfn_ + i_;                                      \
                    uint32_t owner = fp_page_owner(k, p_);                         \
                    body                                                           \
                }                                                                  \
            pfn_ += nr_;                                                           \
        }                                                                          \
    }

int32_t fp_oracle(struct fp_kernel *k, uint64_t dram_pages, uint64_t *out_total,
                  uint64_t *out_oracle, uint32_t n_mm)
{
    uint64_t *hist = calloc(NBUCKETS, sizeof(uint64_t));
    if (!hist)
        return -ENOMEM;
    memset(out_total, 0, n_mm * sizeof(uint64_t));
    memset(out_oracle, 0, n_mm * sizeof(uint64_t));
    FOR_EACH_MAPPED(k, { (void)owner; hist[k->truth[pfn].window]++; })
    /* the threshold: every page above it fits, `ties` pages at it fit too */
    uint64_t room = dram_pages, ties = 0;
    int64_t threshold = NBUCKETS;
    for (int64_t c = NBUCKETS - 1; c >= 1 && room; c--) {
        if (hist[c] <= room) {
            room -= hist[c];
            threshold = c;
            ties = hist[c];
        } else {
            threshold = c;
            ties = room;
            room = 0;
        }
    }
    FOR_EACH_MAPPED(k, {
        uint64_t c = k->truth[pfn].window;
        if (owner < n_mm && c) {
            out_total[owner] += c;
            if ((int64_t)c > threshold || ((int64_t)c == threshold && ties && ties--))
                out_oracle[owner] += c;
        }
        k->truth[pfn].window = 0;
    })
    free(hist);
    return 0;
}

struct heat {
    uint64_t start, bucket_bytes;
    uint32_t n;
    uint64_t *acc, *pages, *dram;
};

static void heat_leaf(struct fp_kernel *k, uint64_t *e, uint64_t addr, uint64_t nr, void *arg)
{
    struct heat *h = arg;
    uint64_t pfn = fp_entry_addr(*e);
    int nid = fp_pfn_to_node(k, pfn);
    if (nid < 0)
        return;
    for (uint64_t i = 0; i < nr; i++) {
        uint64_t a = addr + (i << FP_PAGE_SHIFT);
        if (a < h->start)
            continue;
        uint64_t b = (a - h->start) / h->bucket_bytes;
        if (b >= h->n)
            break;
        h->acc[b] += k->truth[pfn + i].window;
        h->pages[b]++;
        h->dram[b] += k->nodes[nid].is_dram != 0;
    }
}

int32_t fp_heat(struct fp_kernel *k, uint32_t id, uint64_t start, uint64_t end, uint32_t nbuckets,
                uint64_t *accesses, uint64_t *pages, uint64_t *dram_pages)
{
    if (!nbuckets || end <= start)
        return -EINVAL;
    memset(accesses, 0, nbuckets * sizeof(uint64_t));
    memset(pages, 0, nbuckets * sizeof(uint64_t));
    memset(dram_pages, 0, nbuckets * sizeof(uint64_t));
    struct heat h = {start, (end - start + nbuckets - 1) / nbuckets, nbuckets, accesses, pages,
                     dram_pages};
    return fp_walk_leaves(k, id, start, end, heat_leaf, &h);
}
