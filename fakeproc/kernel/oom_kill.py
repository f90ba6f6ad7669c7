"""The OOM killer's choice and the files that show and steer it.

Linux: mm/oom_kill.c (oom_badness(), select_bad_process()), fs/proc/base.c
(proc_oom_score(), oom_adj_read/write(), oom_score_adj_read/write(), __set_oom_adj()).
"""
from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from .native import KernelError
from .task import Caller, capable

if TYPE_CHECKING:
    from .kernel import Kernel
    from .task import Task

OOM_SCORE_ADJ_MIN, OOM_SCORE_ADJ_MAX = -1000, 1000
OOM_DISABLE, OOM_ADJUST_MAX = -17, 15  # the legacy oom_adj scale
CAP_SYS_RESOURCE = 24


def total_pages(kernel: "Kernel") -> int:
    """totalram_pages + total_swap_pages: what badness is measured against."""
    return sum(n.nr_pages for n in kernel.nodes) + kernel.swap_pages()[0]


def badness(kernel: "Kernel", task: "Task", totalpages: int) -> int:
    """oom_badness(): 0 for init (pid 1), a process without an address space or one at
    OOM_SCORE_ADJ_MIN; else its RSS, swap entries and page tables below the PGD
    (mm_pgtables_bytes()), plus oom_score_adj thousandths of totalpages, at least 1."""
    if task.pid == 1 or task.mm_id is None or task.oom_score_adj == OOM_SCORE_ADJ_MIN:
        return 0
    mc = kernel.mm_counters(task)
    points = (mc["rss_anon"] + mc["rss_file"] + mc["rss_shmem"] + mc["swap"]
              + max(0, mc["nr_tables"] - 1))
    points += task.oom_score_adj * (totalpages // 1000)
    return points if points > 0 else 1


def oom_score(kernel: "Kernel", task: "Task") -> int:
    """proc_oom_score(): badness in thousandths of all memory and swap."""
    totalpages = total_pages(kernel)
    return badness(kernel, task, totalpages) * 1000 // totalpages


def select_victim(kernel: "Kernel") -> "Task | None":
    """select_bad_process(): the process with the most points, in process-list order
    (creation order), a later one winning a tie; none when every one has 0."""
    totalpages, chosen, chosen_points = total_pages(kernel), None, 0
    for task in kernel.tasks.values():
        points = badness(kernel, task, totalpages) if task.alive else 0
        if points and points >= chosen_points:
            chosen, chosen_points = task, points
    return chosen


def oom_adj(task: "Task") -> int:
    """oom_adj_read(): oom_score_adj on the legacy -17..15 scale."""
    if task.oom_score_adj == OOM_SCORE_ADJ_MAX:
        return OOM_ADJUST_MAX
    return int(task.oom_score_adj * -OOM_DISABLE / OOM_SCORE_ADJ_MAX)  # C truncates toward 0


def _einval() -> KernelError:
    return KernelError(errno.EINVAL, os.strerror(errno.EINVAL))


def check_oom_score_adj(value: int) -> None:
    """oom_score_adj_write()'s range, checked before the process is looked up."""
    if not OOM_SCORE_ADJ_MIN <= value <= OOM_SCORE_ADJ_MAX:
        raise _einval()


def check_oom_adj(value: int) -> None:
    """oom_adj_write()'s range: -17 (OOM_DISABLE) to 15."""
    if not OOM_DISABLE <= value <= OOM_ADJUST_MAX:
        raise _einval()


def set_oom_score_adj(task: "Task", value: int, caller: Caller | None) -> None:
    """__set_oom_adj() for oom_score_adj (value in range): below the floor a process
    holding CAP_SYS_RESOURCE set (oom_score_adj_min) only with it (EACCES); such a
    writer moves the floor too."""
    privileged = capable(caller, CAP_SYS_RESOURCE)
    if value < task.oom_score_adj_min and not privileged:
        raise KernelError(errno.EACCES, os.strerror(errno.EACCES))
    task.oom_score_adj = value
    if privileged:
        task.oom_score_adj_min = value


def set_oom_adj(task: "Task", value: int, caller: Caller | None) -> None:
    """__set_oom_adj() for the legacy oom_adj (value in range), scaled to
    oom_score_adj (15 is the maximum); lowering the current value needs
    CAP_SYS_RESOURCE (EACCES)."""
    adj = OOM_SCORE_ADJ_MAX if value == OOM_ADJUST_MAX else \
        int(value * OOM_SCORE_ADJ_MAX / -OOM_DISABLE)
    if adj < task.oom_score_adj and not capable(caller, CAP_SYS_RESOURCE):
        raise KernelError(errno.EACCES, os.strerror(errno.EACCES))
    task.oom_score_adj = adj
