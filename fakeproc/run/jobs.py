"""CMD as a job of the runner, as a shell runs a job: its own process group, the
terminal's foreground while it runs, stops passed up to the shell, and no process of
the run left behind when CMD ends.

Why each part:

* Signals. The runner forwards the signals it gets (SIGINT, SIGTERM, SIGHUP,
  SIGQUIT) to CMD. Were CMD in the runner's process group, a Ctrl-C (sent by the
  terminal to the whole foreground group) or a ``kill -INT -PGID`` would reach CMD
  twice: once directly, once forwarded. So CMD gets a process group of its own, and
  the terminal's foreground while it runs (``tcsetpgrp``): keyboard signals go to CMD
  alone, and whatever reaches the runner is forwarded once. The signals are blocked
  in the runner and taken with ``sigtimedwait``, so none interrupts its Python code.
* Stops. A Ctrl-Z stops CMD's group; the runner then takes the terminal back and
  stops itself, so the shell sees its job stopped and gets the prompt back. On
  ``fg`` it gives the terminal to CMD again and continues it; on ``bg``, continues it.
* The rest of the run. The runner is a child subreaper (``PR_SET_CHILD_SUBREAPER``):
  a process CMD started and left (a daemon's worker, ``sh -c 'job &'``) becomes the
  runner's child when its parent exits, not init's. Those that remain when CMD ends
  would run on with a dead supervisor (their intercepted calls failing ``ENOSYS``)
  and the emulator gone; they get SIGTERM, then SIGKILL after a grace period, and are
  reaped, and the runner says which. While CMD runs, the runner reaps those that end.

Linux: kernel/sys.c PR_SET_CHILD_SUBREAPER, drivers/tty/tty_jobctrl.c tcsetpgrp().
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable

PR_SET_CHILD_SUBREAPER = 36
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# blocked in the runner (and so in the threads it starts, the supervisor's) from its
# start: the forwarded ones, taken by sigtimedwait, and SIGTTOU, which tcsetpgrp() from
# the background would otherwise stop the runner with
BLOCKED = (*FORWARDED, signal.SIGTTOU)
TERMINAL_STOPS = (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
GRACE_SECONDS = 5.0  # between SIGTERM and SIGKILL for the processes CMD left


def become_subreaper() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def take_signal(timeout: float) -> int | None:
    """A forwarded signal that arrived (waiting up to timeout seconds), or None."""
    info = signal.sigtimedwait(FORWARDED, timeout)
    return info.si_signo if info is not None else None


def controlling_tty() -> int | None:
    """stdin, when it is a terminal whose foreground is the runner's process group
    (the runner runs in the foreground), else None: then there is no terminal to hand
    over, and no keyboard signal reaches CMD but through the runner."""
    try:
        return 0 if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp() else None
    except OSError:
        return None


def in_child(tty: int | None) -> None:
    """In CMD's process, before exec: a process group of its own, the terminal's
    foreground if the runner had it, and the signal state a shell gives a job (Python
    ignores SIGPIPE and SIGXFSZ, and exec would keep that; the runner's blocked mask
    too)."""
    os.setpgid(0, 0)
    if tty is not None:
        os.tcsetpgrp(tty, os.getpid())  # SIGTTOU is blocked: no stop from the background
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def in_parent(pid: int) -> None:
    """setpgid() from both sides, as shells do: whichever runs first, CMD is in its own
    group before the runner forwards anything to it."""
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass  # it has exec'd already (EACCES) or is gone (ESRCH): its own call did it


def _tcsetpgrp(tty: int | None, pgrp: int) -> None:
    if tty is not None:
        try:
            os.tcsetpgrp(tty, pgrp)
        except OSError:
            pass  # the terminal hung up, or CMD's group is gone


def suspend(pid: int, tty: int | None) -> None:
    """CMD was stopped from the terminal: stop the runner as a shell's job stops, and
    resume CMD the way the runner is resumed (``fg``: in the foreground again)."""
    _tcsetpgrp(tty, os.getpgrp())
    os.kill(os.getpid(), signal.SIGSTOP)  # returns once continued (fg or bg)
    if controlling_tty() is not None:
        _tcsetpgrp(tty, pid)
    try:
        os.killpg(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def finish(tty: int | None) -> None:
    """CMD ended: the terminal goes back to the runner's group."""
    _tcsetpgrp(tty, os.getpgrp())


def _children(pid: int) -> set[int]:
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
    """The runner's descendants, except the processes in keep and theirs (its
    emulator)."""
    found: set[int] = set()
    todo = [c for c in _children(os.getpid()) if c not in keep]
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo.extend(_children(p))
    return found


def reap(keep: set[int]) -> None:
    """Reap the runner's children that ended, except keep's (CMD and the emulator
    are waited for by their own code)."""
    for child in _children(os.getpid()) - keep:
        try:
            os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            pass


def end_the_rest(keep: set[int], say: Callable[[str], None] | None = None,
                 grace: float = GRACE_SECONDS) -> list[int]:
    """SIGTERM the processes CMD left (see left_behind), SIGKILL those still there after
    grace seconds, reap them; returns their pids."""
    rest = sorted(left_behind(keep))
    if not rest:
        return rest
    (say or _say)(f"fakeproc run: CMD ended; ending the {len(rest)} process(es) it left: "
                  f"{' '.join(map(str, rest))}")
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM
    while True:
        alive = left_behind(keep)
        for p in alive:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        reap(keep)
        if not left_behind(keep):
            return rest
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        time.sleep(0.02)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
