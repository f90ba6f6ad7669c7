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

/* Continuous approximation of a Zipf(s) rank in [0, n) for a uniform u in [0, 1):
 * inverse CDF of a power law, exact in distribution up to rounding for large n.
 * It takes u, not the generator: a generator whose address reached this call (not
 * inlined) would live in memory, and every touch would wait on a store and load. */
static uint64_t zipf_rank(double u, uint64_t n, double s)
{
    double x;
    if (fabs(s - 1.0) < 1e-9)
        x = pow((double)n + 1.0, u);
    else
        x = pow((pow((double)n + 1.0, 1.0 - s) - 1.0) * u + 1.0, 1.0 / (1.0 - s));
    uint64_t r = (uint64_t)x - 1;
    return r < n ? r : n - 1;
}

/* rng: the caller's copy of wl->rng, kept in a register (the page-table stores of
 * a touch could alias wl->rng, which would force it through memory every step) */
static inline __attribute__((always_inline)) uint64_t pick_page(struct fp_workload *wl, uint64_t *rng)
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
        idx = wl->hot_offset + zipf_rank(rng_unit(rng), n, wl->zipf_s);
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

/* One drawn touch: where, how, and the generator's state right after drawing it
 * (a run that stops early rewinds to the last touch it made). */
struct pick {
    uint64_t addr;
    uint32_t flags;
    uint64_t rng, seq_pos;
    struct fp_tlb_entry t; /* the pipelined loop's walk at draw time (tag 0: none) */
};

/* ahead: drawn ahead of its touch (the pipelined loop), so keep the generator's state
 * to rewind to; the plain loop's generator is already there */
static inline __attribute__((always_inline)) void draw(struct fp_workload *wl, uint64_t *rng,
                                                       struct pick *p, const int ahead)
{
    uint64_t idx = pick_page(wl, rng);
    const struct fp_region *r = wl->regions;
    while (idx >= r->nr_pages) {
        idx -= r->nr_pages;
        r++;
    }
    p->addr = r->start + (idx << FP_PAGE_SHIFT);
    p->flags = r->vma_flags << FP_FAULT_VMA_SHIFT;
    if (wl->write_frac > 0 && rng_unit(rng) < wl->write_frac)
        p->flags |= FP_FAULT_WRITE;
    if (r->vma_flags & FP_VMA_THP) {
        uint64_t base = p->addr & ~(FP_PMD_SIZE - 1);
        if (base >= r->start && base + FP_PMD_SIZE <= r->start + (r->nr_pages << FP_PAGE_SHIFT))
            p->flags |= FP_FAULT_THP;
    }
    if (ahead) {
        p->rng = *rng;
        p->seq_pos = wl->seq_pos;
    }
}

/* Big workloads miss the cache twice per touch (the PTE, then the PFN's truth
 * record), and each miss waits for the one before. Their picks are drawn
 * PIPE_AHEAD touches early (the stream does not depend on memory), so the misses
 * of many touches overlap: at draw time a walk that changes nothing prefetches
 * the PTE, PIPE_TRUTH touches before the touch its PTE gives the truth record to
 * prefetch. Prefetches are hints: what a touch does is decided when it runs. */
#define PIPE_SLOTS 64 /* a power of two above PIPE_AHEAD */
#define PIPE_AHEAD 48
#define PIPE_TRUTH 16

/* GCC 12 deletes a __builtin_prefetch whose address only feeds the prefetch (the
 * truth prefetch below vanished from the object code); an asm statement stays. */
static inline void prefetch(const void *p)
{
#if defined(__x86_64__)
    __asm__ volatile("prefetcht0 %0" : : "m"(*(const char *)p));
#else
    __builtin_prefetch(p);
#endif
}

/* The draw-time walk: a TLB entry for p (as fp_tlb_miss() would fill it) when the
 * PGD and PUD entries are present, not huge and already accessed (a hit skips
 * them, fp_tlb_hit()); then the leaf's prefetch. */
static inline void peek(const struct fp_kernel *k, const struct fp_mm *mm, struct pick *p)
{
    uint64_t table, want = FP_PAGE_PRESENT | FP_PAGE_ACCESSED;
    p->t.tag = 0;
    if (!mm || !mm->pgd || k->tlb_off)
        return;
    table = mm->pgd;
    for (int l = 1; l <= 2; l++) {
        uint64_t e = fp_table(k, table)[fp_index(p->addr, l)];
        if ((e & (want | FP_PAGE_PSE)) != want)
            return;
        table = fp_entry_addr(e);
    }
    uint64_t *pmd = &fp_table(k, table)[fp_index(p->addr, 3)], e = *pmd;
    if (!(e & FP_PAGE_PRESENT))
        return;
    p->t.tag = (p->addr >> 21) + 1;
    p->t.gen = k->tlb_gen;
    p->t.pmd = (uint64_t)(pmd - k->tables);
    p->t.pte_table = (e & FP_PAGE_PSE) ? 0 : fp_entry_addr(e);
    if (p->t.pte_table)
        prefetch(&fp_table(k, p->t.pte_table)[fp_index(p->addr, 4)]);
}

static inline void prefetch_truth(const struct fp_kernel *k, const struct pick *p)
{
    if (!p->t.tag)
        return;
    uint64_t e = p->t.pte_table ? fp_table(k, p->t.pte_table)[fp_index(p->addr, 4)]
                                : k->tables[p->t.pmd];
    uint64_t pfn = fp_entry_addr(e) + (p->t.pte_table ? 0 : (p->addr >> FP_PAGE_SHIFT) % FP_PAGES_PER_HUGE);
    if ((e & FP_PAGE_PRESENT) && pfn < k->nr_pfns)
        prefetch(&k->truth[pfn]);
}

/* The loop, inlined twice: pipelined is a constant in each copy. */
static inline __attribute__((always_inline)) int64_t
run(struct fp_kernel *k, struct fp_workload *wl, uint64_t n, const int pipelined)
{
    /* rng and the per-node tally stay local: the page-table stores of a touch could
     * alias wl's fields, which would force them through memory every step */
    uint64_t rng = wl->rng, on[FP_NO_NODE + 1] = {0}, i;
    int64_t ret = (int64_t)n;
    struct pick ring[PIPE_SLOTS];
    const struct fp_mm *mm = wl->mm < FP_MAX_MMS ? k->mms[wl->mm] : NULL;
    if (pipelined)
        for (i = 0; i < PIPE_AHEAD && i < n; i++) {
            draw(wl, &rng, &ring[i], 1);
            peek(k, mm, &ring[i]);
        }
    for (i = 0; i < n; i++) {
        struct pick *p = &ring[pipelined ? i % PIPE_SLOTS : 0];
        if (pipelined) {
            if (i + PIPE_AHEAD < n) {
                struct pick *ahead = &ring[(i + PIPE_AHEAD) % PIPE_SLOTS];
                draw(wl, &rng, ahead, 1);
                peek(k, mm, ahead);
            }
            if (i + PIPE_TRUTH < n)
                prefetch_truth(k, &ring[(i + PIPE_TRUTH) % PIPE_SLOTS]);
        } else {
            draw(wl, &rng, p, 0);
        }
        uint64_t addr = p->addr;
        int write = (p->flags & FP_FAULT_WRITE) != 0;
        int32_t err = -1;
        if (wl->vm >= 0)
            err = fp_ept_touch(k, wl->vm, addr, write);
        else {
            if (pipelined && p->t.tag)
                err = fp_tlb_hit(k, &p->t, addr, write);
            if (err < 0)
                err = fp_tlb_hit(k, &wl->tlb[(addr >> 21) & (FP_TLB_ENTRIES - 1)], addr, write);
            if (err < 0)
                err = fp_tlb_miss(k, wl->tlb, wl->mm, addr, p->flags);
        }
        if (err == -ENOMEM) {
            /* out of memory: stop here; the orchestrator OOM-kills and time goes on */
            wl->faults_failed++;
            ret = (int64_t)i;
        } else if (err < 0) {
            ret = err;
        }
        if (err < 0) {
            if (pipelined) { /* as if nothing had been drawn beyond this touch */
                rng = p->rng;
                wl->seq_pos = p->seq_pos;
            }
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

int64_t fp_workload_run(struct fp_kernel *k, struct fp_workload *wl, uint64_t n)
{
    if (!wl->total_pages || !wl->nr_regions)
        return 0;
    if (wl->vm < 0 && wl->total_pages >= k->wl_pipeline_pages)
        return run(k, wl, n, 1);
    return run(k, wl, n, 0);
}
