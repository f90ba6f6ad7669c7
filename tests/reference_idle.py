"""A slow, plain-Python reference of the RFC v2 idle_pages read (INTERFACES.md 1.2-1.4),
written from the spec's text alone, for differential tests against the C walk.

Page tables are dicts: a 1 GiB PUD leaf, or 2 MiB PMD slots holding a huge page, a
non-present entry, or a table of PTE states. Only what the walk can observe is kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field

TASK_SIZE = 0x7FFFFFFFF000
PAGE, PMD, PUD = 1 << 12, 1 << 21, 1 << 30
(PTE_ACCESSED, PMD_ACCESSED, PUD_PRESENT, PTE_DIRTY, PMD_DIRTY, PTE_IDLE, PMD_IDLE,
 PMD_IDLE_PTES, PTE_HOLE, PMD_HOLE) = range(10)
SIZE = {PTE_ACCESSED: PAGE, PMD_ACCESSED: PMD, PUD_PRESENT: PUD, PTE_IDLE: PAGE, PMD_IDLE: PMD,
        PMD_IDLE_PTES: PMD, PTE_HOLE: PAGE, PMD_HOLE: PMD}
SCAN_HUGE_PAGE, SCAN_SKIM_IDLE = 0x800, 0x20000


@dataclass
class Pmd:
    kind: str                 # "table", "huge" or "hole" (a non-present PMD entry)
    accessed: bool = True
    ptes: dict[int, str] = field(default_factory=dict)  # addr -> "A" | "I" | "H" (absent: none)


@dataclass
class RefMM:
    vmas: list[tuple[int, int, bool, bool]]   # (start, end, walked, hugetlb), sorted
    pmds: dict[int, Pmd] = field(default_factory=dict)
    puds: set[int] = field(default_factory=set)


class _Full(Exception):
    pass


class _Read:
    def __init__(self, mm: RefMM, pos: int, count: int, flags: int) -> None:
        self.mm, self.count, self.flags = mm, count, flags
        self.out = bytearray()
        self.kbuf = bytearray()
        self.limit = 0
        self.cursor = 0
        self.restart = pos
        self.last_va = 0

    def hva(self, addr: int) -> None:
        self.kbuf += b"\xa0" + addr.to_bytes(8, "big")

    def add(self, addr: int, nxt: int, t: int) -> None:
        size = SIZE[t]
        nxt = -(-nxt // size) * size
        if not self.kbuf or addr != self.cursor:
            if t in (PTE_HOLE, PMD_HOLE):
                self.restart = nxt
                return
            if len(self.kbuf) + 10 >= self.limit:
                self.restart = addr
                raise _Full
            self.hva(addr // size * size)
        else:
            last = self.kbuf[-1]
            if last >> 4 == t and last & 15 < 15:
                self.kbuf[-1] += 1
                self.cursor = self.restart = nxt
                return
            if len(self.kbuf) >= self.limit:
                self.restart = addr
                raise _Full
        self.cursor = self.restart = nxt
        self.kbuf.append(t << 4 | 1)

    def pmd_entry(self, pmd: Pmd, addr: int, nxt: int) -> None:
        if addr // PMD == self.last_va // PMD:
            return
        self.last_va = addr
        table_type = PMD_IDLE_PTES if self.flags & SCAN_HUGE_PAGE else None
        if pmd.kind == "hole":
            t: int | None = PMD_HOLE
        elif not pmd.accessed:
            t = PMD_IDLE if pmd.kind == "huge" else (
                PMD_IDLE_PTES if self.flags & SCAN_SKIM_IDLE else table_type)
        else:
            pmd.accessed = False
            t = PMD_ACCESSED if pmd.kind == "huge" else table_type
        if t is not None:
            self.add(addr, nxt, t)
            return
        for a in range(addr, nxt, PAGE):
            state = pmd.ptes.get(a)
            if state in (None, "H"):
                t = PTE_HOLE
            elif state == "A":
                pmd.ptes[a] = "I"
                t = PTE_ACCESSED
            else:
                t = PTE_IDLE
            self.add(a, a + PAGE, t)

    def walk_range(self, start: int, end: int) -> None:
        """One walk_page_range call; returns when done, the buffer fills or a PUD unit."""
        for vs, ve, walked, hugetlb in self.mm.vmas:
            if ve <= start or vs >= end:
                continue
            s, e = max(start, vs), min(end, ve)
            if not walked or hugetlb:
                continue
            addr = s
            while addr < e:
                pud_base = addr // PUD * PUD
                pud_next = min(pud_base + PUD, e)
                if pud_base in self.mm.puds:
                    if addr // PUD != self.last_va // PUD:
                        try:
                            self.add(addr, pud_next, PUD_PRESENT)
                        except _Full:
                            pass
                        self.last_va = addr
                    return
                while addr < pud_next:
                    pmd_next = min(addr // PMD * PMD + PMD, pud_next)
                    pmd = self.mm.pmds.get(addr // PMD * PMD)
                    if pmd is not None:
                        try:
                            self.pmd_entry(pmd, addr, pmd_next)
                        except _Full:
                            return
                    addr = pmd_next

    def copy(self, start: int, end: int) -> bool:
        last = not self.kbuf
        if last and start < end:
            start = end
        if start >= end and start > self.cursor:
            self.cursor = start
            self.hva(start)
        if not self.kbuf:
            return True
        self.out += self.kbuf
        return len(self.out) >= self.count or last

    def run(self, pos: int) -> tuple[bytes, int]:
        end = pos + self.count * 8 * PAGE
        start = pos
        while start < end:
            self.kbuf = bytearray()
            self.limit = min(8000, self.count - len(self.out)) - 9
            nxt = [v for v in self.mm.vmas if v[1] > start]
            if nxt:
                if end > nxt[0][0]:
                    self.walk_range(start, end)
                else:
                    self.restart = nxt[0][0]
            else:
                self.restart = TASK_SIZE
            start = self.restart
            if self.copy(start, end):
                break
        return bytes(self.out), self.cursor


def read(mm: RefMM, pos: int, count: int, flags: int) -> tuple[bytes, int] | int:
    """bytes and new position, or a positive errno (EINVAL) for a failed read."""
    count = min(count, 0x7FFFF000)
    if pos >= TASK_SIZE or count == 0:
        return b"", pos
    if pos % PAGE or count < 19:
        return 22
    return _Read(mm, pos, count, flags).run(pos)
