"""Emulated tasks: processes and their threads.

Linux: include/linux/sched.h (task_struct), the parts /proc/PID/status shows.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from .workload import Workload

if TYPE_CHECKING:
    from .kvm import Vm

TaskState = Literal["running", "sleeping", "zombie"]

STATE_TEXT = {"running": "R (running)", "sleeping": "S (sleeping)", "zombie": "Z (zombie)"}


CAP_SYS_PTRACE = 19
CAP_SYS_NICE = 23


@dataclass(frozen=True)
class Caller:
    """A calling process's credentials, as a permission check sees them: the uid and
    gid it checks with (real ones for PTRACE_MODE_READ_REALCREDS, fs ones for
    _FSCREDS) and its effective capabilities (a CapEff mask). None where a caller is
    expected stands for one with every capability (the control socket's commands)."""

    uid: int
    gid: int
    cap_eff: int

    def capable(self, cap: int) -> bool:
        return bool(self.cap_eff >> cap & 1)


def capable(caller: "Caller | None", cap: int) -> bool:
    return caller is None or caller.capable(cap)


def ptrace_may_access(caller: "Caller | None", task: "Task") -> bool:
    """__ptrace_may_access(): the caller's ids are every id of the task's (an emulated
    task has one uid and one gid), or it has CAP_SYS_PTRACE; emulated tasks are
    dumpable, and Yama restricts only attaching."""
    return caller is None or (caller.uid, caller.gid) == (task.uid, task.gid) or \
        caller.capable(CAP_SYS_PTRACE)


@dataclass(frozen=True)
class MemPolicy:
    """set_mempolicy() state: mode and nodes (mm/mempolicy.c)."""

    mode: Literal["default", "prefer", "bind", "interleave", "local"] = "default"
    nodes: tuple[int, ...] = ()


@dataclass
class Task:
    """A thread group. ``mm_id`` is None once the address space is gone (exit)."""

    pid: int
    name: str
    uid: int = 0
    gid: int = 0
    ppid: int = 1
    threads: tuple[int, ...] = ()
    cpu: int = 0
    state: TaskState = "sleeping"
    umask: int = 0o022
    policy: MemPolicy = field(default_factory=MemPolicy)
    mm_id: int | None = None
    workload: Workload | None = None
    vm: "Vm | None" = None  # a KVM VM this process (an emulated QEMU) runs
    exit_at: float | None = None  # virtual time at which the process exits
    mems_allowed: tuple[int, ...] | None = None  # its cpuset's mems (None: every node)
    nvcsw: int = 0
    nivcsw: int = 0
    forked: bool = False  # made by fork(): its shared segments are its parent's
    oom_score_adj: int = 0       # signal->oom_score_adj (kernel/oom_kill.py)
    oom_score_adj_min: int = 0   # the floor a CAP_SYS_RESOURCE writer set
    # when it was created, on the host's CLOCK_BOOTTIME (task_struct's real_start_time:
    # /proc/PID/stat's starttime, which ps turns into a wall-clock START with the
    # host's btime)
    start_time: float = field(default_factory=lambda: time.clock_gettime(time.CLOCK_BOOTTIME))

    @property
    def tids(self) -> tuple[int, ...]:
        return self.threads or (self.pid,)

    @property
    def alive(self) -> bool:
        return self.state != "zombie" and self.mm_id is not None

    def dump_owner(self, dir_0555: bool) -> tuple[int, int]:
        """task_dump_owner(): the owner of the task's /proc entries. Its uid and gid,
        but for anything other than a mode-0555 directory root's once it has no mm
        (a zombie): 4.20 makes the files of a task without an mm root-owned."""
        if not dir_0555 and self.mm_id is None:
            return 0, 0
        return self.uid, self.gid
