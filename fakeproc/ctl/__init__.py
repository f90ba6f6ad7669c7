"""The control interface of a mounted machine: a Unix socket speaking line-delimited
JSON (``protocol``), served on the trio thread that owns the kernel (``server``),
the virtual clock it drives (``clock``) and a synchronous client (``client``).
"""
from __future__ import annotations

from .protocol import CtlError, socket_path

__all__ = ["CtlError", "socket_path"]
