/*
 * /proc/PID/idle_pages, task mode: one read(2).
 * Linux: the RFC v2 "kvm-ept-idle" code (ept_idle_read, mm_idle_walk_range,
 * mm_idle_pmd_entry, mm_idle_pud_entry, mm_idle_pte_range, ept_idle_add_page,
 * ept_idle_copy_user) running on 4.20's mm/pagewalk.c (walk_page_range).
 * INTERFACES.md section 1.2-1.4 is the contract; the names below follow it.
 *
 * Quirks kept on purpose, because a daemon sees them: leading holes dropped,
 * [0, 2 MiB) never reported, the rest of a PMD lost when a staging chunk fills
 * inside it, a PUD unit that does not fit lost, accessed bits cleared even for
 * a unit that did not fit.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "idle.h"

static const uint64_t unit_size[IDLE_NR_TYPES] = {
    [PTE_ACCESSED] = FP_PAGE_SIZE,  [PMD_ACCESSED] = FP_PMD_SIZE,
    [PUD_PRESENT] = FP_PUD_SIZE,    [PTE_DIRTY] = FP_PAGE_SIZE,
    [PMD_DIRTY] = FP_PMD_SIZE,      [PTE_IDLE] = FP_PAGE_SIZE,
    [PMD_IDLE] = FP_PMD_SIZE,       [PMD_IDLE_PTES] = FP_PMD_SIZE,
    [PTE_HOLE] = FP_PAGE_SIZE,      [PMD_HOLE] = FP_PMD_SIZE,
};

static inline uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }
static inline uint64_t round_down(uint64_t x, uint64_t a) { return x & ~(a - 1); }

static void report_addr(struct idle_ctl *c, uint64_t addr)
{
    c->kbuf[c->used++] = IDLE_SET_HVA;
    for (int i = 7; i >= 0; i--)
        c->kbuf[c->used++] = (uint8_t)(addr >> (8 * i));
}

/* The merge rule of ept_idle_add_page() for n units of one type that follow the
 * last one added (the first from addr to first_end, each further one `unit` bytes
 * long): each goes on the last record while it holds fewer than 15 of its type,
 * else on a new record while the staging buffer has room. Returns the units added;
 * on a full buffer the restart is the first unit not added. */
static inline __attribute__((always_inline)) uint64_t
idle_extend(struct idle_ctl *c, uint64_t addr, uint64_t first_end, uint64_t unit,
                            uint64_t n, int type)
{
    uint64_t done = 0;
    while (done < n) {
        uint8_t *last = &c->kbuf[c->used - 1];
        uint64_t room = (*last >> 4) == type ? 15 - (*last & 15u) : 0;
        uint64_t k = n - done < room ? n - done : room;
        if (!room) {
            if (c->used >= c->limit)
                break;
            c->kbuf[c->used++] = (uint8_t)((type << 4) | 1);
            k = 1;
        } else {
            *last = (uint8_t)(*last + k);
        }
        done += k;
    }
    uint64_t end = done ? first_end + (done - 1) * unit : addr;
    if (done)
        c->next_hva = c->unit_end = end + c->gpa_to_hva;
    c->restart = end;
    return done;
}

/* ept_idle_add_page(): append one unit, merging runs up to 15. */
static int idle_add_page(struct idle_ctl *c, uint64_t addr, uint64_t next, int type)
{
    next = round_up(next, unit_size[type]);
    if (c->used && addr + c->gpa_to_hva == c->next_hva)
        return idle_extend(c, addr, next, 0, 1, type) ? 0 : IDLE_KBUF_FULL;
    if (type == PTE_HOLE || type == PMD_HOLE) {
        c->restart = next; /* leading holes never appear */
        return 0;
    }
    if (c->used + 10 >= c->limit) {
        c->restart = addr;
        return IDLE_KBUF_FULL;
    }
    report_addr(c, round_down(addr, unit_size[type]) + c->gpa_to_hva);
    c->next_hva = c->unit_end = next + c->gpa_to_hva;
    c->restart = next;
    c->kbuf[c->used++] = (uint8_t)((type << 4) | 1);
    return 0;
}

/* ept_idle_copy_user(): end of a pass.  Returns 0 to go on, nonzero to stop. */
static int idle_copy_user(struct idle_ctl *c, uint64_t start, uint64_t end)
{
    int last = 0;
    if (!c->used) {
        last = 1;
        if (start < end)
            start = end;
    }
    if (start >= end && start > c->next_hva) {
        c->next_hva = start;
        report_addr(c, start);
    }
    if (!c->used)
        return 1;
    memcpy(c->ubuf + c->copied, c->kbuf, c->used);
    c->copied += c->used;
    if (c->copied >= c->count)
        return 1;
    if (last)
        return 1;
    return 0;
}

static void idle_begin_pass(struct idle_ctl *c)
{
    uint64_t room = c->count - c->copied;
    c->used = 0;
    c->limit = (int64_t)(room < IDLE_KBUF_SIZE ? room : IDLE_KBUF_SIZE) - IDLE_TAIL_BYTES;
    c->starved = c->limit <= 10; /* a SET_HVA and its unit need used + 10 < limit */
}

/* ---- the task-mode page walk ------------------------------------------------ */

/* idle_add_page() for n consecutive PTE units of one type from addr: the same bytes
 * and state as n calls, a byte per 15 pages once the run follows the last unit.
 * Returns the pages added; fewer than n when the staging buffer filled (the restart
 * is then the first page not added, as the single call leaves it). */
static uint64_t idle_add_run(struct idle_ctl *c, uint64_t addr, uint64_t n, int type)
{
    uint64_t done = 0;
    while (done < n) {
        if (c->used && addr + c->gpa_to_hva == c->next_hva) /* in sequence */
            return done + idle_extend(c, addr, addr + FP_PAGE_SIZE, FP_PAGE_SIZE, n - done, type);
        if (idle_add_page(c, addr, addr + FP_PAGE_SIZE, type))
            return done;
        done++;
        addr += FP_PAGE_SIZE;
    }
    return done;
}

static inline int pte_unit(uint64_t e, int ept, uint64_t abit)
{
    if (!(ept ? fp_ept_present(e) : fp_entry_present(e)))
        return PTE_HOLE;
    return (e & abit) ? PTE_ACCESSED : PTE_IDLE;
}

/* mm_idle_pte_range() and ept_pte_range(): one unit per PTE, accessed bits
 * test-and-cleared before the unit is added (a unit that does not fit has still
 * lost its bit, the ones after it keep theirs). Runs of one unit type are added
 * at once. `ept` selects the EPT's present and accessed bits. */
static int pte_range(struct idle_ctl *c, uint64_t *ptes, uint64_t addr, uint64_t next, int ept)
{
    const uint64_t abit = ept ? FP_EPT_ACCESSED : FP_PAGE_ACCESSED;
    uint64_t *e = &ptes[fp_index(addr, 4)];
    const uint64_t n = (next - addr) >> FP_PAGE_SHIFT;
    uint64_t i = 0;
    int type = pte_unit(e[0], ept, abit);
    while (i < n) {
        uint64_t j = i + 1;
        int after = IDLE_NR_TYPES;
        while (j < n && (after = pte_unit(e[j], ept, abit)) == type)
            j++;
        uint64_t added = idle_add_run(c, addr + (i << FP_PAGE_SHIFT), j - i, type);
        int full = added < j - i;
        if (type == PTE_ACCESSED)
            for (uint64_t k = i; k < i + added + (uint64_t)full; k++)
                e[k] &= ~abit;
        if (full)
            return IDLE_KBUF_FULL;
        i = j;
        type = after;
    }
    return 0;
}

/* Present PTEs of one leaf table within [addr, next) (inside one PMD). */
static uint64_t present_ptes(const uint64_t *ptes, uint64_t addr, uint64_t next)
{
    uint64_t n = 0;
    for (unsigned i = fp_index(addr, 4), e = i + (unsigned)((next - addr) >> FP_PAGE_SHIFT); i < e; i++)
        n += fp_entry_present(ptes[i]) != 0;
    return n;
}

/* Present base pages mapped by one PMD entry within [addr, next): ground truth
 * for what a skipped slot held. */
static uint64_t present_in_pmd(struct idle_ctl *c, uint64_t pmd, uint64_t addr, uint64_t next)
{
    if (!fp_entry_present(pmd))
        return 0;
    if (pmd & FP_PAGE_PSE)
        return (next - addr) >> FP_PAGE_SHIFT;
    return present_ptes(fp_table(c->k, fp_entry_addr(pmd)), addr, next);
}

/* mm_idle_pmd_entry() */
static int pmd_entry(struct idle_ctl *c, uint64_t *pmd, uint64_t addr, uint64_t next)
{
    int type;
    int pte_type = c->scan_flags & FP_SCAN_HUGE_PAGE ? PMD_IDLE_PTES : IDLE_NR_TYPES;
    if ((addr & ~(FP_PMD_SIZE - 1)) == (c->last_va & ~(FP_PMD_SIZE - 1))) {
        c->missed += present_in_pmd(c, *pmd, addr, next); /* silently not reported */
        c->skip_end = next;
        return 0; /* a duplicate PMD: skipped, PTEs included */
    }
    c->last_va = addr;
    int large = (*pmd & FP_PAGE_PSE) != 0;
    if (!fp_entry_present(*pmd)) {
        type = PMD_HOLE;
    } else if (!(*pmd & FP_PAGE_ACCESSED)) {
        if (large)
            type = PMD_IDLE;
        else if (c->scan_flags & FP_SCAN_SKIM_IDLE)
            type = PMD_IDLE_PTES;
        else
            type = pte_type;
    } else {
        *pmd &= ~(uint64_t)FP_PAGE_ACCESSED;
        type = large ? PMD_ACCESSED : pte_type;
    }
    if (type != IDLE_NR_TYPES)
        return idle_add_page(c, addr, next, type);
    return pte_range(c, fp_table(c->k, fp_entry_addr(*pmd)), addr, next, 0);
}

/* mm_idle_pud_entry(): a huge PUD ends the walk call whatever happens */
static int pud_entry(struct idle_ctl *c, uint64_t addr, uint64_t next)
{
    if ((addr & ~(FP_PUD_SIZE - 1)) != (c->last_va & ~(FP_PUD_SIZE - 1))) {
        if (idle_add_page(c, addr, next, PUD_PRESENT)) /* a unit that does not fit is lost */
            c->missed += (next - addr) >> FP_PAGE_SHIFT;
        c->last_va = addr;
    }
    return 1;
}

static inline uint64_t slot_end(uint64_t addr, uint64_t end, int level)
{
    uint64_t span = 1ULL << (12 + 9 * (4 - level));
    uint64_t b = (addr + span) & ~(span - 1);
    return (b - 1 < end - 1) ? b : end; /* the kernel's p?d_addr_end() */
}

/* walk_pgd_range() .. walk_pmd_range() of 4.20 with only pud/pmd callbacks */
static int walk_level(struct idle_ctl *c, uint64_t table, int level, uint64_t addr, uint64_t end)
{
    uint64_t *t = fp_table(c->k, table);
    uint64_t next;
    int err = 0;
    do {
        next = slot_end(addr, end, level);
        uint64_t *e = &t[fp_index(addr, level)];
        if (fp_entry_none(*e))
            continue;
        if (level == 3) {
            err = pmd_entry(c, e, addr, next);
        } else if (level == 2 && (*e & FP_PAGE_PSE)) {
            err = pud_entry(c, addr, next);
        } else if (fp_entry_present(*e)) {
            err = walk_level(c, fp_entry_addr(*e), level + 1, addr, next);
        }
        if (err)
            break;
    } while (addr = next, addr != end);
    return err;
}

static uint64_t present_in(struct idle_ctl *c, uint64_t table, int level, uint64_t addr,
                           uint64_t end)
{
    const uint64_t *t = fp_table(c->k, table);
    uint64_t n = 0, next;
    if (level == 4) /* within one PMD: one page per entry */
        return present_ptes(t, addr, end);
    do {
        next = slot_end(addr, end, level);
        uint64_t e = t[fp_index(addr, level)];
        if (fp_entry_present(e)) {
            if (e & FP_PAGE_PSE)
                n += (next - addr) >> FP_PAGE_SHIFT;
            else
                n += present_in(c, fp_entry_addr(e), level + 1, addr, next);
        }
    } while (addr = next, addr != end);
    return n;
}

/* first VMA with end > addr (find_vma) */
static uint32_t find_vma(const struct fp_vma_span *v, uint32_t n, uint64_t addr)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (v[mid].end > addr)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* walk_page_range() with mm_idle_test_walk(): vma->flags carries its verdict */
static void walk_page_range(struct idle_ctl *c, uint64_t pgd, const struct fp_vma_span *v,
                            uint32_t n, uint64_t start, uint64_t end)
{
    uint32_t i = find_vma(v, n, start);
    uint64_t next;
    do {
        if (i >= n)
            break; /* no pte_hole callback: nothing after the last VMA */
        if (start < v[i].start) {
            next = v[i].start < end ? v[i].start : end;
            continue;
        }
        next = v[i].end < end ? v[i].end : end;
        uint32_t flags = v[i++].flags;
        if (!(flags & FP_VMA_WALK) || (flags & FP_VMA_HUGETLB))
            continue; /* skipped by test_walk, or hugetlb with no hugetlb_entry */
        if (walk_level(c, pgd, 1, start, next))
            break;
    } while (start = next, start < end);
}

/* ---- EPT mode (RFC v2 ept_idle_walk_hva_range / ept_page_range) ---------------- */

/* scan flags are ignored in VM mode (RFC v2): a table PMD is always descended */
static int ept_level(struct idle_ctl *c, uint64_t table, int level, uint64_t addr, uint64_t end)
{
    uint64_t *t = fp_table(c->k, table);
    uint64_t next;
    int err = 0;
    do {
        next = slot_end(addr, end, level);
        uint64_t *e = &t[fp_index(addr, level)];
        if (level == 3) {
            int large = (*e & FP_EPT_LARGE) != 0, accessed = (*e & FP_EPT_ACCESSED) != 0;
            if (!fp_ept_present(*e)) {
                err = idle_add_page(c, addr, next, PMD_HOLE);
            } else {
                *e &= ~(uint64_t)FP_EPT_ACCESSED;
                if (large)
                    err = idle_add_page(c, addr, next, accessed ? PMD_ACCESSED : PMD_IDLE);
                else
                    err = pte_range(c, fp_table(c->k, fp_entry_addr(*e)), addr, next, 1);
            }
        } else if (!fp_ept_present(*e)) {
            c->restart = next; /* a non-present upper level only moves the restart */
        } else if (level == 2 && (*e & FP_EPT_LARGE)) {
            err = idle_add_page(c, addr, next, PUD_PRESENT); /* the walk goes on after it */
        } else {
            err = ept_level(c, fp_entry_addr(*e), level + 1, addr, next);
        }
        if (err)
            break;
    } while (addr = next, addr != end);
    return err;
}

/* ---- one read(2) in steps ----------------------------------------------------- */

/* A read between two steps: the walk state of one read(2). A pass (one staging
 * buffer copied to the user buffer) leaves nothing else behind, so a read can stop
 * between passes and go on later; the tables are walked again from the top. */
struct fp_idle_scan {
    struct idle_ctl c;     /* c.k is set again at every step */
    uint32_t mm_id;
    uint32_t vm;           /* the VM walked (index + 1), 0 in task mode */
    uint64_t start, end;   /* the walk loop's variables */
    uint64_t cursor;       /* the file position the read leaves */
    int done;
    int tail;              /* the passes are over; counting the unreported rest */
    uint64_t tail_from;    /* where that count goes on */
    uint64_t pos;          /* where the read began */
    uint64_t resume;       /* where the unreported rest began (after the last unit) */
    uint64_t tail_missed;  /* its present pages: the caller decides whether they count
                            * (a next read from `resume` reports them after all) */
};

struct fp_idle_scan *fp_idle_scan_new(void)
{
    return calloc(1, sizeof(struct fp_idle_scan));
}

void fp_idle_scan_free(struct fp_idle_scan *s)
{
    free(s);
}

uint64_t fp_idle_scan_copied(const struct fp_idle_scan *s) { return s->c.copied; }
uint64_t fp_idle_scan_cursor(const struct fp_idle_scan *s) { return s->cursor; }

uint64_t fp_idle_scan_tail(const struct fp_idle_scan *s, uint64_t *resume, uint64_t *end)
{
    *resume = s->resume;
    *end = s->end;
    return s->tail_missed;
}

void fp_idle_missed_add(struct fp_kernel *k, uint32_t mm_id, uint64_t pages)
{
    struct fp_mm *mm = mm_id < FP_MAX_MMS ? k->mms[mm_id] : NULL;
    if (mm && mm->alive)
        mm->idle_missed += pages;
}

/* Present base pages in [lo, hi) of the VMAs a task-mode read walks. */
static uint64_t present_walked(struct idle_ctl *c, struct fp_mm *mm, const struct fp_vma_span *vmas,
                               uint32_t nr_vmas, uint64_t lo, uint64_t hi)
{
    uint64_t n = 0;
    for (uint32_t i = find_vma(vmas, nr_vmas, lo); mm->pgd && i < nr_vmas && vmas[i].start < hi; i++) {
        uint64_t a = vmas[i].start > lo ? vmas[i].start : lo;
        uint64_t b = vmas[i].end < hi ? vmas[i].end : hi;
        if (a < b && (vmas[i].flags & FP_VMA_WALK) && !(vmas[i].flags & FP_VMA_HUGETLB))
            n += present_in(c, mm->pgd, 1, a, b);
    }
    return n;
}

uint64_t fp_idle_present(struct fp_kernel *k, uint32_t mm_id, const struct fp_vma_span *vmas,
                         uint32_t nr_vmas, uint64_t lo, uint64_t hi)
{
    struct fp_mm *mm = mm_id < FP_MAX_MMS ? k->mms[mm_id] : NULL;
    struct idle_ctl c = {.k = k};
    return mm && mm->alive ? present_walked(&c, mm, vmas, nr_vmas, lo, hi) : 0;
}

/* Up to max_passes EPT-mode passes; 1 when the read has more to do. */
static int ept_passes(struct fp_vm *vm, struct fp_idle_scan *s, uint32_t max_passes)
{
    struct idle_ctl *c = &s->c;
    for (uint32_t passes = 0; s->start < s->end; passes++) {
        if (passes == max_passes)
            return 1;
        idle_begin_pass(c);
        const struct fp_memslot *slot = fp_vm_slot_of_hva(vm, s->start);
        uint64_t next;
        if (slot && vm->root_valid && vm->eptp) {
            /* walk the slot from start's GPA to the slot's end, whatever `end` is */
            c->gpa_to_hva = slot->hva - slot->gpa;
            c->restart = s->start - c->gpa_to_hva;
            int full = ept_level(c, vm->eptp, 1, c->restart, slot->gpa + (slot->npages << FP_PAGE_SHIFT));
            /* a full buffer restarts at the unit that did not fit (even when the pass
             * added nothing: no room); only a slot that yielded no unit at all goes on
             * to the next slot (1.7) */
            next = c->used || full ? c->restart + c->gpa_to_hva : fp_vm_next_slot_hva(vm, s->start);
        } else {
            next = fp_vm_next_slot_hva(vm, s->start); /* no slot here, or nothing to walk */
        }
        s->start = next;
        if (idle_copy_user(c, s->start, s->end))
            break;
    }
    return 0;
}

/* The pages of the user buffer's worth of range a read left unreported, counted in
 * steps too: when a 1 MiB read fills, the rest of its range (up to 8 Mi pages) is
 * counted, which takes as long as walking it. A step counts IDLE_TAIL_PAGES pages for
 * each pass it has left. */
#define IDLE_TAIL_PAGES 16384

/* Up to max_passes task-mode passes; 1 when the read has more to do. */
static int task_passes(struct fp_mm *mm, struct fp_idle_scan *s, const struct fp_vma_span *vmas,
                       uint32_t nr_vmas, uint32_t max_passes)
{
    struct idle_ctl *c = &s->c;
    uint32_t passes = 0;
    if (!s->tail) {
        for (; s->start < s->end; passes++) {
            if (passes == max_passes)
                return 1;
            idle_begin_pass(c);
            uint32_t i = find_vma(vmas, nr_vmas, s->start);
            if (i < nr_vmas) {
                if (s->end > vmas[i].start) {
                    if (mm->pgd)
                        walk_page_range(c, mm->pgd, vmas, nr_vmas, s->start, s->end);
                } else {
                    c->restart = vmas[i].start;
                }
            } else {
                c->restart = FP_TASK_SIZE;
            }
            s->start = c->restart;
            if (idle_copy_user(c, s->start, s->end))
                break;
        }
        if (c->copied < c->count && !c->starved) {
            mm->idle_missed += c->missed;
            return 0;
        }
        /* the user buffer filled, or kept too little room for another SET_HVA (the read
         * returns up to 18 bytes short): pages between the last unit and `end` went
         * unreported */
        s->tail = 1;
        /* no unit at all (count 19): the rest is the whole range */
        s->resume = c->unit_end > s->pos ? c->unit_end : s->pos;
        s->tail_from = s->resume > c->skip_end ? s->resume : c->skip_end;
        /* a last pass with no room may have skipped the rest of the last unit's PMD
         * (last_va): those pages lie after the last unit too, so they are the tail's */
        uint64_t moved = present_walked(c, mm, vmas, nr_vmas, s->resume, s->tail_from);
        moved = moved < c->missed ? moved : c->missed;
        c->missed -= moved;
        s->tail_missed = moved;
    }
    uint64_t budget = (uint64_t)(max_passes - passes) * IDLE_TAIL_PAGES;
    while (mm->pgd && s->tail_from < s->end) {
        uint32_t i = find_vma(vmas, nr_vmas, s->tail_from);
        if (i >= nr_vmas || vmas[i].start >= s->end)
            break;
        if (budget == 0)
            return 1;
        uint64_t lo = vmas[i].start > s->tail_from ? vmas[i].start : s->tail_from;
        uint64_t hi = vmas[i].end < s->end ? vmas[i].end : s->end;
        if ((hi - lo) >> FP_PAGE_SHIFT > budget)
            hi = lo + (budget << FP_PAGE_SHIFT);
        s->tail_missed += present_walked(c, mm, vmas, nr_vmas, lo, hi);
        budget -= (hi - lo) >> FP_PAGE_SHIFT;
        s->tail_from = hi;
    }
    mm->idle_missed += c->missed;
    return 0;
}

int64_t fp_idle_scan_start(struct fp_kernel *k, struct fp_idle_scan *s, uint32_t id, uint64_t pos,
                           uint64_t count, uint32_t scan_flags, uint8_t *ubuf)
{
    static const uint64_t max_rw = 0x7ffff000;
    memset(&s->c, 0, offsetof(struct idle_ctl, kbuf));
    s->cursor = pos;
    s->done = 1;
    s->tail = 0;
    s->tail_missed = s->resume = s->end = 0;
    if (pos >> 63)
        return -EINVAL; /* rw_verify_area(): negative loff_t */
    if (count > max_rw)
        count = max_rw;
    if (pos >= FP_TASK_SIZE || count == 0)
        return 0;
    if (pos & (FP_PAGE_SIZE - 1))
        return -EINVAL;
    if (count < IDLE_BUF_MIN)
        return -EINVAL;
    struct fp_mm *mm = id < FP_MAX_MMS ? k->mms[id] : NULL;
    if (!mm || !mm->alive)
        return -ESRCH;
    s->mm_id = id;
    s->vm = (uint32_t)mm->vm; /* the process runs a VM: walk its EPT (decided on every read) */
    if (s->vm) {
        struct fp_vm *vm = k->vms[s->vm - 1];
        if (!vm->has_vcpu0 || !vm->ad_enabled || vm->levels != 4)
            return -EINVAL; /* the VM cannot be walked */
    }
    s->c.ubuf = ubuf;
    s->c.count = count;
    s->c.scan_flags = s->vm ? 0 : scan_flags;
    s->c.restart = pos;
    s->start = s->pos = pos;
    s->end = pos + (count << (3 + FP_PAGE_SHIFT));
    s->done = 0;
    return 0;
}

int32_t fp_idle_scan_step(struct fp_kernel *k, struct fp_idle_scan *s, const struct fp_vma_span *vmas,
                          uint32_t nr_vmas, uint32_t max_passes)
{
    if (s->done)
        return 0;
    struct fp_mm *mm = s->mm_id < FP_MAX_MMS ? k->mms[s->mm_id] : NULL;
    int more = 0;
    s->c.k = k;
    /* an address space that died or changed mode since the last step ends the read
     * with what it has (a real read would finish on the mm it holds a reference to);
     * so does max_passes 0, for a caller that knows the mm's slot was reused */
    if (max_passes && mm && mm->alive && (uint32_t)mm->vm == s->vm) {
        if (s->vm)
            more = ept_passes(k->vms[s->vm - 1], s, max_passes);
        else
            more = task_passes(mm, s, vmas, nr_vmas, max_passes);
    }
    if (!more) {
        s->done = 1;
        s->cursor = s->c.next_hva;
    }
    return more;
}
