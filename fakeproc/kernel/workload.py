"""Access patterns on the virtual clock (the "hardware + application" side).

Python keeps the parameters and phases; the touches run in C
(native/workload.c) over a compact region list.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .native import check, ffi, lib

Pattern = Literal["uniform", "hotcold", "zipf", "seq"]
PATTERN_CODES = {"uniform": lib.FP_WL_UNIFORM, "hotcold": lib.FP_WL_HOTCOLD,
                 "zipf": lib.FP_WL_ZIPF, "seq": lib.FP_WL_SEQ}


@dataclass(frozen=True)
class Phase:
    """From virtual time ``at`` (seconds) on, the hot set starts at this fraction."""

    at: float
    hot_offset: float


@dataclass
class Workload:
    """One process's access stream. ``rate`` is touches per virtual second."""

    pattern: Pattern = "uniform"
    rate: float = 1e6
    hot: float = 0.1
    hot_access: float = 0.9
    write: float = 0.3
    zipf_s: float = 1.0
    seed: int = 1
    phases: tuple[Phase, ...] = ()
    vma_indices: tuple[int, ...] | None = None
    ranges: tuple[tuple[int, int], ...] | None = None  # the address ranges vma_indices chose
    _c: Any = field(default=None, repr=False)
    _regions: Any = field(default=None, repr=False)
    _carry: float = 0.0
    _phase_time: float = 0.0

    def bind(self, mm_id: int, regions: list[tuple[int, int, int]], vm: int = -1) -> None:
        """Build the C descriptor over (start, nr_pages, vma_flags) regions; with a
        VM index the regions are guest-physical and touches go through its EPT."""
        c = ffi.new("struct fp_workload *")
        c.pattern = PATTERN_CODES[self.pattern]
        c.mm = mm_id
        c.vm = vm
        c.rng = (self.seed * 0x9E3779B97F4A7C15 + 1) & ((1 << 64) - 1) or 1
        c.hot_prob = self.hot_access
        c.write_frac = self.write
        c.zipf_s = self.zipf_s
        self._c = c
        self.set_regions(regions)

    def set_regions(self, regions: list[tuple[int, int, int]]) -> None:
        """Touch these (start, nr_pages, vma_flags) regions from now on (the address
        space changed); the stream, its counters and the phase carry on."""
        self._regions = ffi.new("struct fp_region[]", max(1, len(regions)))
        for i, (start, npages, flags) in enumerate(regions):
            self._regions[i].start, self._regions[i].nr_pages = start, npages
            self._regions[i].vma_flags = flags
        c = self._c
        c.regions = self._regions
        c.nr_regions = len(regions)
        c.total_pages = sum(r[1] for r in regions)
        c.hot_pages = int(c.total_pages * self.hot)
        if c.seq_pos >= c.total_pages:
            c.seq_pos = 0
        self.set_phase_at(self._phase_time)

    def served_by_node(self, node_ids: list[int]) -> dict[int | None, int]:
        """Touches served per node id (None: frames outside node RAM), since bind()."""
        if self._c is None:
            return {}
        out: dict[int | None, int] = {nid: int(self._c.on_node[i]) for i, nid in enumerate(node_ids)}
        out[None] = int(self._c.on_node[lib.FP_NO_NODE])
        return out

    @property
    def faults_failed(self) -> int:
        return int(self._c.faults_failed) if self._c is not None else 0

    @property
    def touches(self) -> int:
        return int(self._c.touches) if self._c is not None else 0

    def set_phase_at(self, t: float) -> None:
        """Move the hot set to the phase in force at virtual time t."""
        self._phase_time = t
        offset = 0.0
        for ph in self.phases:
            if ph.at <= t:
                offset = ph.hot_offset
        self._c.hot_offset = int(self._c.total_pages * offset) % max(1, self._c.total_pages)

    def run(self, kernel_native: Any, seconds: float, t_end: float) -> int:
        """Run ``rate * seconds`` touches over the interval that ends at ``t_end``
        (fractions carried over); returns touches. Each touch sees the hot set of the
        phase in force when it happens: a phase change inside the interval cuts it in
        two, not the one in force at its end for the whole of it. Stops early when a
        fault fails (out of memory)."""
        if self._c is None:
            return 0
        start = t_end - seconds
        cuts = sorted({ph.at for ph in self.phases if start < ph.at < t_end})
        done = 0
        for a, b in zip([start, *cuts], [*cuts, t_end]):
            self.set_phase_at(a)
            # the step's own length when uncut: t_end - start can lose a touch to rounding
            want = self.rate * (b - a if cuts else seconds) + self._carry
            n = int(want)
            self._carry = want - n
            if not n:
                continue
            made = check(lib.fp_workload_run(kernel_native, self._c, n))
            done += made
            if made < n:
                break
        return done
