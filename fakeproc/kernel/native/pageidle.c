/*
 * The later upstream page interfaces (INTERFACES.md 6): /proc/PID/pagemap,
 * /proc/kpageflags, /proc/kpagecount and /sys/kernel/mm/page_idle/bitmap.
 * Linux: fs/proc/task_mmu.c (pagemap_pmd_range), fs/proc/page.c (stable_page_flags,
 * kpagecount_read), mm/page_idle.c (page_idle_bitmap_read/write,
 * page_idle_clear_pte_refs).
 */
#include <errno.h>
#include "internal.h"

#define PM_PFRAME_MASK   ((1ULL << 55) - 1)
#define PM_SOFT_DIRTY    (1ULL << 55)
#define PM_MMAP_EXCLUSIVE (1ULL << 56)
#define PM_FILE          (1ULL << 61)
#define PM_SWAP          (1ULL << 62)
#define PM_PRESENT       (1ULL << 63)

/* /proc/PID/pagemap: present pages show their PFN to a reader with CAP_SYS_ADMIN
 * (show_pfn; 0 to others, pagemap_read()'s pm.show_pfn), swap entries the swap bit
 * with the slot's type (0) and offset, to every reader (as in 4.20). PM_SOFT_DIRTY:
 * every address of a VMA with VM_SOFTDIRTY (a new VMA has it, CONFIG_MEM_SOFT_DIRTY:
 * pagemap_pte_hole and pte_to_pagemap_entry), and a soft-dirty entry; outside 0.
 * [vvar] is VM_PFNMAP, which the walk skips as a hole (walk_page_test); a [vdso]
 * page is a kernel page, not anonymous: PM_FILE. vmas: the mm's VMAs in order. */
int32_t fp_pagemap(struct fp_kernel *k, uint32_t id, const struct fp_move_vma *vmas,
                   uint32_t nr_vmas, uint64_t addr, uint64_t n, int32_t show_pfn, uint64_t *out)
{
    const struct fp_mm *mm = id < FP_MAX_MMS ? k->mms[id] : NULL;
    if (!mm)
        return -ESRCH;
    uint32_t vi = 0;
    for (uint64_t i = 0; i < n; i++, addr += FP_PAGE_SIZE) {
        while (vi < nr_vmas && vmas[vi].end <= addr)
            vi++;
        const struct fp_move_vma *vma = vi < nr_vmas && vmas[vi].start <= addr ? &vmas[vi] : NULL;
        uint64_t vma_sd = vma && vma->soft_dirty ? PM_SOFT_DIRTY : 0, v = vma_sd, table = mm->pgd;
        if (vma && vma->kind == FP_MV_VVAR)
            table = 0;
        for (int l = 1; table && l <= 4; l++) {
            uint64_t e = fp_table(k, table)[fp_index(addr, l)];
            if (!e)
                break;
            if (!fp_entry_present(e)) {
                if (fp_is_swap(e)) /* swp_type | swp_offset << MAX_SWAPFILES_SHIFT (root) */
                    v = PM_SWAP | vma_sd | (e & FP_PAGE_SOFT_DIRTY ? PM_SOFT_DIRTY : 0) |
                        (fp_entry_addr(e) << FP_SWP_TYPE_SHIFT);
                break;
            }
            if (l == 4 || (e & FP_PAGE_PSE)) {
                uint64_t pfn = fp_entry_addr(e) + (l == 3 ? (addr >> FP_PAGE_SHIFT) % FP_PAGES_PER_HUGE : 0);
                v = PM_PRESENT | vma_sd | (e & FP_PAGE_SOFT_DIRTY ? PM_SOFT_DIRTY : 0) |
                    (show_pfn ? pfn & PM_PFRAME_MASK : 0);
                if (pfn < k->nr_pfns) {
                    const struct fp_page *p = &k->pages[fp_entry_addr(e)];
                    if (!(p->flags & FP_PG_ANON))
                        v |= PM_FILE;
                    if (p->mapcount == 1)
                        v |= PM_MMAP_EXCLUSIVE;
                } else if (vma && vma->kind == FP_MV_VDSO) {
                    v |= PM_FILE; /* mapped by every process: never exclusive */
                } /* the zero pages: no page to _vm_normal_page(), no PM_FILE either */
                break;
            }
            table = fp_entry_addr(e);
        }
        out[i] = v;
    }
    return 0;
}

/* include/uapi/linux/kernel-page-flags.h */
enum { KPF_REFERENCED = 2, KPF_UPTODATE = 3, KPF_DIRTY = 4, KPF_LRU = 5, KPF_ACTIVE = 6, KPF_BUDDY = 10,
       KPF_MMAP = 11,
       KPF_ANON = 12, KPF_SWAPBACKED = 14, KPF_COMPOUND_HEAD = 15, KPF_COMPOUND_TAIL = 16,
       KPF_NOPAGE = 20, KPF_THP = 22, KPF_ZERO_PAGE = 24, KPF_IDLE = 25, KPF_PGTABLE = 26,
       KPF_RESERVED = 32 };

static int block_split(const struct fp_node *node, uint64_t block)
{
    return node->split_blocks[block / 64] >> (block % 64) & 1;
}

/* PageBuddy(): the first page of each free buddy chunk. Each free 4 KiB page of a
 * split block is a chunk of order 0 (split blocks never merge); a whole free 2 MiB
 * block is one of order 9, or with its buddy block (PFN ^ 512), when that one is
 * whole and free in the same node too, half of one of order 10 (MAX_ORDER 11 on
 * x86_64), marked on the lower half only. No per-CPU lists hold free pages back. */
static int buddy_chunk_head(const struct fp_kernel *k, uint64_t pfn)
{
    const struct fp_node *node = &k->nodes[fp_pfn_to_node(k, pfn)];
    uint64_t block = (pfn - node->start_pfn) / FP_PAGES_PER_HUGE;
    if (block_split(node, block))
        return 1;
    if (pfn % FP_PAGES_PER_HUGE)
        return 0;
    uint64_t buddy = pfn ^ FP_PAGES_PER_HUGE; /* the other half of its 4 MiB */
    if (buddy < node->start_pfn || buddy >= node->start_pfn + node->nr_pages ||
        block_split(node, (buddy - node->start_pfn) / FP_PAGES_PER_HUGE) ||
        (k->pages[buddy].flags & FP_PG_ALLOCATED))
        return 1; /* no free buddy: an order-9 chunk of its own */
    return pfn < buddy;
}

/* stable_page_flags() of a frame past the RAM: the zero page is a reserved page of the
 * kernel image (is_zero_pfn()); the huge zero page, once allocated, a compound page
 * off the LRU, not anonymous (is_huge_zero_page(): ZERO_PAGE and THP); the rest,
 * device DAX included, no page */
static uint64_t kpageflags_past_ram(const struct fp_kernel *k, uint64_t pfn)
{
    if (pfn == k->zero_pfn)
        return (1ULL << KPF_ZERO_PAGE) | (1ULL << KPF_RESERVED);
    if (k->huge_zero_used && pfn - k->huge_zero_pfn < FP_PAGES_PER_HUGE)
        return (1ULL << (pfn == k->huge_zero_pfn ? KPF_COMPOUND_HEAD : KPF_COMPOUND_TAIL)) |
               (1ULL << KPF_THP) | (1ULL << KPF_ZERO_PAGE);
    return 1ULL << KPF_NOPAGE;
}

void fp_kpageflags(struct fp_kernel *k, uint64_t pfn, uint64_t n, uint64_t *out)
{
    for (uint64_t i = 0; i < n; i++, pfn++) {
        if (pfn >= k->nr_pfns) {
            out[i] = kpageflags_past_ram(k, pfn);
            continue;
        }
        if (!pfn) { /* reserved at boot */
            out[i] = 1ULL << KPF_RESERVED;
            continue;
        }
        const struct fp_page *p = &k->pages[pfn];
        const struct fp_page *head = p;
        if (p->flags & FP_PG_TAIL)
            head = &k->pages[pfn & ~(uint64_t)(FP_PAGES_PER_HUGE - 1)];
        uint64_t f = 0;
        uint16_t h = head->flags;
        if (!(p->flags & FP_PG_ALLOCATED)) {
            /* PageBuddy() on a chunk's first page, is_free_buddy_page() (4.5+) on
             * the rest: every free page (no per-CPU lists hold one back) */
            out[i] = 1ULL << KPF_BUDDY;
            continue;
        }
        if (p->flags & FP_PG_TAIL) {
            /* stable_page_flags() copies the tail's own page->flags, which hold none
             * of the head's; page_mapped() and PageAnon() look at the compound page */
            f = (1ULL << KPF_COMPOUND_TAIL) | (1ULL << KPF_THP);
            if (head->mapcount)
                f |= 1ULL << KPF_MMAP;
            if (h & FP_PG_ANON)
                f |= 1ULL << KPF_ANON;
            out[i] = f;
            continue;
        }
        if (head->mapcount)
            f |= 1ULL << KPF_MMAP;
        if (h & FP_PG_REFERENCED)
            f |= 1ULL << KPF_REFERENCED;
        if (h & FP_PG_DIRTY)
            f |= 1ULL << KPF_DIRTY;
        if (h & FP_PG_LRU)
            f |= 1ULL << KPF_LRU;
        if (h & FP_PG_ACTIVE)
            f |= 1ULL << KPF_ACTIVE;
        if (h & FP_PG_ANON)
            f |= 1ULL << KPF_ANON;
        if (h & FP_PG_SWAPBACKED)
            f |= 1ULL << KPF_SWAPBACKED;
        if (p->flags & FP_PG_HEAD)
            f |= (1ULL << KPF_COMPOUND_HEAD) | (1ULL << KPF_THP);
        if (h & FP_PG_IDLE)
            f |= 1ULL << KPF_IDLE;
        if (h & FP_PG_TABLE)
            f |= 1ULL << KPF_PGTABLE;
        else if (!((h & FP_PG_UNEVICTABLE) && !head->mapcount && !(h & FP_PG_LRU)))
            f |= 1ULL << KPF_UPTODATE; /* anon, page cache and shmem are read or zeroed first */
        /* (an upper-level or EPT table is a plain kernel page: no flag) */
        out[i] = f;
    }
}

/* page_mapcount() of a free buddy chunk's first page and of a PTE table: 4.20 keeps
 * page_type in _mapcount's place, -1 (no type) with the type's bit cleared
 * (PG_buddy 0x80, PG_table 0x400), so _mapcount + 1 reads -128 and -1024 */
#define FP_BUDDY_MAPCOUNT (-128)
#define FP_TABLE_MAPCOUNT (-1024)

/* /proc/kpagecount: kpagecount_read() puts page_mapcount() of each PFN's page, as a
 * u64, skipping only PageSlab pages (4.20 has no page_has_type() check there, so a
 * typed page's negative count shows). A THP's pages, head and tails, each count the
 * PMDs that map it (__page_mapcount(): the subpage's own count, 0, plus the compound
 * one); the PGD, PUD, PMD and EPT pages are untyped kernel pages: 0; past the RAM:
 * no page, 0. */
void fp_kpagecount(struct fp_kernel *k, uint64_t pfn, uint64_t n, uint64_t *out)
{
    for (uint64_t i = 0; i < n; i++, pfn++) {
        int64_t c = 0;
        if (pfn < k->nr_pfns) {
            const struct fp_page *p = &k->pages[pfn];
            if (!(p->flags & FP_PG_ALLOCATED))
                c = buddy_chunk_head(k, pfn) ? FP_BUDDY_MAPCOUNT : 0;
            else if (p->flags & FP_PG_TABLE)
                c = FP_TABLE_MAPCOUNT;
            else if (p->flags & FP_PG_TAIL)
                c = k->pages[pfn & ~(uint64_t)(FP_PAGES_PER_HUGE - 1)].mapcount;
            else
                c = p->mapcount;
        }
        out[i] = (uint64_t)c;
    }
}

/* page_idle_clear_pte_refs_one(): ptep_clear_young_notify(), so the guest's EPT
 * accessed bits of a VM's memory count and are cleared too (kvm_age_hva) */
static void clear_young(struct fp_kernel *k, struct fp_mm *mm, uint64_t *e, uint64_t addr,
                        void *arg)
{
    *(int *)arg |= fp_clear_young_notify(k, mm, e, addr);
}

/* page_idle_get_page(): LRU pages only (a THP by its head) */
static struct fp_page *idle_page(struct fp_kernel *k, uint64_t pfn)
{
    if (pfn >= k->nr_pfns)
        return NULL;
    struct fp_page *p = &k->pages[pfn];
    if (!(p->flags & FP_PG_ALLOCATED) || !(p->flags & FP_PG_LRU) || (p->flags & FP_PG_TAIL))
        return NULL;
    return p;
}

/* page_idle_clear_pte_refs(): an access found since the page was marked ends the
 * mark; the accessed bit taken away is kept as PG_young for reclaim */
static void clear_refs(struct fp_kernel *k, uint64_t pfn, struct fp_page *p)
{
    int young = 0;
    fp_rmap_walk(k, pfn, clear_young, &young);
    if (young)
        p->flags = (uint16_t)((p->flags & ~FP_PG_IDLE) | FP_PG_YOUNG);
}

/* page_idle_bitmap_read(): only a page marked idle has its references looked at */
void fp_page_idle_read(struct fp_kernel *k, uint64_t pfn, uint64_t nwords, uint64_t *out)
{
    for (uint64_t w = 0; w < nwords; w++) {
        uint64_t word = 0;
        for (int b = 0; b < 64; b++) {
            uint64_t q = pfn + w * 64 + (uint64_t)b;
            struct fp_page *p = idle_page(k, q);
            if (!p || !(p->flags & FP_PG_IDLE))
                continue;
            clear_refs(k, q, p);
            if (p->flags & FP_PG_IDLE)
                word |= 1ULL << b;
        }
        out[w] = word;
    }
}

/* page_idle_bitmap_write(): clear the references, then mark idle */
void fp_page_idle_write(struct fp_kernel *k, uint64_t pfn, uint64_t nwords, const uint64_t *in)
{
    for (uint64_t w = 0; w < nwords; w++)
        for (int b = 0; b < 64; b++)
            if (in[w] >> b & 1) {
                uint64_t q = pfn + w * 64 + (uint64_t)b;
                struct fp_page *p = idle_page(k, q);
                if (p) {
                    clear_refs(k, q, p);
                    p->flags |= FP_PG_IDLE;
                }
            }
}
