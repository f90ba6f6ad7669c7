"""A synchronous client of the control socket (plain sockets, no trio), for tests,
tools and ``fakeproc ctl``. Never use it from the process serving the mount."""
from __future__ import annotations

import errno
import itertools
import json
import os
import socket
import struct
from typing import Any

from .protocol import BAD_REQUEST, CONNECT, CtlError, encode, socket_path

DEFAULT_TIMEOUT = 120.0  # seconds for one reply (a spawn that populates GiBs takes a while)


class Client:
    """One connection to the machine mounted on ``mountpoint``.

    ``call(cmd, **args)`` returns the result or raises CtlError. Usable as a
    context manager; connects on first use.
    """

    def __init__(self, mountpoint: str | os.PathLike[str], *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.mountpoint = os.fspath(mountpoint)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._rfile: Any = None
        self._ids = itertools.count(1)

    # ---- connection ----------------------------------------------------------------
    def connect(self) -> "Client":
        if self._sock is not None:
            return self
        path = socket_path(self.mountpoint)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(path))
        except OSError as e:
            sock.close()
            raise CtlError(CONNECT, f"no fakeproc control socket answers for {self.mountpoint} "
                           f"at {path}: {e.strerror or e} (is it mounted?)", e.errno) from None
        self._sock, self._rfile = sock, sock.makefile("rb")
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._rfile.close()
            self._sock.close()
            self._sock = self._rfile = None

    def __enter__(self) -> "Client":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- requests ------------------------------------------------------------------
    def call(self, cmd: str, /, **args: Any) -> Any:
        """Send one request and wait for its reply."""
        return self.request(cmd, args)

    def request(self, cmd: str, args: dict[str, Any]) -> Any:
        """call() with the args as a dict (any keys)."""
        self.connect()
        assert self._sock is not None
        req_id = next(self._ids)
        try:
            self._sock.sendall(encode({"id": req_id, "cmd": cmd, "args": args}))
            line = self._rfile.readline()
        except OSError as e:
            self.close()
            raise CtlError(CONNECT, f"control connection lost: {e}", e.errno or errno.EPIPE) from None
        if not line:
            self.close()
            raise CtlError(CONNECT, "the server closed the control connection", errno.ECONNRESET)
        try:
            reply = json.loads(line)
        except ValueError:
            raise CtlError(BAD_REQUEST, f"the server sent a line that is not JSON: {line[:200]!r}") from None
        if isinstance(reply, dict) and reply.get("id") is None and not reply.get("ok"):
            raise CtlError.from_json(reply.get("error"))  # the line was refused unread (too_long)
        if not isinstance(reply, dict) or reply.get("id") != req_id:
            raise CtlError(BAD_REQUEST, f"reply out of step with request {req_id}: {line[:200]!r}")
        if reply.get("ok"):
            return reply.get("result")
        raise CtlError.from_json(reply.get("error"))

    # ---- thin helpers ----------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        return self.call("ping")

    def list(self) -> list[dict[str, Any]]:
        return self.call("list")

    def spawn(self, process: dict[str, Any]) -> int:
        """Start a process from a [[process]]-shaped dict; returns its pid."""
        return self.request("spawn", process)["pid"]

    def kill(self, pid: int, *, zombie: bool = False) -> dict[str, Any]:
        return self.call("kill", pid=pid, zombie=zombie)

    def set_workload(self, pid: int, workload: dict[str, Any] | None, *, update: bool = False) -> dict[str, Any]:
        """Replace pid's workload (None stops it); update=True keeps unnamed parameters."""
        return self.call("set_workload", pid=pid, workload=workload, update=update)

    def clock(self, action: str = "status", **args: Any) -> dict[str, Any]:
        return self.call("clock", action=action, **args)

    def pause(self) -> dict[str, Any]:
        return self.clock("pause")

    def resume(self) -> dict[str, Any]:
        return self.clock("resume")

    def step(self, seconds: float) -> dict[str, Any]:
        return self.clock("step", seconds=seconds)

    def set_rate(self, rate: float) -> dict[str, Any]:
        return self.clock("rate", rate=rate)

    def touch(self, pid: int, addr: int, *, write: bool = False) -> dict[str, Any]:
        return self.call("touch", pid=pid, addr=addr, write=write)

    def mmap(self, pid: int, length: int | str, addr: int = 0, **flags: Any) -> int:
        """mmap(2) of anonymous memory in pid (flags: perms, fixed, noreplace): the
        address, or -errno."""
        return self.call("mmap", pid=pid, length=length, addr=addr, **flags)["ret"]

    def munmap(self, pid: int, addr: int, length: int | str) -> int:
        return self.call("munmap", pid=pid, addr=addr, length=length)["ret"]

    def madvise(self, pid: int, addr: int, length: int | str, advice: str | int) -> int:
        """advice: "dontneed", "hugepage", "nohugepage" or a MADV_* number."""
        return self.call("madvise", pid=pid, addr=addr, length=length, advice=advice)["ret"]


def server_pid(mountpoint: str | os.PathLike[str]) -> int | None:
    """The pid of the server listening on the mount's control socket (SO_PEERCRED),
    without a request: the kernel completes a connect to a listening socket even when
    its process is stopped. None when no socket answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(str(socket_path(mountpoint)))
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    finally:
        sock.close()
    return struct.unpack("3i", creds)[0]


def clock_state(clock: dict[str, Any]) -> str:
    """How a `clock` reply reads: paused, stopped (rate 0) or running."""
    if clock.get("paused"):
        return "paused"
    return "running" if clock.get("running", True) else "stopped"
