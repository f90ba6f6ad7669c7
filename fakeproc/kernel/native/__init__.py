"""The native core (C through cffi): page tables, page array, walks, touches.

``ffi`` and ``lib`` are the compiled module's; :func:`check` is the one place a
negative errno from C becomes a Python exception.
"""
from __future__ import annotations

import errno
import os

from ._native import ffi, lib  # type: ignore[import-not-found]

__all__ = ["ffi", "lib", "check", "KernelError"]


class KernelError(OSError):
    """An emulated-kernel call failed with an errno, exactly as the syscall would."""


def check(ret: int) -> int:
    """Return ``ret`` unchanged, or raise :class:`KernelError` for a negative errno."""
    if ret < 0:
        raise KernelError(-ret, os.strerror(-ret))
    return ret


ENOMEM = errno.ENOMEM
