/* Declarations shared between the C sources but not exported to Python. */
#ifndef FAKEPROC_INTERNAL_H
#define FAKEPROC_INTERNAL_H
#include "fakeproc.h"

#define FP_PAGE_SHIFT 12
#define FP_PAGE_SIZE  4096ULL
#define FP_PMD_SIZE   (1ULL << 21)
#define FP_PUD_SIZE   (1ULL << 30)
#define FP_PGD_SIZE   (1ULL << 39)
#define FP_TASK_SIZE  0x00007ffffffff000ULL
#define FP_ADDR_MASK  0x000ffffffffff000ULL
#define FP_TABLE_BITS (FP_PAGE_PRESENT | FP_PAGE_RW | FP_PAGE_USER | FP_PAGE_ACCESSED | FP_PAGE_DIRTY)

/* Ground truth of one PFN. Both counts move on every touch, so they share a record:
 * one cache miss, not two. Aligned to 8 bytes: a packed 6-byte record straddles
 * lines and made big uniform workloads a quarter slower. */
struct fp_truth {
    uint32_t access;       /* CPU accesses since the last reset */
    uint16_t window;       /* the same per recorder window (saturating), see fp_oracle() */
} __attribute__((aligned(8)));

static inline uint64_t fp_entry_addr(uint64_t e) { return (e & FP_ADDR_MASK) >> FP_PAGE_SHIFT; }
static inline int fp_entry_none(uint64_t e) { return e == 0; }
/* pte_present()/pmd_present() of x86: PROT_NONE entries count as present */
static inline int fp_entry_present(uint64_t e)
{
    return (e & (FP_PAGE_PRESENT | FP_PAGE_PROTNONE)) && !(e & FP_PAGE_SWPENTRY);
}
static inline uint64_t *fp_table(const struct fp_kernel *k, uint64_t index)
{
    return k->tables + index * FP_PTRS_PER_TABLE;
}
static inline unsigned fp_index(uint64_t addr, int level)
{
    /* level 1 = PGD (bits 39-47), 2 = PUD, 3 = PMD, 4 = PTE */
    return (unsigned)((addr >> (12 + 9 * (4 - level))) & 511);
}

/* The page flags a migrated page keeps, and those a THP's tails take from its head
 * when it is split (__split_huge_page_tail(); the page_ext idle/young bits too). */
#define FP_MIGRATE_KEEP (FP_PG_ANON | FP_PG_SWAPBACKED | FP_PG_ACTIVE | FP_PG_REFERENCED | \
                         FP_PG_DIRTY | FP_PG_EXECMAP | FP_PG_PINNED | FP_PG_IDLE | FP_PG_YOUNG)
#define FP_SPLIT_KEEP ((FP_MIGRATE_KEEP & ~FP_PG_PINNED) | FP_PG_UNEVICTABLE)

/* A 2 MiB block of node n now holds 4 KiB pages: freed, they are order-0 buddies
 * (blocks never merge back). */
static inline void fp_mark_block_split(struct fp_node *n, uint64_t pfn)
{
    uint64_t block = (pfn - n->start_pfn) / FP_PAGES_PER_HUGE;
    n->split_blocks[block / 64] |= 1ULL << (block % 64);
}

/* A swap entry (not a migration entry) and its slot (swapfile.c). */
static inline int fp_is_swap(uint64_t e)
{
    return (e & FP_PAGE_SWPENTRY) && (e & FP_SWP_SWAP);
}
static inline uint64_t fp_swp_entry(uint64_t off)
{
    return FP_PAGE_SWPENTRY | FP_SWP_SWAP | (off << FP_PAGE_SHIFT);
}
int64_t fp_alloc_in_order(struct fp_kernel *k, int32_t local, const int16_t *order, int n,
                          int32_t preferred, int huge, int32_t *nid);
int64_t fp_migrate_list(struct fp_kernel *k, uint64_t *list, uint64_t n, int32_t dst,
                        int32_t caller, int32_t reason, uint64_t *moved);
int fp_split_huge_page(struct fp_kernel *k, uint64_t pfn, uint64_t *tails);
int64_t fp_swap_alloc(struct fp_kernel *k);
void fp_swap_duplicate(struct fp_kernel *k, uint64_t off);
void fp_swap_free(struct fp_kernel *k, uint64_t off);
uint32_t fp_swap_count(const struct fp_kernel *k, uint64_t off);

/* What a fault or set-up maps: page cache, an anonymous page, shmem, a kernel frame. */
enum fp_kind { FP_KIND_FILE, FP_KIND_ANON, FP_KIND_SHMEM, FP_KIND_SPECIAL };

static inline enum fp_kind fp_page_kind(uint32_t vma_flags, int write)
{
    if (vma_flags & FP_VMA_SPECIAL)
        return FP_KIND_SPECIAL;
    if (vma_flags & FP_VMA_SHMEM)
        return FP_KIND_SHMEM;
    if ((vma_flags & FP_VMA_ANON) || ((vma_flags & FP_VMA_COW) && write))
        return FP_KIND_ANON;
    return FP_KIND_FILE;
}

/* the node index holding pfn, -1 outside node RAM (nodes are contiguous, in order) */
static inline int32_t fp_pfn_to_node(const struct fp_kernel *k, uint64_t pfn)
{
    for (int n = 0; n < k->nr_nodes; n++)
        if (pfn < k->nodes[n].start_pfn + k->nodes[n].nr_pages)
            return pfn >= k->nodes[n].start_pfn ? n : -1;
    return -1;
}

/* A [vdso] page: a kernel-image frame outside node RAM mapped by a normal PTE, which
 * vm_normal_page() finds, so it counts in MM_FILEPAGES (RssFile) and in smaps (not a
 * [vvar] PFN-map entry, which is special, nor a DAX leaf above the PTE level). */
static inline int fp_kernel_page(const struct fp_kernel *k, uint64_t e)
{
    return fp_entry_present(e) && !(e & (FP_PAGE_SPECIAL | FP_PAGE_PSE)) &&
           fp_pfn_to_node(k, fp_entry_addr(e)) < 0;
}

/* A present entry mapping the zero page or the huge zero page (is_zero_pfn(),
 * is_huge_zero_pmd()): no struct page here, no rmap, no RSS, not on an LRU. */
static inline int fp_zero_entry(const struct fp_kernel *k, uint64_t e)
{
    uint64_t pfn = fp_entry_addr(e);
    return fp_entry_present(e) && (pfn == k->zero_pfn || pfn == k->huge_zero_pfn);
}

static inline uint64_t fp_page_nr(const struct fp_page *p)
{
    return (p->flags & FP_PG_HEAD) ? FP_PAGES_PER_HUGE : 1;
}

/* One access in a PFN's truth record. */
static inline void fp_truth_count(struct fp_truth *t)
{
    t->access++;
    if (t->window != 65535)
        t->window++;
}

/* Count one access to base page pfn; returns the node index that holds it
 * (FP_NO_NODE for device or special frames). */
static inline int32_t fp_count_pfn(struct fp_kernel *k, uint64_t pfn)
{
    if (pfn >= k->nr_pfns)
        return FP_NO_NODE;
    fp_truth_count(&k->truth[pfn]);
    int32_t nid = fp_pfn_to_node(k, pfn);
    return nid < 0 ? FP_NO_NODE : nid;
}

/* Count one access to the base page of leaf entry e that maps addr; returns the
 * node index that holds it (FP_NO_NODE for device or special frames). */
static inline int32_t fp_count_access(struct fp_kernel *k, uint64_t e, uint64_t addr, int huge)
{
    return fp_count_pfn(k, fp_entry_addr(e) + (huge ? (addr >> FP_PAGE_SHIFT) % FP_PAGES_PER_HUGE : 0));
}

/* The reverse map of struct fp_page: an arena index of an entry, its table's
 * owner and base address (fp_mm_table_new records them). */
static inline uint64_t fp_entry_index(const struct fp_kernel *k, const uint64_t *e)
{
    return (uint64_t)(e - k->tables);
}
static inline int fp_entry_level(const struct fp_kernel *k, uint64_t idx)
{
    return (int)(k->table_base[idx / FP_PTRS_PER_TABLE] & 7);
}
/* the virtual address the entry at arena index idx maps */
static inline uint64_t fp_entry_vaddr(const struct fp_kernel *k, uint64_t idx)
{
    uint64_t base = k->table_base[idx / FP_PTRS_PER_TABLE];
    int level = (int)(base & 7);
    return (base & ~(uint64_t)0xfff) + ((idx % FP_PTRS_PER_TABLE) << (12 + 9 * (4 - level)));
}
static inline uint32_t fp_page_owner(const struct fp_kernel *k, const struct fp_page *p)
{
    return k->table_mm[p->pte / FP_PTRS_PER_TABLE];
}
static inline uint64_t fp_page_vaddr(const struct fp_kernel *k, const struct fp_page *p)
{
    return fp_entry_vaddr(k, p->pte);
}

/* lru.c: list membership and the per-node LRU counters move together */
int fp_page_lru(const struct fp_page *p);
void fp_lru_add(struct fp_kernel *k, uint64_t pfn, int lru);
void fp_lru_del(struct fp_kernel *k, uint64_t pfn);
void fp_lru_add_after(struct fp_kernel *k, uint64_t pfn, int lru, uint32_t prev);
void fp_page_kind_add(uint64_t *st, const struct fp_page *p, int sign);
void fp_node_account(struct fp_kernel *k, uint64_t pfn, int sign);

/* memory.c */
void fp_count_alloc(struct fp_kernel *k, int32_t local, int32_t preferred, int32_t nid);
void fp_page_remove_rmap(struct fp_kernel *k, struct fp_mm *mm, uint64_t pfn, uint64_t addr);

/* rmap.c: every mapper of a page */
int fp_rmap_add(struct fp_kernel *k, uint64_t pfn, uint32_t mm, uint64_t addr);
void fp_rmap_del(struct fp_kernel *k, uint64_t pfn, uint32_t mm, uint64_t addr);
typedef void (*fp_rmap_fn)(struct fp_kernel *k, struct fp_mm *mm, uint64_t *e, uint64_t addr,
                           void *arg);
int fp_rmap_walk(struct fp_kernel *k, uint64_t pfn, fp_rmap_fn fn, void *arg);
int64_t fp_mm_table_new(struct fp_kernel *k, struct fp_mm *mm, uint64_t addr, int level);
int64_t fp_split_pmd(struct fp_kernel *k, struct fp_mm *mm, uint64_t *pmd);
int64_t fp_split_huge_zero_pmd(struct fp_kernel *k, struct fp_mm *mm, uint64_t *pmd);
int fp_has_deposit(struct fp_kernel *k, const uint64_t *pmd);
int fp_rmap_reserve(struct fp_kernel *k, uint64_t chains, uint64_t entries);
int64_t fp_withdraw_table(struct fp_kernel *k, const uint64_t *pmd);
uint64_t *fp_mm_walk(struct fp_kernel *k, const struct fp_mm *mm, uint64_t addr, int32_t *level);
uint64_t *fp_mm_leaf(struct fp_kernel *k, const struct fp_mm *mm, uint64_t addr, int *level);
int fp_rmap_is_mapper(const struct fp_kernel *k, uint64_t pfn, uint32_t mm, uint64_t addr);
int fp_rmap_move_room(struct fp_kernel *k, uint64_t pfn, uint64_t new_pfn);
void fp_rmap_move(struct fp_kernel *k, uint64_t pfn, uint64_t new_pfn);
void fp_rmap_heads_free(struct fp_kernel *k);
void fp_rmap_add_first(struct fp_kernel *k, uint64_t pfn, const uint64_t *entry);
uint64_t fp_rmap_index_bytes(const struct fp_kernel *k);
uint64_t fp_rmap_check(const struct fp_kernel *k, char *msg, size_t len);
int64_t fp_table_alloc(struct fp_kernel *k, const struct fp_mm *mm, int pte_table);
uint64_t *fp_rmap_entry(struct fp_kernel *k, const struct fp_page *p, int *level);
void fp_table_free(struct fp_kernel *k, uint64_t idx);

/* pagewalk.c: call leaf(k, entry, addr, nr, arg) for every present leaf in [start, end) */
typedef void (*fp_leaf_fn)(struct fp_kernel *k, uint64_t *e, uint64_t addr, uint64_t nr, void *arg);
int fp_walk_leaves(struct fp_kernel *k, uint32_t id, uint64_t start, uint64_t end, fp_leaf_fn leaf,
                   void *arg);

int32_t fp_tlb_miss(struct fp_kernel *k, struct fp_tlb_entry *tlb, uint32_t id, uint64_t addr,
                    uint32_t flags);

/* *e |= bits, without the store when they are set already: a store dirties the
 * cache line, and writing back lines of hot PTEs costs memory bandwidth. */
static inline void fp_set_bits(uint64_t *e, uint64_t bits)
{
    if ((*e & bits) != bits)
        *e |= bits;
}

/* A touch through a software TLB entry t (the workload's entry for addr, or one its
 * pipelined loop filled ahead), inlined into the workload loop: the PFN of the base
 * page accessed (not counted yet: fp_count_pfn()), or -1 for a miss (nothing
 * changed; take fp_tlb_miss()).
 * A hit skips the PGD and PUD levels: their accessed bits were set by the walk that
 * filled the entry and only fp_set_table_bits() clears them, which flushes
 * (tlb_gen). The PMD and the PTE are read and marked exactly as fp_touch() marks
 * them; anything else (not present, write-protected, a changed PMD) is a miss.
 * tables and gen are k->tables and k->tlb_gen: the workload loop passes its copies
 * in registers (the stores here could alias k's fields, so k's would be reloaded). */
static inline __attribute__((always_inline)) int64_t
fp_tlb_hit_pfn(uint64_t *tables, uint64_t gen, const struct fp_tlb_entry *t, uint64_t addr,
               int write)
{
    if (t->tag != (addr >> 21) + 1 || t->gen != gen)
        return -1;
    uint64_t set = FP_PAGE_ACCESSED | (write ? FP_PAGE_DIRTY : 0);
    uint64_t *pmd = &tables[t->pmd], pe = *pmd;
    uint64_t kind = pe & (FP_PAGE_PRESENT | FP_PAGE_PSE);
    if (kind == (FP_PAGE_PRESENT | FP_PAGE_PSE) && !t->pte_table && (!write || (pe & FP_PAGE_RW))) {
        fp_set_bits(pmd, set);
        return (int64_t)(fp_entry_addr(pe) + (addr >> FP_PAGE_SHIFT) % FP_PAGES_PER_HUGE);
    }
    if (kind == FP_PAGE_PRESENT && fp_entry_addr(pe) == t->pte_table) {
        uint64_t *e = &tables[t->pte_table * FP_PTRS_PER_TABLE + fp_index(addr, 4)];
        if ((*e & FP_PAGE_PRESENT) && (!write || (*e & FP_PAGE_RW))) {
            fp_set_bits(pmd, FP_PAGE_ACCESSED);
            fp_set_bits(e, set);
            return (int64_t)fp_entry_addr(*e);
        }
    }
    return -1;
}

void fp_numa_hint(struct fp_kernel *k, struct fp_mm *mm, uint64_t addr);

/* kvm.c: the MMU notifier side of KVM, called when host mappings change */
void fp_kvm_unmap_hva(struct fp_kernel *k, const struct fp_mm *mm, uint64_t hva, uint64_t nr);
int fp_kvm_test_age_hva(struct fp_kernel *k, const struct fp_mm *mm, uint64_t hva, uint64_t nr);
/* ptep_clear_flush_young_notify(): test-and-clear the accessed bit of entry e (mapping
 * addr in mm) and, through the MMU notifier, the guest's EPT bits of that memory */
int fp_clear_young_notify(struct fp_kernel *k, const struct fp_mm *mm, uint64_t *e, uint64_t addr);
const struct fp_memslot *fp_vm_slot_of_hva(const struct fp_vm *vm, uint64_t hva);
uint64_t fp_vm_next_slot_hva(const struct fp_vm *vm, uint64_t hva);

#define FP_EPT_PRESENT  (FP_EPT_R | FP_EPT_W | FP_EPT_X)
static inline int fp_ept_present(uint64_t e) { return (e & FP_EPT_PRESENT) != 0; }
int64_t fp_alloc_page(struct fp_kernel *k, int32_t nid, int32_t huge);
void fp_free_page(struct fp_kernel *k, uint64_t pfn);
/* update_page_reclaim_stat() as lru_cache_add() and putback_lru_page() count a page
 * (re)entering an LRU list: scanned, and rotated when it enters an active list */
static inline void fp_reclaim_stat_add(struct fp_kernel *k, uint64_t pfn)
{
    const struct fp_page *p = &k->pages[pfn];
    struct fp_node *n = &k->nodes[fp_pfn_to_node(k, pfn)];
    int file = !(p->flags & FP_PG_SWAPBACKED);
    uint64_t nr = fp_page_nr(p);
    n->recent_scanned[file] += nr;
    if (p->flags & FP_PG_ACTIVE)
        n->recent_rotated[file] += nr;
}

#endif
