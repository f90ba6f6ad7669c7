"""Command line: argument parsing only; the work is in machine, fs, ctl and demo."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_MOUNTPOINT = "mount"


def _rate(text: str) -> float:
    """A --rate value; argparse would name the function in its error ("invalid _rate value")."""
    from .ctl.cli import finite
    from .ctl.clock import MAX_RATE
    value = finite(text)
    if not 0 <= value <= MAX_RATE:
        raise argparse.ArgumentTypeError(f"the rate must be from 0 to {MAX_RATE:g}, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fakeproc", description=(
        "An emulated two-tier (DRAM/PMEM) Linux kernel, mounted as /proc and /sys over FUSE."))
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mount", help="mount an emulated machine (default: the built-in one)")
    m.add_argument("mountpoint", nargs="?", default=DEFAULT_MOUNTPOINT)
    m.add_argument("--machine", metavar="FILE", help="machine/scenario TOML file")
    m.add_argument("-f", "--foreground", action="store_true", help="serve in the foreground")
    m.add_argument("--paused", action=argparse.BooleanOptionalAction, default=False,
                   help="do not run the workloads (virtual clock stopped)")
    m.add_argument("--rate", type=_rate, default=1.0,
                   help="virtual seconds per wall-clock second (default 1.0)")
    m.add_argument("--allow-other", action="store_true", help="let other users see the mount")
    m.add_argument("--log", help=argparse.SUPPRESS)  # the background server's log: removed on a clean stop
    u = sub.add_parser("umount", help="unmount (also cleans a stale mount)")
    u.add_argument("mountpoint", nargs="?", default=DEFAULT_MOUNTPOINT)
    c = sub.add_parser("check", help="validate a machine file and print what it builds")
    c.add_argument("machine", nargs="?")
    r = sub.add_parser("run", help="run CMD against the emulated machine (private mount namespace)")
    r.add_argument("--machine", metavar="FILE", help="machine/scenario TOML file")
    r.add_argument("--mount", metavar="DIR", help="use (or create) the mount at DIR")
    r.add_argument("--rate", type=_rate, default=1.0, help="virtual seconds per second")
    r.add_argument("--paused", action=argparse.BooleanOptionalAction, default=False,
                   help="start the machine with its virtual clock stopped")
    r.add_argument("--report", metavar="DIR", help="save the ground truth (JSON, plots) there "
                   "and print its table when CMD ends")
    r.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    rp = sub.add_parser("report", help="ground truth: DRAM hit vs oracle, migrations, missed pages")
    rp.add_argument("source", nargs="?", default=DEFAULT_MOUNTPOINT,
                    help="a mount point (live) or a saved report JSON (default: mount)")
    rp.add_argument("--json", metavar="FILE", help="also save the report as JSON")
    rp.add_argument("--plots", metavar="DIR", help="write dram_hit.png and heat_PID.png there")
    d = sub.add_parser("demo", help="mount the default machine, show it working, unmount")
    d.add_argument("mountpoint", nargs="?", default=DEFAULT_MOUNTPOINT)
    t = sub.add_parser("top", help="live view of a mount: nodes, migrations, processes")
    t.add_argument("mountpoint", nargs="?", default=DEFAULT_MOUNTPOINT)
    t.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="seconds between refreshes (default 1)")
    t.add_argument("--iterations", type=int, default=None, metavar="N",
                   help="stop after N refreshes (default: until Ctrl-C)")
    from .ctl.cli import add_parser as add_ctl_parser
    add_ctl_parser(sub, DEFAULT_MOUNTPOINT)
    return p


def _load(machine: str | None):  # noqa: ANN202 - a Kernel
    from .buildbar import BuildBar
    from .machine import load_default, load_file
    with BuildBar() as bar:
        return load_file(machine, bar) if machine else load_default()


def _summary(kernel, mountpoint: str | None) -> str:  # noqa: ANN001
    from .summary import describe
    return describe(kernel, mountpoint)


def cleanup_stale(mountpoint: str) -> bool:
    """Unmount a fakeproc mount left by a killed daemon; True when one was cleaned.
    Another file system's dead mount is not ours to remove."""
    from .ctl.protocol import mountpoint_path
    from .fs.server import is_stale, mounts_below
    if not is_stale(mountpoint) or mountpoint_path(mountpoint) not in mounts_below(mountpoint):
        return False
    subprocess.run(["fusermount3", "-uz", mountpoint], check=False, capture_output=True)
    return True


def mountpoint_problem(mnt: str) -> str | None:
    """Why mnt cannot be a mount point (it is created here if missing), or None. Call
    after cleanup_stale(): a stale mount cannot be looked at."""
    if os.path.lexists(mnt) and not os.path.isdir(mnt):
        return "not a directory"
    try:
        Path(mnt).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create it: {e.strerror}"
    return None


def _mount(args: argparse.Namespace) -> int:
    from .machine import MachineFileError
    mnt = args.mountpoint
    if cleanup_stale(mnt):
        print(f"fakeproc: cleaned a stale mount left on {mnt} by a killed daemon", file=sys.stderr)
    from .fs.server import is_mounted
    if is_mounted(mnt):
        print(f"fakeproc: {mnt} is already mounted; stop it first: fakeproc umount {mnt}",
              file=sys.stderr)
        return 1
    problem = mountpoint_problem(mnt)
    if problem:
        print(f"fakeproc: {mnt}: {problem}", file=sys.stderr)
        return 2
    if not args.foreground:
        return _mount_background(args)
    try:
        kernel = _load(args.machine)
    except MachineFileError as e:
        print(f"fakeproc: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(levelname)s: %(message)s")
    from .ctl.server import ControlSocketError
    from .fs.server import serve
    print(_summary(kernel, mnt), flush=True)
    try:
        serve(kernel, mnt, rate=args.rate, paused=args.paused, allow_other=args.allow_other)
    except ControlSocketError as e:
        print(f"fakeproc: control socket: {e}", file=sys.stderr)
        return 1
    print(f"fakeproc: unmounted {mnt}", flush=True)
    if args.log:
        _remove_log(args.log)
    return 0


def _remove_log(log: str) -> None:
    """Remove the background server's log after a clean stop (one per mount would pile
    up), only if it is this process's stdout: never another file of that name."""
    try:
        st, out = os.stat(log), os.fstat(sys.stdout.fileno())
        if (st.st_dev, st.st_ino) == (out.st_dev, out.st_ino):
            os.unlink(log)
    except OSError:
        pass


def _mount_background(args: argparse.Namespace) -> int:
    """Start the foreground server detached, wait for the mount, print its summary."""
    argv = [sys.executable, "-m", "fakeproc", "mount", args.mountpoint, "-f", "--rate", str(args.rate)]
    argv += ["--machine", args.machine] if args.machine else []
    argv += ["--paused"] if args.paused else []
    argv += ["--allow-other"] if args.allow_other else []
    log = Path(os.environ.get("XDG_RUNTIME_DIR", "/tmp")) / f"fakeproc-{os.getpid()}.log"
    argv += ["--log", str(log)]
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    from .ctl.client import server_pid  # not another launch's server on the same path
    from .fs.server import is_serving
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.stderr.write(log.read_text())
            if proc.returncode == 2:  # bad input (the machine file): its message, just shown, is all
                log.unlink()
            else:
                print(f"fakeproc: the server failed; its log is kept: {log}", file=sys.stderr)
            return proc.returncode or 1
        if is_serving(args.mountpoint) and server_pid(args.mountpoint) == proc.pid:
            sys.stdout.write(log.read_text())
            print(f"fakeproc: serving as pid {proc.pid}; log: {log}")
            return 0
        time.sleep(0.05)
    proc.kill()
    print(f"fakeproc: the mount did not come up in 60 s; its log is kept: {log}", file=sys.stderr)
    return 1


def _umount(args: argparse.Namespace) -> int:
    from .ctl.protocol import mountpoint_path
    from .fs.server import PROBE_SECONDS, mounts_below, probe, unmount
    mnt, below = args.mountpoint, mounts_below(args.mountpoint)
    if mountpoint_path(mnt) not in below:  # say so: a silent 0 reads as "unmounted"
        why = "does not exist" if not os.path.lexists(mnt) else "is not a fakeproc mount"
        hint = f" (one is mounted below it: {below[-1]})" if below else ""
        print(f"fakeproc: {mnt} {why}{hint}", file=sys.stderr)
        return 1
    state = probe(mnt)
    if state == "stale":
        subprocess.run(["fusermount3", "-uz", mnt], check=False, capture_output=True)
        print(f"fakeproc: cleaned a stale mount on {mnt}")
        return 0
    if state == "live":
        return unmount(mnt)
    # hung: end it (stopped, it takes the SIGTERM when continued) once detached. A
    # lazy unmount of the outer mount takes the inner one along, and names neither by
    # a path walk through the outer mount, whose directories would ask the hung
    # server for their attributes once the kernel's cache of them expired
    from .ctl.client import server_pid
    pid = server_pid(mnt)
    rc = subprocess.run(["fusermount3", "-uz", mountpoint_path(mnt)], check=False).returncode
    if rc == 0:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)
        print(f"fakeproc: the server of {mnt}" + (f" (pid {pid})" if pid else "")
              + f" did not answer within {PROBE_SECONDS:g} s: unmounted"
              + (", and sent it SIGTERM" if pid else ""), file=sys.stderr)
    return rc


def _check(args: argparse.Namespace) -> int:
    from .machine import MachineFileError
    try:
        kernel = _load(args.machine)
    except MachineFileError as e:
        print(f"fakeproc: {e}", file=sys.stderr)
        return 2
    print(_summary(kernel, None))
    return 0


def _report(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path as _Path

    from . import report
    from .ctl.protocol import CtlError
    try:
        data = report.load(args.source)
    except (OSError, ValueError, CtlError) as e:
        print(f"fakeproc report: {args.source}: {e}", file=sys.stderr)
        return 1
    report.print_table(data)
    if args.json:
        try:
            _Path(args.json).write_text(json.dumps(data))
        except OSError as e:
            print(f"fakeproc report: --json {args.json}: cannot write: {e.strerror}", file=sys.stderr)
            return 1
    if args.plots:
        try:
            written = report.write_plots(data, _Path(args.plots))
        except OSError as e:
            print(f"fakeproc report: --plots {args.plots}: cannot write: {e.strerror}", file=sys.stderr)
            return 1
        for p in written:
            print(f"wrote {p}")
        if not written:
            print("fakeproc report: no samples yet, no plots written", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before a command set up its own handling
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # the reader went away (`fakeproc mount MNT | head -1`): whatever was started
        # stays started; no traceback, and nothing more written to the closed pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "mount":
        return _mount(args)
    if args.cmd == "umount":
        return _umount(args)
    if args.cmd == "check":
        return _check(args)
    if args.cmd == "run":
        cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not cmd:
            print("fakeproc run: give a command after --", file=sys.stderr)
            return 2
        from .run.runner import report_dir_problem, run
        problem = args.report and report_dir_problem(Path(args.report))
        if problem:
            print(f"fakeproc run: --report {args.report}: {problem}", file=sys.stderr)
            return 2
        if args.mount and cleanup_stale(args.mount):
            print(f"fakeproc run: cleaned a stale mount left on {args.mount} by a killed daemon",
                  file=sys.stderr)
        problem = args.mount and mountpoint_problem(args.mount)
        if problem:
            print(f"fakeproc run: --mount {args.mount}: {problem}", file=sys.stderr)
            return 2
        try:
            return run(cmd, machine=args.machine, mount=args.mount, rate=args.rate,
                       paused=args.paused, report_dir=args.report)
        except RuntimeError as e:
            print(f"fakeproc run: {e}", file=sys.stderr)
            return 1
    if args.cmd == "report":
        return _report(args)
    if args.cmd == "top":
        from .top import run_top
        return run_top(args.mountpoint, interval=args.interval, iterations=args.iterations)
    if args.cmd == "ctl":
        from .ctl.cli import run as run_ctl
        return run_ctl(args)
    problem = mountpoint_problem(args.mountpoint)
    if problem:
        print(f"fakeproc demo: {args.mountpoint}: {problem}", file=sys.stderr)
        return 2
    from .demo import run_demo
    return run_demo(args.mountpoint)
