"""Decode an idle_pages record stream (the user-space side of INTERFACES.md 1.3).

For demos, reports and example daemons; the conformance tests use hand-written
bytes instead.
"""
from __future__ import annotations

from dataclasses import dataclass

SET_HVA = 0xA0
TYPE_NAMES = ("PTE_ACCESSED", "PMD_ACCESSED", "PUD_PRESENT", "PTE_DIRTY", "PMD_DIRTY",
              "PTE_IDLE", "PMD_IDLE", "PMD_IDLE_PTES", "PTE_HOLE", "PMD_HOLE")
UNIT_SIZE = (4096, 2 << 20, 1 << 30, 4096, 2 << 20, 4096, 2 << 20, 2 << 20, 4096, 2 << 20)


@dataclass(frozen=True)
class Run:
    """``count`` units of one type starting at ``addr``."""

    addr: int
    type: int
    count: int

    @property
    def name(self) -> str:
        return TYPE_NAMES[self.type]

    @property
    def size(self) -> int:
        return self.count * UNIT_SIZE[self.type]


def decode(stream: bytes) -> tuple[list[Run], int]:
    """Runs in stream order and the final cursor. Raises ValueError on a bad byte."""
    runs: list[Run] = []
    cursor, i = 0, 0
    while i < len(stream):
        b = stream[i]
        if b == SET_HVA:
            if i + 9 > len(stream):
                raise ValueError(f"truncated SET_HVA at byte {i}")
            cursor = int.from_bytes(stream[i + 1:i + 9], "big")
            i += 9
            continue
        t, n = b >> 4, b & 15
        if t >= len(TYPE_NAMES) or n == 0:
            raise ValueError(f"bad record byte {b:#04x} at byte {i}")
        runs.append(Run(cursor, t, n))
        cursor += n * UNIT_SIZE[t]
        i += 1
    return runs, cursor


def page_counts(runs: list[Run]) -> dict[str, int]:
    """4 KiB pages per type name (a 2 MiB unit counts 512, a 1 GiB unit 262144)."""
    out: dict[str, int] = {}
    for r in runs:
        out[r.name] = out.get(r.name, 0) + r.size // 4096
    return out
