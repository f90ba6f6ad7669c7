"""/proc/PID/status of the runner's tasks with their emulated cpuset (fs/proc/array.c).

libnuma reads a process's allowed CPUs and nodes from Cpus_allowed and Mems_allowed
in /proc/self/status (numactl refuses node 1 as "out of range" when the host's
Mems_allowed says node 0 only). The program the runner starts has the emulated
status bound over its own (run/namespace.py), but a process it forks reads its real
one. So the runner's filter also stops read-only opens (O_RDONLY, and no flag but
O_CLOEXEC, O_NOCTTY, O_NONBLOCK, O_LARGEFILE): one of the status file of a task under
the runner gets a descriptor of that task's file under the mount's hostview/, which
renders the real status at each read from offset 0, as procfs does, with the four
cpuset lines of the emulated machine (the task's CPU mask, fakeproc.run.sched; the
machine's nodes); every other open goes on to the host kernel.
"""
from __future__ import annotations

import os
import re
from typing import Callable

from . import seccomp
from .tasks import MachineFacts, TaskStates, cpu_mask, status_field, under_runner

# procfs takes no leading zeros in a pid (name_to_int)
STATUS = re.compile(rb"^/proc/(self|thread-self|[1-9]\d*)(?:/task/([1-9]\d*))?/status$")
PATH_MAX = 4096

Facts = Callable[[], "MachineFacts | None"]


def status_task(notif: seccomp.Notification, path: bytes, root: int) -> int | None:
    """The task whose status an absolute path opens, if it is a task under the runner
    (a real one, which exists), else None."""
    m = STATUS.match(path)
    if m is None:
        return None
    who, tid = m.group(1), m.group(2)
    if who == b"thread-self":
        if tid is not None:
            return None
        task = notif.pid
    else:
        pid = status_field(notif.pid, "Tgid") if who == b"self" else int(who)
        if pid is None or pid > seccomp.PID_MAX_LIMIT:
            return None  # an emulated process: its own file answers
        task = pid if tid is None else int(tid)
        if tid is not None and status_field(task, "Tgid") != pid:
            return None  # not a thread of that process: the host says ENOENT
    return task if under_runner(notif.pid, task, root) else None


def open_handler(facts: Facts, masks: TaskStates[int],
                 open_status: Callable[[int, int], int]) -> seccomp.Handler:
    """A handler for open(path, flags) and openat(dirfd, path, flags) with read-only
    flags: a status file of a task under the runner is answered with
    ``open_status(task, cpu mask)``, a read-only descriptor of the task's hostview
    file; every other open goes on."""
    def handler(notif: seccomp.Notification) -> seccomp.Response:
        path_p, flags = (notif.args[0], notif.args[1]) if notif.nr == seccomp.NR_OPEN \
            else (notif.args[1], notif.args[2])
        try:  # most paths are told apart by their first bytes: one short read
            raw = seccomp.read_mem_prefix(notif.pid, path_p, len(b"/proc/"))
            if raw != b"/proc/":
                return seccomp.Continue()
            raw = seccomp.read_mem_prefix(notif.pid, path_p, PATH_MAX)
        except OSError:
            return seccomp.Continue()  # the host gives EFAULT or ENAMETOOLONG
        f = facts()
        task = status_task(notif, raw.split(b"\0", 1)[0], masks.root) \
            if f is not None and b"\0" in raw else None
        if task is None:
            return seccomp.Continue()
        try:
            fd = open_status(task, masks.get(task, cpu_mask(f.online_cpus)))
        except OSError:
            return seccomp.Continue()  # the emulator is gone, or the task
        try:
            notif.check()
        except seccomp.NotificationGone:
            os.close(fd)
            raise
        return seccomp.ReturnFd(fd, bool(flags & os.O_CLOEXEC))
    return handler
