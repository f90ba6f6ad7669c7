"""Virtual machines: a QEMU process's KVM VM, its memory slots and the EPT.

Linux: virt/kvm (memslots), arch/x86/kvm/mmu.c. The EPT and guest accesses are
C (native/kvm.c); idle_pages on a process with a VM walks the EPT
(INTERFACES.md 1.7, native/task_mmu.c).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from .native import check, ffi, lib
from .workload import Workload

if TYPE_CHECKING:
    from .kernel import Kernel
    from .task import Task

PAGE_SIZE = 4096
EPT_RWX = lib.FP_EPT_R | lib.FP_EPT_W | lib.FP_EPT_X


@dataclass(frozen=True)
class MemSlot:
    """KVM memory slot: guest-physical [gpa, gpa + size) lives at host address hva."""

    gpa: int
    size: int
    hva: int


@dataclass
class Vm:
    """A VM of one process (the emulated QEMU). ``id`` indexes the native VM table."""

    id: int
    slots: tuple[MemSlot, ...]
    workload: Workload | None = field(default=None, repr=False)


def create_vm(kernel: "Kernel", task: "Task", slots: Sequence[MemSlot], *, vcpu0: bool = True,
              ept_ad: bool = True, ept_levels: int = 4, root_valid: bool = True) -> Vm:
    """KVM_CREATE_VM + KVM_SET_USER_MEMORY_REGION + a vCPU 0. Each slot must lie in an
    anonymous VMA of the task (its guest RAM)."""
    assert task.mm_id is not None
    mm = kernel.mm(task.mm_id)
    ordered = sorted(slots, key=lambda s: s.hva)
    if len(ordered) > lib.FP_MAX_SLOTS:
        raise ValueError(f"at most {lib.FP_MAX_SLOTS} memory slots")
    for s in ordered:
        vma = mm.find_vma(s.hva)
        if vma is None or s.hva + s.size > vma.end or s.size <= 0 or (s.gpa | s.hva | s.size) % PAGE_SIZE:
            raise ValueError(f"slot gpa {s.gpa:#x} at {s.hva:#x}: page-aligned and inside one VMA")
    vm_id = check(lib.fp_vm_new(kernel.native, task.mm_id))
    c = kernel.native.vms[vm_id]
    c.has_vcpu0, c.ad_enabled, c.levels, c.root_valid = vcpu0, ept_ad, ept_levels, root_valid
    for i, s in enumerate(ordered):
        c.slots[i].gpa, c.slots[i].npages, c.slots[i].hva = s.gpa, s.size // PAGE_SIZE, s.hva
        c.slots[i].vma_flags = mm.find_vma(s.hva).native_flags  # type: ignore[union-attr]
    c.nr_slots = len(ordered)
    task.vm = Vm(vm_id, tuple(ordered))
    kernel.generation += 1
    return task.vm


def destroy_vm(kernel: "Kernel", task: "Task") -> None:
    """The VM goes away (its EPT is freed); idle_pages falls back to task mode."""
    if task.vm is not None:
        kernel.workloads_changing(task)  # its guest workload goes with it
        lib.fp_vm_destroy(kernel.native, task.vm.id)
        task.vm = None
        kernel.generation += 1


def ept_set(kernel: "Kernel", task: "Task", gpa: int, level: int, bits: int, node: int | None) -> None:
    """Pin an exact EPT leaf (scenario files): level 4 = 4 KiB, 3 = 2 MiB, 2 = 1 GiB."""
    assert task.vm is not None
    nidx = -1 if node is None else kernel.node_index(node)
    check(lib.fp_ept_set(kernel.native, task.vm.id, gpa, level, bits, nidx))
    kernel.generation += 1


def guest_touch(kernel: "Kernel", task: "Task", gpa: int, *, write: bool = False) -> None:
    """One guest access: EPT accessed/dirty bits, an EPT violation first if unmapped."""
    assert task.vm is not None
    check(lib.fp_ept_touch(kernel.native, task.vm.id, gpa, int(write)))
    kernel.generation += 1


def ept_entry(kernel: "Kernel", task: "Task", gpa: int) -> tuple[int, int]:
    """(level, raw EPT leaf) mapping gpa, for tests."""
    assert task.vm is not None
    level = ffi.new("int32_t *")
    e = check(lib.fp_ept_entry(kernel.native, task.vm.id, gpa, level))
    return int(level[0]), int(e)


def attach_guest_workload(kernel: "Kernel", task: "Task", wl: Workload) -> None:
    """The guest's own access stream over its memory slots (guest-physical)."""
    assert task.vm is not None and task.mm_id is not None
    mm = kernel.mm(task.mm_id)
    wl.bind(task.mm_id, [(s.gpa, s.size // PAGE_SIZE, mm.find_vma(s.hva).native_flags)  # type: ignore[union-attr]
                         for s in task.vm.slots], vm=task.vm.id)
    kernel.workloads_changing(task)
    task.vm.workload = wl
