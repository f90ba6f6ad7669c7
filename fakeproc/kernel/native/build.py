"""cffi build script: compiles the native core into ``fakeproc.kernel.native._native``.

The cdef is fakeproc.h itself (minus its preprocessor guard), so the C sources
and Python agree on one declaration of every struct and function.
"""
from __future__ import annotations

import os
import pathlib
import re

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
SOURCES = ["page_alloc.c", "lru.c", "memory.c", "vmscan.c", "migrate.c", "task_mmu.c", "workload.c", "check.c", "pagewalk.c", "kvm.c", "truth.c", "rmap.c", "pageidle.c", "swapfile.c", "huge_memory.c"]


def cdef_text() -> str:
    """The header with the blocks cffi cannot parse removed."""
    text = (HERE / "fakeproc.h").read_text()
    text = re.sub(r"/\* CDEF-SKIP-BEGIN \*/.*?/\* CDEF-SKIP-END \*/", "", text, flags=re.S)
    return text


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "fakeproc.kernel.native._native",
    '#include "fakeproc.h"\n',
    sources=[os.path.relpath(HERE / s) for s in SOURCES],
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-fvisibility=hidden", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-Werror=implicit-function-declaration"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=False)
