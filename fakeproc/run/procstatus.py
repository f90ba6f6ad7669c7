"""/proc/PID/status of the runner's tasks with their emulated cpuset (fs/proc/array.c).

libnuma reads a process's allowed CPUs and nodes from Cpus_allowed and Mems_allowed
in /proc/self/status (numactl refuses node 1 as "out of range" when the host's
Mems_allowed says node 0 only). The program the runner starts has the emulated
status bound over its own (run/namespace.py), but a process it forks reads its real
one. So the runner's filter also stops read-only opens (O_RDONLY, with or without
O_CLOEXEC): one of the status file of a task under the runner is answered with a
rendering of that file in which the four cpuset lines are the emulated ones (the
task's CPU mask, fakeproc.run.sched; the machine's nodes); every other open goes on
to the host kernel.

The descriptor the program gets reads that rendering from a memory file opened
read-only (a write fails with EBADF, where procfs answers EINVAL).
"""
from __future__ import annotations

import os
import re
from typing import Callable

from ..fs.hostview import cpuset_lines, with_cpuset
from . import seccomp
from .tasks import MachineFacts, TaskStates, same_namespace, status_field

STATUS = re.compile(rb"^/proc/(self|thread-self|\d+)(?:/task/(\d+))?/status$")
PATH_MAX = 4096

Facts = Callable[[], "MachineFacts | None"]


def status_task(notif: seccomp.Notification, path: bytes) -> int | None:
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
    return task if same_namespace(notif.pid, task) else None


def open_handler(facts: Facts, masks: TaskStates[int]) -> seccomp.Handler:
    """A handler for open(path, flags) and openat(dirfd, path, flags) with read-only
    flags: a status file of a task under the runner is answered, every other goes on."""
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
        path = raw.split(b"\0", 1)[0]
        f = facts()
        task = status_task(notif, path) if f is not None and b"\0" in raw else None
        if task is None:
            return seccomp.Continue()
        try:
            with open(f"/proc/{task}/status") as real:
                status = real.read()
        except OSError:
            return seccomp.Continue()
        cpus = masks.get(task, sum(1 << c for c in f.online_cpus))
        text = with_cpuset(status, cpuset_lines((c for c in range(cpus.bit_length()) if cpus >> c & 1),
                                                f.nr_cpu_ids, f.mem_nodes))
        notif.check()
        return seccomp.ReturnFd(_read_only_file(text.encode()), bool(flags & os.O_CLOEXEC))
    return handler


def _read_only_file(data: bytes) -> int:
    """A read-only descriptor of a memory file holding data, at offset 0."""
    mfd = os.memfd_create("status", os.MFD_CLOEXEC)
    try:
        os.write(mfd, data)
        return os.open(f"/proc/self/fd/{mfd}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(mfd)

