"""``fakeproc ctl ...``: the control socket from the shell.

Human text by default, ``--json`` for the raw result. A structured error from the
server prints ``fakeproc ctl: TYPE: message`` and exits 1; unreadable local input
(a bad spawn or workload file) exits 2. Imports stay light: no kernel, no trio.
"""
from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
import tomllib
from typing import Any

from .client import Client, clock_state
from .protocol import CtlError, loads

DEFAULT_MOUNT_ENV = "FAKEPROC_MOUNT"


def finite(text: str) -> float:
    """A number option that JSON can carry (argparse names the type in its errors)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text}")
    return value


WORKLOAD_OPTS = {"pattern": str, "rate": finite, "hot": finite, "hot_access": finite,
                 "write": finite, "zipf_s": finite, "seed": int}


class InputError(ValueError):
    """Local input (a file or an option) that cannot become a request."""


def add_parser(sub: Any, default_mount: str) -> None:
    """Add ``ctl`` and its commands to the top-level subparsers."""
    def common(mount: Any, as_json: Any) -> argparse.ArgumentParser:
        """--mount/--json, before or after CMD (after CMD they must not reset the defaults)."""
        p = argparse.ArgumentParser(add_help=False)
        p.add_argument("--mount", "-m", metavar="MNT", default=mount,
                       help=f"the mount point (default: ${DEFAULT_MOUNT_ENV} or {default_mount})")
        p.add_argument("--json", action="store_true", default=as_json, help="print the result as JSON")
        return p

    c = sub.add_parser("ctl", parents=[common(os.environ.get(DEFAULT_MOUNT_ENV, default_mount), False)],
                       help="control a mounted machine over its control socket",
                       description="Talk to the control socket of a mounted machine.")
    cs = c.add_subparsers(dest="ctl_cmd", required=True, metavar="CMD")
    after = common(argparse.SUPPRESS, argparse.SUPPRESS)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return cs.add_parser(name, parents=[after], help=help, description=help)

    add("ping", "is the server alive?")
    add("list", "list the processes")
    add("commands", "list the commands the server knows")
    p = add("spawn", "start processes from a [[process]] TOML table or a JSON object")
    p.add_argument("file", metavar="FILE|-")
    p = add("kill", "end a process (its memory is freed)")
    p.add_argument("pid", type=int)
    p.add_argument("--zombie", action="store_true", help="leave it as a zombie")
    p = add("workload", "change, replace or stop a process's workload (with FILE or --replace: replace)")
    p.add_argument("pid", type=int)
    p.add_argument("file", metavar="FILE|-", nargs="?",
                   help="a [process.workload]-shaped table (TOML or JSON); options override it")
    for opt, typ in WORKLOAD_OPTS.items():
        p.add_argument("--" + opt.replace("_", "-"), dest=opt, type=typ, default=None)
    p.add_argument("--vmas", help="VMA indices in maps order, e.g. 0,2")
    p.add_argument("--stop", action="store_true", help="stop the workload")
    p.add_argument("--replace", action="store_true",
                   help="without FILE: replace the workload instead of changing only the options given")
    p = add("clock", "status, pause, resume, step SECONDS, rate R")
    p.add_argument("action", choices=["status", "pause", "resume", "step", "rate"], nargs="?",
                   default="status")
    p.add_argument("value", type=finite, nargs="?", help="seconds for step, the rate for rate")
    p = add("touch", "one CPU access by PID at ADDR (faults the page in)")
    p.add_argument("pid", type=int)
    p.add_argument("addr", help="address, e.g. 0x7f0000000000")
    p.add_argument("--write", action="store_true")
    p = add("mmap", "map anonymous memory in PID (prints the address)")
    p.add_argument("pid", type=int)
    p.add_argument("length", help="bytes or a size, e.g. 2MiB")
    p.add_argument("--addr", default="0", help="a hint, or the address with --fixed/--noreplace")
    p.add_argument("--perms", default="rw-p")
    p.add_argument("--fixed", action="store_true", help="MAP_FIXED: replace what is there")
    p.add_argument("--noreplace", action="store_true", help="MAP_FIXED_NOREPLACE")
    p = add("munmap", "unmap [ADDR, ADDR+LENGTH) of PID")
    p.add_argument("pid", type=int)
    p.add_argument("addr")
    p.add_argument("length")
    p = add("madvise", "madvise(2) on PID: dontneed, hugepage, nohugepage")
    p.add_argument("pid", type=int)
    p.add_argument("addr")
    p.add_argument("length")
    p.add_argument("advice", choices=["dontneed", "hugepage", "nohugepage"])
    p = add("call", "send any command with JSON args")
    p.add_argument("command", metavar="CMD")
    p.add_argument("args", nargs="?", default="{}", help="a JSON object (default {})")


def _read(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path) as f:
            return f.read(), path
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None


def _parse(text: str, name: str) -> Any:
    """A JSON document, or else a TOML one."""
    if text.lstrip().startswith(("{", "[")) and not text.lstrip().startswith("[["):
        try:
            return loads(text)
        except ValueError as e:
            if text.lstrip().startswith("{"):
                raise InputError(f"{name}: not valid JSON: {e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{name}: neither JSON nor valid TOML: {e}") from None


def processes_from(text: str, name: str) -> list[dict[str, Any]]:
    """The process tables of a spawn file: its [[process]] tables (other tables are
    ignored), a JSON array of them, or one bare process table."""
    doc = _parse(text, name)
    if isinstance(doc, dict) and "process" in doc:
        doc = doc["process"]
    procs = doc if isinstance(doc, list) else [doc]
    if not procs or not all(isinstance(p, dict) for p in procs):
        raise InputError(f"{name}: expected one or more process tables")
    return procs


def workload_from(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.stop:
        return None
    wl: dict[str, Any] = {}
    if args.file:
        doc = _parse(*_read(args.file))
        if isinstance(doc, dict) and "process" in doc:
            procs = doc["process"]
            doc = (procs[0] if isinstance(procs, list) and procs else procs).get("workload")
        if isinstance(doc, dict) and set(doc) == {"workload"}:
            doc = doc["workload"]
        if not isinstance(doc, dict):
            raise InputError(f"{args.file}: expected a workload table")
        wl.update(doc)
    wl.update({k: getattr(args, k) for k in WORKLOAD_OPTS if getattr(args, k) is not None})
    if args.vmas is not None:
        try:
            wl["vmas"] = [int(v) for v in args.vmas.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"--vmas {args.vmas!r}: write indices such as 0,2") from None
    return wl


def run(args: argparse.Namespace) -> int:
    try:
        with Client(args.mount) as c:
            return _run(c, args)
    except CtlError as e:
        print(f"fakeproc ctl: {e.type}: {e.message}", file=sys.stderr)
        return 1
    except InputError as e:
        print(f"fakeproc ctl: {e}", file=sys.stderr)
        return 2


def _run(c: Client, args: argparse.Namespace) -> int:
    cmd = args.ctl_cmd
    out: Any
    if cmd == "ping":
        out = c.ping()
        human = f"fakeproc on {args.mount}: server pid {out['pid']}, virtual time {out['now']:.3f} s"
    elif cmd == "list":
        out = c.list()
        human = None
    elif cmd == "commands":
        out = c.call("commands")
        human = "\n".join(f"{d['name']}({', '.join(d['args'])})\n    {d['doc']}" for d in out)
    elif cmd == "spawn":
        procs = processes_from(*_read(args.file))
        out = [c.request("spawn", p) for p in procs]
        human = "\n".join(f"spawned pid {p['pid']} ({p['name']})" for p in out)
        out = out if len(out) > 1 else out[0]
    elif cmd == "kill":
        out = c.kill(args.pid, zombie=args.zombie)
        human = f"pid {out['pid']}: {out['state']}"
    elif cmd == "workload":
        out = c.set_workload(args.pid, workload_from(args), update=not (args.file or args.replace))
        wl = out["workload"]
        human = (f"pid {out['pid']}: no workload" if wl is None else
                 f"pid {out['pid']}: {wl['pattern']} workload, {wl['rate']:g} touches/s")
    elif cmd == "clock":
        extra: dict[str, Any] = {}
        if args.action in ("step", "rate"):
            if args.value is None:
                raise InputError(f"clock {args.action} needs a number")
            extra = {"seconds" if args.action == "step" else "rate": args.value}
        elif args.value is not None:
            raise InputError(f"clock {args.action} takes no number")
        out = c.clock(args.action, **extra)
        human = f"virtual time {out['now']:.3f} s, {clock_state(out)}, rate {out['rate']:g}"
        if "touches" in out:
            human += f" ({out['touches']} touches)"
    elif cmd == "touch":
        out = c.call("touch", pid=args.pid, addr=args.addr, write=args.write)
        human = f"pid {out['pid']} {'wrote' if args.write else 'read'} {out['addr']:#x}: page on node {out['node']}"
    elif cmd in ("mmap", "munmap", "madvise"):
        return _address_space(c, args)
    else:  # call
        try:
            call_args = loads(args.args)
        except ValueError as e:
            raise InputError(f"call args: not JSON: {e}") from None
        if not isinstance(call_args, dict):
            raise InputError("call args: need a JSON object")
        out = c.request(args.command, call_args)
        human = json.dumps(out, indent=2)
    if args.json:
        print(json.dumps(out))
    elif human is None:
        _print_table(out)
    else:
        print(human)
    return 0


def _address_space(c: Client, args: argparse.Namespace) -> int:
    """mmap, munmap, madvise: prints the address (mmap) or nothing; a -errno is printed
    as the syscall's error, exit status 1."""
    if args.ctl_cmd == "mmap":
        out = c.call("mmap", pid=args.pid, length=args.length, addr=args.addr, perms=args.perms,
                     fixed=args.fixed, noreplace=args.noreplace)
    elif args.ctl_cmd == "munmap":
        out = c.call("munmap", pid=args.pid, addr=args.addr, length=args.length)
    else:
        out = c.call("madvise", pid=args.pid, addr=args.addr, length=args.length, advice=args.advice)
    ret = out["ret"]
    if args.json:
        print(json.dumps(out))
    elif ret < 0:
        print(f"fakeproc ctl: {args.ctl_cmd}: {errno.errorcode.get(-ret, -ret)}: {os.strerror(-ret)}",
              file=sys.stderr)
    elif args.ctl_cmd == "mmap":
        print(f"{ret:#x}")
    return 1 if ret < 0 else 0


def _print_table(procs: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(box=None, pad_edge=False)
    for col, justify in (("PID", "right"), ("NAME", "left"), ("STATE", "left"), ("THR", "right"),
                         ("RSS", "right"), ("ANON", "right"), ("FILE", "right"), ("SHMEM", "right"),
                         ("NODES", "left"), ("POLICY", "left"), ("WORKLOAD", "left")):
        t.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for p in procs:
        wl = p["workload"]
        t.add_row(str(p["pid"]), p["name"], p["state"], str(len(p["threads"])), _kib(p["rss"]),
                  _kib(p["rss_anon"]), _kib(p["rss_file"]), _kib(p["rss_shmem"]),
                  " ".join(f"{nid}:{_kib(n)}" for nid, n in p.get("rss_nodes", {}).items()) or "-",
                  p["policy"],
                  f"{wl['pattern']} {wl['rate']:g}/s" if wl else "-")
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a pipe: one line per process, never wrapped
    console.print(t)


def _kib(pages: int) -> str:
    kb = pages * 4
    for unit, div in (("G", 1 << 20), ("M", 1 << 10)):
        if kb >= div:
            return f"{kb / div:.4g}{unit}"
    return f"{kb}K"
