"""Mount a fakeproc machine in a subprocess for the duration of a test.

pyfuse3 serves one file system per process, and any file-system call on a mount from
the thread that serves it deadlocks, so tests never serve in-process: ``mounted()``
runs ``python -m fakeproc mount MNT -f --paused ...`` as a child and talks to it only
through the file system.

Set FAKEPROC_MOUNT_CMD (a shell-quoted command line) to replace
``[sys.executable, "-m", "fakeproc"]``, e.g. to try the harness on a stand-in server.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Iterator, Sequence

from ..fs.server import READY_FILE

REPO = pathlib.Path(__file__).resolve().parents[2]  # the source tree, when run from one
CLEANUP_SCRIPT = REPO / "scripts" / "cleanup-mounts.sh"
LOG_TAIL = 8000  # characters of server log quoted in errors
# Every mounted() call gets a fresh directory below this one, so leftovers of the test
# harness can be cleaned without touching anyone else's fakeproc mounts.
# Per test session (process): the session-end cleanup removes only its own leftovers,
# never the mounts of a user or of another test session running at the same time.
TMP_ROOT = pathlib.Path(tempfile.gettempdir()) / "fakeproc-tests" / f"session-{os.getpid()}"


class MountError(RuntimeError):
    """The mount server failed to start, hung, or did not exit cleanly."""


def mount_command() -> list[str]:
    """The command that precedes ``mount ...``: FAKEPROC_MOUNT_CMD or ``python -m fakeproc``."""
    override = os.environ.get("FAKEPROC_MOUNT_CMD")
    return shlex.split(override) if override else [sys.executable, "-m", "fakeproc"]


def is_mounted(path: os.PathLike | str) -> bool:
    """True if ``path`` is a mount point per /proc/self/mounts.

    Unlike ``os.path.ismount`` this makes no call on the mount itself, so it neither
    blocks on a hung server nor reports False for a stale (ENOTCONN) mount.
    """
    # Resolve only the parent: a lookup of the mount point itself would reach the server.
    path = os.path.abspath(path)
    target = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    with open("/proc/self/mounts", errors="surrogateescape") as f:
        for line in f:
            mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[1])
            if mp == target:
                return True
    return False


@dataclasses.dataclass
class Mount:
    path: pathlib.Path
    proc: subprocess.Popen
    machine_file: pathlib.Path | None
    log_path: pathlib.Path

    def sys(self, rel: str | os.PathLike) -> pathlib.Path:
        """``<mnt>/sys/<rel>``."""
        return self.path / "sys" / str(rel).lstrip("/")

    def proc_path(self, rel: str | os.PathLike) -> pathlib.Path:
        """``<mnt>/proc/<rel>``."""
        return self.path / "proc" / str(rel).lstrip("/")

    def read(self, rel: str | os.PathLike) -> bytes:
        """Whole contents of ``<mnt>/<rel>`` via os.open/os.read/os.close."""
        return _read_file(self.path / str(rel).lstrip("/"))

    def log(self) -> str:
        """What the server has written to stdout/stderr so far."""
        return self.log_path.read_text(errors="replace")


def _read_file(path: pathlib.Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _probe(mnt: pathlib.Path, timeout: float) -> bool:
    """Is the mount serving READY_FILE?  Runs in a daemon thread so that a hung server
    costs ``timeout`` seconds instead of the whole test run (the thread stays blocked
    until the server dies, when the kernel aborts its requests)."""
    result: list[bool] = []

    def run() -> None:
        try:
            result.append(os.path.ismount(mnt) and bool(_read_file(mnt / READY_FILE)))
        except OSError:
            result.append(False)

    t = threading.Thread(target=run, name=f"probe {mnt}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise MountError(f"{mnt}: server did not answer within {timeout:.1f}s")
    return result[0]


def _wait_ready(m: Mount, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if m.proc.poll() is not None:
            raise MountError(f"mount server exited with code {m.proc.returncode} before "
                             f"{m.path / READY_FILE} became readable")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MountError(f"{m.path / READY_FILE} not readable after {timeout:.1f}s")
        if is_mounted(m.path) and _probe(m.path, remaining):
            return
        time.sleep(0.02)


def _stop(m: Mount, timeout: float) -> list[str]:
    """SIGTERM the server, reap it, remove any leftover mount. Returns the problems seen."""
    problems = []
    if m.proc.poll() is None:
        m.proc.send_signal(signal.SIGTERM)
        try:
            m.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            problems.append(f"server still running {timeout:.1f}s after SIGTERM; killed it")
            m.proc.kill()
            m.proc.wait()
    rc = m.proc.returncode
    if rc != 0:
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"code {rc}"
        problems.append(f"server exited with {how}, expected 0")
    if is_mounted(m.path):
        problems.append("server left the mount behind; ran fusermount3 -uz")
        subprocess.run(["fusermount3", "-uz", str(m.path)], check=False, timeout=30)
    return problems


@contextlib.contextmanager
def mounted(machine_toml: str | None = None, *, extra_args: Sequence[str] = (),
            timeout: float = 20.0) -> Iterator[Mount]:
    """Mount a machine (``machine_toml`` text, or the built-in default when None),
    paused, in a subprocess; yield a ``Mount`` once it serves READY_FILE.

    On exit the server gets SIGTERM and must exit 0 having unmounted; otherwise, after
    cleaning up, MountError is raised with the server's log (or, if the body raised,
    the problems are added as a note to that exception instead of replacing it).
    """
    TMP_ROOT.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=TMP_ROOT))
    mnt = tmp / "mnt"
    mnt.mkdir()
    machine_file = None
    if machine_toml is not None:
        machine_file = tmp / "machine.toml"
        machine_file.write_text(machine_toml)
    cmd = [*mount_command(), "mount", str(mnt), "-f", "--paused"]
    if machine_file is not None:
        cmd += ["--machine", str(machine_file)]
    cmd += list(extra_args)

    log_path = tmp / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    m = Mount(path=mnt, proc=proc, machine_file=machine_file, log_path=log_path)

    try:
        _wait_ready(m, timeout)
        yield m
    except BaseException as exc:
        problems = _stop(m, timeout)
        exc.add_note(_report(m, cmd, problems))
        raise
    else:
        problems = _stop(m, timeout)
        if problems:
            raise MountError(_report(m, cmd, problems))
    finally:
        if not is_mounted(mnt):  # never rmtree into a live file system
            shutil.rmtree(tmp, ignore_errors=True)


def _report(m: Mount, cmd: list[str], problems: list[str]) -> str:
    log = m.log()
    if len(log) > LOG_TAIL:
        log = "[...]\n" + log[-LOG_TAIL:]
    lines = [f"mount server: {shlex.join(cmd)}", *(f"  - {p}" for p in problems),
             "---- server log ----", log.rstrip() or "(empty)", "---- end of log ----"]
    return "\n".join(lines)
