"""/proc: per-process files (INTERFACES.md 1, 5), /proc/meminfo and /proc/vmstat.

Linux: fs/proc/base.c (tgid_base_stuff / tid_base_stuff tables), fs/proc/array.c,
fs/proc/task_mmu.c, fs/proc/meminfo.c, mm/vmstat.c. idle_pages is a Special
entry: its handle (fs/idle_pages.py) keeps the per-open continuation state.
"""
from __future__ import annotations

import errno
import os

from . import formats as fmt, seq_file
from .seq_file import Split
from .idle_pages import IdlePagesHandle
from .sysfs import kstrtoint
from .upstream import KPAGECOUNT, KPAGEFLAGS, only_upstream, pagemap_entry
from .tree import Ctx, Dir, File, Lister, Special, decimal
from ..kernel import oom_kill, vmstat
from ..kernel.mm import Vma
from ..kernel.task import Caller, Task, ptrace_may_access
from ..kernel.task_mmu import PSS_SHIFT, clear_refs

PROC_WRITE_ERRNO = 22  # EINVAL: a proc file without a write method
KB = 4  # kB per page


def _task(ctx: Ctx) -> Task:
    task = ctx.kernel.thread(ctx.get("pid"))
    if task is None:
        raise LookupError("the process is gone")
    return task


def _owner(ctx: Ctx) -> tuple[int, int]:
    """A process's mode-0555 directories (PID, task, TID)."""
    return _task(ctx).dump_owner(dir_0555=True)


def _file_owner(ctx: Ctx) -> tuple[int, int]:
    """A process's files: root's once it has no mm (task_dump_owner())."""
    return _task(ctx).dump_owner(dir_0555=False)


def _vmas(ctx: Ctx) -> list[Vma]:
    t = _task(ctx)
    return [] if t.mm_id is None else ctx.kernel.mm(t.mm_id).vmas


def _maps(ctx: Ctx) -> str:
    lines = [fmt.maps_line(v.start, v.end, v.perms, v.offset, v.dev[0], v.dev[1], v.inode,
                           v.display_path) for v in _vmas(ctx)]
    if _task(ctx).mm_id is not None:
        lines.append(fmt.VSYSCALL_MAPS_LINE)
    return "".join(lines)


def _kb(vmas: list[Vma]) -> int:
    return sum(v.end - v.start for v in vmas) >> 10


def _sigpending_limit(ctx: Ctx) -> int:
    """RLIMIT_SIGPENDING of init: max_threads / 2 (kernel/fork.c set_max_threads)."""
    pages = sum(n.nr_pages for n in ctx.kernel.nodes)
    return max(20, pages // 32) // 2


def _text(vmas: list[Vma]) -> list[Vma]:
    """The executable's text: the executable file VMAs of the first such path (what
    mm->start_code..end_code spans, VmExe)."""
    exe = [v for v in vmas if v.perms[2] == "x" and v.kind == "file"]
    return [v for v in exe if v.path == exe[0].path] if exe else []


VM_DENYWRITE = 1 << 11


def _denywrite(vmas: list[Vma]) -> set[str]:
    """The paths binfmt_elf mapped with MAP_DENYWRITE (VM_DENYWRITE, smaps' `dw`): the
    executable and its interpreter (ld.so); mmap(2) drops the flag for the libraries."""
    text = _text(vmas)
    return {v.path for v in vmas if v.kind == "file" and v.path and (
        (text and v.path == text[0].path) or os.path.basename(v.path).startswith("ld-"))}


def _tid(ctx: Ctx) -> int:
    """The thread a file is read for: TID under task/, else the PID (a hidden /proc/TID
    of a thread included)."""
    return dict(ctx.values).get("tid", ctx.get("pid"))


def _status_info(ctx: Ctx) -> fmt.StatusInfo:
    k, t = ctx.kernel, _task(ctx)
    tid = _tid(ctx)
    mc = k.mm_counters(t)
    vmas = _vmas(ctx)
    text = _text(vmas)
    has_mm = t.alive
    mem = {}
    if has_mm:
        mem = dict(
            vm_peak=mc["hiwater_vm"] * KB, vm_size=mc["total_vm"] * KB,
            # task_mem(): the peak is never below the current RSS
            vm_hwm=max(mc["hiwater_rss"], mc["rss_anon"] + mc["rss_file"] + mc["rss_shmem"]) * KB,
            vm_rss=(mc["rss_anon"] + mc["rss_file"] + mc["rss_shmem"]) * KB,
            rss_anon=mc["rss_anon"] * KB, rss_file=mc["rss_file"] * KB, rss_shmem=mc["rss_shmem"] * KB,
            vm_data=_kb([v for v in vmas if v.writable and not v.shared and v.kind != "stack"]),
            vm_stk=_kb([v for v in vmas if v.kind == "stack"]),
            vm_exe=_kb(text),
            # exec_vm (VM_EXEC, not VM_WRITE, not VM_STACK: [vdso] too) less the text
            vm_lib=_kb([v for v in vmas if v.perms[2] == "x" and not v.writable and v.kind != "stack"])
            - _kb(text),
            vm_pte=max(0, mc["nr_tables"] - 1) * KB, vm_swap=mc["swap"] * KB)
    info = fmt.StatusInfo(
        name=t.name, state=t.state[0].upper() if t.state != "zombie" else "Z",
        tgid=t.pid, pid=tid, ppid=t.ppid, pgid=t.pid, sid=t.pid,
        uid=(t.uid,) * 4, gid=(t.gid,) * 4, sigq=(0, _sigpending_limit(ctx)),
        cpus_allowed=frozenset(k.online_cpus), nr_cpu_ids=k.nr_cpu_ids,
        mems_allowed=frozenset(k.mems_allowed(t)), is_zombie_or_kthread=not has_mm,
        umask=t.umask, groups=(t.gid,), threads=len(t.tids),
        fdsize=64 if has_mm else 0,  # task_state(): max_fds stays 0 once exit_files() ran
        cap_prm=0x3FFFFFFFFF if t.uid == 0 else 0, cap_eff=0x3FFFFFFFFF if t.uid == 0 else 0,
        voluntary_ctxt_switches=t.nvcsw, nonvoluntary_ctxt_switches=t.nivcsw, **mem)
    return info


def _status(ctx: Ctx) -> str:
    return fmt.proc_status(_status_info(ctx))


PF_RANDOMIZE, PF_EXITING = 0x00400000, 0x00000004


def reader(ctx: Ctx) -> Caller:
    """The reader as ptrace_may_access(PTRACE_MODE_READ_FSCREDS) sees it: its fsuid,
    fsgid and effective capabilities, bound by the server at open."""
    uid, gid = ctx.get_or("caller_ids", (0, 0))
    return Caller(uid, gid, ctx.get_or("caller_cap_eff", -1))


def _stat(ctx: Ctx) -> str:
    """do_task_stat(): the status's ids and sizes, the text, data, heap and stack
    addresses of the maps; a task never ran (no CPU time, no faults of its own)."""
    t, info, vmas = _task(ctx), _status_info(ctx), _vmas(ctx)
    tid = _tid(ctx)
    text = _text(vmas)
    data = [v for v in vmas if text and v.path == text[0].path and v.writable]
    heap = [v for v in vmas if v.kind == "heap"]
    stack = [v for v in vmas if v.kind == "stack"]
    top = stack[0].end if stack else 0  # start_stack: argv and envp sit at the top
    args = len(_cmdline(ctx))
    return fmt.proc_pid_stat(fmt.TaskStat(
        pid=tid, comm=t.name, state=info.state, ppid=t.ppid, pgrp=info.pgid, session=info.sid,
        flags=PF_RANDOMIZE | (PF_EXITING if t.state == "zombie" else 0),
        num_threads=len(t.tids), start_time=int(t.start_time * fmt.USER_HZ),
        has_mm=t.alive, permitted=ptrace_may_access(reader(ctx), t), vsize=info.vm_size * 1024,
        rss=info.vm_rss // KB, start_code=text[0].start if text else 0,
        end_code=text[0].end if text else 0, start_stack=top,
        exit_signal=17 if tid == t.pid else -1, processor=t.cpu,
        start_data=data[0].start if data else 0, end_data=data[0].end if data else 0,
        start_brk=heap[0].start if heap else 0, arg_start=top, arg_end=top + args,
        env_start=top + args, env_end=top + args))


def _statm(ctx: Ctx) -> str:
    """task_statm(): VmSize, VmRSS, RssFile + RssShmem, VmExe, VmData + VmStk, in pages."""
    i = _status_info(ctx)
    return fmt.proc_pid_statm(i.vm_size // KB, i.vm_rss // KB, (i.rss_file + i.rss_shmem) // KB,
                              i.vm_exe // KB, (i.vm_data + i.vm_stk) // KB)


def _cmdline(ctx: Ctx) -> str:
    """get_cmdline(): argv, each NUL-terminated; an emulated process's argv is its name
    alone; empty once the mm is gone."""
    t = _task(ctx)
    return f"{t.name}\0" if t.alive else ""


def _comm(ctx: Ctx) -> str:
    return f"{_task(ctx).name}\n"


def _comm_write(ctx: Ctx, data: bytes) -> None:
    """comm_write(): only a thread of the task's own group may rename it, and no
    reader is one: EINVAL (ESRCH once the task is gone)."""
    _task(ctx)
    raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))


PROC_NUMBUF = 13
KERNEL_SPACES = b" \t\n\v\f\r\xa0"  # isspace() of lib/ctype.c (0xa0 included)


def _proc_int(data: bytes, base: int) -> tuple[int, int]:
    """What clear_refs_write(), oom_adj_write() and oom_score_adj_write() take from a
    write: at most PROC_NUMBUF - 1 bytes, whose count the write returns (a longer
    write is short), up to a NUL, strstrip()ped, then kstrtoint(, base)."""
    count = min(len(data), PROC_NUMBUF - 1)
    return count, kstrtoint(data[:count].split(b"\0", 1)[0].strip(KERNEL_SPACES), base)


def _clear_refs_write(ctx: Ctx, data: bytes) -> int:
    """clear_refs_write(): the type is checked before the process (EINVAL, then ESRCH
    once it is gone)."""
    count, kind = _proc_int(data, 10)
    if not 1 <= kind <= 5:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    clear_refs(ctx.kernel, _task(ctx), kind)
    return count


def _oom_score_adj_write(ctx: Ctx, data: bytes) -> int:
    """oom_score_adj_write(): base 0 (0x.. hex, 0.. octal), range, then the process."""
    count, value = _proc_int(data, 0)
    oom_kill.check_oom_score_adj(value)
    oom_kill.set_oom_score_adj(_task(ctx), value, reader(ctx))
    return count


def _oom_adj_write(ctx: Ctx, data: bytes) -> int:
    """oom_adj_write(), the legacy scale: as oom_score_adj_write()."""
    count, value = _proc_int(data, 0)
    oom_kill.check_oom_adj(value)
    oom_kill.set_oom_adj(_task(ctx), value, reader(ctx))
    return count


def _policy(ctx: Ctx) -> str:
    """mpol_to_str() of the task's policy: MPOL_LOCAL (MPOL_PREFERRED with
    MPOL_F_LOCAL inside the kernel) prints `local`."""
    pol = _task(ctx).policy
    return fmt.mempolicy_str(pol.mode, pol.nodes)


def _numa_maps(ctx: Ctx) -> str:
    k, t, out = ctx.kernel, _task(ctx), []
    for v in _vmas(ctx):
        st = k.range_stats(t, v.start, v.end)
        out.append(fmt.numa_maps_line(
            v.start, _policy(ctx), file=v.display_path if v.has_file else None,
            heap=v.kind == "heap", stack=v.kind == "stack", huge=v.hugetlb,
            pages=st["pages"], anon=st["anon"], dirty=st["dirty"], mapmax=st["mapmax"],
            active=st["active"], node_pages=st["nodes"]))
    return "".join(out)


# smaps_account() keeps Pss in bytes << PSS_SHIFT and prints it >> (PSS_SHIFT + 10)
PSS_FIELDS = ("Pss", "SwapPss")


def _smaps_counters(st: dict) -> dict[str, int]:  # noqa: ANN401 - range_stats' dict
    """smaps_account() over the range's pages, in kB, but Pss and SwapPss in bytes <<
    PSS_SHIFT (see _smaps_kb); [vdso] pages (kernel_*) count as pages each process maps
    alone (numa_maps leaves them out: PageReserved)."""
    rss = (st["pages"] + st["kernel_pages"]) * KB
    shared, shared_dirty = st["shared"] * KB, st["shared_dirty"] * KB
    private_dirty = (st["dirty"] + st["kernel_dirty"]) * KB - shared_dirty
    return {"Rss": rss, "Pss": st["pss"] + (st["kernel_pages"] * KB << (10 + PSS_SHIFT)),
            "Shared_Clean": shared - shared_dirty, "Shared_Dirty": shared_dirty,
            "Private_Clean": rss - shared - private_dirty, "Private_Dirty": private_dirty,
            "Referenced": (st["referenced"] + st["kernel_referenced"]) * KB,
            "Anonymous": st["anon"] * KB, "AnonHugePages": st["thp"] * KB,
            "Swap": st["swap"] * KB, "SwapPss": st["swap_pss"]}


def _smaps_kb(counters: dict[str, int]) -> dict[str, int]:
    """The printed values: Pss and SwapPss truncated to kB once, after every page's
    share is summed (smaps_rollup sums the whole address space first)."""
    return {k: v >> (10 + PSS_SHIFT) if k in PSS_FIELDS else v for k, v in counters.items()}


def _smaps(ctx: Ctx) -> str:
    k, t, out = ctx.kernel, _task(ctx), []
    denywrite = _denywrite(_vmas(ctx))
    for v in _vmas(ctx):
        header = fmt.maps_line(v.start, v.end, v.perms, v.offset, v.dev[0], v.dev[1], v.inode,
                               v.display_path)
        page_kb = 2048 if v.hugetlb else 4
        out.append(fmt.smaps_block(header, (v.end - v.start) >> 10, page_kb, page_kb,
                                   _smaps_kb(_smaps_counters(k.range_stats(t, v.start, v.end))), 0,
                                   v.vm_flags | (VM_DENYWRITE if v.path in denywrite else 0)))
    if t.mm_id is not None:
        out.append(fmt.VSYSCALL_SMAPS_BLOCK)
    return "".join(out)


def _smaps_rollup(ctx: Ctx) -> str:
    """show_smaps_rollup(): a process without an address space (a zombie) is -ESRCH
    (maps and smaps are empty instead: m_start() finds no mm)."""
    if _task(ctx).mm_id is None:
        raise LookupError("no address space")
    vmas = _vmas(ctx)
    if not vmas:
        return ""
    total: dict[str, int] = {}
    for v in vmas:
        for key, val in _smaps_counters(ctx.kernel.range_stats(_task(ctx), v.start, v.end)).items():
            total[key] = total.get(key, 0) + val
    return fmt.smaps_rollup(vmas[0].start, vmas[-1].end, _smaps_kb(total))


def _proc_vmstat(ctx: Ctx) -> str:
    """The 4.20 counters; an upstream-mode machine adds the later tiering ones."""
    c = vmstat.global_counters(ctx.kernel)
    extra = vmstat.UPSTREAM_VMSTAT if getattr(ctx.kernel, "upstream", False) else ()
    return fmt.proc_vmstat(c) + "".join(f"{k} {c[k]}\n" for k in extra)


def _proc_file(name: str, render, ptrace_read: bool = False,  # noqa: ANN001
               split: Split | None = None) -> File:
    return File(name, render, size=0, write_errno=PROC_WRITE_ERRNO, owner=_file_owner,
                ptrace_read=ptrace_read, split=split)


def _tid_entries() -> tuple:
    return (
        _proc_file("maps", _maps, ptrace_read=True, split=seq_file.lines),
        _proc_file("status", _status),
        _proc_file("stat", _stat),
        _proc_file("statm", _statm),
        _proc_file("cmdline", _cmdline),
        # comm_write(): a writer outside the task's thread group gets EINVAL (the
        # owner may open it for writing: mode 0644)
        File("comm", _comm, size=0, write_errno=PROC_WRITE_ERRNO, owner=_file_owner, mode=0o644,
             store=_comm_write),
        _proc_file("numa_maps", _numa_maps, ptrace_read=True, split=seq_file.lines),
        # mode 0200, and only .write (a read is EINVAL: no FMODE_CAN_READ)
        File("clear_refs", None, size=0, owner=_file_owner, mode=0o200, store=_clear_refs_write,
             read_errno=errno.EINVAL),
        File("oom_score", lambda c: f"{oom_kill.oom_score(c.kernel, _task(c))}\n", size=0,
             write_errno=PROC_WRITE_ERRNO, owner=_file_owner),
        File("oom_adj", lambda c: f"{oom_kill.oom_adj(_task(c))}\n", size=0, owner=_file_owner,
             mode=0o644, store=_oom_adj_write),
        File("oom_score_adj", lambda c: f"{_task(c).oom_score_adj}\n", size=0, owner=_file_owner,
             mode=0o644, store=_oom_score_adj_write),
        _proc_file("smaps", _smaps, ptrace_read=True, split=seq_file.vma_blocks),
        _proc_file("smaps_rollup", _smaps_rollup, ptrace_read=True),
        Special("idle_pages", lambda c, flags: IdlePagesHandle(c.kernel, _task(c), flags,
                                                             c.get_or("caller_tgid"),
                                                             c.get_or("inode")),
                owner=_file_owner, ptrace_read=True),
    )


def _tids(ctx: Ctx) -> list[str]:
    return [str(t) for t in _task(ctx).tids]


def _parse_tid(ctx: Ctx, name: str) -> int | None:
    tid = decimal(name)
    return tid if tid is not None and tid in _task(ctx).tids else None


TID_DIR = Dir("TID", _tid_entries(), lister=only_upstream(pagemap_entry(_task)), mode=0o555,
              owner=_owner)
PID_DIR = Dir("PID", _tid_entries() + (
    Dir("task", (), lister=Lister("tid", _tids, _parse_tid, TID_DIR), mode=0o555, owner=_owner),
), lister=only_upstream(pagemap_entry(_task)), mode=0o555, owner=_owner)


def _pids(ctx: Ctx) -> list[str]:
    return [str(p) for p in sorted(ctx.kernel.tasks)]


def _parse_pid(ctx: Ctx, name: str) -> int | None:
    """A process or (unlisted, as in Linux) one of its threads."""
    pid = decimal(name)
    return pid if pid is not None and ctx.kernel.thread(pid) is not None else None


PROC_ROOT = Dir("proc", (
    File("meminfo", lambda c: fmt.proc_meminfo(vmstat.meminfo(c.kernel), {}), size=0,
         write_errno=PROC_WRITE_ERRNO),
    File("vmstat", lambda c: _proc_vmstat(c), size=0, write_errno=PROC_WRITE_ERRNO,
         split=seq_file.lines),
), lister=(Lister("pid", _pids, _parse_pid, PID_DIR), only_upstream(KPAGECOUNT),
            only_upstream(KPAGEFLAGS)), mode=0o555)
