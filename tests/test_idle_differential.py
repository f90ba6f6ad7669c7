"""Differential property test: the C walk (through the kernel model) against the
plain-Python reference written from the spec (tests/reference_idle.py), on random
address spaces, positions, counts and scan flags, over several consecutive reads
(so the accessed bits each read clears are checked too)."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference_idle as ref
from fakeproc.kernel.native import KernelError
from fakeproc.kernel.task_mmu import IdleScan
from fakeproc.machine import load

BASE = 0x7F0000000000
PUD_BASE = 0x7F4000000000
PAGE, PMD = 4096, 2 << 20
PTE_STATES = {"none": None, "idle": "I", "accessed": "A", "dirty": "A", "swap": "H", "protnone": "I"}
THP_STATES = {"thp-accessed": ("huge", True), "thp-idle": ("huge", False), "thp-migration": ("hole", True)}
COUNTS = [19, 20, 21, 25, 40, 100, 500, 4096, 8008, 8009, 8010, 9000, 20000, 1 << 20]
FLAGS = [0, os.O_NONBLOCK, os.O_NOFOLLOW, os.O_NONBLOCK | os.O_NOFOLLOW, os.O_NOATIME]
KINDS = ["anon", "anon", "anon-thp", "file-rx", "hugetlb", "file-rw"]


@st.composite
def address_space(draw):
    """(toml text, RefMM, interesting positions)"""
    mm = ref.RefMM(vmas=[])
    blocks: list[str] = []
    positions = [BASE]
    taken: list[tuple[int, int]] = []
    for _ in range(draw(st.integers(1, 4))):
        start = BASE + draw(st.integers(0, 4096)) * PAGE
        npages = draw(st.integers(1, 1300))
        end = start + npages * PAGE
        if any(s < end and start < e for s, e in taken):
            continue
        taken.append((start, end))
        kind = draw(st.sampled_from(KINDS))
        state_pool = draw(st.lists(st.sampled_from(sorted(PTE_STATES)), min_size=1, max_size=3))
        tokens: list[str] = []
        addr = start
        marked: set[int] = set()
        while addr < end and kind != "hugetlb":  # a hugetlb VMA takes no pages
            slot = addr // PMD * PMD
            if (kind == "anon-thp" and addr == slot and slot + PMD <= end
                    and slot not in mm.pmds and draw(st.booleans())):
                state = draw(st.sampled_from(sorted(THP_STATES)))
                k, acc = THP_STATES[state]
                mm.pmds[slot] = ref.Pmd(k, acc)
                tokens.append(f"1 {state}")
                addr += PMD
                continue
            state = draw(st.sampled_from(state_pool))
            run = min(draw(st.integers(1, 40)), (end - addr) // PAGE, (slot + PMD - addr) // PAGE)
            tokens.append(f"{run} {state}")
            if PTE_STATES[state] is not None:
                pmd = mm.pmds.setdefault(slot, ref.Pmd("table"))
                for i in range(run):
                    pmd.ptes[addr + i * PAGE] = PTE_STATES[state]
                if slot not in marked and draw(st.integers(0, 4)) == 0:
                    tokens.insert(len(tokens) - 1, "pmd-idle")  # at the run's start: its slot
                    pmd.accessed = False
                marked.add(slot)
            addr += run * PAGE
        perms, extra = {"anon": ("rw-p", ""), "anon-thp": ("rw-p", "thp = true\n"),
                        "file-rx": ("r-xp", 'path = "/lib/x.so"\n'),
                        "hugetlb": ("rw-p", "hugetlb = true\n"),
                        "file-rw": ("rw-p", 'path = "/lib/x.so"\n')}[kind]
        walked = kind != "file-rx"
        mm.vmas.append((start, end, walked, kind == "hugetlb"))
        blocks.append(f'[[process.vma]]\nstart = {start:#x}\nend = {end:#x}\nperms = "{perms}"\n'
                      f'{extra}pages = "{", ".join(tokens)}"\n')
        positions += [start, start + draw(st.integers(0, npages - 1)) * PAGE, end]
    if draw(st.integers(0, 5)) == 0:
        mm.vmas.append((PUD_BASE, PUD_BASE + (2 << 30), True, False))
        mm.puds.update({PUD_BASE, PUD_BASE + (1 << 30)})
        blocks.append(f'[[process.vma]]\nstart = {PUD_BASE:#x}\nsize = "2GiB"\npages = "2 pud"\n')
        positions += [PUD_BASE, PUD_BASE + (1 << 30) + PAGE]
    mm.vmas.sort()
    text = ('[[node]]\ntype = "dram"\nsize = "64MiB"\ncpus = "0"\n'
            '[[process]]\npid = 1\nname = "p"\n' + "".join(blocks))
    return text, mm, positions


def draw_read(data, positions: list[int]) -> tuple[int, int, int]:
    """pos, count and scan flags of one read(2)."""
    pos = data.draw(st.one_of(st.sampled_from(positions),
                              st.integers(BASE // PAGE, (BASE + (20 << 20)) // PAGE).map(lambda p: p * PAGE),
                              st.sampled_from(positions).map(lambda p: p + 8)))
    return pos, data.draw(st.sampled_from(COUNTS)), data.draw(st.sampled_from(FLAGS))


@settings(max_examples=int(os.environ.get("FAKEPROC_HYPOTHESIS_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(space=address_space(), data=st.data())
def test_c_walk_matches_the_reference(space, data):
    text, mm, positions = space
    kernel = load(text)
    task = kernel.task(1)
    for _ in range(3):
        pos, count, flags = draw_read(data, positions)
        want = ref.read(mm, pos, count, flags)
        try:
            got = kernel.idle_pages_read(task, pos, count, flags)
        except KernelError as e:
            assert want == e.errno, (hex(pos), count, flags)
            continue
        assert (got.data, got.pos) == want, (hex(pos), count, flags)


BIG = BASE + (64 << 20)  # a VMA whose reads take several passes (8000-byte staging buffers)


@st.composite
def big_space(draw):
    """(toml text, read positions): address_space() plus a VMA of 32-48 Ki pages in a
    repeated pattern of runs of one or two pages, so that its reads fill several
    staging buffers (about a byte per run)."""
    text, _, positions = draw(address_space())
    pattern = draw(st.lists(st.tuples(st.integers(1, 2), st.sampled_from(sorted(PTE_STATES))),
                            min_size=2, max_size=4))
    unit = sum(n for n, _ in pattern)
    repeat = draw(st.integers(32768, 49152)) // unit
    npages = unit * repeat
    text = text.replace('size = "64MiB"', 'size = "512MiB"') + (
        f'[[process.vma]]\nstart = {BIG:#x}\nsize = "{npages * 4}KiB"\n'
        f'pages = "{", ".join(f"{n} {state}" for n, state in pattern)}"\nrepeat = {repeat}\n')
    return text, positions + [BIG, BIG + draw(st.integers(0, npages - 1)) * PAGE, BIG + npages * PAGE]


@settings(max_examples=int(os.environ.get("FAKEPROC_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(space=big_space(), data=st.data())
def test_a_read_in_steps_is_the_read_in_one_go(space, data):
    """The server walks a read a few passes at a time (fs/idle_pages.py), with other
    requests in between; when nothing changes meanwhile, stopping between passes must
    change no byte, no cursor, no accessed bit (the next reads) and no missed count."""
    text, positions = space
    whole, stepped = load(text), load(text)
    scan = IdleScan()
    for _ in range(3):
        pos = data.draw(st.sampled_from(positions))
        count = data.draw(st.sampled_from([19, 40, 4000, 8000, 8009, 16000, 1 << 20]))
        flags = data.draw(st.sampled_from(FLAGS))
        passes = data.draw(st.integers(1, 3))
        try:
            want = whole.idle_pages_read(whole.task(1), pos, count, flags)
        except KernelError as e:
            want = e.errno
        steps = stepped.idle_pages_steps(scan, stepped.task(1), pos, count, flags, passes)
        stops = 0
        try:
            while True:
                next(steps)
                stops += 1
        except StopIteration as done:
            got = done.value
        except KernelError as e:
            got = e.errno
        assert got == want, (hex(pos), count, flags, passes)
        if isinstance(got, int):
            continue
        assert stops >= -(-len(got.data) // (8000 * passes)) - 1  # one pass: ≤ 8000 bytes
        stepped.idle_tail_settle(stepped.task(1), got.tail)  # as idle_pages_read does
        assert missed(whole) == missed(stepped)


def missed(k) -> int:
    """Present pages the reads skipped without a report (the score's idle_missed)."""
    return int(k.native.mms[k.task(1).mm_id].idle_missed)

