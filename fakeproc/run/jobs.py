"""CMD's lifetime under the runner: the signals the runner passes on, and the
processes CMD leaves behind.

Why each part:

* Signals. CMD stays in the runner's process group, so the terminal's job control
  (Ctrl-Z, ``fg``, ``bg``, pipelines, a background read) works on both as on any
  job. The runner blocks SIGINT, SIGTERM, SIGHUP and SIGQUIT and takes them with
  ``sigtimedwait``, which says who sent each: one the kernel sent (``SI_KERNEL``:
  the terminal's Ctrl-C or Ctrl-\\, sent to the whole foreground group) reached CMD
  too and is not passed on, unless CMD has left the runner's process group; a
  hangup's SIGHUP, which goes to the session leader alone, is passed on when the
  runner is that leader; one a process sent (``kill``) is passed on to CMD once. A signal sent to the
  runner's whole process group by a process (``kill -INT -PGID``) reaches CMD twice:
  nothing tells it apart from one sent to the runner alone.
* The rest of the run. The runner is a child subreaper (``PR_SET_CHILD_SUBREAPER``):
  a process CMD started and left (a daemon's worker, ``sh -c 'job &'``) becomes the
  runner's child when its parent exits, not init's. Those that remain when CMD ends
  would run on with a dead supervisor (their intercepted calls failing ``ENOSYS``)
  and the emulator gone; they get SIGTERM, then SIGKILL after a grace period, and are
  reaped, and the runner says which. While CMD runs, the runner reaps those that end.
  The runner's own children from before CMD (its emulator; a caller's, when run() is
  called in a process that has some) are not CMD's and are left alone.

Linux: kernel/sys.c PR_SET_CHILD_SUBREAPER, kernel/signal.c (SI_KERNEL for signals the
kernel sends, as the tty layer's isig() does).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable

PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37
SI_KERNEL = 0x80
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
GRACE_SECONDS = 5.0   # between SIGTERM and SIGKILL for the processes CMD left
KILL_WAIT = 5.0       # after SIGKILL: one stuck in an unkillable wait is given up on


def subreaper(on: bool | None = None) -> bool:
    """Whether this process is a child subreaper; with on, make it one or not first."""
    libc = ctypes.CDLL(None, use_errno=True)
    if on is not None:
        libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)
    flag = ctypes.c_int(0)
    libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)
    return bool(flag.value)


def take_signal(timeout: float) -> signal.struct_siginfo | None:
    """A forwarded signal that arrived (waiting up to timeout seconds), or None. A
    wait that a stop and continue (Ctrl-Z, fg) interrupted comes back from CPython's
    sigtimedwait() with a struct it never filled in: no signal was taken then."""
    info = signal.sigtimedwait(FORWARDED, timeout)
    return info if info is not None and info.si_signo in FORWARDED else None


def reached_cmd_too(info: signal.struct_siginfo, pid: int) -> bool:
    """Did the kernel send this signal to CMD as well? A terminal's Ctrl-C or Ctrl-\\
    (SI_KERNEL) goes to the foreground process group, which CMD shares with the runner
    unless it left it; so does the SIGHUP a session leader's exit sends. A hangup's
    SIGHUP goes to the session leader alone (tty_signal_session_leader()): when the
    runner is that leader (`ssh -t`, `setsid -c`), CMD did not get it."""
    if info.si_code != SI_KERNEL:
        return False
    if info.si_signo == signal.SIGHUP and os.getsid(0) == os.getpid():
        return False
    try:
        return os.getpgid(pid) == os.getpgrp()
    except ProcessLookupError:
        return True  # gone: nothing to pass on


def forward(info: signal.struct_siginfo, pid: int) -> None:
    if not reached_cmd_too(info, pid):
        try:
            os.kill(pid, info.si_signo)
        except ProcessLookupError:
            pass


def in_child() -> None:
    """In CMD's process, before exec: the signal state a shell gives a job (Python
    ignores SIGPIPE and SIGXFSZ, and exec would keep that; the runner's blocked
    mask too)."""
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def children(pid: int) -> set[int]:
    """pid's children, from every thread's children list (a subreaper's orphans
    come to any of its threads)."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            found.update(int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except (OSError, ValueError):
            pass
    return found


def left_behind(keep: set[int]) -> set[int]:
    """The runner's descendants, except the processes in keep and theirs."""
    found: set[int] = set()
    todo = [c for c in children(os.getpid()) if c not in keep]
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo.extend(children(p))
    return found


def reap(keep: set[int]) -> None:
    """Reap the runner's children that ended, except keep's (CMD and the emulator
    are waited for by their own code, a caller's children by the caller)."""
    for child in children(os.getpid()) - keep:
        try:
            os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            pass


def end_the_rest(keep: set[int], say: Callable[[str], None] | None = None,
                 grace: float = GRACE_SECONDS) -> list[int]:
    """SIGTERM the processes CMD left (see left_behind), SIGKILL those still there after
    grace seconds (at once if a signal reaches the runner meanwhile), reap them;
    returns their pids. One that even SIGKILL does not end (an unkillable wait) is
    named and left after KILL_WAIT seconds more."""
    say = say or _say
    rest = sorted(left_behind(keep))
    if not rest:
        return rest
    say(f"fakeproc run: CMD ended; ending the {len(rest)} process(es) it left: "
        f"{' '.join(map(str, rest))}")
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM
    while alive := left_behind(keep):
        if sig == signal.SIGKILL and time.monotonic() > deadline + KILL_WAIT:
            say(f"fakeproc run: left behind, not ending on SIGKILL: {' '.join(map(str, sorted(alive)))}")
            break
        for p in alive:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        reap(keep)
        if sig == signal.SIGTERM and (time.monotonic() > deadline or take_signal(0) is not None):
            sig, deadline = signal.SIGKILL, time.monotonic()
        time.sleep(0.02)
    return rest


def _say(text: str) -> None:
    """To stderr, if it is still there (a closed pipe or a hung-up terminal must not
    stop the runner from ending what CMD left)."""
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        pass
