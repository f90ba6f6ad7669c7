/*
 * The invariant checker: recompute every counter from the page state and
 * compare. Linux has no single counterpart (CONFIG_DEBUG_VM checks pieces of
 * it); tests and the control API call it after arbitrary operation sequences.
 *
 * Checked: every allocated page is a page table, a THP tail, or mapped and
 * found again through its reverse map; every present leaf maps an allocated
 * page that maps back to it; per-node counters equal the sums of page states;
 * the LRU lists hold exactly the LRU pages, on the right list, in both
 * directions; mm RSS, table and swap counts equal what the page tables hold, and
 * each swap slot's count the swap entries naming it;
 * every huge PMD (or its migration entry) has a page table deposited, and
 * nothing else has.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

struct checker {
    struct fp_kernel *k;
    char *msg;
    size_t len;
    int64_t problems;
    uint64_t *stat;        /* recomputed per-node counters [node][FP_NR_NODE_STATS] */
    uint32_t *seen;        /* mappings found per PFN, to compare with mapcount */
    uint32_t *swap_refs;   /* swap PTEs found per slot, to compare with swap_map */
};

static void problem(struct checker *c, const char *fmt, ...)
{
    if (!c->problems++ && c->len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->msg, c->len, fmt, ap);
        va_end(ap);
    }
}

static uint64_t *cstat(struct checker *c, int nid)
{
    return &c->stat[(size_t)nid * FP_NR_NODE_STATS];
}

static void check_leaf(struct checker *c, struct fp_mm *mm, uint64_t e, uint64_t addr,
                       uint64_t *rss)
{
    struct fp_kernel *k = c->k;
    uint64_t pfn = fp_entry_addr(e);
    int nid = fp_pfn_to_node(k, pfn);
    if (nid < 0) { /* device or special frame: a [vdso] page counts as a file page */
        rss[1] += fp_kernel_page(k, e);
        return;
    }
    const struct fp_page *p = &k->pages[pfn];
    if (!(p->flags & FP_PG_ALLOCATED) || (p->flags & FP_PG_TAIL)) {
        problem(c, "mm %u maps pfn %lu at %#lx, which is free or a THP tail",
                mm->id, (unsigned long)pfn, (unsigned long)addr);
        return;
    }
    if (!fp_rmap_is_mapper(k, pfn, mm->id, addr))
        problem(c, "pfn %lu: mapped by mm %u at %#lx, which its reverse map does not know",
                (unsigned long)pfn, mm->id, (unsigned long)addr);
    c->seen[pfn]++;
    uint64_t nr = fp_page_nr(p);
    if (p->flags & FP_PG_ANON)
        rss[0] += nr;
    else if (p->flags & FP_PG_SWAPBACKED)
        rss[2] += nr;
    else
        rss[1] += nr;
}

static void check_deposit(struct checker *c, const struct fp_mm *mm, uint64_t pfn, uint64_t addr,
                          int huge, uint64_t *tables)
{
    int nid = fp_pfn_to_node(c->k, pfn);
    const struct fp_page *p = nid >= 0 ? &c->k->pages[pfn] : NULL;
    if (!huge || !p || !(p->flags & FP_PG_ALLOCATED) || !(p->flags & FP_PG_UNEVICTABLE) ||
        !(p->flags & FP_PG_TABLE) || p->mapcount || (p->flags & FP_PG_LRU)) {
        problem(c, "mm %u: a page table (pfn %lu) is deposited at %#lx, %s", mm->id,
                (unsigned long)pfn, (unsigned long)addr,
                huge ? "but that page is not a page table" : "where no huge PMD is");
        return;
    }
    (*tables)++;
    cstat(c, nid)[FP_NR_PAGETABLE]++;
}

/* A table's page: PageTable (and in its node's PageTables) exactly when it is a PTE
 * table. */
static void table_page(struct checker *c, uint64_t pfn, int pte_table)
{
    if (!(c->k->pages[pfn].flags & FP_PG_TABLE) != !pte_table)
        problem(c, "page-table page pfn %lu is %sPageTable, but it is %s table", (unsigned long)pfn,
                pte_table ? "not " : "", pte_table ? "a PTE" : "an upper-level or EPT");
    if (pte_table)
        cstat(c, fp_pfn_to_node(c->k, pfn))[FP_NR_PAGETABLE]++;
}

static void check_table(struct checker *c, struct fp_mm *mm, uint64_t table, int level,
                        uint64_t base, uint64_t *rss, uint64_t *tables, uint64_t *swaps)
{
    struct fp_kernel *k = c->k;
    const uint64_t *t = fp_table(k, table);
    uint64_t span = 1ULL << (12 + 9 * (4 - level));
    const uint64_t *deposit = level == 3 ? k->table_deposit[table] : NULL;
    (*tables)++;
    table_page(c, k->table_pfn[table], level == 4);
    for (unsigned i = 0; i < FP_PTRS_PER_TABLE; i++) {
        uint64_t e = t[i], addr = base + i * span;
        int huge = level == 3 && e && (!fp_entry_present(e) || (e & FP_PAGE_PSE));
        if (deposit && deposit[i]) /* the page table deposited with a huge PMD */
            check_deposit(c, mm, deposit[i] - 1, addr, huge, tables);
        else if (huge)
            problem(c, "mm %u: the huge PMD at %#lx has no deposited page table", mm->id,
                    (unsigned long)addr);
        if (!e)
            continue;
        if (!fp_entry_present(e)) {
            if (fp_is_swap(e)) {
                uint64_t off = fp_entry_addr(e);
                (*swaps)++;
                if (off == 0 || off >= k->swap_slots)
                    problem(c, "mm %u: the swap entry at %#lx names slot %lu, not one of %lu",
                            mm->id, (unsigned long)addr, (unsigned long)off,
                            (unsigned long)k->swap_slots);
                else
                    c->swap_refs[off]++;
            }
            continue;
        }
        if (level == 4 || (e & FP_PAGE_PSE))
            check_leaf(c, mm, e, addr, rss);
        else
            check_table(c, mm, fp_entry_addr(e), level + 1, addr, rss, tables, swaps);
    }
}

static void check_mm(struct checker *c, struct fp_mm *mm)
{
    uint64_t rss[3] = {0}, tables = 0, swaps = 0;
    if (mm->pgd)
        check_table(c, mm, mm->pgd, 1, 0, rss, &tables, &swaps);
    if (rss[0] != mm->rss_anon || rss[1] != mm->rss_file || rss[2] != mm->rss_shmem)
        problem(c, "mm %u: rss anon/file/shmem %lu/%lu/%lu, page tables hold %lu/%lu/%lu", mm->id,
                (unsigned long)mm->rss_anon, (unsigned long)mm->rss_file,
                (unsigned long)mm->rss_shmem, (unsigned long)rss[0], (unsigned long)rss[1],
                (unsigned long)rss[2]);
    if (tables != mm->nr_tables)
        problem(c, "mm %u: nr_tables %lu, found %lu", mm->id, (unsigned long)mm->nr_tables,
                (unsigned long)tables);
    if (swaps != mm->nr_swap)
        problem(c, "mm %u: nr_swap %lu, found %lu", mm->id, (unsigned long)mm->nr_swap,
                (unsigned long)swaps);
}

/* every slot's count is the swap PTEs naming it; swap_used counts the slots in use */
static void check_swap(struct checker *c)
{
    const struct fp_kernel *k = c->k;
    uint64_t used = 0, dev_used = 0;
    for (uint64_t off = 0; off < k->swap_slots; off++) {
        if (k->swap_map[off] != c->swap_refs[off])
            problem(c, "swap slot %lu has count %u, but page tables name it %u times",
                    (unsigned long)off, k->swap_map[off], c->swap_refs[off]);
        used += k->swap_map[off] != 0;
        dev_used += k->swap_map[off] != 0 && off >= 1 && off <= k->swap_total;
    }
    if (used != k->swap_used || dev_used != k->swap_dev_used)
        problem(c, "swap_used %lu (%lu on the device), but %lu slots are in use (%lu)",
                (unsigned long)k->swap_used, (unsigned long)k->swap_dev_used, (unsigned long)used,
                (unsigned long)dev_used);
}

static void check_pages(struct checker *c, int nid)
{
    struct fp_kernel *k = c->k;
    const struct fp_node *node = &k->nodes[nid];
    uint64_t *st = cstat(c, nid);
    for (uint64_t pfn = node->start_pfn; pfn < node->start_pfn + node->nr_pages; pfn++) {
        const struct fp_page *p = &k->pages[pfn];
        if (!(p->flags & FP_PG_ALLOCATED)) {
            st[FP_NR_FREE_PAGES]++;
            continue;
        }
        if (p->flags & FP_PG_TAIL)
            continue;
        if (!p->mapcount) {
            if (!(p->flags & FP_PG_UNEVICTABLE) || (p->flags & FP_PG_LRU))
                problem(c, "pfn %lu is allocated but neither mapped nor a page table",
                        (unsigned long)pfn);
            continue;
        }
        if (c->seen[pfn] != p->mapcount)
            problem(c, "pfn %lu: mapcount %u, but %u page-table entries map it",
                    (unsigned long)pfn, p->mapcount, c->seen[pfn]);
        int level;
        uint64_t *e = fp_rmap_entry(k, p, &level);
        const struct fp_mm *owner = k->mms[fp_page_owner(k, p)];
        if (!e || fp_entry_addr(*e) != pfn || !owner ||
            fp_mm_leaf(k, owner, fp_page_vaddr(k, p), &level) != e)
            problem(c, "pfn %lu: its reverse map (mm %u, %#lx) does not lead back to it",
                    (unsigned long)pfn, fp_page_owner(k, p), (unsigned long)fp_page_vaddr(k, p));
        fp_page_kind_add(st, p, +1);
        if (!(p->flags & FP_PG_LRU))
            problem(c, "pfn %lu is mapped but on no LRU list", (unsigned long)pfn);
    }
}

static void check_lru(struct checker *c, int nid)
{
    static const int stat[FP_NR_LRU_LISTS] = {FP_NR_INACTIVE_ANON, FP_NR_ACTIVE_ANON,
                                              FP_NR_INACTIVE_FILE, FP_NR_ACTIVE_FILE,
                                              FP_NR_UNEVICTABLE};
    struct fp_kernel *k = c->k;
    const struct fp_node *node = &k->nodes[nid];
    for (int lru = 0; lru < FP_NR_LRU_LISTS; lru++) {
        uint64_t n = 0, steps = 0, prev = FP_LRU_NONE;
        for (uint64_t pfn = node->lru_head[lru]; pfn != FP_LRU_NONE; pfn = k->pages[pfn].lru_next) {
            const struct fp_page *p = &k->pages[pfn];
            if (++steps > node->nr_pages || fp_pfn_to_node(k, pfn) != nid) {
                problem(c, "node %d LRU %d is corrupt at pfn %lu", nid, lru, (unsigned long)pfn);
                break;
            }
            if (!(p->flags & FP_PG_LRU) || fp_page_lru(p) != lru || p->lru_prev != prev)
                problem(c, "pfn %lu sits on node %d LRU %d but its flags/links say otherwise",
                        (unsigned long)pfn, nid, lru);
            n += fp_page_nr(p);
            prev = pfn;
        }
        if (prev != node->lru_tail[lru])
            problem(c, "node %d LRU %d: tail %u is not the last page %lu", nid, lru,
                    node->lru_tail[lru], (unsigned long)prev);
        cstat(c, nid)[stat[lru]] = n;
    }
}

/* An EPT leaf must map the very host page that backs its guest page. */
static void check_ept_leaf(struct checker *c, const struct fp_vm *vm, uint64_t e, uint64_t gpa,
                           int level)
{
    struct fp_kernel *k = c->k;
    uint64_t pfn = fp_entry_addr(e);
    if (level == 2 || pfn >= k->nr_pfns)
        return; /* 1 GiB leaves map device memory */
    const struct fp_memslot *s = NULL;
    for (uint32_t i = 0; i < vm->nr_slots; i++)
        if (gpa >= vm->slots[i].gpa && gpa < vm->slots[i].gpa + (vm->slots[i].npages << FP_PAGE_SHIFT))
            s = &vm->slots[i];
    int32_t hl;
    uint64_t hva = s ? s->hva + (gpa - s->gpa) : 0;
    uint64_t *host = s ? fp_lookup(k, vm->mm, hva, &hl) : NULL;
    uint64_t want = 0;
    if (host && fp_entry_present(*host))
        want = fp_entry_addr(*host) + (hl == 3 && level == 4 ? (hva >> FP_PAGE_SHIFT) % FP_PAGES_PER_HUGE : 0);
    if (!host || !fp_entry_present(*host) || want != pfn)
        problem(c, "EPT leaf for gpa %#lx maps pfn %lu, but the host maps %#lx to %lu",
                (unsigned long)gpa, (unsigned long)pfn, (unsigned long)hva, (unsigned long)want);
}

static void count_ept(struct checker *c, const struct fp_vm *vm, uint64_t table, int level,
                      uint64_t base)
{
    const uint64_t *t = fp_table(c->k, table);
    uint64_t span = 1ULL << (12 + 9 * (4 - level));
    table_page(c, c->k->table_pfn[table], 0);
    for (int i = 0; i < FP_PTRS_PER_TABLE; i++) {
        if (!fp_ept_present(t[i]))
            continue;
        if (level == 4 || (t[i] & FP_EPT_LARGE))
            check_ept_leaf(c, vm, t[i], base + i * span, level);
        else
            count_ept(c, vm, fp_entry_addr(t[i]), level + 1, base + i * span);
    }
}

int64_t fp_check(struct fp_kernel *k, char *msg, uint64_t msglen)
{
    static const int compared[] = {
        FP_NR_FREE_PAGES, FP_NR_ANON_PAGES, FP_NR_ACTIVE_ANON, FP_NR_INACTIVE_ANON,
        FP_NR_ACTIVE_FILE, FP_NR_INACTIVE_FILE, FP_NR_FILE_PAGES, FP_NR_MAPPED, FP_NR_ANON_THPS,
        FP_NR_DIRTY, FP_NR_PAGETABLE, FP_NR_UNEVICTABLE, FP_NR_SHMEM};
    struct checker c = {k, msg, (size_t)msglen, 0, NULL, NULL, NULL};
    if (msglen)
        msg[0] = 0;
    c.stat = calloc((size_t)k->nr_nodes * FP_NR_NODE_STATS, sizeof(uint64_t));
    c.seen = calloc(k->nr_pfns ? k->nr_pfns : 1, sizeof(uint32_t));
    c.swap_refs = calloc(k->swap_slots ? k->swap_slots : 1, sizeof(uint32_t));
    if (!c.stat || !c.seen || !c.swap_refs) {
        free(c.stat);
        free(c.seen);
        free(c.swap_refs);
        return -12;
    }
    for (uint32_t id = 0; id < FP_MAX_MMS; id++) /* first: the mappings of every page */
        if (k->mms[id])
            check_mm(&c, k->mms[id]);
    for (int n = 0; n < k->nr_nodes; n++) {
        check_pages(&c, n);
        check_lru(&c, n);
    }
    for (int v = 0; v < FP_MAX_VMS; v++)
        if (k->vms[v] && k->vms[v]->eptp)
            count_ept(&c, k->vms[v], k->vms[v]->eptp, 1, 0);
    for (int n = 0; n < k->nr_nodes; n++)
        for (size_t i = 0; i < sizeof(compared) / sizeof(compared[0]); i++)
            if (cstat(&c, n)[compared[i]] != k->nodes[n].stat[compared[i]])
                problem(&c, "node %d counter %d is %lu, the pages say %lu", n, compared[i],
                        (unsigned long)k->nodes[n].stat[compared[i]],
                        (unsigned long)cstat(&c, n)[compared[i]]);
    check_swap(&c);
    char rmap_msg[160];
    uint64_t rmap_bad = fp_rmap_check(k, rmap_msg, sizeof(rmap_msg));
    if (rmap_bad)
        problem(&c, "%s (%lu rmap problems)", rmap_msg, (unsigned long)rmap_bad);
    free(c.stat);
    free(c.seen);
    free(c.swap_refs);
    return c.problems;
}
