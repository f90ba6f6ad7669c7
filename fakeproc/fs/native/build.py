"""cffi build script: the libfuse low-level session behind the /sys mount
(``fakeproc.fs.native._fpfuse``; see fpfuse.h for why pyfuse3 cannot serve it).

The cdef is fpfuse.h itself; its Python callbacks become one extern "Python+C" block.
"""
from __future__ import annotations

import os
import pathlib
import re
import subprocess

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent


def cdef_text() -> str:
    text = (HERE / "fpfuse.h").read_text()
    text = re.sub(r"/\* CDEF-SKIP-BEGIN \*/.*?/\* CDEF-SKIP-END \*/", "", text, flags=re.S)
    return re.sub(r"/\* PYTHON-CALLBACKS-BEGIN \*/(.*?)/\* PYTHON-CALLBACKS-END \*/",
                  r'extern "Python+C" {\1}', text, flags=re.S)


def pkg_config(flag: str) -> list[str]:
    out = subprocess.run(["pkg-config", flag, "fuse3"], check=True, capture_output=True, text=True)
    return out.stdout.split()


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "fakeproc.fs.native._fpfuse",
    '#include "fpfuse.h"\n',
    sources=[os.path.relpath(HERE / "fpfuse.c")],
    include_dirs=[str(HERE)] + [f[2:] for f in pkg_config("--cflags-only-I")],
    libraries=[f[2:] for f in pkg_config("--libs-only-l")],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-Werror=implicit-function-declaration"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=False)
