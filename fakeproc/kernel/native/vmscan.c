/*
 * Reclaim: LRU aging, the second-chance check, demotion DRAM -> peer, swap.
 * Linux: mm/vmscan.c of 4.20 (shrink_node_memcg, shrink_list, shrink_active_list,
 * shrink_inactive_list, shrink_page_list, page_check_references,
 * inactive_list_is_low, balance_pgdat) with the RFC's change: an anonymous page
 * chosen for reclaim on a DRAM node whose peer is online migrates to the peer
 * instead of going to swap (INTERFACES.md 4).
 *
 * Simplified on purpose: a page shared after fork is not swapped, no memcg, no writeback
 * delay (dirty page cache is written back at once), no mlock, priorities
 * scan len >> priority pages from each evictable list as get_scan_count() would
 * with swappiness balanced.
 */
#include <errno.h>
#include "internal.h"

#define SWAP_CLUSTER_MAX 32
#define DEF_PRIORITY 12

struct referenced {
    int ptes;
};

/* page_referenced_one(), one mapping: ptep_clear_flush_young_notify() ORs the
 * entry's accessed bit with the guest's EPT bits (kvm_age_hva); a reference ends
 * page_idle's mark; then the bit page_idle took away (PG_young) counts, once per
 * page (test-and-clear); the mapping adds 1 to the count whatever made it young. */
static void referenced_one(struct fp_kernel *k, struct fp_mm *mm, uint64_t *e, uint64_t addr,
                           void *arg)
{
    struct referenced *r = arg;
    struct fp_page *p = &k->pages[fp_entry_addr(*e)];
    int young = fp_clear_young_notify(k, mm, e, addr);
    if (young)
        p->flags &= ~FP_PG_IDLE;
    if (p->flags & FP_PG_YOUNG) {
        p->flags &= ~FP_PG_YOUNG;
        young = 1;
    }
    r->ptes += young;
}

/* page_referenced(): test-and-clear the accessed bit of every entry mapping the page
 * (rmap_walk); returns how many mappings were referenced. */
static int page_referenced(struct fp_kernel *k, uint64_t pfn)
{
    struct referenced r = {0};
    fp_rmap_walk(k, pfn, referenced_one, &r);
    return r.ptes;
}

static uint64_t isqrt(uint64_t x)
{
    uint64_t r = 0;
    while ((r + 1) * (r + 1) <= x)
        r++;
    return r;
}

/* inactive_list_is_low(): inactive * ratio < active, ratio = int_sqrt(10 * GiB) or 1 */
static int inactive_is_low(const struct fp_node *node, int inactive_lru)
{
    static const int stat[] = {FP_NR_INACTIVE_ANON, FP_NR_ACTIVE_ANON,
                               FP_NR_INACTIVE_FILE, FP_NR_ACTIVE_FILE};
    uint64_t inactive = node->stat[stat[inactive_lru]], active = node->stat[stat[inactive_lru + 1]];
    uint64_t gb = (inactive + active) >> (30 - FP_PAGE_SHIFT);
    uint64_t ratio = gb ? isqrt(10 * gb) : 1;
    return inactive * ratio < active;
}

/* shrink_active_list(): age up to nr base pages from the active tail */
static void shrink_active(struct fp_kernel *k, struct fp_node *node, int lru, uint64_t nr)
{
    uint64_t scanned = 0, deactivated = 0, rotated = 0;
    while (scanned < nr && node->lru_tail[lru] != FP_LRU_NONE) {
        uint64_t pfn = node->lru_tail[lru];
        struct fp_page *p = &k->pages[pfn];
        fp_lru_del(k, pfn);
        scanned += fp_page_nr(p);
        if (page_referenced(k, pfn) && (p->flags & FP_PG_EXECMAP) &&
            !(p->flags & FP_PG_SWAPBACKED)) {
            fp_lru_add(k, pfn, lru); /* referenced executable page cache stays active */
            rotated += fp_page_nr(p);
            continue;
        }
        p->flags &= ~FP_PG_ACTIVE;
        fp_lru_add(k, pfn, lru - 1);
        deactivated += fp_page_nr(p);
    }
    node->recent_scanned[lru >= FP_LRU_INACTIVE_FILE] += scanned;
    node->recent_rotated[lru >= FP_LRU_INACTIVE_FILE] += rotated;
    k->events[FP_EV_PGREFILL] += scanned;
    k->events[FP_EV_PGDEACTIVATE] += deactivated;
}

enum pageref { PAGEREF_RECLAIM, PAGEREF_KEEP, PAGEREF_ACTIVATE };

/* page_check_references() */
static enum pageref check_references(struct fp_kernel *k, uint64_t pfn)
{
    struct fp_page *p = &k->pages[pfn];
    int referenced_ptes = page_referenced(k, pfn);
    int referenced_page = (p->flags & FP_PG_REFERENCED) != 0;
    p->flags &= ~FP_PG_REFERENCED;
    if (referenced_ptes) {
        if (p->flags & FP_PG_SWAPBACKED)
            return PAGEREF_ACTIVATE;
        p->flags |= FP_PG_REFERENCED;
        if (referenced_page || referenced_ptes > 1 || (p->flags & FP_PG_EXECMAP))
            return PAGEREF_ACTIVATE;
        return PAGEREF_KEEP;
    }
    return PAGEREF_RECLAIM; /* PG_referenced alone never saves a page here */
}

/* pageout() for a swap-backed page: to swap if there is room. 0 when freed.
 * The device is rotational, where 4.20 has no cluster to give a THP (add_to_swap()
 * fails): shrink_page_list() splits it onto its page list (thp_swpout_fallback;
 * can_split_huge_page() refuses a pinned one, which is activated) and swaps the head
 * as a base page. The tails go on `tails` (512 - 1 down to 1), for the caller to
 * reclaim after the pages it isolated, as they follow them on 4.20's list. */
static int swap_out(struct fp_kernel *k, uint64_t pfn, uint64_t *tails, uint64_t *ntails)
{
    struct fp_page *p = &k->pages[pfn];
    int level;
    if (p->mapcount > 1)
        return -EBUSY; /* a page shared after fork is not swapped in the emulation */
    if (p->flags & FP_PG_HEAD) {
        if (p->flags & FP_PG_PINNED)
            return -EBUSY;
        int err = fp_split_huge_page(k, pfn, tails);
        if (err)
            return err;
        k->events[FP_EV_THP_SWPOUT_FALLBACK]++;
        *ntails = FP_PAGES_PER_HUGE - 1;
    }
    if (k->swap_used >= k->swap_total)
        return -ENOSPC;
    uint64_t *e = fp_rmap_entry(k, p, &level);
    struct fp_mm *mm = k->mms[fp_page_owner(k, p)];
    int64_t off = e && level == 4 ? fp_swap_alloc(k) : -ENOMEM;
    if (off < 0)
        return -ENOMEM;
    *e = fp_swp_entry((uint64_t)off) | (*e & FP_PAGE_SOFT_DIRTY); /* pte_swp_mksoft_dirty() */
    mm->nr_swap++;
    k->events[FP_EV_PSWPOUT]++;
    fp_page_remove_rmap(k, mm, pfn, fp_page_vaddr(k, p));
    return 0;
}

static void unmap_one(struct fp_kernel *k, struct fp_mm *mm, uint64_t *e, uint64_t addr, void *arg)
{
    uint64_t pfn = fp_entry_addr(*e);
    (void)arg;
    *e = 0;
    fp_page_remove_rmap(k, mm, pfn, addr);
}

/* Dropping a page-cache page: try_to_unmap() from every mapper (the next access
 * faults it back in); the last unmap frees it. */
static void drop_file_page(struct fp_kernel *k, uint64_t pfn)
{
    fp_rmap_walk(k, pfn, unmap_one, NULL);
}

struct page_list_result {
    uint64_t reclaimed, stolen;
    uint64_t tails[FP_PAGES_PER_HUGE - 1]; /* a THP split for swap: its tails, to do last */
    uint64_t ntails;
    uint64_t demote[SWAP_CLUSTER_MAX]; /* the RFC's move_pages list (one batch's pages) */
    uint64_t ndemote;
};

/* shrink_page_list() for one isolated page of inactive list `lru` */
static void shrink_page(struct fp_kernel *k, int lru, uint64_t pfn, int demote,
                        struct page_list_result *r)
{
    struct fp_page *p = &k->pages[pfn];
    uint64_t n = fp_page_nr(p);
    enum pageref ref = check_references(k, pfn);
    if (ref == PAGEREF_KEEP) {
        fp_lru_add(k, pfn, lru);
        return;
    }
    if (ref == PAGEREF_RECLAIM && (p->flags & FP_PG_ANON) && demote) {
        /* PageAnon() && (PageSwapBacked() || PageTransHuge()), not shmem: the RFC puts
         * it on a list that migrate_pages() takes to the peer after the loop */
        r->demote[r->ndemote++] = pfn;
        return;
    }
    if (ref == PAGEREF_RECLAIM && (p->flags & FP_PG_SWAPBACKED)) {
        if (swap_out(k, pfn, r->tails, &r->ntails) == 0) {
            r->reclaimed++;
            r->stolen++;
            return;
        }
        ref = PAGEREF_ACTIVATE; /* activate_locked: no swap for it */
        n = fp_page_nr(p);      /* a THP split for swap stays split */
    }
    if (ref == PAGEREF_ACTIVATE) {
        p->flags |= FP_PG_ACTIVE;
        fp_lru_add(k, pfn, lru + 1);
        k->events[FP_EV_PGACTIVATE]++; /* a page, a THP counting one (4.20; pages from 5.8) */
        /* putback_inactive_pages(): an active page back is a rotation */
        k->nodes[fp_pfn_to_node(k, pfn)].recent_rotated[lru >= FP_LRU_INACTIVE_FILE] += n;
        return;
    }
    drop_file_page(k, pfn);
    r->reclaimed += n;
    r->stolen += n;
}

/* shrink_inactive_list() + shrink_page_list(): returns base pages freed from this node
 * by swap and page-cache reclaim (`*scanned` += base pages taken from the list).
 * Pages are taken from the tail one at a time; the tails of a THP split for swap
 * follow the page that ended the batch (a THP counts 512, so it always ends it).
 * The anonymous pages chosen on a DRAM node then go to the peer in one
 * migrate_pages() call (MIGRATE_ASYNC, alloc_new_node_page()), as the RFC does after
 * the loop: the pages that move are counted nowhere in the reclaim (not in
 * nr_reclaimed, not in pgsteal), those that do not go back on the LRU. */
static uint64_t shrink_inactive(struct fp_kernel *k, int32_t nid, int lru, uint64_t nr, int mode,
                                uint64_t *scanned)
{
    struct fp_node *node = &k->nodes[nid];
    struct page_list_result r = {0};
    uint64_t taken = 0;
    int demote = node->is_dram && node->peer >= 0 && !k->demotion_disabled;
    while (taken < nr && node->lru_tail[lru] != FP_LRU_NONE && !r.ntails) {
        uint64_t pfn = node->lru_tail[lru];
        taken += fp_page_nr(&k->pages[pfn]);
        fp_lru_del(k, pfn);
        shrink_page(k, lru, pfn, demote, &r);
    }
    uint64_t ntails = r.ntails;
    r.ntails = 0;
    for (uint64_t i = 0; i < ntails; i++)
        shrink_page(k, lru, r.tails[i], demote, &r);
    if (r.ndemote) {
        uint64_t moved = 0;
        fp_migrate_list(k, r.demote, r.ndemote, node->peer, nid, FP_MR_RECLAIM, &moved);
        k->events[mode == FP_RECLAIM_KSWAPD ? FP_EV_PGDEMOTE_KSWAPD : FP_EV_PGDEMOTE_DIRECT] += moved;
    }
    k->events[mode == FP_RECLAIM_KSWAPD ? FP_EV_PGSCAN_KSWAPD : FP_EV_PGSCAN_DIRECT] += taken;
    k->events[mode == FP_RECLAIM_KSWAPD ? FP_EV_PGSTEAL_KSWAPD : FP_EV_PGSTEAL_DIRECT] += r.stolen;
    node->recent_scanned[lru >= FP_LRU_INACTIVE_FILE] += taken;
    *scanned += taken;
    return r.reclaimed;
}

/* shrink_node() at one priority (shrink_node_memcg()): len >> priority base pages
 * of every evictable list, in SWAP_CLUSTER_MAX batches, until nr_to_reclaim pages
 * are reclaimed; then the anon lists' rebalance. Anonymous lists are scanned when
 * there is swap, and always on DRAM nodes (the RFC). Returns base pages reclaimed;
 * `*scanned` gets those taken from the inactive lists (sc->nr_scanned). */
enum scan_balance { SCAN_EQUAL, SCAN_FRACT, SCAN_ANON, SCAN_FILE };
#define SWAPPINESS 60 /* vm.swappiness's default */

/* get_scan_count(): how many pages of each evictable list (inactive anon, active anon,
 * inactive file, active file) to scan at this priority, each list's size >> priority
 * taken whole (SCAN_EQUAL: priority 0), from one type only (SCAN_FILE: a PMEM node
 * with no swap room, the RFC's rule; or enough inactive page cache: not low and
 * something to scan at this priority. SCAN_ANON: page cache + free pages at or below
 * the high watermark, the cache trap, with inactive anon to scan), or weighed by
 * swappiness and how many of each type's recent scans were rotated back (SCAN_FRACT,
 * rounded up). */
static void get_scan_count(struct fp_node *node, int prio, int scan_anon, uint64_t target[4])
{
    static const int stat[] = {FP_NR_INACTIVE_ANON, FP_NR_ACTIVE_ANON,
                               FP_NR_INACTIVE_FILE, FP_NR_ACTIVE_FILE};
    enum scan_balance balance;
    uint64_t fraction[2] = {1, 1}, denominator = 1;
    uint64_t inactive_anon = node->stat[FP_NR_INACTIVE_ANON], inactive_file = node->stat[FP_NR_INACTIVE_FILE];
    uint64_t anon = inactive_anon + node->stat[FP_NR_ACTIVE_ANON];
    uint64_t file = inactive_file + node->stat[FP_NR_ACTIVE_FILE];
    if (!scan_anon)
        balance = SCAN_FILE;
    else if (!prio)
        balance = SCAN_EQUAL;
    else if (file + node->stat[FP_NR_FREE_PAGES] <= node->wmark[FP_WMARK_HIGH] &&
             !inactive_is_low(node, FP_LRU_INACTIVE_ANON) && inactive_anon >> prio)
        balance = SCAN_ANON;
    else if (!inactive_is_low(node, FP_LRU_INACTIVE_FILE) && inactive_file >> prio)
        balance = SCAN_FILE;
    else {
        balance = SCAN_FRACT;
        for (int t = 0; t < 2; t++)
            if (node->recent_scanned[t] > (t ? file : anon) / 4) {
                node->recent_scanned[t] /= 2;
                node->recent_rotated[t] /= 2;
            }
        fraction[0] = SWAPPINESS * (node->recent_scanned[0] + 1) / (node->recent_rotated[0] + 1);
        fraction[1] = (200 - SWAPPINESS) * (node->recent_scanned[1] + 1) / (node->recent_rotated[1] + 1);
        denominator = fraction[0] + fraction[1] + 1;
    }
    for (int l = 0; l < 4; l++) {
        int is_file = l >= 2;
        uint64_t scan = node->stat[stat[l]] >> prio;
        if (balance == SCAN_FRACT)
            scan = (scan * fraction[is_file] + denominator - 1) / denominator;
        else if ((balance == SCAN_FILE && !is_file) || (balance == SCAN_ANON && is_file))
            scan = 0;
        target[l] = scan;
    }
}

static uint64_t shrink_node_prio(struct fp_kernel *k, int32_t nid, int prio, uint64_t nr_to_reclaim,
                                 int mode, uint64_t *scanned)
{
    struct fp_node *node = &k->nodes[nid];
    int scan_anon = node->is_dram || k->swap_used < k->swap_total;
    uint64_t reclaimed = 0, target[4];
    get_scan_count(node, prio, scan_anon, target);
    int left = 1;
    while (left && reclaimed < nr_to_reclaim) {
        left = 0;
        for (int l = 0; l < 4; l++) {
            if (!target[l])
                continue;
            uint64_t batch = target[l] < SWAP_CLUSTER_MAX ? target[l] : SWAP_CLUSTER_MAX;
            target[l] -= batch;
            left |= target[l] != 0;
            if (l & 1) {
                if (inactive_is_low(node, l - 1))
                    shrink_active(k, node, l, batch);
            } else {
                reclaimed += shrink_inactive(k, nid, l, batch, mode, scanned);
            }
        }
    }
    /* the rebalance at the end of shrink_node_memcg(): inactive_list_is_low() asks
     * whether swap exists (total_swap_pages), not whether it has room, and with the
     * RFC only on PMEM nodes */
    if ((node->is_dram || k->swap_total) && inactive_is_low(node, FP_LRU_INACTIVE_ANON))
        shrink_active(k, node, FP_LRU_ACTIVE_ANON, SWAP_CLUSTER_MAX);
    return reclaimed;
}

/* do_try_to_free_pages() on one node (direct reclaim, and the control API's): from
 * DEF_PRIORITY down to 0 until nr_to_reclaim pages are reclaimed. Demoted pages are
 * not reclaimed pages to it (the RFC counts them nowhere), so a DRAM node whose
 * reclaimable memory is anonymous is scanned down to priority 0. */
int64_t fp_shrink_node(struct fp_kernel *k, int32_t nid, uint64_t nr_to_reclaim, int32_t mode)
{
    if (nid < 0 || nid >= k->nr_nodes)
        return -EINVAL;
    uint64_t reclaimed = 0, scanned = 0;
    int outer = k->in_reclaim;
    k->in_reclaim = 1;
    for (int prio = DEF_PRIORITY; prio >= 0 && reclaimed < nr_to_reclaim; prio--)
        reclaimed += shrink_node_prio(k, nid, prio, nr_to_reclaim - reclaimed, mode, &scanned);
    k->in_reclaim = outer;
    return (int64_t)reclaimed;
}

/* Age the active lists of a node without reclaiming (the shrink_active_list()
 * half of shrink_node), for tests and the control API. */
void fp_age_active(struct fp_kernel *k, int32_t nid)
{
    struct fp_node *node = &k->nodes[nid];
    shrink_active(k, node, FP_LRU_ACTIVE_ANON, node->stat[FP_NR_ACTIVE_ANON]);
    shrink_active(k, node, FP_LRU_ACTIVE_FILE, node->stat[FP_NR_ACTIVE_FILE]);
}

/* kswapd's balance_pgdat() (pageoutrun): from DEF_PRIORITY down to 1 while the node is below its
 * high watermark, each round aging the anon lists when there is swap
 * (age_active_anon()) and shrinking the node once at that priority with
 * nr_to_reclaim = the high watermark (kswapd_shrink_node()); the priority drops
 * when the round scanned fewer pages than that or reclaimed none, so a DRAM node
 * whose pages leave by demotion (not reclaimed pages) is scanned harder each round
 * until it is balanced. Returns base pages reclaimed. */
int64_t fp_kswapd(struct fp_kernel *k, int32_t nid)
{
    if (nid < 0 || nid >= k->nr_nodes)
        return -EINVAL;
    struct fp_node *node = &k->nodes[nid];
    uint64_t total = 0, high = node->wmark[FP_WMARK_HIGH];
    uint64_t nr_to_reclaim = high > SWAP_CLUSTER_MAX ? high : SWAP_CLUSTER_MAX;
    node->kswapd_wake = 0;
    k->events[FP_EV_PAGEOUTRUN]++; /* every balance_pgdat(), even one that finds it balanced */
    int outer = k->in_reclaim;
    k->in_reclaim = 1;
    for (int prio = DEF_PRIORITY; prio >= 1 && node->stat[FP_NR_FREE_PAGES] < high;) {
        if (k->swap_total && inactive_is_low(node, FP_LRU_INACTIVE_ANON))
            shrink_active(k, node, FP_LRU_ACTIVE_ANON, SWAP_CLUSTER_MAX);
        uint64_t scanned = 0;
        uint64_t got = shrink_node_prio(k, nid, prio, nr_to_reclaim, FP_RECLAIM_KSWAPD, &scanned);
        total += got;
        if (scanned < nr_to_reclaim || !got)
            prio--;
    }
    k->in_reclaim = outer;
    return (int64_t)total;
}
