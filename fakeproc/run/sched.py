"""sched_setaffinity(2) and sched_getaffinity(2) over the emulated CPUs, for programs
under `fakeproc run` (kernel/sched/core.c of 4.20).

The program sees the emulated CPUs in /sys, and taskset, numactl --cpunodebind and
pthread_setaffinity_np pass masks of them; the host kernel would refuse a CPU it
does not have (EINVAL). The runner answers both calls for the tasks under it, and
keeps each task's mask (fakeproc.run.tasks); the host's own scheduling of the
program is left alone. A call on an emulated pid reads the emulated task's mask
(every online CPU); a call on a real task outside the runner goes to the host.

A cpumask here is nr_cpu_ids bits long, cpumask_size() = BITS_TO_LONGS(nr_cpu_ids)
longs: 4.20 with CONFIG_CPUMASK_OFFSTACK, as distribution kernels build it.
"""
from __future__ import annotations

import errno
from typing import Callable

from . import seccomp
from .tasks import MachineFacts, TaskStates, cpu_mask, under_runner

Facts = Callable[[], "MachineFacts | None"]


def cpumask_size(facts: MachineFacts) -> int:
    return (facts.nr_cpu_ids + 63) // 64 * 8


def _target(notif: seccomp.Notification, pid: int, masks: TaskStates[int]) -> int | None:
    """The real task a call on pid names when it is under the runner, else None."""
    tid = notif.pid if pid == 0 else pid
    return tid if 0 < tid <= seccomp.PID_MAX_LIMIT and under_runner(notif.pid, tid, masks.root) \
        else None


def getaffinity_handler(facts: Facts, masks: TaskStates[int],
                        emulated: Callable[[int], bool]) -> seccomp.Handler:
    """sched_getaffinity(pid, len, user_mask_ptr): EINVAL when len * 8 (an unsigned
    int) is below nr_cpu_ids or len is not a multiple of 8; ESRCH for no such task;
    then min(len, cpumask_size()) bytes of the task's mask (EFAULT) and that count.
    ``emulated(pid)``: does the emulated machine have that pid or thread id?"""
    def handler(notif: seccomp.Notification) -> seccomp.Response:
        f = facts()
        if f is None:
            return seccomp.Continue()
        pid, length, ptr = seccomp._s32(notif.args[0]), notif.args[1] & 0xFFFFFFFF, notif.args[2]
        if (length * 8) & 0xFFFFFFFF < f.nr_cpu_ids or length & 7:
            return seccomp.Return(-errno.EINVAL)
        online = cpu_mask(f.online_cpus)
        if pid > seccomp.PID_MAX_LIMIT:
            if not emulated(pid):
                return seccomp.Return(-errno.ESRCH)
            mask = online
        elif (tid := _target(notif, pid, masks)) is not None:
            mask = masks.get(tid, online) & online  # cpus_allowed & cpu_active_mask
        else:
            return seccomp.Continue()
        n = min(length, cpumask_size(f))
        try:
            notif.write(ptr, mask.to_bytes(cpumask_size(f), "little")[:n])
        except OSError as e:
            if e.errno != errno.EFAULT:
                raise
            return seccomp.Return(-errno.EFAULT)
        return seccomp.Return(n)
    return handler


def setaffinity_handler(facts: Facts, masks: TaskStates[int],
                        changed: Callable[[int, int], None] = lambda tid, mask: None) -> seccomp.Handler:
    """sched_setaffinity(pid, len, user_mask_ptr): the mask is read first (a shorter
    len leaves the rest clear, a longer one is cut to cpumask_size(); EFAULT), then
    intersected with the cpuset (the online CPUs); EINVAL when nothing is left, else
    it becomes the task's mask and ``changed(tid, mask)`` is told. An emulated pid goes
    to the host (ESRCH: the emulator has no scheduler to move its tasks)."""
    def handler(notif: seccomp.Notification) -> seccomp.Response:
        f = facts()
        if f is None:
            return seccomp.Continue()
        pid, length, ptr = seccomp._s32(notif.args[0]), notif.args[1] & 0xFFFFFFFF, notif.args[2]
        tid = _target(notif, pid, masks)
        if tid is None:
            return seccomp.Continue()
        try:
            raw = notif.read(ptr, min(length, cpumask_size(f)))
        except OSError as e:
            if e.errno != errno.EFAULT:
                raise
            return seccomp.Return(-errno.EFAULT)
        new = int.from_bytes(raw, "little") & cpu_mask(f.online_cpus)
        if not new:
            return seccomp.Return(-errno.EINVAL)
        masks.set(tid, new)
        changed(tid, new)
        return seccomp.Return(0)
    return handler
