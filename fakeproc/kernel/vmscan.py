"""Watermarks, as mm/page_alloc.c computes them at boot (reclaim itself is C:
native/vmscan.c; Kernel.run_kswapd/shrink_node/oom_kill drive it)."""
from __future__ import annotations

from math import isqrt
from typing import Sequence


def min_free_kbytes_for(total_pages: int) -> int:
    """init_per_zone_wmark_min(): int_sqrt(lowmem_kbytes * 16), clamped to [128, 65536]."""
    return max(128, min(65536, isqrt(total_pages * 4 * 16)))


def watermarks(node_pages: Sequence[int], min_free_kbytes: int | None = None,
               scale_factor: int = 10) -> list[tuple[int, int, int]]:
    """(min, low, high) pages per node: __setup_per_zone_wmarks() with one zone a node.

    min is the node's share of min_free_kbytes; low and high add max(min/4,
    pages * watermark_scale_factor / 10000) once and twice.
    """
    total = sum(node_pages)
    pages_min = (min_free_kbytes if min_free_kbytes is not None else min_free_kbytes_for(total)) // 4
    out = []
    for pages in node_pages:
        wmin = pages_min * pages // total
        delta = max(wmin >> 2, pages * scale_factor // 10000)
        out.append((wmin, wmin + delta, wmin + 2 * delta))
    return out
