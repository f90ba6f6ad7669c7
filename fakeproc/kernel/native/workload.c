/*
 * The workload engine: deterministic access patterns that touch emulated
 * memory the way a CPU would (fp_touch sets accessed/dirty bits, faults first).
 * No kernel counterpart: this is the "hardware + application" side.
 *
 * Pages are numbered across the workload's regions in order ("region space");
 * the hot set is hot_pages pages starting at hot_offset, wrapping around.
 */
#include <errno.h>
#include <math.h>
#include "internal.h"

static inline uint64_t rng_next(uint64_t *s)
{
    /* xorshift64* (Vigna): fast, deterministic, good enough for access streams */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline double rng_unit(uint64_t *s) /* [0, 1) */
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static inline uint64_t rng_below(uint64_t *s, uint64_t n)
{
    /* Lemire's multiply-high: uniform on [0, n) up to a 2^-64 bias, no floating point */
    return (uint64_t)(((unsigned __int128)rng_next(s) * n) >> 64);
}

/* Continuous approximation of a Zipf(s) rank in [0, n): inverse CDF of a
 * power law, exact in distribution up to rounding for large n. */
static uint64_t zipf_rank(uint64_t *st, uint64_t n, double s)
{
    double u = rng_unit(st), x;
    if (fabs(s - 1.0) < 1e-9)
        x = pow((double)n + 1.0, u);
    else
        x = pow((pow((double)n + 1.0, 1.0 - s) - 1.0) * u + 1.0, 1.0 / (1.0 - s));
    uint64_t r = (uint64_t)x - 1;
    return r < n ? r : n - 1;
}

/* rng: the caller's copy of wl->rng, kept in a register (the page-table stores of
 * a touch could alias wl->rng, which would force it through memory every step) */
static inline uint64_t pick_page(struct fp_workload *wl, uint64_t *rng)
{
    uint64_t n = wl->total_pages, idx;
    switch (wl->pattern) {
    case FP_WL_HOTCOLD: {
        uint64_t hot = wl->hot_pages < n ? wl->hot_pages : n;
        if (hot == n || (hot && rng_unit(rng) < wl->hot_prob))
            idx = wl->hot_offset + rng_below(rng, hot);
        else
            idx = wl->hot_offset + hot + rng_below(rng, n - hot);
        break;
    }
    case FP_WL_ZIPF:
        idx = wl->hot_offset + zipf_rank(rng, n, wl->zipf_s);
        break;
    case FP_WL_SEQ:
        idx = wl->seq_pos++;
        if (wl->seq_pos >= n)
            wl->seq_pos = 0;
        break;
    default:
        idx = rng_below(rng, n);
    }
    /* the division only for the few picks that wrap: it costs more than the rest */
    return idx < n ? idx : idx % n;
}

int64_t fp_workload_run(struct fp_kernel *k, struct fp_workload *wl, uint64_t n)
{
    if (!wl->total_pages || !wl->nr_regions)
        return 0;
    /* rng and the per-node tally stay local: the page-table stores of a touch could
     * alias wl's fields, which would force them through memory every step */
    uint64_t rng = wl->rng, on[FP_NO_NODE + 1] = {0}, i;
    int64_t ret = (int64_t)n;
    for (i = 0; i < n; i++) {
        uint64_t idx = pick_page(wl, &rng);
        const struct fp_region *r = wl->regions;
        while (idx >= r->nr_pages) {
            idx -= r->nr_pages;
            r++;
        }
        uint64_t addr = r->start + (idx << FP_PAGE_SHIFT);
        uint32_t flags = r->vma_flags << FP_FAULT_VMA_SHIFT;
        if (wl->write_frac > 0 && rng_unit(&rng) < wl->write_frac)
            flags |= FP_FAULT_WRITE;
        if (r->vma_flags & FP_VMA_THP) {
            uint64_t base = addr & ~(FP_PMD_SIZE - 1);
            if (base >= r->start && base + FP_PMD_SIZE <= r->start + (r->nr_pages << FP_PAGE_SHIFT))
                flags |= FP_FAULT_THP;
        }
        int write = (flags & FP_FAULT_WRITE) != 0;
        int32_t err = wl->vm >= 0 ? fp_ept_touch(k, wl->vm, addr, write)
                    : fp_tlb_hit(k, wl->tlb, addr, write);
        if (err < 0 && wl->vm < 0)
            err = fp_tlb_miss(k, wl->tlb, wl->mm, addr, flags);
        if (err == -ENOMEM) {
            /* out of memory: stop here; the orchestrator OOM-kills and time goes on */
            wl->faults_failed++;
            ret = (int64_t)i;
            break;
        } else if (err < 0) {
            ret = err;
            break;
        }
        on[err]++;
        if ((k->numa_balancing & 2) && wl->vm < 0 && err < k->nr_nodes && !k->nodes[err].is_dram)
            fp_numa_hint(k, k->mms[wl->mm], addr);
    }
    for (int j = 0; j <= FP_NO_NODE; j++)
        wl->on_node[j] += on[j];
    wl->rng = rng;
    wl->touches += i;
    return ret;
}
