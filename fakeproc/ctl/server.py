"""The control socket: accepts connections on the trio thread that owns the kernel.

The socket is bound before the file system is mounted (so it is there as soon as
the mount answers) and served as one more task in the mount's nursery. A client
that sends garbage, too long a line, or vanishes mid-request only loses its own
connection: every failure is caught per connection and logged.
"""
from __future__ import annotations

import errno
import itertools
import logging
import os
import re
import socket
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from . import commands as _commands  # noqa: F401 - registers the commands
from .protocol import (INTERNAL, MAX_LINE, MOUNTPOINT_NAME, SOCKET_NAME, TOO_LONG, CtlError, encode,
                       mount_key, parse_request, reply_error, reply_ok, runtime_dir)
from .registry import Context, dispatch

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel
    from .clock import VirtualClock

log = logging.getLogger("fakeproc.ctl")
REALPROC_NAME = re.compile(r"[0-9a-f]{16}\.proc")  # fs.server.realproc_dir() of a mount key
RECV_SIZE = 65536


class ControlSocketError(RuntimeError):
    """The control socket cannot be set up (the mount is not started)."""


def _private_dir(path: Path) -> None:
    """mkdir path 0700 (and its parent), refusing one that is a symlink or not ours."""
    for d in (path.parent, path):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise ControlSocketError(f"{d} is not a directory owned by uid {os.geteuid()}; remove it")
    os.chmod(path, 0o700)


def _is_dead(path: Path) -> bool:
    """Does connecting to the socket at path get ECONNREFUSED (nobody listens)?"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        return True
    except OSError:
        return False  # missing, busy, or not ours: leave it alone
    finally:
        probe.close()
    return False


def _replace_stale(path: Path) -> None:
    """Remove a socket left by a killed server; refuse to steal a live one."""
    if not os.path.lexists(path):
        return
    if not _is_dead(path):
        raise ControlSocketError(f"another fakeproc server answers on {path}; stop it first")
    path.unlink()


def _sweep(base: Path, keep: Path) -> None:
    """Remove the directories that killed servers left under base: those whose
    mountpoint file exists (written after listen()) and whose socket refuses or is
    gone (no server can be reached through that directory any more), then
    the empty <key>.proc directories without a <key> directory (a live server makes
    <key> first and removes it last)."""
    try:
        entries = list(base.iterdir())
    except OSError:
        return
    for d in entries:
        try:
            st = os.lstat(d)
            if d == keep or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                continue
            sock = d / SOCKET_NAME
            if (d / MOUNTPOINT_NAME).exists() and (not os.path.lexists(sock) or _is_dead(sock)):
                sock.unlink(missing_ok=True)
                os.unlink(d / MOUNTPOINT_NAME)
                os.rmdir(d)
                log.info("removed %s, left by a killed server", d)
        except OSError:
            continue
    for d in entries:
        _sweep_realproc(d)


def _sweep_realproc(d: Path) -> None:
    """rmdir d, an empty <key>.proc of ours whose server is gone (no <key>); if a server
    of that key made <key> meanwhile, its <key>.proc is made again (it may have found
    d and be about to use it)."""
    if not REALPROC_NAME.fullmatch(d.name):
        return
    owner = d.with_name(d.name.removesuffix(".proc"))
    try:
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or os.path.lexists(owner):
            return
        os.rmdir(d)  # only if empty: it stays empty on the host
    except OSError:
        return
    if os.path.lexists(owner):
        try:
            d.mkdir(mode=0o755)
        except OSError:
            pass
        return
    log.info("removed %s, left by a killed server", d)


class ControlServer:
    """Owns the socket file of one mount; ``serve()`` runs in the mount's nursery."""

    def __init__(self, mountpoint: str | os.PathLike[str], kernel: "Kernel", clock: "VirtualClock") -> None:
        self.ctx = Context(kernel, clock)
        self.realpath, _ = mount_key(mountpoint)
        self.dir = runtime_dir(mountpoint)
        self.path = self.dir / SOCKET_NAME
        self._sock: socket.socket | None = None
        self._ino: int | None = None
        self._conns = itertools.count(1)

    def bind(self) -> "ControlServer":
        """Create the private directory and listen on the socket (before mounting)."""
        try:
            _private_dir(self.dir)
            _replace_stale(self.path)
        except OSError as e:
            raise ControlSocketError(f"cannot prepare {self.dir}: {e}") from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            sock.listen(64)  # at once: a bound socket that refuses looks dead to _sweep
            os.chmod(self.path, 0o600)  # the 0700 directory already kept others out
        except OSError as e:
            sock.close()
            raise ControlSocketError(f"cannot listen on {self.path}: {e}") from None
        self._sock, self._ino = sock, os.stat(self.path).st_ino
        fd = os.open(self.dir / MOUNTPOINT_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.realpath + "\n")
        _sweep(self.dir.parent, keep=self.dir)
        return self

    def close(self) -> None:
        """Stop listening; remove the socket, the mountpoint file and the directory if
        they are still this server's."""
        if self._sock is None:
            return
        self._sock.close()
        self._sock = None
        try:
            if os.stat(self.path).st_ino != self._ino:
                return  # replaced by another server
            os.unlink(self.path)
            os.unlink(self.dir / MOUNTPOINT_NAME)
            os.rmdir(self.dir)
        except OSError:
            pass

    async def serve(self) -> None:
        """Accept connections until cancelled."""
        assert self._sock is not None, "bind() first"
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self._sock))
        await trio.serve_listeners(self._connection, [listener])

    # ---- one connection ----------------------------------------------------------------
    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = next(self._conns)
        try:
            await self._converse(stream, conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            log.warning("control connection %d: client went away (%s)", conn, e)
        except Exception:
            log.exception("control connection %d failed; closing it", conn)
        finally:
            self.ctx.runners.discard(conn)  # a runner that went away (even killed) detaches
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _converse(self, stream: trio.SocketStream, conn: int) -> None:
        buf = bytearray()
        dropping = False  # inside a too-long line: discard up to its newline
        while True:
            data = await stream.receive_some(RECV_SIZE)
            if not data:
                if buf and not dropping:
                    log.warning("control connection %d: closed mid-request (%d bytes dropped)",
                                conn, len(buf))
                return
            seen = len(buf)  # no newline before here: a long line is searched once, not per chunk
            buf += data
            while True:
                nl = buf.find(b"\n", seen)
                seen = 0
                if dropping:
                    if nl < 0:
                        buf.clear()
                        break
                    del buf[:nl + 1]
                    dropping = False
                    continue
                if nl < 0:
                    if len(buf) > MAX_LINE:
                        dropping = True
                        buf.clear()
                        await stream.send_all(self._too_long(conn))
                    break
                line = bytes(buf[:nl])
                del buf[:nl + 1]
                if len(line) > MAX_LINE:
                    await stream.send_all(self._too_long(conn))
                elif line.strip():
                    await stream.send_all(self.handle_line(line, conn))

    def _too_long(self, conn: int) -> bytes:
        log.warning("control connection %d: request line over %d bytes dropped", conn, MAX_LINE)
        return encode(reply_error(None, CtlError(TOO_LONG, f"a request line may hold at most {MAX_LINE} "
                                                 "bytes; this one was dropped", errno.EMSGSIZE)))

    def handle_line(self, line: bytes, conn: int = 0) -> bytes:
        """One request line in, one reply line out (never raises)."""
        req_id: Any = None
        try:
            req_id, cmd, args = parse_request(line)
            self.ctx.clock.request_tick()  # the command sees the kernel as of now (see fs/server._guarded)
            self.ctx.conn = conn
            reply = reply_ok(req_id, dispatch(self.ctx, cmd, args))
        except CtlError as e:
            if e.req_id is not None:
                req_id = e.req_id
            if e.type == INTERNAL:
                log.error("control connection %d: %s", conn, e)
            reply = reply_error(req_id, e)
        try:
            return encode(reply)
        except (TypeError, ValueError) as e:
            log.exception("control connection %d: reply not JSON", conn)
            return encode(reply_error(req_id, CtlError(INTERNAL, f"the reply is not JSON: {e}")))
