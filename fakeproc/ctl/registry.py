"""The command table: name -> plain function over the kernel, with argument checks.

A handler is ``def name(ctx: Context, arg: type, ...) -> JSON``, registered with
``@command()``. Its signature is the schema: missing, unexpected or mistyped
arguments are answered ``bad_args`` before it runs. Handlers run on the trio thread
and never await, so each sees and leaves a consistent kernel.
"""
from __future__ import annotations

import errno
import inspect
import math
import logging
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..kernel.native import KernelError
from ..machine import MachineFileError
from .protocol import BAD_ARGS, INTERNAL, KERNEL, NO_SUCH_PROCESS, UNKNOWN_COMMAND, CtlError, bad_args

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel
    from ..kernel.task import Task
    from .clock import VirtualClock

log = logging.getLogger("fakeproc.ctl")


@dataclass
class Context:
    """What a handler may use: the kernel and the clock that drives it, and which
    connection asks (a runner's connection marks the mount as run on while it lasts)."""

    kernel: "Kernel"
    clock: "VirtualClock"
    conn: int = 0  # the connection whose command runs now
    runners: set[int] = field(default_factory=set)  # connections of attached `fakeproc run`s

    def task(self, pid: Any, *, alive: bool = False) -> "Task":
        """The process pid, or no_such_process (ESRCH); alive=True also rejects zombies."""
        t = self.kernel.task(pid)
        if t is None or (alive and not t.alive):
            what = "no process" if t is None else "a zombie process"
            raise CtlError(NO_SUCH_PROCESS, f"pid {pid}: {what}", errno.ESRCH)
        return t


@dataclass
class Command:
    name: str
    fn: Callable[..., Any]
    signature: inspect.Signature
    hints: dict[str, Any]

    @property
    def doc(self) -> str:
        return (inspect.getdoc(self.fn) or "").split("\n\n")[0].replace("\n", " ")

    def describe(self) -> dict[str, Any]:
        params = []
        for p in list(self.signature.parameters.values())[1:]:
            if p.kind is p.VAR_KEYWORD:
                params.append(f"**{p.name}")
            else:
                hint = _hint_name(self.hints.get(p.name, Any))
                params.append(f"{p.name}: {hint}" + ("" if p.default is p.empty else f" = {p.default!r}"))
        return {"name": self.name, "args": params, "doc": self.doc}


COMMANDS: dict[str, Command] = {}


def command(name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a handler under name (default: the function's name without a trailing _)."""
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        cname = name or fn.__name__.rstrip("_")
        if cname in COMMANDS:
            raise ValueError(f"control command {cname!r} is registered twice")
        COMMANDS[cname] = Command(cname, fn, inspect.signature(fn), typing.get_type_hints(fn))
        return fn
    return register


def dispatch(ctx: Context, cmd: str, args: dict[str, Any]) -> Any:
    """Run one command; every failure becomes a CtlError."""
    c = COMMANDS.get(cmd)
    if c is None:
        raise CtlError(UNKNOWN_COMMAND, f"unknown command {cmd!r}; known: {', '.join(sorted(COMMANDS))}")
    try:
        bound = c.signature.bind(ctx, **args)
    except TypeError as e:
        raise bad_args(f"{cmd}: {e}") from None
    for pname, value in bound.arguments.items():
        param = c.signature.parameters[pname]
        if pname == "ctx" or param.kind is param.VAR_KEYWORD:
            continue
        hint = c.hints.get(pname, Any)
        if not _conforms(value, hint):
            raise bad_args(f"{cmd}: {pname}: expected {_hint_name(hint)}, got {_json_type(value)}")
    try:
        return c.fn(*bound.args, **bound.kwargs)
    except CtlError:
        raise
    except MachineFileError as e:
        raise bad_args(str(e)) from None
    except KernelError as e:
        raise CtlError(KERNEL, f"{cmd}: {e.strerror}", e.errno) from None
    except ValueError as e:
        raise CtlError(BAD_ARGS, f"{cmd}: {e}", errno.EINVAL) from None
    except OverflowError as e:  # a number beyond the C type the kernel keeps it in
        raise CtlError(BAD_ARGS, f"{cmd}: a number is out of range: {e}", errno.ERANGE) from None
    except MemoryError:
        raise CtlError(BAD_ARGS, f"{cmd}: the arguments ask for more memory than this host has",
                       errno.ENOMEM) from None
    except Exception as e:
        log.exception("control command %s%r failed", cmd, args)
        raise CtlError(INTERNAL, f"{cmd}: {type(e).__name__}: {e} (a fakeproc bug; see the server log)") from None


# ---- argument types -------------------------------------------------------------------

def _conforms(value: Any, hint: Any) -> bool:
    """Does a decoded JSON value fit a handler's annotation? (bool is not a number)"""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    base = origin or hint
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if not isinstance(value, base):
        return False
    args = typing.get_args(hint)
    if base is list and args:  # every element
        return all(_conforms(v, args[0]) for v in value)
    if base is dict and len(args) == 2:
        return all(_conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items())
    return True


def _hint_name(hint: Any) -> str:
    if hint is Any:
        return "any"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_hint_name(h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    base = origin or hint
    args = typing.get_args(hint)
    if base is list and args:
        item = _hint_name(args[0])
        return f"array of ({item})" if " or " in item else f"array of {item}"
    return {dict: "object", list: "array", str: "string", int: "integer", float: "number",
            bool: "boolean"}.get(base, getattr(base, "__name__", str(base)))


def _json_type(value: Any) -> str:
    return _hint_name(type(value)) if value is not None else "null"
