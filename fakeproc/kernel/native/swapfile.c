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

/* Room for at least `slots` slots (the header's included), the new ones free. The
 * map grows with the highest slot handed out, not with the device: a big device
 * that is hardly used costs nothing. 0 when done. */
static int swap_map_grow(struct fp_kernel *k, uint64_t slots)
{
    if (slots <= k->swap_slots)
        return 0;
    uint64_t want = k->swap_slots * 2 > slots ? k->swap_slots * 2 : slots;
    if (want < 1024)
        want = 1024;
    uint64_t device = k->swap_total + 1;
    if (slots <= device && want > device)
        want = device; /* no further than the device until it is full */
    uint32_t *map = realloc(k->swap_map, want * sizeof(uint32_t));
    if (!map)
        return -ENOMEM;
    memset(map + k->swap_slots, 0, (want - k->swap_slots) * sizeof(uint32_t));
    k->swap_map = map;
    k->swap_slots = want;
    return 0;
}

/* The first free slot in [at, hi) (a slot past the map's end is free); 0 if none. */
static uint64_t free_slot(const struct fp_kernel *k, uint64_t at, uint64_t hi)
{
    for (; at < hi; at++)
        if (at >= k->swap_slots || !k->swap_map[at])
            return at;
    return 0;
}

/* A free slot, its count set to 1: on the device, the first free one from where the
 * last search ended, wrapping around (a rotational device's next-fit, cluster_next);
 * when the device is full (a machine file may pin more swap entries than it holds)
 * the first free one past its end. Returns the offset (>= 1) or -ENOMEM. */
int64_t fp_swap_alloc(struct fp_kernel *k)
{
    uint64_t device = k->swap_total + 1, off = 0;
    if (k->swap_dev_used < k->swap_total) { /* a free slot on the device somewhere */
        uint64_t at = k->swap_next >= 1 && k->swap_next < device ? k->swap_next : 1;
        off = free_slot(k, at, device);
        if (!off)
            off = free_slot(k, 1, at);
    } else {
        uint64_t at = k->swap_past_next > device ? k->swap_past_next : device;
        off = free_slot(k, at, UINT64_MAX);
    }
    if (swap_map_grow(k, off + 1))
        return -ENOMEM;
    k->swap_map[off] = 1;
    k->swap_used++;
    if (off < device) {
        k->swap_dev_used++;
        k->swap_next = off + 1;
    } else {
        k->swap_past_next = off + 1;
    }
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
    if (--k->swap_map[off])
        return;
    k->swap_used--;
    if (off <= k->swap_total)
        k->swap_dev_used--;
    else if (off < k->swap_past_next)
        k->swap_past_next = off; /* the past-device search starts at the lowest free */
}

/* __swap_count(): the swap PTEs naming the slot */
uint32_t fp_swap_count(const struct fp_kernel *k, uint64_t off)
{
    return off < k->swap_slots ? k->swap_map[off] : 0;
}
