/*
 * KVM virtual machines: memory slots, the EPT, guest accesses, MMU notifiers.
 * Linux: virt/kvm/kvm_main.c (memslots, hva<->gpa), arch/x86/kvm/mmu.c (tdp
 * faults, kvm_unmap_hva_range, kvm_test_age_hva / kvm_age_hva) and the EPT
 * format of the SDM: present = any of R/W/X (bits 0-2), large = bit 7,
 * accessed = bit 8, dirty = bit 9 (with A/D enabled the CPU sets them on every
 * paging-structure entry it uses).
 *
 * The EPT maps a guest-physical page to the host page that backs it in the
 * QEMU process; host reclaim sees guest accesses through the EPT accessed bits
 * and any change of the host mapping zaps the EPT entry (the guest re-faults).
 */
#include <errno.h>
#include <stdlib.h>
#include "internal.h"

#define EPT_TABLE (FP_EPT_PRESENT | FP_EPT_ACCESSED)

static struct fp_vm *get_vm(struct fp_kernel *k, int32_t vm)
{
    return (vm >= 0 && vm < FP_MAX_VMS) ? k->vms[vm] : NULL;
}

int32_t fp_vm_new(struct fp_kernel *k, uint32_t mm_id)
{
    struct fp_mm *mm = mm_id < FP_MAX_MMS ? k->mms[mm_id] : NULL;
    if (!mm || mm->vm)
        return -EINVAL;
    for (int32_t i = 0; i < FP_MAX_VMS; i++) {
        if (k->vms[i])
            continue;
        struct fp_vm *vm = calloc(1, sizeof(*vm));
        if (!vm)
            return -ENOMEM;
        vm->mm = mm_id;
        vm->has_vcpu0 = vm->ad_enabled = vm->root_valid = 1;
        vm->levels = 4;
        k->vms[i] = vm;
        mm->vm = i + 1;
        return i;
    }
    return -ENOSPC;
}

static void free_ept(struct fp_kernel *k, uint64_t table, int level)
{
    uint64_t *t = fp_table(k, table);
    for (int i = 0; level < 4 && i < FP_PTRS_PER_TABLE; i++)
        if (fp_ept_present(t[i]) && !(t[i] & FP_EPT_LARGE))
            free_ept(k, fp_entry_addr(t[i]), level + 1);
    fp_table_free(k, table);
}

void fp_vm_destroy(struct fp_kernel *k, int32_t id)
{
    struct fp_vm *vm = get_vm(k, id);
    if (!vm)
        return;
    if (vm->eptp)
        free_ept(k, vm->eptp, 1);
    if (k->mms[vm->mm])
        k->mms[vm->mm]->vm = 0;
    k->vms[id] = NULL;
    free(vm);
}

static const struct fp_memslot *slot_of_gpa(const struct fp_vm *vm, uint64_t gpa)
{
    for (uint32_t i = 0; i < vm->nr_slots; i++) {
        const struct fp_memslot *s = &vm->slots[i];
        if (gpa >= s->gpa && gpa < s->gpa + (s->npages << FP_PAGE_SHIFT))
            return s;
    }
    return NULL;
}

const struct fp_memslot *fp_vm_slot_of_hva(const struct fp_vm *vm, uint64_t hva)
{
    for (uint32_t i = 0; i < vm->nr_slots; i++) {
        const struct fp_memslot *s = &vm->slots[i];
        if (hva >= s->hva && hva < s->hva + (s->npages << FP_PAGE_SHIFT))
            return s;
    }
    return NULL;
}

/* The lowest slot start above hva, TASK_SIZE when none. */
uint64_t fp_vm_next_slot_hva(const struct fp_vm *vm, uint64_t hva)
{
    uint64_t best = FP_TASK_SIZE;
    for (uint32_t i = 0; i < vm->nr_slots; i++)
        if (vm->slots[i].hva > hva && vm->slots[i].hva < best)
            best = vm->slots[i].hva;
    return best;
}

/* The EPT entry for gpa at `level` (1 = PML4 .. 4 = PT), building tables when alloc. */
static uint64_t *ept_walk(struct fp_kernel *k, struct fp_vm *vm, uint64_t gpa, int level,
                          int alloc, int *err)
{
    const struct fp_mm *mm = k->mms[vm->mm];
    *err = 0;
    if (!vm->eptp) {
        int64_t t = alloc ? fp_table_alloc(k, mm, 0) : -ENOENT; /* not PageTables */
        if (t < 0) {
            *err = (int)t;
            return NULL;
        }
        vm->eptp = (uint64_t)t;
    }
    uint64_t table = vm->eptp;
    for (int l = 1; l < level; l++) {
        uint64_t *e = &fp_table(k, table)[fp_index(gpa, l)];
        if (!fp_ept_present(*e)) {
            int64_t t = alloc ? fp_table_alloc(k, mm, 0) : -ENOENT; /* not PageTables */
            if (t < 0) {
                *err = (int)t;
                return NULL;
            }
            *e = ((uint64_t)t << FP_PAGE_SHIFT) | EPT_TABLE;
        } else if (*e & FP_EPT_LARGE) {
            *err = -EEXIST;
            return NULL;
        }
        table = fp_entry_addr(*e);
    }
    return &fp_table(k, table)[fp_index(gpa, level)];
}

/* The leaf mapping gpa, or NULL; *level says where it was found. */
static uint64_t *ept_leaf(struct fp_kernel *k, struct fp_vm *vm, uint64_t gpa, int *level)
{
    if (!vm->eptp)
        return NULL;
    uint64_t table = vm->eptp;
    for (int l = 1; l <= 4; l++) {
        uint64_t *e = &fp_table(k, table)[fp_index(gpa, l)];
        *level = l;
        if (!fp_ept_present(*e))
            return NULL;
        if (l == 4 || (*e & FP_EPT_LARGE))
            return e;
        table = fp_entry_addr(*e);
    }
    return NULL;
}

int64_t fp_ept_entry(struct fp_kernel *k, int32_t id, uint64_t gpa, int32_t *level_out)
{
    struct fp_vm *vm = get_vm(k, id);
    int level = 0;
    *level_out = 0;
    if (!vm)
        return -EINVAL;
    uint64_t *e = ept_leaf(k, vm, gpa, &level);
    *level_out = level;
    return e ? (int64_t)*e : 0;
}

/* Map gpa to the host page behind it: a 2 MiB leaf when the host has a THP there
 * and the 2 MiB guest region lies inside the slot, with the same alignment;
 * writable only when the host entry is (hva_to_pfn()'s writable: a store through a
 * read-only leaf is an EPT violation that write-faults the host page first). */
static int ept_map(struct fp_kernel *k, struct fp_vm *vm, const struct fp_memslot *s,
                   uint64_t gpa, uint64_t extra_bits)
{
    uint64_t hva = s->hva + (gpa - s->gpa);
    int32_t level;
    uint64_t *host = fp_lookup(k, vm->mm, hva, &level);
    int err;
    if (!host || !fp_entry_present(*host) || (level < 4 && !(*host & FP_PAGE_PSE)))
        return -EFAULT;
    uint64_t pfn = fp_entry_addr(*host), gbase = gpa & ~(FP_PMD_SIZE - 1);
    uint64_t perm = FP_EPT_R | FP_EPT_X | ((*host & FP_PAGE_RW) ? FP_EPT_W : 0);
    int large = level == 3 && ((hva - gpa) & (FP_PMD_SIZE - 1)) == 0 && gbase >= s->gpa &&
                gbase + FP_PMD_SIZE <= s->gpa + (s->npages << FP_PAGE_SHIFT);
    uint64_t *e = ept_walk(k, vm, gpa, large ? 3 : 4, 1, &err);
    if (!e)
        return err;
    if (large)
        *e = ((pfn) << FP_PAGE_SHIFT) | perm | FP_EPT_LARGE | extra_bits;
    else
        *e = ((pfn + (level == 3 ? (hva >> FP_PAGE_SHIFT) % FP_PAGES_PER_HUGE : 0))
              << FP_PAGE_SHIFT) | perm | extra_bits;
    return 0;
}

/* A guest load or store at gpa: EPT A/D bits on the way, an EPT violation first
 * when the leaf is missing (tdp_page_fault: fault the host page in, then map it). */
int32_t fp_ept_touch(struct fp_kernel *k, int32_t id, uint64_t gpa, int32_t write)
{
    struct fp_vm *vm = get_vm(k, id);
    if (!vm)
        return -EINVAL;
    const struct fp_memslot *s = slot_of_gpa(vm, gpa);
    if (!s)
        return -EFAULT; /* MMIO: not memory */
    uint64_t ad = vm->ad_enabled ? FP_EPT_ACCESSED | (write ? FP_EPT_DIRTY : 0) : 0;
    int level;
    uint64_t *leaf = ept_leaf(k, vm, gpa, &level);
    if (!leaf || (write && !(*leaf & FP_EPT_W))) { /* missing, or a store to a read-only leaf */
        uint64_t hva = s->hva + (gpa - s->gpa);
        uint32_t flags = (write ? FP_FAULT_WRITE : 0) | FP_FAULT_NOZERO | (s->vma_flags << FP_FAULT_VMA_SHIFT);
        uint64_t base = hva & ~(FP_PMD_SIZE - 1);
        if ((s->vma_flags & FP_VMA_THP) && base >= s->hva &&
            base + FP_PMD_SIZE <= s->hva + (s->npages << FP_PAGE_SHIFT))
            flags |= FP_FAULT_THP;
        int32_t r = fp_fault(k, vm->mm, hva, flags);
        if (r < 0)
            return r;
        r = ept_map(k, vm, s, gpa, 0);
        if (r < 0)
            return r;
    }
    /* the CPU sets A on every EPT paging-structure entry it uses, and on the leaf */
    uint64_t table = vm->eptp;
    for (int l = 1; l <= 4; l++) {
        uint64_t *e = &fp_table(k, table)[fp_index(gpa, l)];
        if (l == 4 || (*e & FP_EPT_LARGE)) {
            *e |= ad;
            return fp_count_access(k, *e, gpa, l < 4);
        }
        *e |= ad & FP_EPT_ACCESSED;
        table = fp_entry_addr(*e);
    }
    return FP_NO_NODE;
}

/* Scenario set-up: an exact EPT leaf at gpa (level 4: 4 KiB, 3: 2 MiB, 2: 1 GiB).
 * bits = 0 leaves a hole. The host page behind it is created on `node`. */
int32_t fp_ept_set(struct fp_kernel *k, int32_t id, uint64_t gpa, int32_t level, uint64_t bits,
                   int32_t node)
{
    struct fp_vm *vm = get_vm(k, id);
    int err;
    if (!vm || level < 2 || level > 4)
        return -EINVAL;
    const struct fp_memslot *s = slot_of_gpa(vm, gpa);
    if (!s)
        return -EFAULT;
    if (!bits)
        return 0;
    uint64_t hva = s->hva + (gpa - s->gpa);
    if (level == 2) { /* a 1 GiB leaf: device memory, like a DAX-backed slot */
        uint64_t *e = ept_walk(k, vm, gpa, 2, 1, &err);
        if (!e)
            return err;
        uint64_t per = FP_PUD_SIZE >> FP_PAGE_SHIFT;
        k->device_pfn = (k->device_pfn + per - 1) / per * per;
        *e = (k->device_pfn << FP_PAGE_SHIFT) | FP_EPT_PRESENT | FP_EPT_LARGE | bits;
        k->device_pfn += per;
        return 0;
    }
    uint64_t host = FP_PAGE_PRESENT | FP_PAGE_RW | FP_PAGE_USER;
    int32_t r = level == 3 ? fp_set_thp(k, vm->mm, hva, host, node)
                           : fp_set_pte(k, vm->mm, hva, host, node, s->vma_flags);
    if (r < 0 && r != -EEXIST)
        return r;
    return ept_map(k, vm, s, gpa, bits & (FP_EPT_ACCESSED | FP_EPT_DIRTY));
}

/* Every EPT leaf mapping host pages [hva, hva + nr pages): zap it (kvm_unmap_hva_range)
 * or test-and-clear its accessed bit (kvm_age_hva); a THP may be mapped by 512
 * 4 KiB leaves or one 2 MiB leaf. Returns whether any leaf was young. */
static int ept_leaves(struct fp_kernel *k, const struct fp_mm *mm, uint64_t hva, uint64_t nr,
                      int zap)
{
    struct fp_vm *vm = k->vms[mm->vm - 1];
    int young = 0;
    for (uint64_t i = 0; i < nr;) {
        uint64_t a = hva + (i << FP_PAGE_SHIFT), step = 1;
        const struct fp_memslot *s = fp_vm_slot_of_hva(vm, a);
        int level;
        uint64_t *leaf = s ? ept_leaf(k, vm, s->gpa + (a - s->hva), &level) : NULL;
        if (leaf) {
            if (level < 4)
                step = FP_PAGES_PER_HUGE - ((a >> FP_PAGE_SHIFT) % FP_PAGES_PER_HUGE);
            if (zap) {
                *leaf = 0;
            } else if (*leaf & FP_EPT_ACCESSED) {
                *leaf &= ~(uint64_t)FP_EPT_ACCESSED;
                young = 1;
            }
        }
        i += step;
    }
    return young;
}

void fp_kvm_unmap_hva(struct fp_kernel *k, const struct fp_mm *mm, uint64_t hva, uint64_t nr)
{
    ept_leaves(k, mm, hva, nr, 1);
}

int fp_kvm_test_age_hva(struct fp_kernel *k, const struct fp_mm *mm, uint64_t hva, uint64_t nr)
{
    return ept_leaves(k, mm, hva, nr, 0);
}

int fp_clear_young_notify(struct fp_kernel *k, const struct fp_mm *mm, uint64_t *e, uint64_t addr)
{
    int young = (*e & FP_PAGE_ACCESSED) != 0;
    *e &= ~(uint64_t)FP_PAGE_ACCESSED;
    if (mm->vm)
        young |= fp_kvm_test_age_hva(k, mm, addr, fp_page_nr(&k->pages[fp_entry_addr(*e)])) != 0;
    return young;
}
