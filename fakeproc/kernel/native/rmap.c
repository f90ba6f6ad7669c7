/*
 * Reverse maps: which (address space, address) pairs map a page.
 * Linux: mm/rmap.c (page_add_anon_rmap, page_remove_rmap, rmap_walk). The first
 * mapper is kept in struct fp_page as the arena index of its entry (4 bytes: the
 * table's owner and base address give the mm and the address), so the common case
 * costs nothing; further mappers (pages shared after fork) sit in a side table.
 * The side-table entries of one PFN are chained (fp_rmap_ext.next), and the chain's
 * head is found by PFN in a block of FP_RMAP_BLOCK heads (a 2 MiB block's PFNs),
 * allocated with its first chain and freed with its last, so adding, finding and
 * removing a mapper cost the length of one page's chain, and fork and exit, which
 * visit a process's pages in address order (mostly PFN order), read the heads in
 * order: 4 bytes per PFN of a block where pages are shared. A removed entry goes on
 * a free list (through its next, pfn FP_RMAP_FREE) and is reused by the next add;
 * entries never move, so a removal touches only its own chain.
 * invariant: mapcount == 1 + the length of the PFN's chain.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include "internal.h"

/* a THP's 512 PFNs lie in one block: its split adds the tails' chains to the block
 * its head's chain keeps, so the split's fp_rmap_add() calls need no new block */
_Static_assert(FP_RMAP_BLOCK % FP_PAGES_PER_HUGE == 0, "a THP spans blocks");

struct fp_rmap_heads {
    uint32_t used;                  /* heads that are not 0 */
    uint32_t head[FP_RMAP_BLOCK];   /* index + 1 of the chain's first entry; 0 = none */
};

/* where pfn's chain head lives, NULL while its block has no chain */
static uint32_t *head_of(const struct fp_kernel *k, uint64_t pfn)
{
    uint64_t b = pfn / FP_RMAP_BLOCK;
    struct fp_rmap_heads *h = b < k->rmap_blocks ? k->rmap_heads[b] : NULL;
    return h ? &h->head[pfn % FP_RMAP_BLOCK] : NULL;
}

static uint32_t chain_of(const struct fp_kernel *k, uint64_t pfn)
{
    const uint32_t *h = head_of(k, pfn);
    return h ? *h : 0;
}

/* The directory, and a spare block unless one is kept: what an add that must not
 * fail needs (a THP split's tails lie in their head's block, which has a chain). */
static int heads_reserve(struct fp_kernel *k)
{
    if (!k->rmap_heads) {
        uint64_t n = k->nr_pfns / FP_RMAP_BLOCK + 1;
        k->rmap_heads = calloc(n, sizeof(*k->rmap_heads));
        if (!k->rmap_heads)
            return -ENOMEM;
        k->rmap_blocks = n;
    }
    if (!k->rmap_spare && !(k->rmap_spare = calloc(1, sizeof(*k->rmap_spare))))
        return -ENOMEM;
    return 0;
}

/* pfn's block, allocated (or the spare taken) if it has none. 0 or -ENOMEM. */
static int block_make(struct fp_kernel *k, uint64_t pfn)
{
    uint64_t b = pfn / FP_RMAP_BLOCK;
    if (b < k->rmap_blocks && k->rmap_heads[b])
        return 0;
    if (heads_reserve(k))
        return -ENOMEM;
    if (b >= k->rmap_blocks)
        return -EINVAL; /* not a page of the machine's RAM */
    k->rmap_heads[b] = k->rmap_spare;
    k->rmap_spare = NULL;
    k->rmap_blocks_used++;
    return 0;
}

/* Set pfn's chain head (its block exists). A block left without a chain is freed,
 * or kept as the spare. */
static void head_set(struct fp_kernel *k, uint64_t pfn, uint32_t v)
{
    uint64_t b = pfn / FP_RMAP_BLOCK;
    struct fp_rmap_heads *h = k->rmap_heads[b];
    uint32_t *p = &h->head[pfn % FP_RMAP_BLOCK];
    if (!*p != !v) {
        h->used += v ? 1 : -1;
        k->rmap_chains += v ? 1 : -1;
    }
    *p = v;
    if (h->used)
        return;
    k->rmap_heads[b] = NULL;
    k->rmap_blocks_used--;
    if (k->rmap_spare)
        free(h);
    else
        k->rmap_spare = h; /* every head 0 again */
}

void fp_rmap_heads_free(struct fp_kernel *k)
{
    for (uint64_t b = 0; b < k->rmap_blocks; b++)
        free(k->rmap_heads[b]);
    free(k->rmap_heads);
    free(k->rmap_spare);
}

/* Side-table entry idx, on no chain, onto the free list. */
static void ext_free(struct fp_kernel *k, uint64_t idx)
{
    k->rmap_ext[idx] = (struct fp_rmap_ext){FP_RMAP_FREE, 0, 0, k->rmap_ext_free};
    k->rmap_ext_free = (uint32_t)idx + 1;
}

/* Take side-table entry idx out of its chain onto the free list. */
static void ext_remove(struct fp_kernel *k, uint64_t idx)
{
    struct fp_rmap_ext *x = &k->rmap_ext[idx];
    uint32_t *h = head_of(k, x->pfn), *l = h;
    while (*l != idx + 1)
        l = &k->rmap_ext[*l - 1].next;
    if (l == h)
        head_set(k, x->pfn, x->next);
    else
        *l = x->next;
    ext_free(k, idx);
}

/* room for n more side-table entries at the end (the capacity doubles) */
static int ext_reserve(struct fp_kernel *k, uint64_t n)
{
    uint64_t want = k->nr_rmap_ext + n, cap = k->cap_rmap_ext ? k->cap_rmap_ext : 64;
    if (want <= k->cap_rmap_ext)
        return 0;
    while (cap < want)
        cap *= 2;
    if (cap > UINT32_MAX)
        return -ENOMEM; /* links are 32-bit */
    struct fp_rmap_ext *grown = realloc(k->rmap_ext, cap * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    k->rmap_ext = grown;
    k->cap_rmap_ext = cap;
    return 0;
}

/* a side-table entry for a new mapper: a freed one, else one more at the end */
static int64_t ext_alloc(struct fp_kernel *k)
{
    if (k->rmap_ext_free) {
        uint64_t idx = k->rmap_ext_free - 1;
        k->rmap_ext_free = k->rmap_ext[idx].next;
        return (int64_t)idx;
    }
    int err = ext_reserve(k, 1);
    return err ? err : (int64_t)k->nr_rmap_ext++;
}

/* the arena index of the entry that maps (or will map) addr in mm: a PTE, or for a
 * THP the PMD (a THP is only ever installed in an empty PMD) */
static uint32_t entry_of(struct fp_kernel *k, uint32_t mm, uint64_t addr)
{
    int32_t level;
    const uint64_t *e = fp_mm_walk(k, k->mms[mm], addr, &level);
    return (uint32_t)fp_entry_index(k, e);
}

/* the first mapper of pfn, whose entry the caller holds (no walk to find it) */
void fp_rmap_add_first(struct fp_kernel *k, uint64_t pfn, const uint64_t *entry)
{
    struct fp_page *p = &k->pages[pfn];
    p->pte = (uint32_t)fp_entry_index(k, entry);
    p->mapcount = 1;
}

int fp_rmap_add(struct fp_kernel *k, uint64_t pfn, uint32_t mm, uint64_t addr)
{
    struct fp_page *p = &k->pages[pfn];
    if (!p->mapcount) { /* the entry that maps (or will map) addr: a PTE, or a THP's PMD */
        int32_t level;
        fp_rmap_add_first(k, pfn, fp_mm_walk(k, k->mms[mm], addr, &level));
        return 0;
    }
    int64_t idx = ext_alloc(k);
    if (idx < 0)
        return (int)idx;
    if (block_make(k, pfn)) {
        ext_free(k, (uint64_t)idx);
        return -ENOMEM;
    }
    k->rmap_ext[idx] = (struct fp_rmap_ext){pfn, addr >> FP_PAGE_SHIFT, mm, chain_of(k, pfn)};
    head_set(k, pfn, (uint32_t)idx + 1);
    p->mapcount++;
    return 0;
}

/* Room for new chains of PFNs whose block has a chain already (a THP split maps 511
 * new pages in every mapper but the first, in its head's block) and for `entries`
 * side-table entries, so that as many fp_rmap_add() calls cannot fail. 0 or -ENOMEM,
 * with nothing changed but capacity. */
int fp_rmap_reserve(struct fp_kernel *k, uint64_t chains, uint64_t entries)
{
    int err = chains ? heads_reserve(k) : 0;
    return err ? err : ext_reserve(k, entries);
}

/* the side-table index of mapper (mm, vpn) of pfn, or with mm < 0 of any; -1 none */
static int64_t find_ext(const struct fp_kernel *k, uint64_t pfn, int64_t mm, uint64_t vpn)
{
    for (uint32_t x = chain_of(k, pfn); x; x = k->rmap_ext[x - 1].next) {
        const struct fp_rmap_ext *e = &k->rmap_ext[x - 1];
        if (mm < 0 || (e->mm == (uint32_t)mm && e->vpn == vpn))
            return (int64_t)x - 1;
    }
    return -1;
}

void fp_rmap_del(struct fp_kernel *k, uint64_t pfn, uint32_t mm, uint64_t addr)
{
    struct fp_page *p = &k->pages[pfn];
    uint64_t vpn = addr >> FP_PAGE_SHIFT;
    int64_t i;
    if (fp_page_owner(k, p) == mm && fp_page_vaddr(k, p) == addr) {
        i = p->mapcount > 1 ? find_ext(k, pfn, -1, 0) : -1;
        if (i >= 0) /* another mapper becomes the first */
            p->pte = entry_of(k, k->rmap_ext[i].mm, k->rmap_ext[i].vpn << FP_PAGE_SHIFT);
    } else {
        i = find_ext(k, pfn, mm, vpn);
    }
    if (i >= 0)
        ext_remove(k, (uint64_t)i);
    p->mapcount--;
}

int fp_rmap_is_mapper(const struct fp_kernel *k, uint64_t pfn, uint32_t mm, uint64_t addr)
{
    const struct fp_page *p = &k->pages[pfn];
    uint64_t vpn = addr >> FP_PAGE_SHIFT;
    return (p->mapcount && fp_page_owner(k, p) == mm && fp_page_vaddr(k, p) == addr) ||
           find_ext(k, pfn, mm, vpn) >= 0;
}

/* Before a migration changes anything: the block new_pfn's chain will need when
 * pfn has one. 0, or -ENOMEM with nothing made. */
int fp_rmap_move_room(struct fp_kernel *k, uint64_t pfn, uint64_t new_pfn)
{
    return chain_of(k, pfn) ? block_make(k, new_pfn) : 0;
}

/* migration: pfn's further mappers now map new_pfn (a fresh page, no chain yet;
 * fp_rmap_move_room() made its block) */
void fp_rmap_move(struct fp_kernel *k, uint64_t pfn, uint64_t new_pfn)
{
    uint32_t head = chain_of(k, pfn);
    if (!head)
        return;
    assert(k->rmap_heads[new_pfn / FP_RMAP_BLOCK]); /* fp_rmap_move_room() */
    for (uint32_t x = head; x; x = k->rmap_ext[x - 1].next)
        k->rmap_ext[x - 1].pfn = new_pfn;
    head_set(k, new_pfn, head);
    head_set(k, pfn, 0);
}

uint64_t fp_rmap_index_bytes(const struct fp_kernel *k)
{
    return k->rmap_blocks * sizeof(*k->rmap_heads) +
           (k->rmap_blocks_used + (k->rmap_spare != NULL)) * sizeof(struct fp_rmap_heads);
}

/* For the invariant checker (check.c), in one pass over the heads, chains and free
 * list: each head belongs to a page mapped more than once, with mapcount - 1 entries
 * on its chain; every entry is on exactly one chain or on the free list; each block's
 * count of heads, and the counts of blocks and chains, are right. Returns the number
 * of problems, the first described in msg. (A page mapped more than once without a
 * chain is the page walk's to find: fp_rmap_is_mapper() does not know its further
 * mappers.) */
uint64_t fp_rmap_check(const struct fp_kernel *k, char *msg, size_t len)
{
    uint64_t bad = 0, chains = 0, blocks = 0, nr = k->nr_rmap_ext;
    uint8_t *seen = calloc(nr ? nr : 1, 1);
    if (!seen)
        return 0;
#define BAD(...) do { if (!bad++ && len) snprintf(msg, len, __VA_ARGS__); } while (0)
    for (uint64_t b = 0; b < k->rmap_blocks; b++) {
        const struct fp_rmap_heads *h = k->rmap_heads[b];
        uint32_t used = 0;
        if (!h)
            continue;
        blocks++;
        for (uint64_t i = 0; i < FP_RMAP_BLOCK; i++) {
            uint64_t pfn = b * FP_RMAP_BLOCK + i, n = 0;
            if (!h->head[i])
                continue;
            used++;
            uint32_t want = pfn < k->nr_pfns ? k->pages[pfn].mapcount : 0;
            for (uint32_t x = h->head[i]; x; x = k->rmap_ext[x - 1].next, n++)
                if (x > nr || seen[x - 1] || k->rmap_ext[x - 1].pfn != pfn) {
                    BAD("rmap: pfn %lu's chain is broken at entry %u", (unsigned long)pfn, x);
                    break;
                } else {
                    seen[x - 1] = 1;
                }
            if (want < 2 || n != want - 1u)
                BAD("rmap: pfn %lu is mapped %u times, but its chain holds %lu further mappers",
                    (unsigned long)pfn, want, (unsigned long)n);
        }
        if (used != h->used || !used)
            BAD("rmap: block %lu holds %u chains, counted %u", (unsigned long)b, used, h->used);
        chains += used;
    }
    if (blocks != k->rmap_blocks_used || chains != k->rmap_chains)
        BAD("rmap: %lu blocks and %lu chains, counted %lu and %lu", (unsigned long)blocks,
            (unsigned long)chains, (unsigned long)k->rmap_blocks_used,
            (unsigned long)k->rmap_chains);
    if (k->rmap_spare)
        for (uint64_t i = 0; i < FP_RMAP_BLOCK; i++)
            if (k->rmap_spare->head[i]) {
                BAD("rmap: the spare block is not empty");
                break;
            }
    for (uint64_t x = k->rmap_ext_free; x; x = k->rmap_ext[x - 1].next)
        if (x > nr || seen[x - 1] || k->rmap_ext[x - 1].pfn != FP_RMAP_FREE) {
            BAD("rmap: the free list is broken at entry %lu", (unsigned long)x);
            break;
        } else {
            seen[x - 1] = 1;
        }
    for (uint64_t i = 0; i < nr; i++)
        if (!seen[i])
            BAD("rmap: side-table entry %lu (pfn %lu) is on no chain and not free",
                (unsigned long)i, (unsigned long)k->rmap_ext[i].pfn);
#undef BAD
    free(seen);
    return bad;
}

uint64_t *fp_mm_leaf(struct fp_kernel *k, const struct fp_mm *mm, uint64_t addr, int *level)
{
    uint64_t *e = fp_mm_walk(k, mm, addr, level);
    return e && fp_entry_present(*e) ? e : NULL;
}

/* Call fn for every mapping of pfn. The mappers are collected first, so fn may
 * change the reverse map (unmap). Returns how many there were. */
int fp_rmap_walk(struct fp_kernel *k, uint64_t pfn, fp_rmap_fn fn, void *arg)
{
    const struct fp_page *p = &k->pages[pfn];
    uint32_t n = p->mapcount, got = 0;
    if (!n)
        return 0;
    uint32_t *mms = malloc(n * sizeof(uint32_t));
    uint64_t *vpns = malloc(n * sizeof(uint64_t));
    if (!mms || !vpns) {
        free(mms);
        free(vpns);
        return -ENOMEM;
    }
    mms[got] = fp_page_owner(k, p);
    vpns[got++] = fp_page_vaddr(k, p) >> FP_PAGE_SHIFT;
    for (uint32_t x = chain_of(k, pfn); x && got < n; x = k->rmap_ext[x - 1].next) {
        mms[got] = k->rmap_ext[x - 1].mm;
        vpns[got++] = k->rmap_ext[x - 1].vpn;
    }
    for (uint32_t i = 0; i < got; i++) {
        struct fp_mm *mm = mms[i] < FP_MAX_MMS ? k->mms[mms[i]] : NULL;
        int level;
        uint64_t addr = vpns[i] << FP_PAGE_SHIFT;
        uint64_t *e = fp_mm_leaf(k, mm, addr, &level);
        if (e && fp_entry_addr(*e) == pfn)
            fn(k, mm, e, addr, arg);
    }
    free(mms);
    free(vpns);
    return (int)got;
}
