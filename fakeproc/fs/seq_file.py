"""How seq_read() cuts a multi-record seq_file into read(2) results (fs/seq_file.c, 4.20).

/proc/PID/maps, numa_maps and smaps show one record per VMA, /proc/vmstat one per
counter. A read fills the seq buffer (one page at first) with whole records, as many
as fit, until it holds the bytes asked for; it returns at most the bytes asked for
and keeps the rest of the buffer for the next read. So a large read returns less
than a page of whole records, not the whole file, and a program that reads maps
with one big read(2) gets the first few VMAs on Linux: fakeproc must cut the same.

The rules, as seq_read() and traverse() apply them:

* a record fits in the buffer while the buffer's bytes plus the record's stay below
  the buffer's size (seq_printf() and friends set the overflow at count == size);
* the first record after an empty buffer always goes in: a buffer too small for it
  doubles (for the rest of the file's life) until it fits;
* more records are added while the buffer holds fewer bytes than the read still asks
  for, and stop at the first that does not fit;
* bytes left in the buffer are returned first by the next read at the position where
  the last one ended; a read elsewhere re-walks the records up to that position
  (traverse(): the rest of the record it falls in is the buffer), and a read at 0
  starts over.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Callable

PAGE_SIZE = 4096
Split = Callable[[bytes], list[int]]  # a rendering's record end offsets, increasing

_SMAPS_HEADER = re.compile(rb"^[0-9a-f]+-[0-9a-f]+ ", re.M)


def lines(data: bytes) -> list[int]:
    """One record per line (maps, numa_maps, vmstat)."""
    ends = [m.end() for m in re.finditer(rb"\n", data)]
    return ends + ([len(data)] if data and (not ends or ends[-1] != len(data)) else [])


def vma_blocks(data: bytes) -> list[int]:
    """One record per VMA block, each starting at its address line (smaps)."""
    starts = [m.start() for m in _SMAPS_HEADER.finditer(data)]
    return starts[1:] + ([len(data)] if data else [])


@dataclass
class SeqFile:
    """One open seq_file's cursor: its rendering cut into records, and its buffer."""

    data: bytes = b""
    ends: list[int] = field(default_factory=list)
    size: int = PAGE_SIZE   # m->size: the buffer, doubled for a record that does not fit
    buf_end: int = 0        # the buffer holds data[read_pos:buf_end] (m->count bytes)
    next_rec: int = 0       # the first record not yet in the buffer (m->index after it)

    def reset(self, data: bytes, ends: list[int], pos: int) -> None:
        """A new rendering, walked to pos (seq_read()'s reset at 0, traverse())."""
        self.data, self.ends = data, ends
        if pos == 0:
            self.buf_end, self.next_rec = 0, 0
            return
        r = bisect.bisect_right(ends, pos)  # the first record that ends after pos
        inside = r < len(ends) and self._start(r) < pos
        for rec in range(r + 1 if inside else r):  # traverse() shows each one up to pos
            self._fit(rec)
        # pos inside a record: the rest of it is in the buffer; at a record's start
        # (or past the end) the buffer is empty
        self.buf_end, self.next_rec = (ends[r], r + 1) if inside else (pos, r)

    def _start(self, rec: int) -> int:
        return self.ends[rec - 1] if rec else 0

    def _fit(self, rec: int) -> None:
        while self.ends[rec] - self._start(rec) >= self.size:
            self.size <<= 1

    def read(self, pos: int, count: int) -> bytes:
        """The bytes seq_read() returns for count bytes at pos, pos being where the last
        read ended (or where reset() walked to)."""
        out = b""
        if self.buf_end > pos:  # flush what the last read left in the buffer
            n = min(self.buf_end - pos, count)
            out, pos, count = self.data[pos:pos + n], pos + n, count - n
            if not count:
                return out
        if self.next_rec >= len(self.ends):
            return out
        first = self.next_rec
        self._fit(first)
        start, rec = self._start(first), first + 1
        while rec < len(self.ends) and self.ends[rec - 1] - start < count and \
                self.ends[rec] - start < self.size:
            rec += 1
        filled = self.ends[rec - 1] - start
        n = min(filled, count)
        self.buf_end, self.next_rec = start + filled, rec
        return out + self.data[start:start + n]
