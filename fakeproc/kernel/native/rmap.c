/*
 * Reverse maps: which (address space, address) pairs map a page.
 * Linux: mm/rmap.c (page_add_anon_rmap, page_remove_rmap, rmap_walk). The first
 * mapper is kept in struct fp_page as the arena index of its entry (4 bytes: the
 * table's owner and base address give the mm and the address), so the common case
 * costs nothing; further mappers (pages shared after fork) sit in a side table.
 * The side-table entries of one PFN are chained (fp_rmap_ext.next) and a hash of
 * PFNs (open addressing, linear probing) holds each chain's head, so adding,
 * finding and removing a mapper cost the length of one page's chain, not of the
 * table: the child of a big process exits in linear time. A removed entry goes on
 * a free list (through its next, pfn FP_RMAP_FREE) and is reused by the next add;
 * entries never move, so a removal touches only its own chain.
 * invariant: mapcount == 1 + the length of the PFN's chain.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include "internal.h"

struct fp_rmap_slot {
    uint64_t pfn1;         /* PFN + 1; 0 = empty */
    uint32_t head;         /* index + 1 of the chain's first side-table entry */
    uint32_t pad;
};

/* A PFN's first slot. Runs of 8 consecutive PFNs keep consecutive slots (2 cache
 * lines) and only the runs are scattered: fork and exit visit a process's pages in
 * address order, which is mostly PFN order, so a run costs a miss or two, not eight.
 * (Longer runs make longer clusters, which slot_delete scans: 8 measured best.) */
#define SLOT_RUN 8
static uint64_t home(const struct fp_kernel *k, uint64_t pfn)
{
    uint64_t run = (pfn / SLOT_RUN * 0x9E3779B97F4A7C15ULL >> 32) * SLOT_RUN;
    return (run + pfn % SLOT_RUN) & (k->rmap_slots_cap - 1); /* cap: 2^n, at least 64 */
}

/* the slot holding pfn's chain, or NULL */
static struct fp_rmap_slot *slot_of(const struct fp_kernel *k, uint64_t pfn)
{
    if (!k->rmap_slots_cap)
        return NULL;
    for (uint64_t i = home(k, pfn);; i = (i + 1) & (k->rmap_slots_cap - 1)) {
        struct fp_rmap_slot *s = &k->rmap_slots[i];
        if (s->pfn1 == pfn + 1)
            return s;
        if (!s->pfn1)
            return NULL;
    }
}

static struct fp_rmap_slot *slot_put(struct fp_kernel *k, uint64_t pfn, uint32_t head)
{
    uint64_t i = home(k, pfn);
    while (k->rmap_slots[i].pfn1)
        i = (i + 1) & (k->rmap_slots_cap - 1);
    k->rmap_slots[i] = (struct fp_rmap_slot){pfn + 1, head, 0};
    k->rmap_slots_used++;
    return &k->rmap_slots[i];
}

/* room for n more chains: at most half the slots in use */
static int slots_reserve(struct fp_kernel *k, uint64_t n)
{
    if (2 * (k->rmap_slots_used + n) <= k->rmap_slots_cap)
        return 0;
    uint64_t old_cap = k->rmap_slots_cap, cap = old_cap ? 2 * old_cap : 64;
    while (2 * (k->rmap_slots_used + n) > cap)
        cap *= 2;
    struct fp_rmap_slot *old = k->rmap_slots, *fresh = calloc(cap, sizeof(*fresh));
    if (!fresh)
        return -ENOMEM;
    k->rmap_slots = fresh;
    k->rmap_slots_cap = cap;
    k->rmap_slots_used = 0;
    for (uint64_t i = 0; i < old_cap; i++)
        if (old[i].pfn1)
            slot_put(k, old[i].pfn1 - 1, old[i].head);
    free(old);
    return 0;
}

/* Empty slot s; entries after it in its probe run move back where their home
 * would no longer reach them (deletion without tombstones). */
static void slot_delete(struct fp_kernel *k, struct fp_rmap_slot *s)
{
    uint64_t mask = k->rmap_slots_cap - 1, i = (uint64_t)(s - k->rmap_slots), j = i;
    k->rmap_slots_used--;
    for (;;) {
        k->rmap_slots[i].pfn1 = 0;
        for (;;) {
            j = (j + 1) & mask;
            if (!k->rmap_slots[j].pfn1)
                return;
            uint64_t h = home(k, k->rmap_slots[j].pfn1 - 1);
            /* it stays at j when its home lies cyclically in (i, j] */
            if (i <= j ? (i < h && h <= j) : (i < h || h <= j))
                continue;
            k->rmap_slots[i] = k->rmap_slots[j];
            i = j;
            break;
        }
    }
}

/* Take side-table entry idx out of its chain onto the free list. */
static void ext_remove(struct fp_kernel *k, uint64_t idx)
{
    struct fp_rmap_ext *x = &k->rmap_ext[idx];
    struct fp_rmap_slot *s = slot_of(k, x->pfn);
    uint32_t *l = &s->head;
    while (*l != idx + 1)
        l = &k->rmap_ext[*l - 1].next;
    *l = x->next;
    if (!s->head)
        slot_delete(k, s);
    *x = (struct fp_rmap_ext){FP_RMAP_FREE, 0, 0, k->rmap_ext_free};
    k->rmap_ext_free = (uint32_t)idx + 1;
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

int fp_rmap_add(struct fp_kernel *k, uint64_t pfn, uint32_t mm, uint64_t addr)
{
    struct fp_page *p = &k->pages[pfn];
    if (!p->mapcount) {
        p->pte = entry_of(k, mm, addr);
    } else {
        struct fp_rmap_slot *s = slot_of(k, pfn);
        if (!s) {
            if (slots_reserve(k, 1))
                return -ENOMEM;
            s = slot_put(k, pfn, 0);
        }
        int64_t idx = ext_alloc(k);
        if (idx < 0) {
            if (!s->head)
                slot_delete(k, s);
            return (int)idx;
        }
        k->rmap_ext[idx] = (struct fp_rmap_ext){pfn, addr >> FP_PAGE_SHIFT, mm, s->head};
        s->head = (uint32_t)idx + 1;
    }
    p->mapcount++;
    return 0;
}

/* Room for `chains` new chains and `entries` side-table entries, so that as many
 * fp_rmap_add() calls cannot fail (a THP split maps 511 new pages in every mapper
 * but the first). 0 or -ENOMEM, with nothing changed but capacity. */
int fp_rmap_reserve(struct fp_kernel *k, uint64_t chains, uint64_t entries)
{
    int err = slots_reserve(k, chains);
    return err ? err : ext_reserve(k, entries);
}

/* the side-table index of mapper (mm, vpn) of pfn, or with mm < 0 of any; -1 none */
static int64_t find_ext(const struct fp_kernel *k, uint64_t pfn, int64_t mm, uint64_t vpn)
{
    const struct fp_rmap_slot *s = slot_of(k, pfn);
    for (uint32_t x = s ? s->head : 0; x; x = k->rmap_ext[x - 1].next) {
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

/* migration: pfn's further mappers now map new_pfn (a fresh page, no chain yet) */
void fp_rmap_move(struct fp_kernel *k, uint64_t pfn, uint64_t new_pfn)
{
    struct fp_rmap_slot *s = slot_of(k, pfn);
    if (!s)
        return;
    uint32_t head = s->head;
    for (uint32_t x = head; x; x = k->rmap_ext[x - 1].next)
        k->rmap_ext[x - 1].pfn = new_pfn;
    slot_delete(k, s);
    slot_put(k, new_pfn, head); /* a slot was just freed: no growth needed */
}

/* The slot table alone, against a plain membership array (tests/test_rmap.py): random
 * puts and deletes of 256 PFNs in the smallest table (64 slots, at most 32 used), so
 * probe runs cluster and wrap around the end. 0, or the 1-based step that went wrong. */
int64_t fp_rmap_slots_selftest(uint64_t seed, uint64_t steps)
{
    struct fp_kernel *k = calloc(1, sizeof(*k));
    uint32_t head[256] = {0};
    uint64_t used = 0, bad = 0;
    if (!k || slots_reserve(k, 1)) {
        free(k);
        return -ENOMEM;
    }
    for (uint64_t step = 1; step <= steps && !bad; step++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t pfn = (seed >> 33) % 256;
        if (head[pfn]) {
            slot_delete(k, slot_of(k, pfn));
            head[pfn] = 0;
            used--;
        } else if (used < k->rmap_slots_cap / 2) {
            head[pfn] = (uint32_t)step;
            slot_put(k, pfn, head[pfn]);
            used++;
        }
        for (uint64_t q = 0; q < 256 && !bad; q++) {
            const struct fp_rmap_slot *s = slot_of(k, q);
            if ((s ? s->head : 0) != head[q])
                bad = step;
        }
    }
    free(k->rmap_slots);
    free(k);
    return (int64_t)bad;
}

uint64_t fp_rmap_index_bytes(const struct fp_kernel *k)
{
    return k->rmap_slots_cap * sizeof(struct fp_rmap_slot);
}

/* For the invariant checker (check.c), in one pass over the slots, chains and free
 * list: each slot is found from its home and belongs to a page mapped more than
 * once, with mapcount - 1 entries on its chain; every entry is on exactly one chain
 * or on the free list; the slot count is right. Returns the number of problems, the
 * first described in msg. (A page mapped more than once without a chain is the page
 * walk's to find: fp_rmap_is_mapper() does not know its further mappers.) */
uint64_t fp_rmap_check(const struct fp_kernel *k, char *msg, size_t len)
{
    uint64_t bad = 0, used = 0, nr = k->nr_rmap_ext;
    uint8_t *seen = calloc(nr ? nr : 1, 1);
    if (!seen)
        return 0;
#define BAD(...) do { if (!bad++ && len) snprintf(msg, len, __VA_ARGS__); } while (0)
    for (uint64_t i = 0; i < k->rmap_slots_cap; i++) {
        const struct fp_rmap_slot *s = &k->rmap_slots[i];
        if (!s->pfn1)
            continue;
        uint64_t pfn = s->pfn1 - 1, n = 0;
        uint32_t want = pfn < k->nr_pfns ? k->pages[pfn].mapcount : 0;
        used++;
        if (slot_of(k, pfn) != s)
            BAD("rmap: pfn %lu's slot is not the one found from its home", (unsigned long)pfn);
        for (uint32_t x = s->head; x; x = k->rmap_ext[x - 1].next, n++)
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
    if (used != k->rmap_slots_used)
        BAD("rmap: %lu slots in use, %lu counted", (unsigned long)used,
            (unsigned long)k->rmap_slots_used);
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
    const struct fp_rmap_slot *s = slot_of(k, pfn);
    for (uint32_t x = s ? s->head : 0; x && got < n; x = k->rmap_ext[x - 1].next) {
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
