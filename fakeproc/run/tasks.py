"""What the runner keeps for its real tasks: their emulated CPU mask and memory policy.

Under `fakeproc run` the program's CPUs and nodes are the emulated machine's, which
the host kernel does not have: a real sched_setaffinity(2) to emulated CPU 5, or
set_mempolicy(2) to node 3, fails there. The runner answers those calls itself
(fakeproc.run.sched, fakeproc.run.mempolicy) and keeps the result here, per thread,
keyed by thread id and start time (a reused id is a new task).

A task inherits both from the task that created it (fork, clone; exec keeps them).
The runner does not see creations, so a task without an entry of its own takes its
thread-group leader's, then its parent process's, and so on up; with none, the
default (every online CPU; the default policy).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Iterable, TypeVar

from ..machine import parse_list

T = TypeVar("T")
MAX_ANCESTORS = 64  # a parent chain is never this deep under the runner


@dataclass(frozen=True)
class MachineFacts:
    """The emulated machine as its node and CPU trees tell a program."""

    nr_cpu_ids: int              # the highest possible CPU + 1
    online_cpus: frozenset[int]  # cpu_active_mask: no hotplug, so every online CPU
    mem_nodes: frozenset[int]    # N_MEMORY, and the top cpuset's mems

    @classmethod
    def read(cls, mnt: Path) -> "MachineFacts":
        """From the mount's /sys (OSError when the emulator is gone)."""
        def cpus(name: str) -> list[int]:
            return parse_list((mnt / "sys/devices/system/cpu" / name).read_text().strip())
        nodes = parse_list((mnt / "sys/devices/system/node/has_memory").read_text().strip())
        return cls(max(cpus("possible")) + 1, frozenset(cpus("online")), frozenset(nodes))


def cpu_mask(cpus: Iterable[int]) -> int:
    """A set of CPUs as the bit mask sched_setaffinity takes."""
    return sum(1 << c for c in cpus)


def mask_cpus(mask: int) -> list[int]:
    """The CPUs of a bit mask, ascending."""
    return [c for c in range(mask.bit_length()) if mask >> c & 1]


def start_time(tid: int) -> int | None:
    """Field 22 of /proc/TID/stat (clock ticks since boot), or None when tid is gone."""
    try:
        with open(f"/proc/{tid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2:].split()[19])  # fields 3.. follow the comm


def status_fields(pid: int, names: tuple[str, ...]) -> dict[str, list[bytes]]:
    """The named fields of /proc/PID/status, each split into its words ({} when gone).
    Read as bytes: the Name line is the raw comm, which need not be UTF-8."""
    keys, out = {name.encode() + b":": name for name in names}, {}
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                key = line.split(b"\t", 1)[0]
                if key in keys:
                    out[keys[key]] = line.split()[1:]
    except OSError:
        pass
    return out


def status_field(pid: int, name: str) -> int | None:
    """An integer field of /proc/PID/status (Tgid, PPid, ...), None when gone."""
    words = status_fields(pid, (name,)).get(name)
    return int(words[0]) if words else None


def under_runner(caller: int, task: int, root: int) -> bool:
    """Is task under the runner, as the caller is: in its mount namespace, or (a zombie,
    whose namespace can no longer be read) a descendant of root?"""
    try:
        return os.readlink(f"/proc/{caller}/ns/mnt") == os.readlink(f"/proc/{task}/ns/mnt")
    except OSError:
        pass
    for _ in range(MAX_ANCESTORS):
        if task == root:
            return True
        task = status_field(status_field(task, "Tgid") or 0, "PPid") or 0
        if task <= 1:
            return False
    return False


class TaskStates(Generic[T]):
    """One value per real task, inherited as described above, up to ``root`` (the
    program the runner started: its ancestors are not under the runner)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self._own: dict[int, tuple[int, T]] = {}  # tid -> (start time, value)

    def set(self, tid: int, value: T) -> None:
        start = start_time(tid)
        if start is not None:
            self._own[tid] = (start, value)
        self._prune()

    def get(self, tid: int, default: T) -> T:
        """tid's value: its own, its leader's, its parent's, ..., else default."""
        seen = set()
        for _ in range(MAX_ANCESTORS):
            if tid in seen or tid <= 1:
                break
            seen.add(tid)
            own = self._own.get(tid)
            if own is not None:
                if own[0] == start_time(tid):
                    return own[1]
                del self._own[tid]  # the id was reused
            if tid == self.root:
                break
            tgid = status_field(tid, "Tgid")
            tid = tgid if tgid is not None and tgid != tid else status_field(tid, "PPid") or 0
        return default

    def _prune(self) -> None:
        """Forget tasks that are gone, once the table has grown."""
        if len(self._own) >= 256 and len(self._own) & (len(self._own) - 1) == 0:
            for tid, (start, _) in list(self._own.items()):
                if start_time(tid) != start:
                    del self._own[tid]
