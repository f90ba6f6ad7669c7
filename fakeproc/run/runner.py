"""`fakeproc run -- CMD`: an unmodified program against the emulated machine.

The runner mounts the machine (or attaches to a mounted one), forks, puts the
child in a private mount namespace where /sys's node, CPU and memory-block
trees and /proc are the emulated ones (run/namespace.py), and execs CMD there. It returns CMD's
exit status; it stops a machine it started, and if the emulator dies while CMD
runs, it kills CMD and cleans the stale mount.
"""
from __future__ import annotations

import ctypes
import errno
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from ..ctl.client import Client
from ..ctl.protocol import MAX_LINE, CtlError, pack_bytes, unpack_bytes
from ..fs.server import is_mounted, is_serving, probe, realproc_dir
from . import jobs, namespace, seccomp
from .fcntl import fcntl_handler, fionbio_handler
from .lseek import lseek_handler
from .mempolicy import Policy, get_mempolicy_handler, set_mempolicy_handler
from .procstatus import open_handler
from .sched import getaffinity_handler, setaffinity_handler
from .tasks import MachineFacts, TaskStates, mask_cpus, start_time, status_fields

# the memory syscalls that can name another process; calls on real pids never
# reach the supervisor (the BPF filter lets them through)
# lseek and fcntl: idle_pages positions and flags; the memory policy and the CPU mask
# of the program's tasks, over the emulated nodes and CPUs
# (and read-only opens: a task's status shows them)
INTERCEPT = ("move_pages", "migrate_pages", "lseek", "fcntl", "ioctl", "get_mempolicy", "set_mempolicy",
             "sched_getaffinity", "sched_setaffinity", "open", "openat")

EMULATOR_DIED = 70  # EX_SOFTWARE: the emulator went away under CMD
PR_SET_PDEATHSIG = 1


def die_with(parent: int, sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG): this (just forked) process gets sig when the runner
    that forked it dies, even by SIGKILL, so neither the emulator it started nor CMD
    outlives it; if it died already, now."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


def _server_child(runner: int) -> None:
    """In the emulator's process before exec: none of the runner's signals blocked
    (exec keeps the mask, and SIGTERM stops the server); gone with the runner."""
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    die_with(runner, signal.SIGTERM)


class Interrupted(Exception):
    """A signal ended the runner before CMD started."""

    def __init__(self, signo: int) -> None:
        super().__init__(signal.Signals(signo).name)
        self.signo = signo


class Machine:
    """A mounted machine: one this runner started (and stops), or an existing mount."""

    def __init__(self, mountpoint: Path, proc: subprocess.Popen | None, tmp: Path | None) -> None:
        self.mountpoint, self.proc, self._tmp = mountpoint, proc, tmp

    @classmethod
    def start(cls, machine: str | None, mount: str | None, rate: float, paused: bool,
              pause: Callable[[float], int | None] = time.sleep) -> "Machine":
        """Mount the machine (or attach to a live mount) and wait until it serves.
        pause(seconds) waits between looks; a signal number it returns stops the
        start-up (Interrupted), the emulator stopped and its directory removed."""
        if mount and is_serving(mount):
            ignored = [opt for opt, given in (("--machine", machine is not None),
                                              ("--rate", rate != 1.0), ("--paused", paused)) if given]
            if ignored:  # the live machine stays as it is: say so rather than run on it silently
                verb = "applies" if len(ignored) == 1 else "apply"
                print(f"fakeproc run: {mount} is already serving a machine; {', '.join(ignored)} "
                      f"{verb} only to one the runner starts (its clock: fakeproc ctl --mount "
                      f"{mount} clock pause|resume|rate R)", file=sys.stderr)
            return cls(Path(mount).resolve(), None, None)
        tmp = None if mount else _new_run_dir()
        mnt = Path(mount).resolve() if mount else tmp / "mnt"  # type: ignore[operator]
        mnt.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "fakeproc", "mount", str(mnt), "-f", "--allow-other",
                "--rate", str(rate)] + (["--paused"] if paused else [])
        argv += ["--machine", machine] if machine else []
        log = open(mnt.parent / f".{mnt.name}.log", "w")  # noqa: SIM115 - lives with the server
        runner = os.getpid()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True,  # SIGTERM: it unmounts on its way out
                                preexec_fn=lambda: _server_child(runner))
        log.close()
        m = cls(mnt, proc, tmp)
        deadline = time.monotonic() + 60
        while not is_serving(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                text = m.log()
                m.stop()
                raise RuntimeError(f"the emulator did not start:\n{text}")
            sig = pause(0.02)
            if sig:
                m.stop()
                raise Interrupted(sig)
        return m

    def log(self) -> str:
        """What the emulator this runner started has printed (empty for an attached one)."""
        path = self.mountpoint.parent / f".{self.mountpoint.name}.log"
        try:
            return path.read_text(errors="replace") if self.proc is not None else ""
        except OSError:
            return ""

    @property
    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], check=False,
                           capture_output=True)
        if self._tmp is not None and not is_mounted(self.mountpoint):
            _remove_run_dir(self._tmp)


RUN_DIR_PREFIX = "fakeproc-run-"
OWNER = ".runner"  # in a run directory: "PID START_TIME" of the runner that made it


def _new_run_dir() -> Path:
    """A temporary directory for this run's mount, owned by this runner; first, those
    of runners that were killed (SIGKILL leaves no time to remove them) go."""
    _remove_stale_run_dirs()
    tmp = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
    (tmp / OWNER).write_text(f"{os.getpid()} {start_time(os.getpid())}\n")
    return tmp


def _remove_stale_run_dirs() -> None:
    """Remove the run directories whose runner is gone and whose mount is down (its
    server unmounts when its runner dies; a dead one's mount is unmounted here).
    A directory without an owner file is left: not known to be ours, or being made."""
    for tmp in Path(tempfile.gettempdir()).glob(RUN_DIR_PREFIX + "*"):
        try:
            pid, born = (tmp / OWNER).read_text().split()
            if str(start_time(int(pid))) == born:
                continue  # its runner is alive
            mnt = tmp / "mnt"
            if is_mounted(mnt) and probe(str(mnt)) == "stale":  # never waits on a hung one
                # lazily: the inner mount goes along, unnamed (no walk through the outer)
                subprocess.run(["fusermount3", "-uz", str(mnt)], check=False, capture_output=True)
            if not is_mounted(mnt):
                _remove_run_dir(tmp)
        except (OSError, ValueError):
            continue  # not a run directory, or another runner removed it first


def _remove_run_dir(tmp: Path) -> None:
    for p in sorted(tmp.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
    tmp.rmdir()


def _child(argv: Sequence[str], mnt: Path, realproc: Path, sock: socket.socket) -> None:
    """In the forked child: a job's signal state, enter the namespace, install the
    seccomp filter, hand its listener to the parent, exec. Never returns."""
    try:
        jobs.in_child()
        namespace.enter(mnt, realproc)
        listener = seccomp.install_filter(INTERCEPT)
        socket.send_fds(sock, [b"ok"], [listener])
        os.close(listener)
        sock.close()
        os.execvp(argv[0], list(argv))
    except OSError as e:
        os.write(2, f"fakeproc run: {argv[0]}: {e.strerror or e}\n".encode())
    except BaseException as e:  # never unwind into the runner's code in this child
        os.write(2, f"fakeproc run: {argv[0]}: {type(e).__name__}: {e}\n".encode())
    os._exit(127)


def run(argv: Sequence[str], *, machine: str | None = None, mount: str | None = None,
        rate: float = 1.0, paused: bool = False, report_dir: str | None = None) -> int:
    """Run argv against the emulated machine; returns its exit status (128+N if killed).
    With report_dir, the recorded ground truth is saved there (report.json, plots) and
    its table printed to stderr when CMD ends; a report that cannot be saved is said
    on stderr and CMD's status is still returned."""
    was_subreaper = jobs.subreaper()
    jobs.subreaper(True)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, jobs.FORWARDED)
    try:
        return _run_machine(argv, machine, mount, rate, paused, report_dir)
    except Interrupted as e:
        return 128 + e.signo
    finally:
        while jobs.take_signal(0) is not None:
            pass  # meant for CMD, which has ended: not for whoever called run()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        jobs.subreaper(was_subreaper)


def _run_machine(argv: Sequence[str], machine: str | None, mount: str | None, rate: float,
                 paused: bool, report_dir: str | None) -> int:
    m = Machine.start(machine, mount, rate, paused,
                      pause=lambda t: (info := jobs.take_signal(t)) and info.si_signo)
    try:
        with Client(m.mountpoint) as client:  # attached while it is open
            _refuse_low_pids(m, client)
            status = _run_in(m, argv, client)
        if report_dir is not None and m.alive:
            try:
                save_report(m.mountpoint, Path(report_dir))
            except (OSError, CtlError) as e:
                print(f"fakeproc run: the report could not be saved in {report_dir}: {_why(e)}",
                      file=sys.stderr)
        return status
    finally:
        m.stop()


def _refuse_low_pids(m: Machine, client: Client) -> None:
    """Emulated pids must lie above PID_MAX_LIMIT: a lower one could be a real process,
    and a move_pages(2) meant for it would move that process's real pages. Attached
    first, so no spawn can add one after the check; a live mount's low pid may come
    from its machine file or from a spawn, and the message says what to do for both."""
    client.call("attach_runner")
    low = [p["pid"] for p in client.call("list") if p["pid"] <= seccomp.PID_MAX_LIMIT]
    if not low:
        return
    pids = ", ".join(map(str, low))
    fix = f"renumber {pids} in the machine file" if m.proc is not None else (
        f"kill {pids} (fakeproc ctl --mount {m.mountpoint} kill PID) and spawn again without "
        f"a pid, or renumber {pids} in the machine file {m.mountpoint} was mounted with")
    raise RuntimeError(f"emulated pids must be above {seccomp.PID_MAX_LIMIT} under "
                       f"`fakeproc run` (a real process could have pid {low[0]}); {fix}")


def report_dir_problem(outdir: Path) -> str | None:
    """Why the report cannot be saved in outdir (created here if missing), or None:
    checked before CMD starts, so a long run does not end in an unsaved report."""
    if outdir.exists() and not outdir.is_dir():
        return "not a directory"
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create it: {e.strerror}"
    try:
        fd, probe = tempfile.mkstemp(dir=outdir, prefix=".fakeproc-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"cannot create a file in it: {e.strerror}"
    return None


def _why(e: OSError | CtlError) -> str:
    """An error in one line: 'strerror: file' rather than '[Errno N] ...'."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return str(e)


def save_report(mountpoint: Path, outdir: Path) -> None:
    import json

    from rich.console import Console

    from .. import report
    data = report.load(str(mountpoint))
    report.print_table(data, Console(stderr=True, width=140))  # first: shown even if DIR fails
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "report.json").write_text(json.dumps(data))
    if not report.write_plots(data, outdir):  # say why the table is empty (--paused, say)
        print("fakeproc run: no samples (no workload ran while CMD did), no plots written",
              file=sys.stderr)


def _run_in(m: Machine, argv: Sequence[str], client: Client) -> int:
    """Fork CMD into the namespace, supervise its memory syscalls on emulated pids
    (seccomp user notification) with the runner's control connection, and wait for it."""
    realproc = realproc_dir(m.mountpoint)
    facts = _facts(m.mountpoint)
    parent_sock, child_sock = socket.socketpair()
    runner = os.getpid()
    before = jobs.children(os.getpid())  # the emulator's, a caller's: not CMD's
    pid = os.fork()
    if pid == 0:
        parent_sock.close()
        die_with(runner, signal.SIGKILL)  # without its supervisor CMD's syscalls would fail
        _child(argv, m.mountpoint, realproc, child_sock)
    child_sock.close()
    _, fds, _, _ = socket.recv_fds(parent_sock, 16, 1)  # nothing if the child failed
    parent_sock.close()
    if not fds:
        return _wait(pid, m, before)
    policies: TaskStates[Policy | None] = TaskStates(pid)
    masks: TaskStates[int] = TaskStates(pid)
    tell, open_status = _hostview(client, m.mountpoint)
    status_open = open_handler(facts, masks, open_status)
    sup = seccomp.Supervisor(fds[0], seccomp.dispatch({
        "move_pages": seccomp.move_pages_handler(_move_pages(client), packed=True, pass_notif=True),
        "migrate_pages": seccomp.migrate_pages_handler(_migrate_pages(client), pass_notif=True),
        "lseek": lseek_handler(lambda opener, pid, pos: client.call(
            "idle_position", opener=opener, pid=pid, fuse_pos=pos)["pos"]),
        "fcntl": fcntl_handler(setfl := lambda opener, pid, pos, flags: client.call(
            "idle_setfl", opener=opener, pid=pid, fuse_pos=pos, flags=flags)),
        "ioctl": fionbio_handler(setfl),
        "get_mempolicy": get_mempolicy_handler(facts, policies),
        "set_mempolicy": set_mempolicy_handler(facts, policies),
        "sched_getaffinity": getaffinity_handler(facts, masks, _emulated(m.mountpoint)),
        "sched_setaffinity": setaffinity_handler(facts, masks, tell),
        "open": status_open, "openat": status_open,
    }))
    sup.start()
    try:
        return _wait(pid, m, before)
    finally:
        sup.stop()


def _facts(mnt: Path) -> Callable[[], MachineFacts | None]:
    """The mounted machine's CPUs and nodes, read from its trees once, before CMD
    starts, so no handler waits on the emulator for them (None if they cannot be read
    then: the calls go to the real kernel)."""
    try:
        facts: MachineFacts | None = MachineFacts.read(mnt)
    except (OSError, ValueError):
        facts = None
    return lambda: facts


def _emulated(mnt: Path) -> Callable[[int], bool]:
    """Does the emulated machine have this pid or thread id?"""
    def exists(pid: int) -> bool:
        try:
            return os.path.exists(mnt / "proc" / str(pid) / "status")
        except OSError:  # the emulator is gone: the runner says so and ends CMD
            return False
    return exists


def _hostview(client: Client, mnt: Path) -> tuple[Callable[[int, int], None], Callable[[int, int], int]]:
    """How the runner's handlers reach the tasks' status files under hostview/: tell
    the server a task's CPU mask; open a task's file (read-only) after telling."""
    told: dict[int, tuple[int | None, int]] = {}  # tid -> (start time, mask) the server has

    def tell(tid: int, mask: int) -> None:
        now = (start_time(tid), mask)
        if told.get(tid) == now:
            return  # a round trip saved on each open of an unchanged task's status
        try:
            client.call("task_cpus", tid=tid, cpus=mask_cpus(mask))
            told[tid] = now
        except (CtlError, OSError):
            pass  # the emulator is gone: the status cannot be opened either

    def open_status(tid: int, mask: int) -> int:
        tell(tid, mask)
        return os.open(mnt / "hostview" / "status" / str(tid), os.O_RDONLY | os.O_CLOEXEC)
    return tell, open_status


def _caller(notif: seccomp.Notification) -> dict[str, int]:
    """The calling thread's credentials as the syscall checks them: real uid and gid,
    effective capabilities (its /proc/TID/status, read while the call waits)."""
    fields = status_fields(notif.pid, ("Uid", "Gid", "CapEff"))
    notif.check()  # the thread is still the one that made the call
    if len(fields) < 3:
        raise ProcessLookupError(errno.ESRCH, f"no task {notif.pid}")
    return {"uid": int(fields["Uid"][0]), "gid": int(fields["Gid"][0]),
            "cap_eff": int(fields["CapEff"][0], 16)}


def _move_pages(client: Client):  # noqa: ANN202 - the emulate callback
    """move_pages on an emulated pid, answered by the emulator over the control socket;
    the caller's arrays travel packed, as the syscall read them, with its credentials."""
    def emulate(pid: int, pages: bytes, nodes: bytes | None, status: seccomp.PackedStatus,
                flags: int, notif: seccomp.Notification) -> int:
        if request_bytes(len(pages) + len(nodes or b"") + len(status)) > MAX_LINE:
            return -errno.ENOMEM  # more than one request carries: said before it is sent
        try:
            r = client.call("move_pages", pid=pid, pages=pack_bytes(pages),
                            nodes=None if nodes is None else pack_bytes(nodes), flags=flags,
                            status=pack_bytes(status), packed=True, written=True,
                            caller=_caller(notif))
        except CtlError as e:
            return -(e.errno or errno.EINVAL)
        left = unpack_bytes(r["status"], 4, "status")
        if len(left) != len(status):
            raise RuntimeError(f"the emulator answered {len(left)} status bytes for {len(status)}")
        status[:] = left  # what the kernel left, and which entries it stored
        status.written = [(int(a), int(b)) for a, b in r["written"]]
        return int(r["ret"])
    return emulate


def request_bytes(packed: int) -> int:
    """An upper bound of the request line that carries packed bytes of arrays (base64,
    with the JSON around them)."""
    return (packed + 2) // 3 * 4 + 4096


def _migrate_pages(client: Client):  # noqa: ANN202
    def emulate(pid: int, old: list[int], new: list[int], notif: seccomp.Notification) -> int:
        try:
            return int(client.call("migrate_pages", pid=pid, old_nodes=old, new_nodes=new,
                                   caller=_caller(notif))["ret"])
        except CtlError as e:
            return -(e.errno or errno.EINVAL)
    return emulate


def _wait(pid: int, m: Machine, before: set[int]) -> int:
    """Wait for CMD (run/jobs.py): pass on the signals the runner gets that CMD did not
    get too, reap what it leaves; kill it if the emulator dies. When it ends, end the
    processes it left. before: the runner's children that are not CMD's. Its exit
    status, or 128+N."""
    keep = {pid} | before | ({m.proc.pid} if m.proc is not None else set())
    try:
        for turn in itertools.count():
            info = jobs.take_signal(0.02)
            if info is not None:
                jobs.forward(info, pid)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
                    else 128 + os.WTERMSIG(status)
            if turn % 25 == 0:  # about twice a second: an orphan's zombie waits no longer
                jobs.reap(keep)
            if not m.alive:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                tail = "\n".join(m.log().splitlines()[-20:])
                print(f"fakeproc run: the emulator died; CMD was killed\n{tail}", file=sys.stderr)
                return EMULATOR_DIED
    finally:
        jobs.end_the_rest(keep)
