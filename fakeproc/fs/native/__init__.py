"""The libfuse low-level session behind the /sys mount (C through cffi)."""
from ._fpfuse import ffi, lib  # type: ignore[import-not-found]

__all__ = ["ffi", "lib"]
