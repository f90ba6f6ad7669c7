"""The /proc a program sees under `fakeproc run`: emulated processes and the
emulated /proc/meminfo and /proc/vmstat, and every other name as a symlink into
the real procfs (bind-mounted at ``realproc`` inside the runner's namespace), so
/proc/self, the program's own pid, /proc/cpuinfo, /proc/mounts... work as the
real kernel's.

Emulated pids lie above PID_MAX_LIMIT (4194304), so they never shadow a real one;
should a machine file use a pid that a real process also has, the emulated one
wins in this view. The server fills in the caller (``caller_tgid``, ``caller_tid``)
for /proc/self and /proc/thread-self from the FUSE request.
"""
from __future__ import annotations

import os
from pathlib import Path

from . import upstream
from .procfs import PROC_ROOT
from .tree import Ctx, Dir, Link, Lister


def _hidden(ctx: Ctx) -> frozenset[str]:
    """Host files that would describe the host's pages next to emulated ones: with the
    emulated kpageflags and kpagecount, the host's kpagecgroup (the emulated kernel
    has no memory cgroups, so no kpagecgroup either)."""
    return frozenset({"kpagecgroup"}) if upstream.enabled(ctx) else frozenset()


def make_procview(realproc: Path) -> Dir:
    """The merged /proc, whose symlinks point into ``realproc``."""

    def names(ctx: Ctx) -> list[str]:
        try:
            hidden = _hidden(ctx)
            return [n for n in os.listdir("/proc") if n not in hidden]  # the kernel's readdir order
        except OSError:
            return []

    def parse(ctx: Ctx, name: str) -> str | None:
        if "/" in name or name in (".", "..") or name in _hidden(ctx):
            return None
        return name if os.path.lexists(os.path.join("/proc", name)) else None

    def target(ctx: Ctx) -> str:
        name, tgid = ctx.get("real"), ctx.get_or("caller_tgid")
        if name == "self" and tgid is not None:
            return str(tgid)
        if name == "thread-self" and tgid is not None:
            return f"{tgid}/task/{ctx.get_or('caller_tid', tgid)}"
        return f"{realproc}/{name}"

    assert PROC_ROOT.lister is not None
    # proc_root_readdir(): the other entries first, then the pids in ascending order,
    # emulated and real ones together (so `ps -e` lists them in pid order)
    return Dir("procview", PROC_ROOT.children, mode=0o555,
               lister=(*PROC_ROOT.listers, Lister("real", names, parse, Link("", target))),
               order=lambda name: (1, int(name)) if name.isdigit() else (0, 0))
