"""Host memory per emulated page, from the allocator's own accounting (fp_mem_usage),
and the machine-file path that builds big machines: a repeated pattern goes to C in
a few calls and reports its progress. Expected sizes are written from the design
(docs/architecture.md, "Where state lives"), not read back from the code."""
from __future__ import annotations

import io

from rich.console import Console

from fakeproc.buildbar import BuildBar
from fakeproc.kernel.kernel import Kernel
from fakeproc.machine import load

PAGE = 4096
# a 64 MiB DRAM node; the process maps 63 MiB of it, 4 KiB pages, mixed hot/cold
MACHINE = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
[[process]]
pid = 4300001
name = "full"
[[process.vma]]
start = 0x7f0000000000
size = "63MiB"
node = 0
pages = "1 accessed, 1 idle, 2 accessed, 4 idle"
repeat = 2016
"""


def test_bytes_per_page_from_the_allocators_accounting():
    k = load(MACHINE)
    use = k.mem_usage()
    nr_pfns = 64 * 256
    assert use["populated"] == 63 * 256
    # struct fp_page: flags 2 + mapcount 2 + reverse map (an entry index) 4 + LRU links 2 x 4
    assert use["pages"] == nr_pfns * 16
    # ground truth: a 32-bit access count and a 16-bit window count per PFN, in an
    # aligned 8-byte record (a touch updates both: one cache line, never two)
    assert use["truth"] == nr_pfns * 8
    # slot 0 of the arena (it means "none"), one PGD, PUD and PMD table, and 32 PTE
    # tables for 63 MiB, each 4 KiB with its PFN, free-stack slot, base address and
    # deposit-array pointer (8 B each) and owner (4 B); no THP, so no deposit array
    tables = 1 + 3 + 32
    assert use["page_tables"] == tables * (PAGE + 36)
    # the free-block stack: 4 bytes per 2 MiB block, and a bit per block (whole 64-bit
    # words, one more than 32 // 64) for the split ones; free 4 KiB pages cost nothing
    assert use["free_lists"] == 32 * 4 + 8
    assert use["rmap_ext"] == 0
    kernel_bytes = use["pages"] + use["page_tables"] + use["free_lists"]
    # page metadata (with its LRU links) 16 B + the PTE 8 B = 24 B, plus at this small
    # scale 1 B for the three tables above the PTEs and 0.3 B for the unpopulated MiB
    assert 24 < kernel_bytes / use["populated"] < 26
    # with ground truth: 8 B more per PFN (64 PFNs for every 63 populated here)
    assert 32 < (kernel_bytes + use["truth"]) / use["populated"] < 34


def test_a_repeated_pattern_is_built_in_a_few_c_calls(monkeypatch):
    calls = {"set_ptes": 0, "set_pte_runs": 0}
    for name in calls:
        orig = getattr(Kernel, name)

        def counting(self, *a, _orig=orig, _name=name, **kw):
            calls[_name] += 1
            return _orig(self, *a, **kw)
        monkeypatch.setattr(Kernel, name, counting)
    # 1 GiB of 4 KiB pages: 65536 repetitions of a 4-run pattern
    text = MACHINE.replace('size = "64MiB"', 'size = "1100MiB"').replace(
        'size = "63MiB"', 'size = "1GiB"').replace("repeat = 2016", "repeat = 32768")
    seen: list[tuple[int, int]] = []
    k = load(text, progress=lambda done, total: seen.append((done, total)))
    assert calls == {"set_ptes": 0, "set_pte_runs": 1}  # 1 M pages a chunk
    assert k.mem_usage()["populated"] == 262144
    assert seen == [(262144, 262144)]


def test_progress_reaches_the_total_in_order():
    # 8 GiB of 4 KiB pages (2 M), reported after each chunk of 1 M pages
    text = MACHINE.replace('size = "64MiB"', 'size = "8300MiB"').replace(
        'size = "63MiB"', 'size = "8GiB"').replace("repeat = 2016", "repeat = 262144")
    seen: list[tuple[int, int]] = []
    load(text, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1 << 20, 2 << 20), (2 << 20, 2 << 20)]


def test_the_bar_shows_only_for_big_builds():
    out = io.StringIO()
    with BuildBar(Console(file=out, width=100), min_pages=1000) as bar:
        bar(10, 500)
    assert out.getvalue() == ""
    out = io.StringIO()
    with BuildBar(Console(file=out, width=100), min_pages=1000) as bar:
        bar(600, 1200)
        bar(1200, 1200)
    assert "building the machine" in out.getvalue() and "1200/1200" in out.getvalue()
