/*
 * Address spaces: 4-level x86_64 page tables, page faults, hardware accesses.
 * Linux: mm/memory.c (handle_mm_fault, do_anonymous_page, do_huge_pmd_anonymous_page),
 * mm/huge_memory.c, mm/pgtable-generic.c, arch/x86 (what the MMU does on access).
 *
 * Tables live in one arena of 512-entry tables indexed from 1; an upper-level
 * entry holds (table index << 12) | _PAGE_TABLE, the way a real entry holds the
 * table's physical frame.  Each table is also charged to a node page
 * (PageTables), so MemFree falls as page tables grow, as on real hardware.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* zone_statistics(): one allocation on nid that wanted `preferred`, made from `local` */
void fp_count_alloc(struct fp_kernel *k, int32_t local, int32_t preferred, int32_t nid)
{
    if (nid == preferred) {
        k->nodes[nid].stat[FP_NUMA_HIT]++;
    } else {
        k->nodes[nid].stat[FP_NUMA_MISS]++;
        k->nodes[preferred].stat[FP_NUMA_FOREIGN]++;
    }
    k->nodes[nid].stat[nid == local ? FP_NUMA_LOCAL : FP_NUMA_OTHER]++;
}

static int32_t preferred_node(const struct fp_mm *mm)
{
    return mm->nr_zonelist ? mm->zonelist[0] : mm->local_node;
}

static int above_wmark(const struct fp_node *node, int mark, uint64_t nr)
{
    return node->stat[FP_NR_FREE_PAGES] >= node->wmark[mark] + nr;
}

static int64_t try_alloc(struct fp_kernel *k, int32_t local, int32_t nid, int32_t preferred,
                         int huge, int mark)
{
    uint64_t nr = huge ? FP_PAGES_PER_HUGE : 1;
    if (!above_wmark(&k->nodes[nid], mark, nr))
        return -1;
    int64_t pfn = fp_alloc_page(k, nid, huge);
    if (pfn >= 0)
        fp_count_alloc(k, local, preferred, nid);
    return pfn;
}

/* __alloc_pages_nodemask() in miniature: the zonelist above the low watermark;
 * then wake kswapd and try above min; then direct reclaim (not for THPs: 4.20's
 * default THP defrag does not reclaim, and 2 MiB blocks are never compacted) and
 * try again; else -ENOMEM, which a fault's caller turns into an OOM kill. Inside
 * reclaim (PF_MEMALLOC: a demotion's allocation) a base page takes the reserves
 * below min instead of reclaiming (ALLOC_NO_WATERMARKS). `local` is the allocating
 * CPU's node (the numa_local/numa_other counters). */
int64_t fp_alloc_in_order(struct fp_kernel *k, int32_t local, const int16_t *order, int n,
                          int32_t preferred, int huge, int32_t *nid)
{
    int64_t pfn;
    for (int i = 0; i < n; i++)
        if ((pfn = try_alloc(k, local, order[i], preferred, huge, FP_WMARK_LOW)) >= 0)
            goto found;
    /* a THP asks without __GFP_KSWAPD_RECLAIM: GFP_TRANSHUGE(_LIGHT) for a migration's
     * alloc_new_node_page(), and a fault's mask under 4.20's default defrag */
    for (int i = 0; i < n && !huge; i++)
        if (!above_wmark(&k->nodes[order[i]], FP_WMARK_HIGH, 0))
            k->nodes[order[i]].kswapd_wake = 1;
    for (int i = 0; i < n; i++)
        if ((pfn = try_alloc(k, local, order[i], preferred, huge, FP_WMARK_MIN)) >= 0)
            goto found;
    if (huge)
        return -ENOMEM; /* __GFP_NOMEMALLOC: no reserves either */
    if (k->in_reclaim) { /* PF_MEMALLOC: ALLOC_NO_WATERMARKS, and no recursion into reclaim */
        for (int i = 0; i < n; i++)
            if ((pfn = fp_alloc_page(k, order[i], 0)) >= 0) {
                fp_count_alloc(k, local, preferred, order[i]);
                goto found;
            }
        return -ENOMEM;
    }
    k->events[FP_EV_ALLOCSTALL_NORMAL]++;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < n; i++) {
            fp_shrink_node(k, order[i], 32, FP_RECLAIM_DIRECT);
            if ((pfn = try_alloc(k, local, order[i], preferred, huge, FP_WMARK_MIN)) >= 0)
                goto found;
        }
        /* throttled: the kswapds woken meanwhile (a full demotion target's among them)
         * get to run before the task tries once more */
        for (int nid = 0; nid < k->nr_nodes; nid++)
            if (k->nodes[nid].kswapd_wake)
                fp_kswapd(k, nid);
    }
    return -ENOMEM;
found:
    for (int i = 0; i < n; i++)
        if (order[i] == (int16_t)fp_pfn_to_node(k, (uint64_t)pfn))
            *nid = order[i];
    return pfn;
}

/* The task's memory policy for a fault at addr (mm/mempolicy.c alloc_pages_vma()):
 * MPOL_INTERLEAVE picks node (addr >> shift) % n of its set (anonymous VMAs have
 * vm_pgoff = vm_start >> PAGE_SHIFT, so the offset is just the page number) and
 * falls back along that node's zonelist; otherwise the task's zonelist. */
static int64_t alloc_for_fault(struct fp_kernel *k, struct fp_mm *mm, uint64_t addr, int huge,
                               int32_t *nid)
{
    if (mm->nr_interleave) {
        int32_t target = mm->interleave[(addr >> (huge ? 21 : 12)) % (uint64_t)mm->nr_interleave];
        const struct fp_node *t = &k->nodes[target];
        int64_t pfn = fp_alloc_in_order(k, mm->local_node, t->fallback, t->nr_fallback, target, huge, nid);
        if (pfn >= 0 && *nid == target)
            k->nodes[target].stat[FP_NUMA_INTERLEAVE]++;
        return pfn;
    }
    return fp_alloc_in_order(k, mm->local_node, mm->zonelist, mm->nr_zonelist, preferred_node(mm), huge, nid);
}

/* ---- the table arena ---------------------------------------------------- */

/* A page-table page from the page allocator under the task's policy. A PTE table
 * (pte_alloc_one() -> pgtable_page_ctor()) is PageTable and counted in its node's
 * PageTables; 4.20 counts no other level there (pgd_alloc(), pud_alloc_one() and
 * pmd_alloc_one() take plain pages), nor KVM's EPT pages. */
static int64_t pgtable_page_alloc(struct fp_kernel *k, const struct fp_mm *mm, int pte_table)
{
    int32_t nid;
    int64_t pfn = fp_alloc_in_order(k, mm->local_node, mm->zonelist, mm->nr_zonelist, preferred_node(mm), 0, &nid);
    if (pfn < 0)
        return -ENOMEM;
    k->pages[pfn].flags |= FP_PG_UNEVICTABLE; /* a kernel page, never on an LRU */
    if (pte_table) {
        k->pages[pfn].flags |= FP_PG_TABLE;
        k->nodes[nid].stat[FP_NR_PAGETABLE]++;
    }
    return pfn;
}

static void pgtable_page_free(struct fp_kernel *k, uint64_t pfn)
{
    if (k->pages[pfn].flags & FP_PG_TABLE)
        k->nodes[fp_pfn_to_node(k, pfn)].stat[FP_NR_PAGETABLE]--;
    fp_free_page(k, pfn);
}

/* An arena slot for the page-table page pfn. */
static int64_t table_slot(struct fp_kernel *k, uint64_t pfn)
{
    uint64_t idx;
    if (k->nr_free_tables)
        idx = k->free_tables[--k->nr_free_tables];
    else if (k->tables_used < k->tables_cap)
        idx = k->tables_used++;
    else
        return -ENOMEM;
    k->table_pfn[idx] = pfn;
    return (int64_t)idx;
}

int64_t fp_table_alloc(struct fp_kernel *k, const struct fp_mm *mm, int pte_table)
{
    int64_t pfn = pgtable_page_alloc(k, mm, pte_table);
    if (pfn < 0)
        return pfn;
    int64_t idx = table_slot(k, (uint64_t)pfn);
    if (idx < 0)
        pgtable_page_free(k, (uint64_t)pfn);
    return idx;
}

void fp_table_free(struct fp_kernel *k, uint64_t idx)
{
    k->tlb_gen++; /* a TLB may hold entries of this table */
    memset(fp_table(k, idx), 0, FP_PTRS_PER_TABLE * sizeof(uint64_t));
    if (k->table_deposit[idx]) { /* its huge entries were zapped with their deposits */
        free(k->table_deposit[idx]);
        k->table_deposit[idx] = NULL;
        k->nr_deposit_arrays--;
    }
    pgtable_page_free(k, k->table_pfn[idx]);
    k->free_tables[k->nr_free_tables++] = idx;
}

/* ---- deposited page tables ------------------------------------------------ */

/* An anonymous huge PMD keeps the page table a split would need in reserve:
 * 4.20's THP fault and fork allocate it with pte_alloc_one() and
 * pgtable_trans_huge_deposit() it, counted in the mm's page tables (VmPTE) and,
 * a PTE table, in the node's PageTables; a split withdraws it as the PTE table
 * (__split_huge_pmd_locked), a zap frees it (zap_deposited_table). */
static uint64_t *deposit_slot(struct fp_kernel *k, const uint64_t *pmd, int create)
{
    uint64_t idx = fp_entry_index(k, pmd), table = idx / FP_PTRS_PER_TABLE;
    if (!k->table_deposit[table] && create &&
        (k->table_deposit[table] = calloc(FP_PTRS_PER_TABLE, sizeof(uint64_t))))
        k->nr_deposit_arrays++;
    return k->table_deposit[table] ? &k->table_deposit[table][idx % FP_PTRS_PER_TABLE] : NULL;
}

static int deposit_table(struct fp_kernel *k, struct fp_mm *mm, const uint64_t *pmd)
{
    uint64_t *slot = deposit_slot(k, pmd, 1);
    if (!slot)
        return -ENOMEM;
    int64_t pfn = pgtable_page_alloc(k, mm, 1);
    if (pfn < 0)
        return -ENOMEM;
    *slot = (uint64_t)pfn + 1;
    mm->nr_tables++;
    return 0;
}

/* Whether a huge PMD keeps a page table in reserve (a split then needs no new one). */
int fp_has_deposit(struct fp_kernel *k, const uint64_t *pmd)
{
    const uint64_t *slot = deposit_slot(k, pmd, 0);
    return slot && *slot;
}

/* The deposited page's PFN, taken off the PMD (still counted), or -1 for none. */
int64_t fp_withdraw_table(struct fp_kernel *k, const uint64_t *pmd)
{
    uint64_t *slot = deposit_slot(k, pmd, 0);
    if (!slot || !*slot)
        return -1;
    int64_t pfn = (int64_t)*slot - 1;
    *slot = 0;
    return pfn;
}

static void zap_deposited_table(struct fp_kernel *k, struct fp_mm *mm, const uint64_t *pmd)
{
    int64_t pfn = fp_withdraw_table(k, pmd);
    if (pfn >= 0) {
        pgtable_page_free(k, (uint64_t)pfn);
        mm->nr_tables--;
    }
}

/* ---- mapping and unmapping pages ---------------------------------------- */

/* The RSS peak follows every increase (4.20 takes it at each unmap and exit,
 * update_hiwater_rss(): the same peak). */
static void rss_grew(struct fp_mm *mm)
{
    uint64_t rss = mm->rss_anon + mm->rss_file + mm->rss_shmem;
    if (rss > mm->hiwater_rss)
        mm->hiwater_rss = rss;
}

static uint64_t *mm_rss(struct fp_mm *mm, const struct fp_page *p)
{
    if (p->flags & FP_PG_ANON)
        return &mm->rss_anon;
    return (p->flags & FP_PG_SWAPBACKED) ? &mm->rss_shmem : &mm->rss_file;
}

/* A freshly allocated page (or THP head) mapped once by mm at addr: page_add_new_anon_rmap()
 * + lru_cache_add(). New anon pages start active (4.20's
 * lru_cache_add_active_or_unevictable()); page cache and shmem pages start inactive.
 * A page-cache or shmem page a store faulted in is PG_dirty (do_shared_fault()'s
 * fault_dirty_shared_page(); a dirty machine-file page stands for one). */
static void page_add_rmap(struct fp_kernel *k, struct fp_mm *mm, uint64_t pfn,
                          uint64_t addr, enum fp_kind kind, int dirty, int exec,
                          const uint64_t *entry)
{
    struct fp_page *p = &k->pages[pfn];
    if (entry) /* the first mapper: no allocation, cannot fail */
        fp_rmap_add_first(k, pfn, entry);
    else
        fp_rmap_add(k, pfn, mm->id, addr);
    if (kind == FP_KIND_ANON)
        p->flags |= FP_PG_ANON | FP_PG_SWAPBACKED | FP_PG_ACTIVE;
    else if (kind == FP_KIND_SHMEM)
        p->flags |= FP_PG_SWAPBACKED | (dirty ? FP_PG_DIRTY : 0);
    else if (dirty)
        p->flags |= FP_PG_DIRTY;
    if (exec)
        p->flags |= FP_PG_EXECMAP;
    fp_node_account(k, pfn, +1);
    fp_lru_add(k, pfn, fp_page_lru(p));
    fp_reclaim_stat_add(k, pfn); /* lru_cache_add() */
    *mm_rss(mm, p) += fp_page_nr(p);
    rss_grew(mm);
}

/* mm stops mapping pfn at addr; the last unmap frees the page. */
void fp_page_remove_rmap(struct fp_kernel *k, struct fp_mm *mm, uint64_t pfn, uint64_t addr)
{
    struct fp_page *p = &k->pages[pfn];
    if (fp_pfn_to_node(k, pfn) < 0)
        return; /* device or special memory: never accounted */
    *mm_rss(mm, p) -= fp_page_nr(p);
    if (mm->vm)
        fp_kvm_unmap_hva(k, mm, addr, fp_page_nr(p)); /* the MMU notifier */
    fp_rmap_del(k, pfn, mm->id, addr);
    if (p->mapcount)
        return;
    if (p->flags & FP_PG_LRU)
        fp_lru_del(k, pfn);
    fp_node_account(k, pfn, -1);
    fp_free_page(k, pfn);
}

/* The entry of the page's first mapper (the others: fp_rmap_walk); NULL when it
 * no longer maps the page as a present leaf (a THP's PMD split into swap PTEs). */
uint64_t *fp_rmap_entry(struct fp_kernel *k, const struct fp_page *p, int *level)
{
    if (!p->mapcount)
        return NULL;
    uint64_t *e = &k->tables[p->pte];
    *level = fp_entry_level(k, p->pte);
    if (!fp_entry_present(*e) || (*level < 4 && !(*e & FP_PAGE_PSE)))
        return NULL;
    return fp_entry_addr(*e) == (uint64_t)(p - k->pages) ? e : NULL;
}

/* Allocate and account the page that will map addr: on `node` when >= 0 (scenario
 * set-up), else by the task's policy. Special mappings get kernel frames. A new
 * THP for the empty PMD entry `pmd` first gets its deposited page table (after the
 * THP, before it is mapped, as __do_huge_pmd_anonymous_page() does); without one
 * the THP is freed: NO_PGTABLE (VM_FAULT_OOM, where a failed THP falls back).
 * `entry`: the entry that will map it (the PMD of a THP), or NULL to find it. */
#define NO_PGTABLE (-ENOMEM - 1000)
static int64_t new_page(struct fp_kernel *k, struct fp_mm *mm, uint64_t addr, int32_t node,
                        int huge, uint32_t vma_flags, int write, const uint64_t *pmd,
                        const uint64_t *entry)
{
    int64_t pfn;
    int32_t nid = node;
    enum fp_kind kind = huge ? FP_KIND_ANON : fp_page_kind(vma_flags, write);
    if (kind == FP_KIND_SPECIAL) { /* a [vdso] page is a file page to the counters */
        if (!(vma_flags & FP_VMA_PFNMAP)) {
            mm->rss_file++;
            rss_grew(mm);
        }
        return (int64_t)k->device_pfn++;
    }
    if (node >= 0) {
        pfn = fp_alloc_page(k, node, huge);
        if (pfn >= 0)
            fp_count_alloc(k, mm->local_node, preferred_node(mm), node);
    } else {
        pfn = alloc_for_fault(k, mm, addr, huge, &nid);
    }
    if (pfn < 0)
        return -ENOMEM;
    if (pmd && deposit_table(k, mm, pmd)) {
        fp_free_page(k, (uint64_t)pfn);
        return NO_PGTABLE;
    }
    page_add_rmap(k, mm, (uint64_t)pfn, huge ? addr & ~(FP_PMD_SIZE - 1) : addr, kind, write,
                  (vma_flags & FP_VMA_EXEC) != 0, entry);
    return pfn;
}

/* ---- address spaces ------------------------------------------------------ */

int32_t fp_mm_new(struct fp_kernel *k, uint32_t id)
{
    if (id >= FP_MAX_MMS || k->mms[id])
        return -EEXIST;
    struct fp_mm *mm = calloc(1, sizeof(*mm));
    if (!mm)
        return -ENOMEM;
    mm->id = id;
    mm->alive = 1;
    mm->local_node = 0;
    mm->nr_zonelist = 1;
    k->mms[id] = mm;
    return 0;
}

static struct fp_mm *get_mm(struct fp_kernel *k, uint32_t id)
{
    return id < FP_MAX_MMS ? k->mms[id] : NULL;
}

/* A new page table for mm at `level` (1 = PGD ... 4 = PTE) covering addr, counted
 * in its nr_tables (the checker recounts them); its owner and base address are
 * recorded for the reverse map. */
static void table_owner(struct fp_kernel *k, int64_t t, const struct fp_mm *mm, uint64_t addr,
                        int level)
{
    uint64_t span = 1ULL << (12 + 9 * (4 - level) + 9); /* what the whole table maps */
    k->table_base[t] = (addr & ~(span - 1)) | (uint64_t)level;
    k->table_mm[t] = mm->id;
}

int64_t fp_mm_table_new(struct fp_kernel *k, struct fp_mm *mm, uint64_t addr, int level)
{
    int64_t t = fp_table_alloc(k, mm, level == 4);
    if (t < 0)
        return t;
    mm->nr_tables++;
    table_owner(k, t, mm, addr, level);
    return t;
}

/* __split_huge_pmd_locked(): the huge PMD pmd of mm becomes a PTE table, the page
 * deposited with it (already counted in the mm's tables) or else a new one, which
 * the caller fills (swap entries, or the THP's base pages); thp_split_pmd. Returns
 * the table's index or -ENOMEM (pmd unchanged). */
static int64_t pmd_to_table(struct fp_kernel *k, struct fp_mm *mm, uint64_t *pmd)
{
    uint64_t addr = fp_entry_vaddr(k, fp_entry_index(k, pmd));
    if (!k->nr_free_tables && k->tables_used >= k->tables_cap)
        return -ENOMEM;
    int64_t pfn = fp_withdraw_table(k, pmd), t;
    if (pfn < 0) {
        if ((t = fp_mm_table_new(k, mm, addr, 4)) < 0)
            return t;
    } else {
        t = table_slot(k, (uint64_t)pfn);
        table_owner(k, t, mm, addr, 4);
    }
    *pmd = ((uint64_t)t << FP_PAGE_SHIFT) | FP_TABLE_BITS;
    return t;
}

int64_t fp_split_pmd(struct fp_kernel *k, struct fp_mm *mm, uint64_t *pmd)
{
    int64_t t = pmd_to_table(k, mm, pmd);
    if (t >= 0)
        k->events[FP_EV_THP_SPLIT_PMD]++;
    return t;
}

/* Return the entry for addr at `level` (1..4), allocating tables on the way
 * when alloc is set.  NULL when a huge leaf or a non-table entry is in the way,
 * or when a table is missing and alloc is not set; *err says which. */
static uint64_t *walk_to(struct fp_kernel *k, struct fp_mm *mm, uint64_t addr, int level,
                         int alloc, int *err)
{
    *err = 0;
    if (!mm->pgd) {
        int64_t t = alloc ? fp_mm_table_new(k, mm, addr, 1) : -ENOENT;
        if (t < 0) {
            *err = (int)t;
            return NULL;
        }
        mm->pgd = (uint64_t)t;
    }
    uint64_t table = mm->pgd;
    for (int l = 1; l < level; l++) {
        uint64_t *e = &fp_table(k, table)[fp_index(addr, l)];
        if (fp_entry_none(*e)) {
            int64_t t = alloc ? fp_mm_table_new(k, mm, addr, l + 1) : -ENOENT;
            if (t < 0) {
                *err = (int)t;
                return NULL;
            }
            *e = ((uint64_t)t << FP_PAGE_SHIFT) | FP_TABLE_BITS;
        } else if ((*e & FP_PAGE_PSE) || !fp_entry_present(*e)) {
            *err = -EEXIST;
            return NULL;
        }
        table = fp_entry_addr(*e);
    }
    return &fp_table(k, table)[fp_index(addr, level)];
}

/* The entry where a walk of addr stops: a PTE, a huge leaf, or the first empty
 * or non-present entry; *level says where. NULL when mm has no tables. */
uint64_t *fp_mm_walk(struct fp_kernel *k, const struct fp_mm *mm, uint64_t addr, int32_t *level)
{
    *level = 0;
    if (!mm || !mm->pgd)
        return NULL;
    uint64_t table = mm->pgd;
    for (int l = 1; l <= 4; l++) {
        uint64_t *e = &fp_table(k, table)[fp_index(addr, l)];
        *level = l;
        if (l == 4 || fp_entry_none(*e) || (*e & FP_PAGE_PSE) || !fp_entry_present(*e))
            return e;
        table = fp_entry_addr(*e);
    }
    return NULL;
}

uint64_t *fp_lookup(struct fp_kernel *k, uint32_t id, uint64_t addr, int32_t *level_out)
{
    return fp_mm_walk(k, get_mm(k, id), addr, level_out);
}

/* vm_insert_pfn()'s pte_mkspecial(): the entries of a PFN map ([vvar]) */
static uint64_t special(uint32_t vma_flags)
{
    return (vma_flags & FP_VMA_PFNMAP) ? FP_PAGE_SPECIAL : 0;
}

/* The write bit 4.20 gives a present entry: none in a VMA without VM_WRITE; an
 * anonymous page (a private copy included) and shmem, which is mapped without
 * write-notify, are writable; a page-cache page only in a shared mapping and once
 * dirty (write-notify maps a clean one read-only, so the first store faults and
 * dirties it), never in a private one (a store copies it). */
static uint64_t write_bit(uint32_t vma_flags, enum fp_kind kind, int dirty)
{
    if (!(vma_flags & FP_VMA_WRITE) || kind == FP_KIND_SPECIAL)
        return 0;
    if (kind == FP_KIND_FILE)
        return dirty && !(vma_flags & FP_VMA_COW) ? FP_PAGE_RW : 0;
    return FP_PAGE_RW;
}

static void drop_entry(struct fp_kernel *k, struct fp_mm *mm, uint64_t *e, uint64_t addr)
{
    if (fp_kernel_page(k, *e))
        mm->rss_file--;
    if (fp_entry_present(*e)) {
        fp_page_remove_rmap(k, mm, fp_entry_addr(*e), addr);
    } else if (fp_is_swap(*e)) {
        mm->nr_swap--;
        fp_swap_free(k, fp_entry_addr(*e));
    }
    *e = 0;
}

/* Install the PTE e of addr (a set-up entry: fp_set_pte()). */
static int32_t set_pte_at(struct fp_kernel *k, struct fp_mm *mm, uint64_t *e, uint64_t addr,
                          uint64_t bits, int32_t node, uint32_t vma_flags)
{
    drop_entry(k, mm, e, addr);
    if (bits & FP_PAGE_SWPENTRY) {
        if (bits & FP_SWP_SWAP) { /* a swap entry gets a slot of its own */
            int64_t off = fp_swap_alloc(k);
            if (off < 0)
                return (int32_t)off;
            bits = (bits & ~FP_ADDR_MASK) | ((uint64_t)off << FP_PAGE_SHIFT);
            mm->nr_swap++;
        }
        *e = bits;
        return 0;
    }
    if (!bits)
        return 0;
    int dirty = (bits & FP_PAGE_DIRTY) != 0;
    int64_t pfn = new_page(k, mm, addr, node, 0, vma_flags, dirty, NULL, e);
    if (pfn < 0)
        return (int32_t)pfn;
    bits = (bits & ~(uint64_t)FP_PAGE_RW) | write_bit(vma_flags, fp_page_kind(vma_flags, dirty), dirty);
    *e = ((uint64_t)pfn << FP_PAGE_SHIFT) | bits | special(vma_flags);
    return 0;
}

int32_t fp_set_pte(struct fp_kernel *k, uint32_t id, uint64_t addr, uint64_t bits,
                   int32_t node, uint32_t vma_flags)
{
    return fp_set_ptes(k, id, addr, 1, bits, node, vma_flags);
}

/* nr identical PTEs from addr: a walk from the pgd for the first of each PTE table,
 * its next entries after it (set-up allocations come from the free lists: nothing
 * frees or moves a table meanwhile) */
int32_t fp_set_ptes(struct fp_kernel *k, uint32_t id, uint64_t addr, uint64_t nr,
                    uint64_t bits, int32_t node, uint32_t vma_flags)
{
    struct fp_mm *mm = get_mm(k, id);
    if (!mm || node >= k->nr_nodes)
        return -EINVAL;
    uint64_t *e = NULL;
    for (uint64_t i = 0; i < nr; i++, addr += FP_PAGE_SIZE) {
        int err;
        if (e && (addr & (FP_PMD_SIZE - 1)))
            e++;
        else if (!(e = walk_to(k, mm, addr, 4, 1, &err)))
            return err;
        int32_t r = set_pte_at(k, mm, e, addr, bits, node, vma_flags);
        if (r < 0)
            return r;
    }
    return 0;
}

int32_t fp_set_pte_runs(struct fp_kernel *k, uint32_t id, uint64_t addr,
                        const struct fp_pte_run *runs, uint32_t nr_runs, uint64_t repeat,
                        uint32_t vma_flags)
{
    for (uint64_t r = 0; r < repeat; r++) {
        for (uint32_t i = 0; i < nr_runs; i++) {
            if (runs[i].bits) {
                int32_t err = fp_set_ptes(k, id, addr, runs[i].nr, runs[i].bits, runs[i].node,
                                          vma_flags);
                if (err < 0)
                    return err;
            }
            addr += runs[i].nr * FP_PAGE_SIZE;
        }
    }
    return 0;
}

int32_t fp_set_thp(struct fp_kernel *k, uint32_t id, uint64_t addr, uint64_t bits,
                   int32_t node)
{
    struct fp_mm *mm = get_mm(k, id);
    int err;
    if (!mm || node >= k->nr_nodes || (addr & (FP_PMD_SIZE - 1)))
        return -EINVAL;
    uint64_t *e = walk_to(k, mm, addr, 3, 1, &err);
    if (!e)
        return err;
    if (!fp_entry_none(*e))
        return -EEXIST;
    if (bits & FP_PAGE_SWPENTRY) { /* a THP migration entry: a huge PMD still */
        if (bits & FP_SWP_SWAP)
            return -EINVAL; /* swap-out splits a THP first: its swap entries are PTEs */
        if (deposit_table(k, mm, e))
            return -ENOMEM;
        *e = bits;
        return 0;
    }
    int64_t pfn = new_page(k, mm, addr, node, 1, FP_VMA_ANON, 0, e, e);
    if (pfn < 0)
        return -ENOMEM;
    *e = ((uint64_t)pfn << FP_PAGE_SHIFT) | bits | FP_PAGE_PSE;
    return 0;
}

int32_t fp_set_pud(struct fp_kernel *k, uint32_t id, uint64_t addr, uint64_t bits)
{
    /* a 1 GiB device-DAX mapping: its frames are device memory, not node RAM */
    struct fp_mm *mm = get_mm(k, id);
    int err;
    if (!mm || (addr & (FP_PUD_SIZE - 1)))
        return -EINVAL;
    uint64_t *e = walk_to(k, mm, addr, 2, 1, &err);
    if (!e)
        return err;
    if (!fp_entry_none(*e))
        return -EEXIST;
    uint64_t per_pud = FP_PUD_SIZE >> FP_PAGE_SHIFT;
    k->device_pfn = (k->device_pfn + per_pud - 1) / per_pud * per_pud;
    *e = (k->device_pfn << FP_PAGE_SHIFT) | bits | FP_PAGE_PSE;
    k->device_pfn += per_pud;
    return 0;
}

int32_t fp_set_table_bits(struct fp_kernel *k, uint32_t id, uint64_t addr, int32_t level,
                          uint64_t set, uint64_t clear)
{
    struct fp_mm *mm = get_mm(k, id);
    int err;
    if (!mm || level < 1 || level > 4)
        return -EINVAL;
    uint64_t *e = walk_to(k, mm, addr, level, 0, &err);
    if (!e)
        return err;
    if (fp_entry_none(*e))
        return -ENOENT;
    *e = (*e | set) & ~clear;
    k->tlb_gen++; /* an upper-level bit may have changed under a TLB */
    return 0;
}

/* ---- faults and accesses -------------------------------------------------- */

static int32_t wp_fault(struct fp_kernel *k, struct fp_mm *mm, uint64_t *e, uint64_t addr,
                        int huge, uint32_t flags, int count);

/* A fault where a leaf is present (KVM's EPT violations: get_user_pages() of a host
 * page; fp_touch() takes its own write faults): usable as it is, no fault; a store
 * to a write-protected entry, or any access to the zero page (KVM's faults take no
 * zero page), is do_wp_page(). Returns 1 when a leaf is present, *err then the
 * result (0 or -errno); 0 when nothing is mapped and the caller faults a page in. */
static int fault_present(struct fp_kernel *k, struct fp_mm *mm, uint64_t addr, uint32_t flags,
                         int32_t *err)
{
    int write = (flags & FP_FAULT_WRITE) != 0;
    for (int tries = 0; tries < 4; tries++) {
        int32_t level;
        uint64_t *e = fp_mm_walk(k, mm, addr, &level);
        if (!e || !fp_entry_present(*e) || (level < 4 && !(*e & FP_PAGE_PSE)))
            return 0;
        int zero = fp_zero_entry(k, *e);
        *err = 0;
        /* usable as it is, get_user_pages() finds it with no fault (a PROT_NONE entry
         * too: no NUMA hint faults here) */
        if ((*e & FP_PAGE_PROTNONE) ||
            (!(zero && (flags & FP_FAULT_NOZERO)) && !(write && !(*e & FP_PAGE_RW))))
            return 1;
        int32_t r = wp_fault(k, mm, e, addr, level < 4, flags, 1);
        if (r <= 0) {
            *err = r;
            return 1;
        }
        /* 1: changed under the copy, 2: split: look again */
    }
    return 1;
}

/* handle_mm_fault() for an entry that is missing: do_anonymous_page() (a read of
 * private anonymous memory maps the zero page), do_huge_pmd_anonymous_page() (the
 * huge zero page, use_zero_page being 1), do_fault(), do_swap_page(). */
int32_t fp_fault(struct fp_kernel *k, uint32_t id, uint64_t addr, uint32_t flags)
{
    struct fp_mm *mm = get_mm(k, id);
    int err;
    int write = (flags & FP_FAULT_WRITE) != 0;
    int zero_ok = !write && !(flags & FP_FAULT_NOZERO);
    uint32_t vma_flags = flags >> FP_FAULT_VMA_SHIFT;
    if (!mm)
        return -ESRCH;
    int32_t done; /* only KVM's faults meet a present leaf: fp_touch() faults where it found none */
    if ((flags & FP_FAULT_NOZERO) && fault_present(k, mm, addr, flags, &done))
        return done;
    k->events[FP_EV_PGFAULT]++;
    if (flags & FP_FAULT_THP) {
        uint64_t *pmd = walk_to(k, mm, addr, 3, 1, &err);
        if (!pmd)
            return err == -EEXIST ? 0 : err;
        if (fp_entry_none(*pmd) && zero_ok) {
            /* set_huge_zero_page(): read-only and young (vm_page_prot), with a table
             * deposited; the first use allocates the huge zero page */
            if (deposit_table(k, mm, pmd))
                return -ENOMEM;
            if (!k->huge_zero_used) {
                k->huge_zero_used = 1;
                k->events[FP_EV_THP_ZERO_PAGE_ALLOC]++;
            }
            *pmd = (k->huge_zero_pfn << FP_PAGE_SHIFT) | FP_PAGE_PRESENT | FP_PAGE_USER |
                   FP_PAGE_ACCESSED | FP_PAGE_PSE;
            return 0;
        }
        if (fp_entry_none(*pmd)) {
            int64_t pfn = new_page(k, mm, addr, -1, 1, FP_VMA_ANON, 0, pmd, pmd);
            if (pfn >= 0) { /* __do_huge_pmd_anonymous_page(): maybe_pmd_mkwrite(pmd_mkdirty()) */
                *pmd = ((uint64_t)pfn << FP_PAGE_SHIFT) | FP_PAGE_PRESENT | FP_PAGE_RW |
                       FP_PAGE_USER | FP_PAGE_PSE | FP_PAGE_DIRTY | FP_PAGE_SOFT_DIRTY;
                k->events[FP_EV_THP_FAULT_ALLOC]++;
                return 0;
            }
            if (pfn == NO_PGTABLE)
                return -ENOMEM;
            k->events[FP_EV_THP_FAULT_FALLBACK]++;
        } else if (*pmd & FP_PAGE_PSE) {
            return 0;
        }
    }
    uint64_t *pte = walk_to(k, mm, addr, 4, 1, &err);
    if (!pte)
        return err == -EEXIST ? 0 : err;
    if (fp_entry_present(*pte))
        return 0;
    if (fp_entry_none(*pte) && zero_ok && (vma_flags & FP_VMA_ANON)) {
        /* the zero page: pte_mkspecial(), read-only, young (vm_page_prot); no rmap,
         * no RSS, no LRU */
        *pte = (k->zero_pfn << FP_PAGE_SHIFT) | FP_PAGE_PRESENT | FP_PAGE_USER |
               FP_PAGE_ACCESSED | FP_PAGE_SPECIAL;
        return 0;
    }
    int64_t pfn = new_page(k, mm, addr, -1, 0, vma_flags, write, NULL, NULL);
    if (pfn < 0)
        return (int32_t)pfn;
    /* a write fault maps the page pte_mkdirty(): soft-dirty; a swap-in keeps the swap
     * entry's soft-dirty bit (do_swap_page()) */
    uint64_t soft_dirty = write ? FP_PAGE_SOFT_DIRTY : 0;
    if (*pte & FP_PAGE_SWPENTRY) {
        k->events[FP_EV_PGMAJFAULT]++; /* a swap-in replaces the swap entry */
        k->events[FP_EV_PSWPIN]++;
        soft_dirty |= *pte & FP_PAGE_SOFT_DIRTY;
        drop_entry(k, mm, pte, addr);
    }
    *pte = ((uint64_t)pfn << FP_PAGE_SHIFT) | FP_PAGE_PRESENT | FP_PAGE_USER |
           (write ? FP_PAGE_RW : 0) | soft_dirty | special(vma_flags);
    return 0;
}

/* do_huge_pmd_wp_page_fallback(): a store to a THP shared after fork found no THP
 * for its copy: 512 base pages are allocated (from the THP's node on; none of them
 * mapped until all are there), the PMD gives way to its deposited table mapping
 * them, each writable, dirty, soft-dirty and young (mk_pte() of vm_page_prot,
 * pte_mkdirty()), and this mapping of the THP goes (its other mappers keep it).
 * 0; 1 when the PMD changed meanwhile (pmd_same(): the pages go back, the caller
 * walks again); -ENOMEM (VM_FAULT_OOM) when the pages cannot be had. */
static int32_t huge_copy_fallback(struct fp_kernel *k, struct fp_mm *mm, uint64_t *pmd,
                                  uint64_t addr, uint64_t orig, int exec)
{
    uint64_t base = addr & ~(FP_PMD_SIZE - 1), thp = fp_entry_addr(orig), pfns[FP_PAGES_PER_HUGE];
    const struct fp_node *n = &k->nodes[fp_pfn_to_node(k, thp)];
    int64_t t = -ENOMEM;
    uint64_t i;
    for (i = 0; i < FP_PAGES_PER_HUGE; i++) {
        int32_t nid;
        int64_t pfn = fp_alloc_in_order(k, mm->local_node, n->fallback, n->nr_fallback,
                                        (int32_t)(n - k->nodes), 0, &nid);
        if (pfn < 0)
            goto free;
        pfns[i] = (uint64_t)pfn;
    }
    if (*pmd != orig) {
        t = 1;
        goto free;
    }
    fp_page_remove_rmap(k, mm, thp, base); /* page_remove_rmap(page, true) */
    t = pmd_to_table(k, mm, pmd);           /* the deposit cannot be missing: a THP's */
    if (t < 0)
        goto free;
    uint64_t *ptes = fp_table(k, (uint64_t)t);
    for (i = 0; i < FP_PAGES_PER_HUGE; i++) {
        ptes[i] = (pfns[i] << FP_PAGE_SHIFT) | FP_PAGE_PRESENT | FP_PAGE_RW | FP_PAGE_USER |
                  FP_PAGE_ACCESSED | FP_PAGE_DIRTY | FP_PAGE_SOFT_DIRTY;
        page_add_rmap(k, mm, pfns[i], base + i * FP_PAGE_SIZE, FP_KIND_ANON, 1, exec, NULL);
    }
    k->tlb_gen++; /* the PMD was rewritten: TLBs flush */
    return 0;
free:
    while (i--)
        fp_free_page(k, pfns[i]);
    return (int32_t)t;
}

/* do_wp_page(): a store to a write-protected page. An anonymous page mapped once is
 * reused; one shared after fork (or a page-cache page of a private mapping) is
 * copied into a new anonymous page of this mm, the copy mapped writable; so is the
 * zero page (wp_page_copy() of a zeroed page) and the huge zero page
 * (do_huge_pmd_wp_page(): a THP, else the PMD is split into zero PTEs and the store
 * goes on there in the same fault, thp_fault_fallback). count: the fault counts in
 * pgfault. 0; 1 when the entry changed under the copy, 2 when the PMD was split (the
 * caller walks again: to fault again, or to find the new PTE); or -errno. */
static int32_t wp_fault(struct fp_kernel *k, struct fp_mm *mm, uint64_t *e, uint64_t addr,
                        int huge, uint32_t flags, int count)
{
    uint64_t pfn = fp_entry_addr(*e);
    uint32_t vma_flags = flags >> FP_FAULT_VMA_SHIFT;
    struct fp_page *p = fp_pfn_to_node(k, pfn) < 0 ? NULL : &k->pages[pfn];
    int anon = p && (p->flags & FP_PG_ANON), zero = fp_zero_entry(k, *e);
    int store = (flags & FP_FAULT_WRITE) != 0; /* else KVM's load of the zero page */
    /* handle_mm_fault() counts every write-protect fault. A shmem page is mapped
     * writable by 4.20's read fault (no write-notify) until clear_refs starts
     * soft-dirty tracking; here it is mapped read-only and its store comes through
     * this function, which then is no fault. wp_page_reuse() and wp_page_copy() map
     * the page pte_mkdirty(): soft-dirty (without tracking the VMA's VM_SOFTDIRTY
     * shows every page soft-dirty anyway). */
    if (count && (!p || anon || !(p->flags & FP_PG_SWAPBACKED) || mm->track_soft_dirty))
        k->events[FP_EV_PGFAULT]++;
    if (!p && !zero) {
        *e |= FP_PAGE_RW | FP_PAGE_SOFT_DIRTY; /* special frames are not copied */
        return 0;
    }
    if (!zero && anon && p->mapcount == 1) {
        *e |= FP_PAGE_RW | FP_PAGE_SOFT_DIRTY; /* reuse: nobody else sees this page */
        return 0;
    }
    if (!zero && !anon && !(vma_flags & FP_VMA_COW)) {
        /* wp_page_shared(): the page cache's page becomes writable and dirty
         * (fault_dirty_shared_page() -> set_page_dirty(): NR_FILE_DIRTY counts a page
         * newly dirtied). shmem has no page_mkwrite and no dirty accounting (its
         * store is no fault, above): the PTE alone goes dirty, its page flags stay. */
        if (!(p->flags & (FP_PG_DIRTY | FP_PG_SWAPBACKED))) {
            uint64_t *st = k->nodes[fp_pfn_to_node(k, pfn)].stat;
            fp_page_kind_add(st, p, -1);
            p->flags |= FP_PG_DIRTY;
            fp_page_kind_add(st, p, +1);
        }
        *e |= FP_PAGE_RW | FP_PAGE_SOFT_DIRTY;
        return 0;
    }
    uint64_t base = huge ? addr & ~(FP_PMD_SIZE - 1) : addr & ~(FP_PAGE_SIZE - 1), orig = *e;
    int64_t np = new_page(k, mm, base, -1, huge, FP_VMA_ANON, store, NULL, NULL);
    if (np < 0 && huge && zero) {
        /* VM_FAULT_FALLBACK: the same fault goes on at the PTE level */
        k->events[FP_EV_THP_FAULT_FALLBACK]++;
        int64_t t = fp_split_huge_zero_pmd(k, mm, e);
        if (t < 0)
            return (int32_t)t;
        int32_t r = wp_fault(k, mm, &fp_table(k, (uint64_t)t)[fp_index(addr, 4)], addr, 0, flags, 0);
        return r < 0 ? r : 2;
    }
    if (np < 0 && huge) {
        k->events[FP_EV_THP_FAULT_FALLBACK]++;
        return huge_copy_fallback(k, mm, e, addr, orig, (vma_flags & FP_VMA_EXEC) != 0);
    }
    if (np < 0)
        return (int32_t)np;
    if (huge)
        k->events[FP_EV_THP_FAULT_ALLOC]++; /* do_huge_pmd_wp_page(): every new THP */
    if (*e != orig) {
        /* wp_page_copy()'s pte_same(): the allocation's reclaim migrated, split or
         * unmapped the page meanwhile; the copy is dropped and the access retried */
        fp_page_remove_rmap(k, mm, (uint64_t)np, base);
        return 1;
    }
    fp_page_remove_rmap(k, mm, pfn, base);
    /* a store's copy is writable and dirty (pte_mkdirty(): soft-dirty); KVM's load of
     * the zero page gets a page mapped as a read fault maps one */
    *e = ((uint64_t)np << FP_PAGE_SHIFT) | FP_PAGE_PRESENT | FP_PAGE_USER | FP_PAGE_ACCESSED |
         (store ? FP_PAGE_RW | FP_PAGE_DIRTY | FP_PAGE_SOFT_DIRTY : 0) | (huge ? FP_PAGE_PSE : 0);
    return 0;
}

/* What the MMU does on a load or store: set the accessed bit on every paging
 * structure entry it walks through and on the leaf, the dirty bit on a store;
 * fault first when the leaf is missing. */
int32_t fp_touch(struct fp_kernel *k, uint32_t id, uint64_t addr, uint32_t flags)
{
    struct fp_mm *mm = get_mm(k, id);
    if (!mm)
        return -ESRCH;
    int copies = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
    walk:
        if (!mm->pgd)
            goto fault;
        uint64_t table = mm->pgd;
        for (int l = 1; l <= 4; l++) {
            uint64_t *e = &fp_table(k, table)[fp_index(addr, l)];
            if (fp_entry_none(*e) || !(*e & FP_PAGE_PRESENT))
                break; /* PROT_NONE and swap entries fault, and we model no hint faults */
            *e |= FP_PAGE_ACCESSED;
            if (l == 4 || (*e & FP_PAGE_PSE)) {
                if ((flags & FP_FAULT_WRITE) && !(*e & FP_PAGE_RW)) {
                    int32_t r = wp_fault(k, mm, e, addr, l < 4, flags, 1);
                    if (r < 0)
                        return r;
                    if (r > 0) /* changed under the copy, or split: walk again */
                        if (copies++ < 8)
                            goto walk;
                    if (r > 0)
                        return FP_NO_NODE; /* (never seen) the access does not complete */
                }
                if (flags & FP_FAULT_WRITE)
                    *e |= FP_PAGE_DIRTY;
                return fp_count_access(k, *e, addr, l < 4);
            }
            table = fp_entry_addr(*e);
        }
    fault:
        if (attempt)
            break;
        int32_t r = fp_fault(k, id, addr, flags);
        if (r < 0)
            return r;
    }
    return FP_NO_NODE; /* a PROT_NONE page: the access does not complete */
}

/* A workload TLB miss (fp_tlb_hit_pfn() said -1): the full fp_touch(), then the entry
 * for addr's 2 MiB region is refilled from the walk. fp_tlb_hit_pfn() explains why a
 * hit may skip the PGD and PUD levels. */
int32_t fp_tlb_miss(struct fp_kernel *k, struct fp_tlb_entry *tlb, uint32_t id, uint64_t addr,
                    uint32_t flags)
{
    int32_t r = fp_touch(k, id, addr, flags), err;
    struct fp_mm *mm = get_mm(k, id);
    if (r < 0 || !mm || !mm->pgd || k->tlb_off)
        return r;
    uint64_t *pmd = walk_to(k, mm, addr, 3, 0, &err);
    if (!pmd || !(*pmd & FP_PAGE_PRESENT))
        return r;
    struct fp_tlb_entry *t = &tlb[(addr >> 21) & (FP_TLB_ENTRIES - 1)];
    t->tag = (addr >> 21) + 1;
    t->gen = k->tlb_gen;
    t->pmd = (uint64_t)(pmd - k->tables);
    t->pte_table = (*pmd & FP_PAGE_PSE) ? 0 : fp_entry_addr(*pmd);
    return r;
}

/* ---- fork ----------------------------------------------------------------------- */

/* copy_pte_range() / copy_huge_pmd() over [start, end): the child maps the parent's
 * pages; in a private mapping a writable entry is write-protected in both
 * (copy-on-write); the child's copy is old (pte_mkold, pmd_mkold), and clean in a
 * shared mapping (pte_mkclean); swap entries are shared. */
static int fork_walk(struct fp_kernel *k, struct fp_mm *pm, struct fp_mm *cm, uint64_t table,
                     int level, uint64_t base, uint64_t start, uint64_t end, uint32_t flags)
{
    uint64_t *t = fp_table(k, table);
    uint64_t span = 1ULL << (12 + 9 * (4 - level));
    uint64_t *cleaf = NULL; /* the child's PTE table for this one, once it has one */
    for (unsigned i = 0; i < FP_PTRS_PER_TABLE; i++) {
        uint64_t e, addr = base + i * span;
        int err;
    again:
        e = t[i];
        if (!e || addr + span <= start || addr >= end)
            continue;
        if (fp_entry_present(e) && level < 4 && !(e & FP_PAGE_PSE)) {
            err = fork_walk(k, pm, cm, fp_entry_addr(e), level + 1, addr, start, end, flags);
            if (err)
                return err;
            continue;
        }
        /* the child's tables and deposit come from the page allocator, whose reclaim
         * may demote, swap or split the parent's page meanwhile: the entry is read
         * again after each allocation, as copy_pte_range() holds the parent's lock.
         * Once the child has this PTE table nothing more is allocated for it: its
         * entries follow without a walk from the child's pgd. */
        uint64_t *ce = cleaf ? cleaf + i : walk_to(k, cm, addr, level, 1, &err);
        if (!ce)
            return err;
        if (t[i] != e)
            goto again;
        if (level == 4)
            cleaf = ce - i;
        if (level == 3 && (err = deposit_table(k, cm, ce)))
            return err; /* copy_huge_pmd(): the child's PMD gets its own deposit */
        if (level == 3 && t[i] != e) {
            zap_deposited_table(k, cm, ce);
            goto again;
        }
        if (!fp_entry_present(e)) {
            if (fp_is_swap(e)) { /* copy_one_pte(): swap_duplicate(), the slot is shared */
                cm->nr_swap++;
                fp_swap_duplicate(k, fp_entry_addr(e));
            }
            *ce = e;
            continue;
        }
        if (!(flags & FP_FORK_SHARED) && (e & FP_PAGE_RW)) {
            t[i] &= ~(uint64_t)FP_PAGE_RW;
            e &= ~(uint64_t)FP_PAGE_RW;
        }
        e &= ~(uint64_t)FP_PAGE_ACCESSED;
        if (level == 3 && fp_zero_entry(k, e))
            e |= FP_PAGE_ACCESSED; /* copy_huge_pmd(): set_huge_zero_page(), young */
        if (flags & FP_FORK_SHARED)
            e &= ~(uint64_t)FP_PAGE_DIRTY;
        uint64_t pfn = fp_entry_addr(e);
        if (fp_pfn_to_node(k, pfn) >= 0) {
            const struct fp_page *p = &k->pages[pfn];
            err = fp_rmap_add(k, pfn, cm->id, addr);
            if (err) {
                if (level == 3)
                    zap_deposited_table(k, cm, ce); /* the child's PMD stays empty */
                return err;
            }
            *mm_rss(cm, p) += fp_page_nr(p);
        } else if (fp_kernel_page(k, e)) {
            cm->rss_file++;
        }
        *ce = e;
    }
    return 0;
}

int32_t fp_mm_fork_vma(struct fp_kernel *k, uint32_t parent, uint32_t child, uint64_t start,
                       uint64_t end, uint32_t flags)
{
    struct fp_mm *pm = get_mm(k, parent), *cm = get_mm(k, child);
    if (!pm || !cm || start >= end)
        return -EINVAL;
    if (!pm->pgd)
        return 0;
    int err = fork_walk(k, pm, cm, pm->pgd, 1, 0, start, end, flags);
    cm->hiwater_rss = cm->rss_anon + cm->rss_file + cm->rss_shmem;
    /* copy_page_range() of a private mapping write-protects the parent's entries
     * inside mmu_notifier_invalidate_range_start(): KVM zaps the guest's EPT there */
    if (!(flags & FP_FORK_SHARED) && pm->vm)
        fp_kvm_unmap_hva(k, pm, start, (end - start) >> FP_PAGE_SHIFT);
    return err;
}

/* ---- teardown ---------------------------------------------------------------- */

/* ---- munmap() and madvise(MADV_DONTNEED) ---------------------------------------- */

/* The anonymous THP a huge PMD maps, of which a zap takes only part. 4.20's
 * __split_huge_pmd() maps it with PTEs (thp_split_pmd) and queues the compound page
 * for the deferred split (thp_deferred_split_page) that its shrinker does later; the
 * emulation has no PTE-mapped compound page, so it splits the page at once
 * (split_huge_page(), every mapper's PMD, thp_split_page), the head keeping its place
 * on its LRU and the tails just before it (lru_add_page_tail()). 0, or the split's
 * -EBUSY (pinned) or -EOPNOTSUPP (no tables for the other mappers). */
static int split_thp_for_zap(struct fp_kernel *k, const uint64_t *pmd)
{
    uint64_t pfn = fp_entry_addr(*pmd), tails[FP_PAGES_PER_HUGE - 1];
    struct fp_page *head = &k->pages[pfn];
    if (!(head->flags & FP_PG_HEAD) || !(head->flags & FP_PG_ANON) || !(head->flags & FP_PG_LRU))
        return -EOPNOTSUPP;
    uint32_t prev = head->lru_prev;
    fp_lru_del(k, pfn);
    int err = fp_split_huge_page(k, pfn, tails);
    fp_lru_add_after(k, pfn, fp_page_lru(head), prev);
    if (err)
        return err;
    k->events[FP_EV_THP_DEFERRED_SPLIT_PAGE]++;
    for (uint64_t i = 1; i < FP_PAGES_PER_HUGE; i++) /* each right after prev: t511 .. t1, head */
        fp_lru_add_after(k, pfn + i, fp_page_lru(&k->pages[pfn + i]), prev);
    return 0;
}

/* __split_huge_pmd() of the huge PMD e (mapping from base): the huge zero PMD becomes
 * zero PTEs, an anonymous THP base pages (as above). One that cannot be split (a
 * pinned THP, a huge migration entry) is dropped, its whole 2 MiB. 0 when split. */
static int split_huge_pmd(struct fp_kernel *k, struct fp_mm *mm, uint64_t *e, uint64_t base)
{
    int err = !fp_entry_present(*e) ? -EOPNOTSUPP
              : fp_zero_entry(k, *e) ? (fp_split_huge_zero_pmd(k, mm, e) < 0 ? -ENOMEM : 0)
              : split_thp_for_zap(k, e);
    if (err) {
        zap_deposited_table(k, mm, e);
        if (fp_entry_present(*e))
            drop_entry(k, mm, e, base);
        else
            *e = 0;
    }
    return err;
}

/* A VMA is split at addr (vma_adjust_trans_huge(): split_huge_pmd_address()): a huge
 * PMD across addr is split, so each maps within one VMA. 1 when there was one. */
int32_t fp_split_huge_pmd_at(struct fp_kernel *k, uint32_t id, uint64_t addr)
{
    struct fp_mm *mm = id < FP_MAX_MMS ? k->mms[id] : NULL;
    const uint64_t pmd_size = FP_PAGES_PER_HUGE * FP_PAGE_SIZE;
    int32_t level;
    uint64_t *e = mm && addr % pmd_size ? fp_mm_walk(k, mm, addr, &level) : NULL;
    if (!e || level != 3 || !*e || (fp_entry_present(*e) && !(*e & FP_PAGE_PSE)))
        return 0;
    split_huge_pmd(k, mm, e, addr & ~(pmd_size - 1));
    k->tlb_gen++;
    return 1;
}

/* zap_page_range() over [start, end) of one table: every entry goes (pages, swap and
 * migration entries, huge PMDs with their deposited tables); the tables stay. A huge
 * PMD the range covers in part is split first (or dropped whole, as above); a 1 GiB
 * leaf goes whole. */
static void zap_level(struct fp_kernel *k, struct fp_mm *mm, uint64_t table, int level,
                      uint64_t base, uint64_t start, uint64_t end)
{
    uint64_t span = 1ULL << (12 + 9 * (4 - level));
    uint64_t *t = fp_table(k, table);
    for (unsigned i = 0; i < FP_PTRS_PER_TABLE; i++) {
        uint64_t lo = base + i * span, hi = lo + span;
        if (hi <= start || lo >= end || !t[i])
            continue;
        if (level < 4 && fp_entry_present(t[i]) && !(t[i] & FP_PAGE_PSE)) {
            zap_level(k, mm, fp_entry_addr(t[i]), level + 1, lo, start, end);
            continue;
        }
        if (level == 3 && (lo < start || hi > end)) {
            if (!split_huge_pmd(k, mm, &t[i], lo))
                zap_level(k, mm, fp_entry_addr(t[i]), 4, lo, start, end);
            continue;
        }
        if (level == 3)
            zap_deposited_table(k, mm, &t[i]);
        if (fp_entry_present(t[i]) || level == 4)
            drop_entry(k, mm, &t[i], lo);
        else
            t[i] = 0; /* a huge migration entry */
    }
}

int32_t fp_zap_range(struct fp_kernel *k, uint32_t id, uint64_t start, uint64_t end)
{
    struct fp_mm *mm = get_mm(k, id);
    if (!mm)
        return -ESRCH;
    if (mm->pgd)
        zap_level(k, mm, mm->pgd, 1, 0, start, end);
    k->tlb_gen++; /* a TLB may hold a PMD this emptied */
    return 0;
}

static int has_anon_level(struct fp_kernel *k, uint64_t table, int level, uint64_t base,
                          uint64_t start, uint64_t end)
{
    uint64_t span = 1ULL << (12 + 9 * (4 - level));
    const uint64_t *t = fp_table(k, table);
    for (unsigned i = 0; i < FP_PTRS_PER_TABLE; i++) {
        uint64_t lo = base + i * span, e = t[i];
        if (lo + span <= start || lo >= end || !e)
            continue;
        if (level < 4 && fp_entry_present(e) && !(e & FP_PAGE_PSE)) {
            if (has_anon_level(k, fp_entry_addr(e), level + 1, lo, start, end))
                return 1;
            continue;
        }
        if (!fp_entry_present(e) || (level == 3 && fp_zero_entry(k, e)))
            return 1; /* swap or migration entry, the huge zero page */
        uint64_t pfn = fp_entry_addr(e);
        if (pfn < k->nr_pfns && (k->pages[pfn].flags & FP_PG_ANON))
            return 1;
    }
    return 0;
}

int32_t fp_range_has_anon(struct fp_kernel *k, uint32_t id, uint64_t start, uint64_t end)
{
    struct fp_mm *mm = get_mm(k, id);
    if (!mm)
        return -ESRCH;
    return mm->pgd ? has_anon_level(k, mm->pgd, 1, 0, start, end) : 0;
}

/* A table entry a free_*_range() walk descends into (pXd_none_or_clear_bad(): empty
 * and leaf entries are skipped; the zap left no leaf there). */
static int table_entry(uint64_t e)
{
    return fp_entry_present(e) && !(e & FP_PAGE_PSE);
}

static void free_table_at(struct fp_kernel *k, struct fp_mm *mm, uint64_t *e)
{
    fp_table_free(k, fp_entry_addr(*e));
    mm->nr_tables--;
    *e = 0;
}

/* The end of the level-`level` entry's span that holds addr, or end if sooner
 * (pXd_addr_end()). */
static uint64_t span_end(uint64_t addr, uint64_t end, int level)
{
    uint64_t size = 1ULL << (12 + 9 * (4 - level)), boundary = (addr + size) & ~(size - 1);
    return boundary - 1 < end - 1 ? boundary : end;
}

/* A table that maps [start & ~(size - 1), + size) goes only if that lies within
 * [floor, ceiling) (free_pmd_range()'s and free_pud_range()'s tail checks) */
static int table_within(uint64_t start, uint64_t end, uint64_t floor, uint64_t ceiling,
                        uint64_t size)
{
    start &= ~(size - 1);
    if (start < floor)
        return 0;
    if (ceiling) {
        ceiling &= ~(size - 1);
        if (!ceiling)
            return 0;
    }
    return !(end - 1 > ceiling - 1);
}

/* free_pmd_range() (level 3: e points to a PMD table) and free_pud_range() (level 2:
 * a PUD table) over [addr, end): the tables below first (free_pte_range() frees a PTE
 * table outright), then the table itself when what it maps lies in [floor, ceiling).
 * Four-level paging: the P4D is the PGD entry, which p4d_clear() clears. */
static void free_range(struct fp_kernel *k, struct fp_mm *mm, uint64_t *e, int level,
                       uint64_t addr, uint64_t end, uint64_t floor, uint64_t ceiling)
{
    uint64_t start = addr, *t = fp_table(k, fp_entry_addr(*e));
    do {
        uint64_t next = span_end(addr, end, level);
        uint64_t *c = &t[fp_index(addr, level)];
        if (table_entry(*c)) {
            if (level == 3)
                free_table_at(k, mm, c);
            else
                free_range(k, mm, c, level + 1, addr, next, floor, ceiling);
        }
        addr = next;
    } while (addr != end);
    if (table_within(start, end, floor, ceiling, 1ULL << (12 + 9 * (5 - level))))
        free_table_at(k, mm, e);
}

/* free_pgd_range(): the page tables of [addr, end) that map nothing outside
 * [floor, ceiling) (the ends of the neighbouring VMAs; ceiling 0 is the top): a PTE
 * table whose 2 MiB lie there, a PMD table whose 1 GiB do, a PUD table whose
 * 512 GiB do. The PGD stays. */
int32_t fp_free_pgd_range(struct fp_kernel *k, uint32_t id, uint64_t addr, uint64_t end,
                          uint64_t floor, uint64_t ceiling)
{
    struct fp_mm *mm = get_mm(k, id);
    const uint64_t pmd_size = 1ULL << 21, pmd_mask = ~(pmd_size - 1);
    if (!mm)
        return -ESRCH;
    addr &= pmd_mask;
    if (addr < floor) {
        addr += pmd_size;
        if (!addr)
            return 0;
    }
    if (ceiling) {
        ceiling &= pmd_mask;
        if (!ceiling)
            return 0;
    }
    if (end - 1 > ceiling - 1)
        end -= pmd_size;
    if (addr > end - 1 || !mm->pgd)
        return 0;
    uint64_t *pgd = fp_table(k, mm->pgd);
    do {
        uint64_t next = span_end(addr, end, 1);
        uint64_t *e = &pgd[fp_index(addr, 1)];
        if (table_entry(*e))
            free_range(k, mm, e, 2, addr, next, floor, ceiling);
        addr = next;
    } while (addr != end);
    return 0;
}

void fp_mm_destroy(struct fp_kernel *k, uint32_t id)
{
    struct fp_mm *mm = get_mm(k, id);
    if (!mm)
        return;
    if (mm->vm) /* the VM goes with its QEMU process */
        fp_vm_destroy(k, mm->vm - 1);
    if (mm->pgd) { /* exit_mmap(): unmap_vmas() and free_pgtables() over everything */
        zap_level(k, mm, mm->pgd, 1, 0, 0, 1ULL << 48);
        fp_free_pgd_range(k, id, 0, 1ULL << 48, 0, 0);
        fp_table_free(k, mm->pgd);
    }
    k->mms[id] = NULL;
    free(mm);
}
