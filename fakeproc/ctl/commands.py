"""The control commands. Each is one plain function over the kernel and the clock;
``@command()`` registers it and its signature is its argument schema.

Units: sizes and RSS are in 4 KiB pages, times in virtual seconds, addresses are
integers (or "0x..." strings where noted).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

from .. import machine
from ..kernel import migrate, mmap as mmap_
from .protocol import PROTOCOL_VERSION, bad_args, pack_array, pack_bytes, unpack_array, unpack_bytes
from .registry import COMMANDS, Context, command

if TYPE_CHECKING:
    from ..kernel.task import Task
    from ..kernel.workload import Workload

PID_MAX_LIMIT = 4194304  # pids fakeproc picks are above the kernel's, like the built-in ones


def parse_addr(value: int | str, field: str = "") -> int:
    """An address as a JSON integer or a "0x..." / decimal string (field: its name in
    the message)."""
    where = f"{field}: " if field else ""
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            raise bad_args(f"{where}not an address: {value!r}") from None
    if value < 0:
        raise bad_args(f"{where}not an address: {value}")
    return value


def _parse_addrs(process: dict[str, Any]) -> dict[str, Any]:
    """spawn's process table with its address strings parsed: JSON has no hex literals
    (a TOML file has), so vma start/end and a VM slot's gpa/hva may be "0x..." too.
    The rest is left to the machine file's checks."""
    def tables(ts: Any, where: str, keys: tuple[str, ...]) -> Any:
        if not isinstance(ts, list):
            return ts
        return [{k: parse_addr(v, f"spawn: {where}[{i}].{k}") if k in keys and isinstance(v, str)
                 else v for k, v in t.items()} if isinstance(t, dict) else t
                for i, t in enumerate(ts)]
    out = dict(process)
    if "vma" in out:
        out["vma"] = tables(out["vma"], "vma", ("start", "end"))
    if isinstance(out.get("vm"), dict) and "slot" in out["vm"]:
        out["vm"] = {**out["vm"], "slot": tables(out["vm"]["slot"], "vm.slot", ("gpa", "hva"))}
    return out


def describe_workload(wl: "Workload | None") -> dict[str, Any] | None:
    if wl is None:
        return None
    return {"pattern": wl.pattern, "rate": wl.rate, "hot": wl.hot, "hot_access": wl.hot_access,
            "write": wl.write, "zipf_s": wl.zipf_s, "seed": wl.seed,
            "phases": [{"at": p.at, "hot_offset": p.hot_offset} for p in wl.phases],
            "vmas": list(wl.vma_indices) if wl.vma_indices is not None else None,
            "touches": wl.touches}


def rss_nodes(ctx: Context, t: "Task") -> dict[str, int]:
    """Present base pages per node id (JSON keys are strings), over all its VMAs."""
    out: dict[str, int] = {}
    if t.mm_id is None:
        return out
    for vma in ctx.kernel.mm(t.mm_id).vmas:
        for nid, n in ctx.kernel.range_stats(t, vma.start, vma.end)["nodes"].items():
            out[str(nid)] = out.get(str(nid), 0) + n
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def describe_task(ctx: Context, t: "Task") -> dict[str, Any]:
    """What `list` reports of one process (RSS in pages, as /proc/PID/status counts it;
    rss_nodes: resident pages per node, as numa_maps counts them)."""
    mc = ctx.kernel.mm_counters(t)
    pol = t.policy.mode + (":" + ",".join(map(str, t.policy.nodes)) if t.policy.nodes else "")
    anon, file, shmem = mc.get("rss_anon", 0), mc.get("rss_file", 0), mc.get("rss_shmem", 0)
    return {"pid": t.pid, "name": t.name, "state": t.state, "ppid": t.ppid, "uid": t.uid,
            "gid": t.gid, "cpu": t.cpu, "threads": list(t.tids), "policy": pol,
            "rss": anon + file + shmem, "rss_anon": anon, "rss_file": file, "rss_shmem": shmem,
            "rss_nodes": rss_nodes(ctx, t),
            "vm": mc.get("total_vm", 0), "exit_at": t.exit_at,
            "workload": describe_workload(t.workload)}


@command()
def ping(ctx: Context) -> dict[str, Any]:
    """Is the server alive? Returns the protocol version, server pid and virtual time."""
    return {"pong": True, "protocol": PROTOCOL_VERSION, "pid": os.getpid(), "now": ctx.clock.now}


@command()
def commands(ctx: Context) -> list[dict[str, Any]]:
    """The commands this server knows, with their arguments and a line of help."""
    return [COMMANDS[n].describe() for n in sorted(COMMANDS)]


@command("list")
def list_(ctx: Context) -> list[dict[str, Any]]:
    """Every process (zombies too), by pid."""
    return [describe_task(ctx, t) for t in sorted(ctx.kernel.tasks.values(), key=lambda t: t.pid)]


@command()
def spawn(ctx: Context, **process: Any) -> dict[str, Any]:
    """Start a process: args are one [[process]] table of the machine file (pid optional;
    addresses may be "0x..." strings).

    Without a pid, the next free id above PID_MAX_LIMIT and every existing id is used;
    past the largest pid_t the lowest free ids above PID_MAX_LIMIT (the kernel's pid
    allocator wraps around too). While a runner is attached (attach_runner), a pid at or
    below PID_MAX_LIMIT is refused: the runner would take it for a real process.
    """
    if "pid" not in process:
        process = {"pid": _free_pid(ctx, process.get("threads", 1)), **process}
    elif ctx.runners and type(process["pid"]) is int and process["pid"] <= PID_MAX_LIMIT:
        raise bad_args(f"spawn: pid {process['pid']}: a `fakeproc run` is attached to this mount, "
                       f"and under it emulated pids must be above {PID_MAX_LIMIT} (a real process "
                       f"could have pid {process['pid']}); leave pid out to get a free one")
    task = machine.add_process(ctx.kernel, _parse_addrs(process), "spawn")
    return describe_task(ctx, task)


def _free_pid(ctx: Context, threads: Any) -> int:
    used = sorted(tid for t in ctx.kernel.tasks.values() for tid in t.tids)
    n = threads if isinstance(threads, int) and threads > 0 else 1
    nxt = max([PID_MAX_LIMIT, *used]) + 1
    if nxt + n - 1 <= machine.PID_T_MAX:
        return nxt
    start = PID_MAX_LIMIT + 1
    for tid in used:
        if tid >= start + n:
            break
        start = max(start, tid + 1)
    return start


@command()
def attach_runner(ctx: Context) -> dict[str, Any]:
    """For `fakeproc run`: a runner works on this mount while this connection lasts, so
    spawn refuses pids at or below PID_MAX_LIMIT (its seccomp filter sends a call on
    such a pid to the host's kernel, and its /proc would show the emulated one)."""
    ctx.runners.add(ctx.conn)
    return {}


@command()
def kill(ctx: Context, pid: int, zombie: bool = False) -> dict[str, Any]:
    """End a process: its memory is freed; zombie=true keeps /proc/PID as a zombie."""
    task = ctx.task(pid)
    ctx.kernel.exit(task.pid, zombie=zombie)
    return {"pid": task.pid, "state": "zombie" if zombie else "gone"}


@command()
def set_workload(ctx: Context, pid: int, workload: dict[str, Any] | None,
                 update: bool = False) -> dict[str, Any]:
    """Replace (or start) pid's workload: a [process.workload] table; null stops it.

    update=true keeps the current workload's parameters that the table leaves out
    (the workload restarts from its seed). ``vmas`` indexes the process's VMAs in
    address order (the order of maps); phase times are absolute virtual times.
    """
    task = ctx.task(pid, alive=True)
    if update and workload is not None and task.workload is not None:
        current = describe_workload(task.workload) or {}
        kept = {k: v for k, v in current.items() if k != "touches" and v is not None and v != []}
        workload = {**kept, **workload}
    wl = machine.set_workload(ctx.kernel, task, workload, "set_workload")
    return {"pid": task.pid, "workload": describe_workload(wl)}


@command()
def clock(ctx: Context, action: Literal["status", "pause", "resume", "step", "rate"] = "status",
          seconds: float | None = None, rate: float | None = None) -> dict[str, Any]:
    """Virtual clock: status, pause, resume, step (seconds), rate (rate). Returns the status.

    A step advances exactly ``seconds`` of virtual time before replying, paused or not,
    and adds ``touches`` (what the workloads did) to the status.
    """
    c = ctx.clock
    if (seconds is not None) != (action == "step"):
        raise bad_args("clock: seconds goes with action 'step', and only with it")
    if (rate is not None) != (action == "rate"):
        raise bad_args("clock: rate goes with action 'rate', and only with it")
    extra: dict[str, Any] = {}
    if action == "pause":
        c.pause()
    elif action == "resume":
        c.resume()
    elif action == "step":
        assert seconds is not None
        extra["touches"] = c.step(seconds)
    elif action == "rate":
        assert rate is not None
        c.set_rate(rate)
    return {**c.status(), **extra}


@command()
def touch(ctx: Context, pid: int, addr: int | str, write: bool = False) -> dict[str, Any]:
    """One CPU access by pid at addr (faulting the page in first); returns its node."""
    task = ctx.task(pid, alive=True)
    a = parse_addr(addr)
    ctx.kernel.touch(task, a, write=write)
    return {"pid": task.pid, "addr": a, "node": ctx.kernel.page_node(task, a)}


def _caller(caller: dict[str, int] | None) -> migrate.Caller | None:
    """The credentials a syscall checks, as `fakeproc run` sends its caller's ({"uid",
    "gid", "cap_eff"}: real ids, CapEff mask); none: a caller with every capability."""
    if caller is None:
        return None
    try:
        return migrate.Caller(int(caller["uid"]), int(caller["gid"]), int(caller["cap_eff"]))
    except KeyError as e:
        raise bad_args(f"caller: missing {e.args[0]}") from None


@command()
def move_pages(ctx: Context, pid: int, pages: list[int | str] | str, nodes: list[int] | str | None = None,
               flags: int = 2, status: list[int] | str | None = None,
               packed: bool = False, written: bool = False,
               caller: dict[str, int] | None = None) -> dict[str, Any]:
    """move_pages(2) on an emulated process (INTERFACES.md 3): the return value (0, a
    positive count not migrated, or -errno) and the status array as the kernel left it
    (`status` is the caller's initial array, default all 0). pages, nodes and status
    may each be packed (base64 of little-endian u64 / i32 / i32); `packed` packs the
    status of the reply the same way. `written` adds the [start, end) runs of the
    entries the kernel stored (a caller copying them back into a read-only array
    faults on each, whatever its value). `caller` ({"uid", "gid", "cap_eff"}) is the
    calling process the permission checks see; without it, one with every capability."""
    runs: list[tuple[int, int]] | None = [] if written else None
    who = _caller(caller)
    if isinstance(pages, str) and not isinstance(nodes, list) and not isinstance(status, list):
        return _move_packed(ctx, pid, pages, nodes, flags, status, packed, runs, who)
    pages = unpack_array(pages, "Q", "pages")
    if all(type(p) is int and p >= 0 for p in pages):  # the common case, without a call each
        addrs = list(pages)
    else:
        addrs = [parse_addr(p) for p in pages]
    nodes = None if nodes is None else unpack_array(nodes, "i", "nodes")
    if nodes is not None and len(nodes) != len(addrs):
        raise bad_args("pages and nodes differ in length")
    st = list(unpack_array(status, "i", "status")) if status is not None else [0] * len(addrs)
    if len(st) != len(addrs):
        raise bad_args("pages and status differ in length")
    if any(type(x) is not int for x in (*(nodes or ()), *st)) or \
            any(not -(1 << 31) <= x < 1 << 31 for x in st):
        raise bad_args("nodes and status must be arrays of C ints")
    ret = migrate.move_pages(ctx.kernel, pid, addrs, nodes, st, flags, written=runs, caller=who)
    return _move_reply(ret, pack_array(st, "i") if packed else st, runs)


def _move_reply(ret: int, status: Any, runs: list[tuple[int, int]] | None) -> dict[str, Any]:
    reply = {"ret": ret, "status": status}
    if runs is not None:
        reply["written"] = [list(r) for r in runs]
    return reply


def _move_packed(ctx: Context, pid: int, pages: str, nodes: str | None, flags: int,
                 status: str | None, packed: bool, runs: list[tuple[int, int]] | None,
                 who: migrate.Caller | None) -> dict[str, Any]:
    """move_pages with every array packed: the bytes go to the kernel as they came (any
    u64 is a pointer and any i32 a node or status, so there is nothing to check)."""
    addrs = unpack_bytes(pages, 8, "pages")
    n = len(addrs) // 8
    targets = None if nodes is None else unpack_bytes(nodes, 4, "nodes")
    if targets is not None and len(targets) != 4 * n:
        raise bad_args("pages and nodes differ in length")
    st = bytearray(4 * n) if status is None else bytearray(unpack_bytes(status, 4, "status"))
    if len(st) != 4 * n:
        raise bad_args("pages and status differ in length")
    ret = migrate.move_pages(ctx.kernel, pid, addrs, targets, st, flags, written=runs, caller=who)
    return _move_reply(ret, pack_bytes(st) if packed else list(memoryview(st).cast("i")), runs)


def _length(value: int | str) -> int:
    """A length as bytes or a size string ("64KiB")."""
    try:
        n = machine.parse_size(value)
    except ValueError as e:
        raise bad_args(f"length: {e}") from None
    if n < 0:
        raise bad_args(f"length: negative: {n}")
    return n


MADVICE = {"dontneed": mmap_.MADV_DONTNEED, "hugepage": mmap_.MADV_HUGEPAGE,
           "nohugepage": mmap_.MADV_NOHUGEPAGE}


@command()
def mmap(ctx: Context, pid: int, length: int | str, addr: int | str = 0, perms: str = "rw-p",
         fixed: bool = False, noreplace: bool = False) -> dict[str, Any]:
    """mmap(2) of anonymous private memory in pid: `ret` is the address or -errno.
    addr is a hint, or with `fixed` (MAP_FIXED: what was there goes) or `noreplace`
    (MAP_FIXED_NOREPLACE: -EEXIST over a mapping) the address."""
    task = ctx.task(pid, alive=True)
    return {"ret": mmap_.mmap(ctx.kernel, task, _length(length), parse_addr(addr, "addr"),
                              perms=perms, fixed=fixed, noreplace=noreplace)}


@command()
def munmap(ctx: Context, pid: int, addr: int | str, length: int | str) -> dict[str, Any]:
    """munmap(2) in pid: its pages are freed, page tables no mapping needs any more
    too; `ret` 0 or -errno."""
    task = ctx.task(pid, alive=True)
    return {"ret": mmap_.munmap(ctx.kernel, task, parse_addr(addr, "addr"), _length(length))}


@command()
def madvise(ctx: Context, pid: int, addr: int | str, length: int | str,
            advice: Literal["dontneed", "hugepage", "nohugepage"] | int) -> dict[str, Any]:
    """madvise(2) in pid: MADV_DONTNEED (the pages go; the next touch faults anew),
    MADV_HUGEPAGE, MADV_NOHUGEPAGE (by name or number); `ret` 0 or -errno."""
    task = ctx.task(pid, alive=True)
    code = MADVICE.get(advice, advice) if isinstance(advice, str) else advice
    if not isinstance(code, int):
        raise bad_args(f"advice: not one of {', '.join(MADVICE)} or a number: {advice!r}")
    return {"ret": mmap_.madvise(ctx.kernel, task, parse_addr(addr, "addr"), _length(length), code)}


@command()
def get_mempolicy(ctx: Context, pid: int, addr: int | str) -> dict[str, Any]:
    """get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR): the node of the page at addr (faulted in
    first); `node` is -errno on failure."""
    return {"node": migrate.get_mempolicy_node(ctx.kernel, pid, parse_addr(addr))}


@command()
def migrate_pages(ctx: Context, pid: int, old_nodes: list[int], new_nodes: list[int],
                  caller: dict[str, int] | None = None) -> dict[str, Any]:
    """migrate_pages(2): every page of pid on old_nodes to new_nodes; `ret` is the count
    left behind, or -errno; `caller` as for move_pages."""
    return {"ret": migrate.migrate_pages(ctx.kernel, pid, old_nodes, new_nodes, caller=_caller(caller))}


@command()
def truth(ctx: Context, pid: int, start: int | str | None = None, end: int | str | None = None,
          reset: bool = True) -> dict[str, Any]:
    """Ground truth: true CPU access counts per present page since the last reset, and
    the node holding each page ([address, node, count] rows; all VMAs by default); plus
    the touches each workload had served per node."""
    task = ctx.task(pid, alive=True)
    assert task.mm_id is not None
    vmas = ctx.kernel.mm(task.mm_id).vmas
    lo = parse_addr(start) if start is not None else (vmas[0].start if vmas else 0)
    hi = parse_addr(end) if end is not None else (vmas[-1].end if vmas else 0)
    rows = [[a, n, c] for a, n, c in ctx.kernel.truth(task, lo, hi, reset=reset)]
    served = {}
    for name, wl in (("workload", task.workload), ("guest", task.vm.workload if task.vm else None)):
        if wl is not None:
            served[name] = {str(k): v for k, v in wl.served_by_node(ctx.kernel.node_ids).items()}
    return {"pid": task.pid, "pages": rows, "served": served}


@command()
def check(ctx: Context) -> dict[str, Any]:
    """The invariant checker: every page accounted once, counters equal page state,
    LRU lists exact. `ok` false lists the first problem."""
    problems = ctx.kernel.check()
    return {"ok": not problems, "problems": problems}


@command()
def reclaim(ctx: Context, node: int, pages: int = 32, mode: Literal["kswapd", "direct", "age"] = "kswapd") -> dict[str, Any]:
    """Run reclaim on a node now: shrink_node() for `pages` base pages (kswapd or direct
    accounting), or `age` its active lists; returns the pages reclaimed."""
    if node not in ctx.kernel.node_ids:
        raise bad_args(f"node {node} does not exist")
    if mode == "age":
        ctx.kernel.age_active(node)
        return {"reclaimed": 0}
    return {"reclaimed": ctx.kernel.shrink_node(node, pages, direct=mode == "direct")}


@command()
def report(ctx: Context) -> dict[str, Any]:
    """Ground truth recorded every window of virtual time: per process, accesses served
    from DRAM and PMEM, what an oracle placement would have served from DRAM, pages
    demoted by reclaim, pages the daemon moved, pages idle_pages silently skipped,
    and a heat map of its address space."""
    if ctx.kernel.recorder is None:
        ctx.kernel.record()
    return ctx.kernel.recorder.report()


@command()
def idle_position(ctx: Context, opener: int, pid: int, fuse_pos: int) -> dict[str, Any]:
    """For the runner's lseek interception: the file position the RFC kernel would report
    for process `opener`'s open /proc/`pid`/idle_pages at FUSE position `fuse_pos` (the
    cursor of its last read), or null when FUSE's position is already right."""
    from ..fs.idle_pages import position_of
    return {"pos": position_of(opener, pid, fuse_pos)}


@command()
def idle_setfl(ctx: Context, opener: int, pid: int, fuse_pos: int, flags: int) -> dict[str, Any]:
    """For the runner's fcntl interception: F_SETFL `flags` on process `opener`'s open
    /proc/`pid`/idle_pages at FUSE position `fuse_pos`; `{set}` says whether one open
    file was found (a process holding several for one pid must tell them apart by
    position, see fs/idle_pages.set_status_flags)."""
    from ..fs.idle_pages import set_status_flags
    return {"set": set_status_flags(opener, pid, fuse_pos, flags)}


@command()
def task_cpus(ctx: Context, tid: int, cpus: list[int]) -> dict[str, Any]:
    """For the runner's sched_setaffinity answers: real task `tid` (one under `fakeproc
    run`) may run on emulated `cpus`, which its status under hostview/ shows."""
    from ..fs.hostview import set_task_cpus
    set_task_cpus(tid, cpus)
    return {}


@command()
def fs_requests(ctx: Context) -> dict[str, int]:
    """FUSE requests the mount has served since it started, by operation (lookup,
    getattr, open, read, ...): what a program's file-system traffic costs, and which
    reads the host kernel's caches answered without asking."""
    from ..fs.server import REQUESTS
    return dict(sorted(REQUESTS.items()))


@command()
def fs_inodes(ctx: Context) -> dict[str, int]:
    """The mount's inode table: `inodes` numbered in all, `per_process` of them under
    /proc/PID held by the host kernel (freed when it forgets them, so a mount that
    outlives many processes does not grow), `page_cache` fixed files' bytes kept."""
    from ..fs.server import inode_counts
    return inode_counts()
