"""What `fakeproc run` lays over the real files in which a program reads its own cpuset.

A program under the runner is a real process: its /proc/self/status and its cgroup's
cpuset files are the host's, so libnuma (numa_num_task_nodes(), which sizes node masks
from Mems_allowed) and hwloc (which hides the nodes outside cgroup cpuset.mems) would
see the host's node 0 and its CPUs only. The runner binds these files over them in its
namespace (run/namespace.py), so the program sees the emulated machine's cpuset:

  hostview/status/PID   the real /proc/PID/status, with Cpus_allowed, Cpus_allowed_list,
                        Mems_allowed and Mems_allowed_list of the emulated machine (the
                        CPUs the runner gave the task, else every online CPU; every
                        node: the top cpuset's); PID may be any thread id. The runner
                        also hands it out for read-only opens of any of its tasks'
                        status (run/procstatus.py).
  hostview/cpuset.cpus  the emulated online CPUs, as a cgroup cpuset file prints them
  hostview/cpuset.mems  the emulated nodes

Linux: fs/proc/array.c task_cpus_allowed(), kernel/cgroup/cpuset.c cpuset_common_seq_show().
"""
from __future__ import annotations

import os
from typing import Iterable

from . import formats as fmt
from .tree import Ctx, Dir, File, Lister, decimal

# the status lines the emulated cpuset replaces, by their label
ALLOWED = ("Cpus_allowed", "Cpus_allowed_list", "Mems_allowed", "Mems_allowed_list")


def cpuset_lines(cpus: Iterable[int], nr_cpu_ids: int, nodes: Iterable[int]) -> dict[str, str]:
    """The four status lines of a task allowed on cpus and nodes (task_cpus_allowed(),
    cpuset_task_status_allowed()), by label, each value with its newline."""
    cpus, nodes = list(cpus), list(nodes)
    return {"Cpus_allowed": fmt.cpumap(cpus, nr_cpu_ids), "Cpus_allowed_list": fmt.node_list(cpus),
            "Mems_allowed": fmt.cpumap(nodes, fmt.MAX_NUMNODES),
            "Mems_allowed_list": fmt.node_list(nodes)}


def with_cpuset(status: str, allowed: dict[str, str]) -> str:
    """A real status text with the lines of ``allowed`` replaced."""
    label = lambda line: line.split(":", 1)[0]  # noqa: E731
    return "".join(f"{label(line)}:\t{allowed[label(line)]}" if label(line) in allowed else line
                   for line in status.splitlines(keepends=True))


# the emulated CPUs `fakeproc run` has each of its real tasks on (its answers to their
# sched_setaffinity, fakeproc.run.sched), by thread id; a task not here: every online CPU
_TASK_CPUS: dict[int, frozenset[int]] = {}


def set_task_cpus(tid: int, cpus: Iterable[int]) -> None:
    """The runner says which emulated CPUs real task tid may run on."""
    _TASK_CPUS[tid] = frozenset(cpus)
    if len(_TASK_CPUS) >= 1024 and len(_TASK_CPUS) & (len(_TASK_CPUS) - 1) == 0:
        for t in [t for t in _TASK_CPUS if not os.path.isdir(f"/proc/{t}")]:
            del _TASK_CPUS[t]


def _real_status(ctx: Ctx) -> str:
    """The host's /proc/PID/status with the emulated machine's allowed CPUs (the task's,
    as the runner set them) and nodes. Read again at each rendering, as procfs does;
    the bytes of a name that is not UTF-8 come back as they were."""
    pid = ctx.get("realpid")
    try:
        with open(f"/proc/{pid}/status", errors="surrogateescape") as f:
            status = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise LookupError(f"no process {pid}") from None
    k = ctx.kernel
    cpus = frozenset(_TASK_CPUS.get(pid, k.online_cpus)) & frozenset(k.online_cpus)
    return with_cpuset(status, cpuset_lines(cpus, k.nr_cpu_ids, k.node_ids))


def _real_pid(ctx: Ctx, name: str) -> int | None:
    pid = decimal(name)
    return pid if pid is not None and os.path.isdir(f"/proc/{pid}") else None


HOSTVIEW = Dir("hostview", (
    File("cpuset.cpus", lambda c: fmt.node_list(c.kernel.online_cpus), mode=0o444, size=0),
    File("cpuset.mems", lambda c: fmt.node_list(c.kernel.node_ids), mode=0o444, size=0),
    # listed empty: any real pid can be looked up, none is listed
    Dir("status", (), lister=Lister("realpid", lambda c: [], _real_pid,
                                    File("", _real_status, mode=0o444, size=0)), mode=0o555),
), mode=0o555)
