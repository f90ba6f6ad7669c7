/*
 * The emulated swap device's slots: a reference count per slot, so that a swap
 * entry copied by fork shares its slot (SwapFree does not move) and smaps can divide
 * SwapPss by the slot's count.
 * Linux: mm/swapfile.c (scan_swap_map_slots, swap_duplicate, swap_free,
 * __swap_count), without the per-CPU slot caches (mm/swap_slots.c) and clusters.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* Room for `slots` slots (the header's included); 0 when allocated. */
static int swap_map_grow(struct fp_kernel *k, uint64_t slots)
{
    uint32_t *map = realloc(k->swap_map, slots * sizeof(uint32_t));
    if (!map)
        return -ENOMEM;
    memset(map + k->swap_slots, 0, (slots - k->swap_slots) * sizeof(uint32_t));
    k->swap_map = map;
    k->swap_slots = slots;
    return 0;
}

/* The first free slot in [lo, hi) from `at` on, wrapping around to lo; 0 if none. */
static uint64_t free_slot(const struct fp_kernel *k, uint64_t lo, uint64_t hi, uint64_t at)
{
    if (at < lo || at >= hi)
        at = lo;
    for (uint64_t i = lo; i < hi; i++, at = at + 1 < hi ? at + 1 : lo)
        if (!k->swap_map[at])
            return at;
    return 0;
}

/* A free slot, its count set to 1: the device's first free one from where the last
 * search ended, wrapping around (a rotational device's next-fit, cluster_next). A
 * machine file may pin more swap entries than the device holds: those take slots
 * past its end. Returns the offset (>= 1) or -ENOMEM. */
int64_t fp_swap_alloc(struct fp_kernel *k)
{
    uint64_t device = k->swap_total + 1;
    if (k->swap_slots < device && swap_map_grow(k, device))
        return -ENOMEM;
    uint64_t off = free_slot(k, 1, device, k->swap_next);
    if (!off)
        off = free_slot(k, device, k->swap_slots, device);
    if (!off) {
        off = k->swap_slots;
        if (swap_map_grow(k, off * 2 > off + 64 ? off * 2 : off + 64))
            return -ENOMEM;
    }
    k->swap_map[off] = 1;
    k->swap_used++;
    if (off < device)
        k->swap_next = off + 1;
    return (int64_t)off;
}

/* swap_duplicate(): one more swap PTE names the slot (fork's copy_one_pte) */
void fp_swap_duplicate(struct fp_kernel *k, uint64_t off)
{
    k->swap_map[off]++;
}

/* swap_free(): a swap PTE naming the slot went away (zap, swap-in); the slot is free
 * when none is left (there is no swap cache to hold it) */
void fp_swap_free(struct fp_kernel *k, uint64_t off)
{
    if (--k->swap_map[off] == 0)
        k->swap_used--;
}

/* __swap_count(): the swap PTEs naming the slot */
uint32_t fp_swap_count(const struct fp_kernel *k, uint64_t off)
{
    return off < k->swap_slots ? k->swap_map[off] : 0;
}
