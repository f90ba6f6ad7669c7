/*
 * Physical memory: the PFN-indexed page array and per-node free lists.
 * Linux: mm/page_alloc.c, reduced to what the emulation needs.
 *
 * Each node owns a contiguous PFN range made of 2 MiB blocks.  A block is
 * either free and whole (on free_blocks, usable for a THP) or split into
 * 4 KiB pages.  Free 4 KiB pages are chained through their own struct page
 * (lru_next, as the kernel's buddy lists use page->lru), so the free list costs
 * no memory of its own.  Split blocks are not merged back: the emulated kernel
 * has no compaction.  Both lists pop the lowest address first, so allocation
 * order is deterministic.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "fakeproc.h"
#include "internal.h"

static void *zalloc_big(size_t bytes)
{
    /* untouched pages of a large anonymous mapping cost nothing */
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    /* random accesses over GiBs of page tables and page metadata: with 4 KiB host
     * pages nearly every access also misses the host TLB. Best effort. */
    if (bytes >= (2u << 20))
        madvise(p, bytes, MADV_HUGEPAGE);
    return p;
}

static void free_big(void *p, size_t bytes)
{
    if (p)
        munmap(p, bytes ? bytes : 1);
}

struct fp_kernel *fp_kernel_new(int32_t nr_nodes, const uint64_t *node_pages,
                                uint64_t max_tables)
{
    /* struct fp_page's reverse map is a 32-bit arena index */
    if (nr_nodes <= 0 || nr_nodes > FP_MAX_NODES || max_tables < 2 ||
        max_tables > (1ULL << 32) / FP_PTRS_PER_TABLE)
        return NULL;
    struct fp_kernel *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    uint64_t pfn = 0;
    for (int n = 0; n < nr_nodes; n++) {
        if (node_pages[n] % FP_PAGES_PER_HUGE)
            goto fail;
        pfn += node_pages[n];
    }
    k->nr_pfns = pfn;
    k->wl_pipeline_pages = FP_WL_PIPELINE_PAGES;
    k->device_pfn = pfn + FP_PAGES_PER_HUGE * FP_PTRS_PER_TABLE; /* a gap, then DAX */
    k->zero_pfn = pfn + 1;  /* in the gap past the RAM; not at max_pfn itself, where
                             * /proc/kpageflags' read is cut to nothing */
    k->huge_zero_pfn = pfn + FP_PAGES_PER_HUGE;     /* 2 MiB aligned: the RAM is */
    k->pages = zalloc_big(pfn * sizeof(struct fp_page));
    k->truth = zalloc_big(pfn * sizeof(struct fp_truth));
    k->tables_cap = max_tables;
    k->tables = zalloc_big(max_tables * FP_PTRS_PER_TABLE * sizeof(uint64_t));
    k->free_tables_cap = max_tables;
    k->free_tables = zalloc_big(max_tables * sizeof(uint64_t));
    k->table_pfn = zalloc_big(max_tables * sizeof(uint64_t));
    k->table_base = zalloc_big(max_tables * sizeof(uint64_t));
    k->table_mm = zalloc_big(max_tables * sizeof(uint32_t));
    k->table_deposit = zalloc_big(max_tables * sizeof(uint64_t *));
    if (!k->pages || !k->truth || !k->tables || !k->free_tables ||
        !k->table_pfn || !k->table_base || !k->table_mm || !k->table_deposit)
        goto fail;
    k->tables_used = 1;
    k->nr_nodes = nr_nodes;
    pfn = 0;
    for (int n = 0; n < nr_nodes; n++) {
        struct fp_node *node = &k->nodes[n];
        uint64_t blocks = node_pages[n] / FP_PAGES_PER_HUGE;
        node->start_pfn = pfn;
        node->nr_pages = node_pages[n];
        node->free_blocks = zalloc_big(blocks * sizeof(uint32_t));
        node->split_blocks = zalloc_big((blocks / 64 + 1) * sizeof(uint64_t));
        node->free_head = FP_LRU_NONE;
        if (!node->free_blocks || !node->split_blocks)
            goto fail;
        for (uint64_t b = 0; b < blocks; b++)
            node->free_blocks[b] = (uint32_t)(blocks - 1 - b);
        node->nr_free_blocks = blocks;
        node->stat[FP_NR_FREE_PAGES] = node_pages[n];
        pfn += node_pages[n];
    }
    /* PFN 0, the BIOS's page, is reserved at boot on x86 (trim_low_memory_range()):
     * no task ever maps it, so a PFN of 0 keeps meaning "none" to the tools that read
     * pagemap (page-types skips it). It counts as used memory, as the kernel's own. */
    if (fp_alloc_page(k, 0, 0) != 0)
        goto fail;
    k->pages[0].flags |= FP_PG_UNEVICTABLE;
    k->events[FP_EV_PGALLOC_NORMAL] = 0;
    return k;
fail:
    fp_kernel_free(k);
    return NULL;
}

void fp_kernel_free(struct fp_kernel *k)
{
    if (!k)
        return;
    for (uint32_t i = 0; i < FP_MAX_MMS; i++)
        if (k->mms[i])
            free(k->mms[i]);
    for (int n = 0; n < k->nr_nodes; n++) {
        struct fp_node *node = &k->nodes[n];
        free_big(node->free_blocks, node->nr_pages / FP_PAGES_PER_HUGE * sizeof(uint32_t));
        free_big(node->split_blocks, (node->nr_pages / FP_PAGES_PER_HUGE / 64 + 1) * sizeof(uint64_t));
    }
    free_big(k->pages, k->nr_pfns * sizeof(struct fp_page));
    free_big(k->truth, k->nr_pfns * sizeof(struct fp_truth));
    free(k->rmap_ext);
    fp_rmap_heads_free(k);
    free(k->swap_map);
    free_big(k->tables, k->tables_cap * FP_PTRS_PER_TABLE * sizeof(uint64_t));
    free_big(k->free_tables, k->free_tables_cap * sizeof(uint64_t));
    free_big(k->table_pfn, k->tables_cap * sizeof(uint64_t));
    free_big(k->table_base, k->tables_cap * sizeof(uint64_t));
    free_big(k->table_mm, k->tables_cap * sizeof(uint32_t));
    if (k->table_deposit)
        for (uint64_t t = 0; t < k->tables_used; t++)
            free(k->table_deposit[t]);
    free_big(k->table_deposit, k->tables_cap * sizeof(uint64_t *));
    free(k);
}

/* Take one 4 KiB page from node n; -1 when the node is full. */
static int64_t take_page(struct fp_kernel *k, struct fp_node *node)
{
    if (!node->nr_free_pages) {
        if (!node->nr_free_blocks)
            return -1;
        uint32_t block = node->free_blocks[--node->nr_free_blocks];
        uint32_t first = block * FP_PAGES_PER_HUGE;
        fp_mark_block_split(node, node->start_pfn + first);
        for (uint32_t i = 0; i < FP_PAGES_PER_HUGE; i++)
            k->pages[node->start_pfn + first + i].lru_next =
                i + 1 < FP_PAGES_PER_HUGE ? first + i + 1 : FP_LRU_NONE;
        node->free_head = first;
        node->nr_free_pages = FP_PAGES_PER_HUGE;
    }
    uint32_t off = node->free_head;
    node->free_head = k->pages[node->start_pfn + off].lru_next;
    node->nr_free_pages--;
    return (int64_t)(node->start_pfn + off);
}

int64_t fp_alloc_page(struct fp_kernel *k, int32_t nid, int32_t huge)
{
    struct fp_node *node = &k->nodes[nid];
    int64_t pfn;
    uint64_t nr = huge ? FP_PAGES_PER_HUGE : 1;
    if (huge) {
        if (!node->nr_free_blocks)
            return -1;
        pfn = (int64_t)(node->start_pfn +
                        (uint64_t)node->free_blocks[--node->nr_free_blocks] * FP_PAGES_PER_HUGE);
    } else {
        pfn = take_page(k, node);
        if (pfn < 0)
            return -1;
    }
    for (uint64_t i = 0; i < nr; i++) {
        struct fp_page *p = &k->pages[(uint64_t)pfn + i];
        memset(p, 0, sizeof(*p));
        p->flags = FP_PG_ALLOCATED | (huge ? (i ? FP_PG_TAIL : FP_PG_HEAD) : 0);
    }
    node->stat[FP_NR_FREE_PAGES] -= nr;
    k->events[FP_EV_PGALLOC_NORMAL] += nr;
    return pfn;
}

void fp_free_page(struct fp_kernel *k, uint64_t pfn)
{
    int32_t nid = fp_pfn_to_node(k, pfn);
    if (nid < 0)
        return; /* device memory is not ours to free */
    struct fp_node *node = &k->nodes[nid];
    int huge = k->pages[pfn].flags & FP_PG_HEAD;
    uint64_t nr = huge ? FP_PAGES_PER_HUGE : 1;
    memset(&k->pages[pfn], 0, nr * sizeof(struct fp_page)); /* free == all zero */
    memset(&k->truth[pfn], 0, nr * sizeof(struct fp_truth));
    if (huge)
        node->free_blocks[node->nr_free_blocks++] =
            (uint32_t)((pfn - node->start_pfn) / FP_PAGES_PER_HUGE);
    else {
        k->pages[pfn].lru_next = node->free_head;
        node->free_head = (uint32_t)(pfn - node->start_pfn);
        node->nr_free_pages++;
    }
    node->stat[FP_NR_FREE_PAGES] += nr;
    k->events[FP_EV_PGFREE] += nr;
}

uint64_t fp_count_mapped(struct fp_kernel *k, int32_t nid, uint16_t mask, uint16_t want)
{
    const struct fp_node *node = &k->nodes[nid];
    uint64_t n = 0;
    for (uint64_t pfn = node->start_pfn; pfn < node->start_pfn + node->nr_pages; pfn++) {
        const struct fp_page *p = &k->pages[pfn];
        if ((p->flags & FP_PG_ALLOCATED) && p->mapcount && (p->flags & mask) == want)
            n += (p->flags & FP_PG_HEAD) ? FP_PAGES_PER_HUGE : 1;
    }
    return n;
}

void fp_access_counts(struct fp_kernel *k, const uint64_t *pfns, uint64_t n, uint32_t *out,
                      int32_t reset)
{
    for (uint64_t i = 0; i < n; i++) {
        uint64_t pfn = pfns[i];
        out[i] = pfn < k->nr_pfns ? k->truth[pfn].access : 0;
        if (reset && pfn < k->nr_pfns)
            k->truth[pfn].access = 0;
    }
}

void fp_truth_read(const struct fp_kernel *k, uint64_t start, uint64_t n, uint32_t *access,
                   uint16_t *window)
{
    for (uint64_t i = 0; i < n && start + i < k->nr_pfns; i++) {
        access[i] = k->truth[start + i].access;
        window[i] = k->truth[start + i].window;
    }
}

/* What the emulated machine costs the host, from the allocator's own sizes: the
 * PFN-indexed arrays count whole (they are sized by the machine, not by use), the
 * table arena by the tables handed out (its high-water mark: untouched arena
 * costs nothing), the rest by capacity. */
void fp_mem_usage(const struct fp_kernel *k, struct fp_mem_usage *out)
{
    memset(out, 0, sizeof(*out));
    out->pages = k->nr_pfns * sizeof(struct fp_page);
    out->page_tables = k->tables_used * (FP_PTRS_PER_TABLE * sizeof(uint64_t) + 3 * sizeof(uint64_t) +
                                         sizeof(uint32_t) + sizeof(uint64_t *)) +
                       k->nr_deposit_arrays * FP_PTRS_PER_TABLE * sizeof(uint64_t);
    out->truth = k->nr_pfns * sizeof(struct fp_truth);
    for (int n = 0; n < k->nr_nodes; n++) /* the free-block stack and the split bits */
        out->free_lists += k->nodes[n].nr_pages / FP_PAGES_PER_HUGE * sizeof(uint32_t) +
                           (k->nodes[n].nr_pages / FP_PAGES_PER_HUGE / 64 + 1) * sizeof(uint64_t);
    out->rmap_ext = k->cap_rmap_ext * sizeof(struct fp_rmap_ext) + fp_rmap_index_bytes(k);
    out->other = sizeof(*k) + k->swap_slots * sizeof(uint32_t); /* and the swap map */
    for (uint32_t i = 0; i < FP_MAX_MMS; i++)
        out->other += k->mms[i] ? sizeof(struct fp_mm) : 0;
    for (uint32_t i = 0; i < FP_MAX_VMS; i++)
        out->other += k->vms[i] ? sizeof(struct fp_vm) : 0;
    for (int n = 0; n < k->nr_nodes; n++)
        out->populated += k->nodes[n].stat[FP_NR_ANON_PAGES] + k->nodes[n].stat[FP_NR_FILE_PAGES];
}
