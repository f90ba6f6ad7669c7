"""The memory-latency bound for simulated touches: random 8-byte read-modify-writes
over an array, in C (Python could not come near it), built with cffi on first use.

The index stream uses the same generator and the same multiply-high mapping as the
workload engine, and the array gets the same huge-page advice as the emulator's own
arrays, so the two differ only in what a touch does."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from cffi import FFI

SOURCE = r"""
#include <stdint.h>
#include <time.h>
#include <sys/mman.h>

/* n random increments over an array of `elems` uint64s; returns nanoseconds */
double fp_bench_rmw(uint64_t elems, uint64_t n)
{
    uint64_t *a = mmap(NULL, elems * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        return -1;
    madvise(a, elems * 8, MADV_HUGEPAGE);
    for (uint64_t i = 0; i < elems; i++)
        a[i] = i;
    uint64_t x = 88172645463325252ULL;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (uint64_t i = 0; i < n; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        a[(uint64_t)(((unsigned __int128)(x * 0x2545F4914F6CDD1DULL) * elems) >> 64)]++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    munmap(a, elems * 8);
    return (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
}
"""


def rmw_per_second(elems: int, n: int, build_dir: Path) -> float:
    """Random read-modify-writes per second over `elems` 8-byte words."""
    build_dir.mkdir(parents=True, exist_ok=True)
    if str(build_dir) not in sys.path:
        sys.path.insert(0, str(build_dir))
    try:
        mod = importlib.import_module("_fp_latency")
    except ImportError:
        ffi = FFI()
        ffi.cdef("double fp_bench_rmw(uint64_t elems, uint64_t n);")
        ffi.set_source("_fp_latency", SOURCE, extra_compile_args=["-O2"])
        ffi.compile(tmpdir=str(build_dir), verbose=False)
        mod = importlib.import_module("_fp_latency")
    ns = mod.lib.fp_bench_rmw(elems, n)
    if ns <= 0:
        raise MemoryError(f"cannot map {elems * 8} bytes for the latency baseline")
    return n / ns * 1e9
