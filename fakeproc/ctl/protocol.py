"""The control protocol: framing, errors, and where a mount's socket lives.

One JSON object per line, each way. A request is ``{"id": N, "cmd": NAME, "args": {...}}``;
the reply is ``{"id": N, "ok": true, "result": ...}`` or ``{"id": N, "ok": false,
"error": {"type": T, "errno": E, "message": M}}``. Server and client share this module
so they agree on the framing and on the socket's path without any configuration.
"""
from __future__ import annotations

import base64
import binascii
import errno as errnos
import hashlib
import json
import math
import os
import re
import struct
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = 1
# bytes in one request line; longer lines are answered "too_long" and dropped. Large
# enough for a move_pages(2) of 3 M pages (its three arrays, base64) in one request.
MAX_LINE = 64 << 20
SOCKET_NAME = "ctl.sock"
MOUNTPOINT_NAME = "mountpoint"

# error types (the "type" field of an error reply)
BAD_REQUEST = "bad_request"          # not JSON, not an object, no "cmd", args not an object
UNKNOWN_COMMAND = "unknown_command"  # no such "cmd"
BAD_ARGS = "bad_args"                # missing, unexpected or mistyped args; invalid values
NO_SUCH_PROCESS = "no_such_process"  # the pid names no process (errno ESRCH)
KERNEL = "kernel"                    # the emulated kernel refused (errno as the syscall's)
TOO_LONG = "too_long"                # a request line over MAX_LINE bytes
INTERNAL = "internal"                # a bug in fakeproc: the server logs the traceback
CONNECT = "connect"                  # client side: no server answers on the socket


class CtlError(Exception):
    """A structured error: raised by command handlers, sent as an error reply, and
    raised again by the client."""

    def __init__(self, type: str, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.type = type
        self.errno = errno
        self.message = message
        self.req_id: Any = None  # the request's id, when known (malformed requests)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "errno": self.errno, "message": self.message}

    @classmethod
    def from_json(cls, err: Any) -> "CtlError":
        if not isinstance(err, dict):
            return cls(BAD_REQUEST, f"malformed error reply: {err!r}")
        return cls(str(err.get("type", INTERNAL)), str(err.get("message", "")), err.get("errno"))

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


def bad_args(message: str) -> CtlError:
    return CtlError(BAD_ARGS, message, errnos.EINVAL)


def encode(obj: Any) -> bytes:
    """One message as a line (compact JSON never contains a raw newline)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def reply_ok(req_id: Any, result: Any) -> dict[str, Any]:
    return {"id": req_id, "ok": True, "result": result}


def reply_error(req_id: Any, err: CtlError) -> dict[str, Any]:
    return {"id": req_id, "ok": False, "error": err.to_json()}


def parse_request(line: bytes) -> tuple[Any, str, dict[str, Any]]:
    """(id, cmd, args) of one request line; CtlError(bad_request) when malformed,
    carrying the id in ``req_id`` when one could be read."""
    try:
        msg = loads(line)
    except (UnicodeDecodeError, ValueError) as e:
        raise CtlError(BAD_REQUEST, f"not a JSON object: {e}") from None
    except RecursionError:
        raise CtlError(BAD_REQUEST, "not a JSON object: nested too deeply") from None
    if not isinstance(msg, dict):
        raise CtlError(BAD_REQUEST, f"a request is a JSON object, not {type(msg).__name__}")
    req_id = msg.get("id")
    try:
        cmd = msg.get("cmd")
        if not isinstance(cmd, str):
            raise CtlError(BAD_REQUEST, 'a request needs "cmd": a command name')
        args = msg.get("args", {})
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise CtlError(BAD_REQUEST, '"args" must be a JSON object')
        extra = set(msg) - {"id", "cmd", "args"}
        if extra:
            raise CtlError(BAD_REQUEST, f"unknown request keys: {', '.join(sorted(extra))}")
    except CtlError as e:
        e.req_id = req_id
        raise
    return req_id, cmd, args


def loads(text: str | bytes) -> Any:
    """Strict JSON: no NaN or Infinity, no number beyond a double (ValueError)."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """A JSON number as a float, refusing one beyond a double (1e400 would be inf)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of a double's range")
    return value


# ---- where the socket lives ------------------------------------------------------------

def mountpoint_path(mountpoint: str | os.PathLike[str], _links: int = 40) -> str:
    """The mount point's canonical path, as /proc/mounts shows it, found without a
    look at the mount point itself: realpath() would lstat it, and a stopped server
    never answers that (fusermount resolves the same way, its parent only). A last
    component that is a symlink (so not a mount point) is followed, the same way."""
    path = os.path.join(os.getcwd(), os.fspath(mountpoint))  # ".." resolved physically, below
    while path.endswith(("/", "/.")) and len(path) > 1:
        path = path[:-2] if path.endswith("/.") else path[:-1]
    parent, name = os.path.split(path)
    if name in ("", "..", "."):  # "/", or a path ending in "..": no mount point's own name
        return os.path.realpath(path)
    real = os.path.join(os.path.realpath(parent), name)
    with open("/proc/self/mounts", errors="surrogateescape") as f:
        if any(unescape_mount_field(line.split()[1]) == real for line in f):
            return real
    if _links and os.path.islink(real):  # not a mount point: its lstat asks no server
        return mountpoint_path(os.path.join(os.path.dirname(real), os.readlink(real)), _links - 1)
    return real


def unescape_mount_field(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as \\ooo (the rest as is)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_key(mountpoint: str | os.PathLike[str]) -> tuple[str, str]:
    """(canonical path, 16 hex digits naming its runtime directory)."""
    real = mountpoint_path(mountpoint)
    return real, hashlib.sha256(os.fsencode(real)).hexdigest()[:16]


def runtime_bases() -> list[Path]:
    """Candidate parents of the per-mount directories, most preferred first."""
    bases = [Path("/run/fakeproc")]
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        bases.append(Path(xdg) / "fakeproc")
    bases.append(Path(f"/tmp/fakeproc-{os.geteuid()}"))
    return bases


def _exists(path: Path) -> bool:
    """exists(), False too where a parent cannot be searched (root's 0700 /run/fakeproc
    seen by another user: stat says EACCES)."""
    try:
        return path.exists()
    except OSError:
        return False


def _usable(base: Path) -> bool:
    """Could this process create a directory in base (creating base if need be)?"""
    probe = base if _exists(base) else base.parent
    try:
        return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)
    except OSError:
        return False


def runtime_dir(mountpoint: str | os.PathLike[str]) -> Path:
    """The mount's runtime directory: an existing one with a socket, else the first
    base this process can write to. Server and client compute the same answer."""
    _, key = mount_key(mountpoint)
    bases = runtime_bases()
    for base in bases:
        if _exists(base / key / SOCKET_NAME):
            return base / key
    for base in bases:
        if _usable(base):
            return base / key
    return bases[-1] / key


def socket_path(mountpoint: str | os.PathLike[str]) -> Path:
    """The control socket of the machine mounted on mountpoint."""
    return runtime_dir(mountpoint) / SOCKET_NAME


# ---- packed arrays: bulk arguments without the JSON cost ----------------------------

def unpack_bytes(value: str, size: int, what: str) -> bytes:
    """A packed array's bytes: base64 of little-endian C values of ``size`` bytes each."""
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_args(f"{what}: not base64") from None
    if len(data) % size:
        raise bad_args(f"{what}: {len(data)} bytes is not a whole number of {size}-byte values")
    return data


def unpack_array(value: list[Any] | str, fmt: str, what: str) -> list[Any]:
    """A JSON array, or the same packed: base64 of little-endian C values (struct format
    fmt: "Q" for pointers, "i" for ints). Bulk callers (the runner, daemons moving
    thousands of pages) skip most of the JSON cost that way."""
    if not isinstance(value, str):
        return value
    size = struct.calcsize("<" + fmt)
    data = unpack_bytes(value, size, what)
    return list(struct.unpack(f"<{len(data) // size}{fmt}", data))


def pack_bytes(data: bytes | bytearray) -> str:
    """Packed C values (already little-endian bytes) as the protocol carries them."""
    return base64.b64encode(data).decode("ascii")


def pack_array(values: list[int], fmt: str) -> str:
    return pack_bytes(struct.pack(f"<{len(values)}{fmt}", *values))
