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

/* What a run keeps of the stream in locals: the position of a sequential one (the
 * page-table stores of a touch could alias wl->seq_pos, which would force it
 * through memory every step; it goes back to wl when the run ends), and the terms
 * of zipf_rank() that do not depend on the touch (0: not worked out). */
struct stream {
    uint64_t seq_pos;
    double zipf_b, zipf_e;
};

static inline void zipf_terms(uint64_t n, double s, double *b, double *e)
{
    *b = pow((double)n + 1.0, 1.0 - s) - 1.0;
    *e = 1.0 / (1.0 - s);
}

/* Continuous approximation of a Zipf(s) rank in [0, n) for a uniform u in [0, 1):
 * inverse CDF of a power law, exact in distribution up to rounding for large n.
 * For s != 1 it is pow((pow(n + 1, 1 - s) - 1) * u + 1, 1 / (1 - s)); b and e are
 * the parts without u (zipf_terms()), which a loop can work out once: one pow() per
 * touch, not two (e = 0: not worked out; it is never 0 otherwise).
 * It takes u, not the generator: a generator whose address reached this call (not
 * inlined) would live in memory, and every touch would wait on a store and load. */
static uint64_t zipf_rank(double u, uint64_t n, double s, double b, double e)
{
    double x;
    if (fabs(s - 1.0) < 1e-9) {
        x = pow((double)n + 1.0, u);
    } else {
        if (e == 0)
            zipf_terms(n, s, &b, &e);
        x = pow(b * u + 1.0, e);
    }
    uint64_t r = (uint64_t)x - 1;
    return r < n ? r : n - 1;
}

/* pattern: an FP_WL_* constant for a loop specialised to it, or -1 (wl->pattern).
 * rng: the caller's copy of wl->rng, kept in a register (the page-table stores of
 * a touch could alias wl->rng, which would force it through memory every step) */
static inline __attribute__((always_inline)) uint64_t
pick_page(const struct fp_workload *wl, struct stream *s, uint64_t *rng, const int pattern)
{
    uint64_t n = wl->total_pages, idx;
    switch (pattern >= 0 ? (uint32_t)pattern : wl->pattern) {
    case FP_WL_HOTCOLD: {
        uint64_t hot = wl->hot_pages < n ? wl->hot_pages : n;
        if (hot == n || (hot && rng_unit(rng) < wl->hot_prob))
            idx = wl->hot_offset + rng_below(rng, hot);
        else
            idx = wl->hot_offset + hot + rng_below(rng, n - hot);
        break;
    }
    case FP_WL_ZIPF:
        idx = wl->hot_offset + zipf_rank(rng_unit(rng), n, wl->zipf_s, s->zipf_b, s->zipf_e);
        break;
    case FP_WL_SEQ:
        idx = s->seq_pos++;
        if (s->seq_pos >= n)
            s->seq_pos = 0;
        break;
    default:
        return rng_below(rng, n); /* below n: nothing to wrap */
    }
    /* the division only for the few picks that wrap: it costs more than the rest */
    return idx < n ? idx : idx % n;
}

/* One drawn touch of the guest loop: where, and how (FP_FAULT_WRITE). */
struct pick {
    uint64_t addr;
    uint32_t flags;
};

/* A touch's place: the page at idx (region space) is in region *r at *addr. */
static inline __attribute__((always_inline)) void locate(const struct fp_workload *wl, uint64_t idx,
                                                         const struct fp_region **r, uint64_t *addr)
{
    const struct fp_region *rr = wl->regions;
    while (idx >= rr->nr_pages) {
        idx -= rr->nr_pages;
        rr++;
    }
    *r = rr;
    *addr = rr->start + (idx << FP_PAGE_SHIFT);
}

/* The second draw of a touch, whether it writes; writes: 0 when the caller knows
 * write_frac is 0 (nothing is drawn then), else 1 */
static inline __attribute__((always_inline)) int draw_write(const struct fp_workload *wl,
                                                            uint64_t *rng, const int writes)
{
    return writes && wl->write_frac > 0 && rng_unit(rng) < wl->write_frac;
}

/* The fault flags (FP_FAULT_*) of a touch at addr in r: only fp_tlb_miss() reads
 * them, and run_host() works them out for a miss only. */
static inline uint32_t fault_flags(const struct fp_region *r, uint64_t addr, int write)
{
    uint32_t flags = r->vma_flags << FP_FAULT_VMA_SHIFT | (write ? FP_FAULT_WRITE : 0);
    if (r->vma_flags & FP_VMA_THP) {
        uint64_t base = addr & ~(FP_PMD_SIZE - 1);
        if (base >= r->start && base + FP_PMD_SIZE <= r->start + (r->nr_pages << FP_PAGE_SHIFT))
            flags |= FP_FAULT_THP;
    }
    return flags;
}

static inline __attribute__((always_inline)) void draw(const struct fp_workload *wl,
                                                       struct stream *s, uint64_t *rng,
                                                       struct pick *p)
{
    const struct fp_region *r;
    locate(wl, pick_page(wl, s, rng, -1), &r, &p->addr);
    p->flags = fault_flags(r, p->addr, draw_write(wl, rng, 1));
}

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

/* The guest loop (vm >= 0): each touch goes through the VM's EPT (fp_ept_touch());
 * host workloads take run_host() or run_pipe(). */
static int64_t run_guest(struct fp_kernel *k, struct fp_workload *wl, uint64_t n)
{
    /* rng and the per-node tally stay local: the page-table stores of a touch could
     * alias wl's fields, which would force them through memory every step */
    uint64_t rng = wl->rng, on[FP_NO_NODE + 1] = {0}, i;
    int64_t ret = (int64_t)n;
    struct stream s = {.seq_pos = wl->seq_pos};
    for (i = 0; i < n; i++) {
        struct pick p;
        draw(wl, &s, &rng, &p);
        int32_t err = fp_ept_touch(k, wl->vm, p.addr, (p.flags & FP_FAULT_WRITE) != 0);
        if (err == -ENOMEM) {
            /* out of memory: stop here; the orchestrator OOM-kills and time goes on */
            wl->faults_failed++;
            ret = (int64_t)i;
        } else if (err < 0) {
            ret = err;
        }
        if (err < 0)
            break;
        on[err]++;
    }
    for (int j = 0; j <= FP_NO_NODE; j++)
        wl->on_node[j] += on[j];
    wl->rng = rng;
    wl->seq_pos = s.seq_pos;
    wl->touches += i;
    return ret;
}

/* The kernel fields a hit of run_host() reads, in locals: the page-table and truth
 * stores of a touch could alias k's fields as far as the compiler knows, which
 * would reload each of them every touch. Only a miss (fp_tlb_miss()) or a NUMA hint
 * can change them (a freed table moves tlb_gen, for one): both reload them after
 * (view_load()). */
struct view {
    uint64_t *tables;
    uint64_t gen;
    struct fp_truth *truth;
    /* A node whose touches take no NUMA hint and its PFNs [lo, lo + span) (all below
     * nr_pfns): consecutive touches mostly land on one node, and a hit there needs
     * neither fp_pfn_to_node()'s walk of the node list (nodes are contiguous and in
     * order, so a PFN in a node's range is that node's) nor the NUMA balancing test.
     * span 0: none. Its touches are not counted one by one: they are the fast ones
     * (run_host(): touches less slow ones) since fast0, tallied when it goes. */
    uint64_t lo, span, fast0;
    int32_t node;
};

/* The chosen node's touches go to the tally (fast: fast touches so far); no node
 * after it. */
static inline void view_drop_node(struct view *v, uint64_t *on, uint64_t fast)
{
    if (v->span)
        on[v->node] += fast - v->fast0;
    v->lo = v->span = 0;
}

static inline void view_load(struct view *v, const struct fp_kernel *k, uint64_t *on,
                             uint64_t fast)
{
    view_drop_node(v, on, fast);
    v->tables = k->tables;
    v->gen = k->tlb_gen;
    v->truth = k->truth;
}

/* Choose node nid (its touch took no NUMA hint) for the hits that follow. */
static inline void view_set_node(struct view *v, const struct fp_kernel *k, uint64_t *on,
                                 uint64_t fast, int32_t nid)
{
    const struct fp_node *node = &k->nodes[nid];
    view_drop_node(v, on, fast);
    if (node->start_pfn + node->nr_pages <= k->nr_pfns) {
        v->lo = node->start_pfn;
        v->span = node->nr_pages;
        v->node = nid;
        v->fast0 = fast;
    }
}

/* A touch run_host() drew ahead of its turn: where, whether it writes, and the
 * stream's state right after drawing it. */
struct ahead {
    const struct fp_region *r;
    uint64_t addr;
    int write;
    uint64_t rng, seq_pos;
};

static inline __attribute__((always_inline)) void draw_ahead(const struct fp_workload *wl,
                                                             struct stream *s, uint64_t *rng,
                                                             struct ahead *a, const int pattern,
                                                             const int writes)
{
    locate(wl, pick_page(wl, s, rng, pattern), &a->r, &a->addr);
    /* a store to a mapping without VM_WRITE would be SIGSEGV: the application only
     * loads there (the write is still drawn: the stream stays the same) */
    a->write = draw_write(wl, rng, writes) && (a->r->vma_flags & FP_VMA_WRITE);
    a->rng = *rng;
    a->seq_pos = s->seq_pos;
}

/* The rest of a host touch that was not a fast hit (pfn: the hit's PFN, or -1 for
 * a TLB miss): count a hit outside the remembered node, or take the miss
 * (fp_tlb_miss()); tally the node, then give a NUMA hint or remember the node. The
 * node index, or a negative errno (the run stops there). A call that can change the
 * kernel's fields reloads the view. */
static inline __attribute__((always_inline)) int32_t
slow_touch(struct fp_kernel *k, struct fp_workload *wl, struct view *v, uint64_t *on,
           uint64_t fast, int64_t pfn, const struct ahead *a)
{
    int32_t nid;
    if (pfn >= 0) {
        nid = fp_count_pfn(k, (uint64_t)pfn);
    } else {
        nid = fp_tlb_miss(k, wl->tlb, wl->mm, a->addr, fault_flags(a->r, a->addr, a->write));
        view_load(v, k, on, fast);
        if (nid < 0)
            return nid;
    }
    on[nid]++;
    if ((k->numa_balancing & 2) && nid < k->nr_nodes && !k->nodes[nid].is_dram) {
        fp_numa_hint(k, k->mms[wl->mm], a->addr);
        view_load(v, k, on, fast);
    } else if (pfn >= 0 && nid != FP_NO_NODE) {
        view_set_node(v, k, on, fast, nid);
    }
    return nid;
}

/* What a run returns when touch i failed with err: out of memory stops the run there
 * (the orchestrator OOM-kills and time goes on), anything else is the error. */
static int64_t touch_failed(struct fp_workload *wl, int32_t err, uint64_t i)
{
    if (err != -ENOMEM)
        return err;
    wl->faults_failed++;
    return (int64_t)i;
}

/* The end of a host run of i touches, slow of them slow: the tallies and the stream
 * (a is the draw of the last touch made) go back to wl. */
static void finish_host_run(struct fp_workload *wl, struct view *v, uint64_t *on, uint64_t i,
                            uint64_t slow, const struct ahead *a)
{
    view_drop_node(v, on, i - slow);
    for (int j = 0; j <= FP_NO_NODE; j++)
        wl->on_node[j] += on[j];
    wl->rng = a->rng;
    wl->seq_pos = a->seq_pos;
    wl->touches += i;
}

/* The plain loop of a host workload (vm < 0, below the pipelining size), specialised:
 * each touch as fp_tlb_hit_pfn() or, on a miss, fp_tlb_miss() does it. pattern and writes (write_frac > 0) are
 * constants in each copy, so the per-touch switch and tests fold away (testing
 * write_frac at every touch alone made an in-cache run 14% slower), and the kernel
 * fields a hit reads are in locals (struct view).
 * Each touch is drawn two turns ahead: a draw is a chain of dependent arithmetic
 * (the generator, two multiplies, the region) and a touch a chain of dependent
 * loads (TLB entry, PMD, PTE, truth record); apart, the core overlaps them, and an
 * in-cache run is a quarter faster than drawing each touch in its turn. The run
 * ends rewound to the draw of its last touch, as if nothing had been drawn beyond. */
static inline __attribute__((always_inline)) int64_t
run_host(struct fp_kernel *k, struct fp_workload *wl, uint64_t n, const int pattern,
         const int writes)
{
    uint64_t rng = wl->rng, on[FP_NO_NODE + 1] = {0}, i, slow = 0;
    int64_t ret = (int64_t)n;
    struct stream s = {.seq_pos = wl->seq_pos};
    struct view v = {0};
    struct ahead cur, next, after;
    if (pattern == FP_WL_ZIPF)
        zipf_terms(wl->total_pages, wl->zipf_s, &s.zipf_b, &s.zipf_e);
    view_load(&v, k, on, 0);
    cur.rng = rng; /* what a run of no touches ends with */
    cur.seq_pos = s.seq_pos;
    draw_ahead(wl, &s, &rng, &next, pattern, writes);
    draw_ahead(wl, &s, &rng, &after, pattern, writes);
    for (i = 0; i < n; i++) {
        cur = next;
        next = after;
        draw_ahead(wl, &s, &rng, &after, pattern, writes);
        uint64_t addr = cur.addr;
        int64_t pfn = fp_tlb_hit_pfn(v.tables, v.gen, &wl->tlb[(addr >> 21) & (FP_TLB_ENTRIES - 1)],
                                     addr, cur.write);
        /* the expectation lays the common case out straight (measured: 3%) */
        if (__builtin_expect(pfn >= 0 && (uint64_t)pfn - v.lo < v.span, 1)) {
            fp_truth_count(&v.truth[pfn]); /* a fast touch */
            continue;
        }
        int32_t nid = slow_touch(k, wl, &v, on, i - slow, pfn, &cur);
        if (nid < 0) {
            ret = touch_failed(wl, nid, i);
            break;
        }
        slow++;
    }
    finish_host_run(wl, &v, on, i, slow, &cur);
    return ret;
}

/* The pipelined loop of a host workload (vm < 0, FP_WL_PIPELINE_PAGES or more),
 * specialised as run_host() is (pattern and writes constants, the kernel fields a hit
 * reads in locals, a remembered node range). Big workloads miss the cache twice per
 * touch (the PTE, then the PFN's truth record), and each miss waits for the one
 * before; the stream does not depend on memory, so touches are drawn early and the
 * misses of many touches overlap. Each touch is drawn PIPE_DRAW touches early and its
 * PMD entry prefetched (a walk of the PGD and PUD that changes nothing); PIPE_AHEAD
 * touches early it is peeked: a TLB entry for it (as fp_tlb_miss() would fill it) when
 * the PGD and PUD entries are present, not huge and already accessed, and its PTE
 * prefetched; PIPE_TRUTH early the PFN that PTE names has its truth record
 * prefetched. Prefetches are hints: what a touch does is decided when it runs. */
#define PIPE_AHEAD 48
#ifndef PIPE_TRUTH
#define PIPE_TRUTH 16
#endif
#ifndef PIPE_DRAW
#define PIPE_DRAW 64
#endif
#define PIPE_RING 128 /* a power of two above PIPE_DRAW */

struct pipe_pick {
    struct ahead a;        /* the draw */
    struct fp_tlb_entry t; /* from the draw: pmd and gen when upper; from the peek: all */
    uint64_t leaf;         /* the peek's leaf entry (arena index), for the truth prefetch */
    int upper;
};

/* prefetchw (-DPIPE_PREFETCHW) for the lines a touch stores to: no faster measured */
static inline void prefetch_w(const void *p)
{
#if defined(__x86_64__) && defined(PIPE_PREFETCHW)
    __asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
#else
    prefetch(p);
#endif
}

/* The draw-time walk of the PGD and PUD, read-only: when both entries are present,
 * not huge and already accessed, remember the PMD entry's index with the generation
 * and prefetch it. Within one generation such entries stay as they are (their
 * accessed bits are cleared, and upper tables rewritten or freed, only with a flush,
 * see fp_tlb_hit_pfn()), so the peek need not read them again. */
static inline __attribute__((always_inline)) void
walk_upper(const uint64_t *tables, uint64_t gen, uint64_t pgd, struct pipe_pick *p)
{
    const uint64_t want = FP_PAGE_PRESENT | FP_PAGE_ACCESSED;
    uint64_t table = pgd;
    p->upper = 0;
    if (!pgd)
        return;
    for (int l = 1; l <= 2; l++) {
        uint64_t e = tables[table * FP_PTRS_PER_TABLE + fp_index(p->a.addr, l)];
        if ((e & (want | FP_PAGE_PSE)) != want)
            return;
        table = fp_entry_addr(e);
    }
    p->upper = 1;
    p->t.gen = gen;
    p->t.pmd = table * FP_PTRS_PER_TABLE + fp_index(p->a.addr, 3);
    prefetch(&tables[p->t.pmd]);
}

/* The peek (see run_pipe()), with the arena and generation in locals: the PMD entry
 * from the draw's walk when the generation has not moved since, else a new walk */
static inline __attribute__((always_inline)) void
peek_local(const uint64_t *tables, uint64_t gen, uint64_t pgd, struct pipe_pick *p)
{
    if (!(p->upper && p->t.gen == gen))
        walk_upper(tables, gen, pgd, p);
    p->t.tag = 0;
    if (!p->upper)
        return;
    uint64_t pmd = p->t.pmd, e = tables[pmd];
    if (!(e & FP_PAGE_PRESENT))
        return;
    p->t.tag = (p->a.addr >> 21) + 1;
    p->t.pte_table = (e & FP_PAGE_PSE) ? 0 : fp_entry_addr(e);
    p->leaf = pmd;
    if (p->t.pte_table) {
        p->leaf = p->t.pte_table * FP_PTRS_PER_TABLE + fp_index(p->a.addr, 4);
        prefetch_w(&tables[p->leaf]);
    }
}

static inline __attribute__((always_inline)) void
prefetch_truth_local(const uint64_t *tables, const struct fp_truth *truth, uint64_t nr_pfns,
                     const struct pipe_pick *p)
{
    if (!p->t.tag)
        return;
    uint64_t e = tables[p->leaf];
    uint64_t pfn = fp_entry_addr(e) + (p->t.pte_table ? 0 : (p->a.addr >> FP_PAGE_SHIFT) % FP_PAGES_PER_HUGE);
    if ((e & FP_PAGE_PRESENT) && pfn < nr_pfns)
        prefetch_w(&truth[pfn]);
}

static inline __attribute__((always_inline)) int64_t
run_pipe(struct fp_kernel *k, struct fp_workload *wl, uint64_t n, const int pattern,
         const int writes)
{
    uint64_t rng = wl->rng, on[FP_NO_NODE + 1] = {0}, i, slow = 0, nr_pfns = k->nr_pfns;
    int64_t ret = (int64_t)n;
    struct stream s = {.seq_pos = wl->seq_pos};
    struct view v = {0};
    struct pipe_pick ring[PIPE_RING];
    const struct fp_mm *mm = wl->mm < FP_MAX_MMS ? k->mms[wl->mm] : NULL;
    uint64_t pgd; /* mm->pgd, 0 when nothing is peeked (no mm, no PGD, tlb_off) */
    if (pattern == FP_WL_ZIPF)
        zipf_terms(wl->total_pages, wl->zipf_s, &s.zipf_b, &s.zipf_e);
    view_load(&v, k, on, 0);
    pgd = (!mm || k->tlb_off) ? 0 : mm->pgd;
    for (i = 0; i < PIPE_DRAW && i < n; i++) {
        struct pipe_pick *p = &ring[i];
        draw_ahead(wl, &s, &rng, &p->a, pattern, writes);
        walk_upper(v.tables, v.gen, pgd, p);
        if (i < PIPE_AHEAD)
            peek_local(v.tables, v.gen, pgd, p);
    }
    for (i = 0; i < n; i++) {
        struct pipe_pick *p = &ring[i % PIPE_RING];
        if (i + PIPE_DRAW < n) {
            struct pipe_pick *d = &ring[(i + PIPE_DRAW) % PIPE_RING];
            draw_ahead(wl, &s, &rng, &d->a, pattern, writes);
            walk_upper(v.tables, v.gen, pgd, d);
        }
        if (i + PIPE_AHEAD < n)
            peek_local(v.tables, v.gen, pgd, &ring[(i + PIPE_AHEAD) % PIPE_RING]);
        if (i + PIPE_TRUTH < n)
            prefetch_truth_local(v.tables, v.truth, nr_pfns, &ring[(i + PIPE_TRUTH) % PIPE_RING]);
        uint64_t addr = p->a.addr;
        int64_t pfn = -1;
        if (p->t.tag)
            pfn = fp_tlb_hit_pfn(v.tables, v.gen, &p->t, addr, p->a.write);
        if (pfn < 0)
            pfn = fp_tlb_hit_pfn(v.tables, v.gen, &wl->tlb[(addr >> 21) & (FP_TLB_ENTRIES - 1)],
                                 addr, p->a.write);
        if (__builtin_expect(pfn >= 0 && (uint64_t)pfn - v.lo < v.span, 1)) {
            fp_truth_count(&v.truth[pfn]); /* a fast touch */
            continue;
        }
        int32_t nid = slow_touch(k, wl, &v, on, i - slow, pfn, &p->a);
        nr_pfns = k->nr_pfns; /* a miss or a hint may have changed them */
        pgd = (!mm || k->tlb_off) ? 0 : mm->pgd;
        if (nid < 0) {
            ret = touch_failed(wl, nid, i);
            rng = p->a.rng; /* as if nothing had been drawn beyond this touch */
            s.seq_pos = p->a.seq_pos;
            break;
        }
        slow++;
    }
    struct ahead last = {.rng = rng, .seq_pos = s.seq_pos};
    finish_host_run(wl, &v, on, i, slow, &last);
    return ret;
}

int64_t fp_workload_run(struct fp_kernel *k, struct fp_workload *wl, uint64_t n)
{
    if (!wl->total_pages || !wl->nr_regions)
        return 0;
    if (wl->vm >= 0)
        return run_guest(k, wl, n);
    /* one copy per pattern and per whether any touch writes */
    int writes = wl->write_frac > 0;
#define SPECIALISED(loop)                                                                \
    switch (wl->pattern) {                                                               \
    case FP_WL_HOTCOLD:                                                                  \
        return writes ? loop(k, wl, n, FP_WL_HOTCOLD, 1) : loop(k, wl, n, FP_WL_HOTCOLD, 0); \
    case FP_WL_ZIPF:                                                                     \
        return writes ? loop(k, wl, n, FP_WL_ZIPF, 1) : loop(k, wl, n, FP_WL_ZIPF, 0);  \
    case FP_WL_SEQ:                                                                      \
        return writes ? loop(k, wl, n, FP_WL_SEQ, 1) : loop(k, wl, n, FP_WL_SEQ, 0);    \
    default:                                                                             \
        return writes ? loop(k, wl, n, FP_WL_UNIFORM, 1) : loop(k, wl, n, FP_WL_UNIFORM, 0); \
    }
    if (wl->total_pages >= k->wl_pipeline_pages)
        SPECIALISED(run_pipe)
    SPECIALISED(run_host)
#undef SPECIALISED
}
