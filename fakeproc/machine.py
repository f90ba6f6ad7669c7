"""Machine and scenario files: parse (tomllib), validate (jsonschema), build a Kernel.

One TOML format describes the machine (nodes, sizes, CPUs, distances) and
what runs on it (processes, VMAs, workloads), and can pin exact page states
so a test author can write expected idle_pages bytes by hand. Every error
names the file, the line and the field; nothing is built until the whole file
has been checked, so a bad file never half-starts a machine.
The reference for users is docs/machine-file.md.
"""
from __future__ import annotations

import bisect
import math
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jsonschema

from .kernel import kvm
from .kernel.kernel import Kernel, NodeConfig
from .kernel.kvm import MemSlot
from .kernel.mm import PAGE_SIZE, TASK_SIZE, Vma
from .kernel.mmap import MAX_MAP_COUNT
from .kernel.native import KernelError, lib
from .kernel.task import MemPolicy, Task
from .kernel.workload import Phase, Workload

PMD_SIZE = 2 << 20
PUD_SIZE = 1 << 30
_SIZE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_P = lib.FP_PAGE_PRESENT | lib.FP_PAGE_RW | lib.FP_PAGE_USER
_A, _D = lib.FP_PAGE_ACCESSED, lib.FP_PAGE_DIRTY
SWAP_ENTRY = lib.FP_PAGE_SWPENTRY | lib.FP_SWP_SWAP
MIGRATION_ENTRY = lib.FP_PAGE_SWPENTRY | lib.FP_SWP_MIGRATION
# page state -> (level, entry bits); level 4 = PTE, 3 = THP, 2 = 1 GiB PUD
PAGE_STATES: dict[str, tuple[int, int]] = {
    "none": (4, 0), "idle": (4, _P), "accessed": (4, _P | _A), "dirty": (4, _P | _A | _D),
    "dirty-idle": (4, _P | _D), "protnone": (4, lib.FP_PAGE_PROTNONE | lib.FP_PAGE_USER),
    "swap": (4, SWAP_ENTRY), "migration": (4, MIGRATION_ENTRY),
    "thp-idle": (3, _P), "thp-accessed": (3, _P | _A), "thp-dirty": (3, _P | _A | _D),
    "thp-migration": (3, MIGRATION_ENTRY), "pud": (2, _P | _A),
    "pinned": (4, _P | _A),  # present and accessed, with an extra reference: migration fails
}
PMD_MARKERS = {"pmd-idle": (0, _A), "pmd-accessed": (_A, 0)}
LEVEL_SIZE = {4: PAGE_SIZE, 3: PMD_SIZE, 2: PUD_SIZE}  # bytes one leaf maps at each level
_EA, _ED = lib.FP_EPT_ACCESSED, lib.FP_EPT_DIRTY
# EPT leaf states of a VM's memory slot: state -> (level, accessed/dirty bits); "none"
# leaves the guest page unmapped (a hole)
EPT_STATES: dict[str, tuple[int, int]] = {
    "none": (4, 0), "idle": (4, lib.FP_EPT_R), "accessed": (4, _EA), "dirty": (4, _EA | _ED),
    "thp-idle": (3, lib.FP_EPT_R), "thp-accessed": (3, _EA), "thp-dirty": (3, _EA | _ED),
    "pud": (2, lib.FP_EPT_R)}

MAX_LIST_ID = 8191        # CPU ids (NR_CPUS 8192); node ids stop at MAX_NUMNODES - 1
MAX_NUMNODES = 1024
MAX_PFNS = (1 << 32) - 2  # PFNs are 32 bits in the LRU links and the free lists: 16 TiB
MAX_ID = 2**32 - 2        # uid_t / gid_t: (uid_t)-1 means "no change", never an id
PID_T_MAX = 2**31 - 1
MAX_FILE_BYTES = 256 << 20  # a machine file larger than this is not read (/dev/zero)


_SIZE_T = {"anyOf": [{"type": "integer", "minimum": 0},
                     {"type": "string", "pattern": r"^\s*\d+\s*([kKmMgGtT](i?[bB])?)?\s*$"}],
           "description": 'a size: a number of bytes (0 or more) or a string such as "4KiB", '
                          '"2MiB" or "16GiB"'}
_PROB = {"type": "number", "minimum": 0, "maximum": 1}
_WORKLOAD_T: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {
    "pattern": {"enum": ["uniform", "hotcold", "zipf", "seq"]},
    "rate": {"type": "number", "minimum": 0}, "hot": _PROB, "hot_access": _PROB,
    "write": _PROB, "zipf_s": {"type": "number", "exclusiveMinimum": 0},
    "seed": {"type": "integer"},
    "vmas": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    "phases": {"type": "array", "items": {
        "type": "object", "additionalProperties": False,
        "required": ["at", "hot_offset"], "properties": {
            "at": {"type": "number", "minimum": 0}, "hot_offset": _PROB}}}}}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["node"],
    "properties": {
        "machine": {"type": "object", "additionalProperties": False, "properties": {
            "name": {"type": "string"}, "seed": {"type": "integer"},
            "nr_cpus": {"type": "integer", "minimum": 1, "maximum": 8192},
            "swap": _SIZE_T,
            "min_free_kbytes": {"type": "integer", "minimum": 128, "maximum": 4194304},
            "watermark_scale_factor": {"type": "integer", "minimum": 1, "maximum": 1000},
            "upstream": {"type": "boolean"},
            "numa_balancing": {"type": "integer", "minimum": 0, "maximum": 3}}},
        "node": {"type": "array", "minItems": 1, "maxItems": 64, "items": {
            "type": "object", "additionalProperties": False, "required": ["type", "size"],
            "properties": {
                "id": {"type": "integer", "minimum": 0, "maximum": 1023},
                "type": {"enum": ["dram", "pmem"]},
                "size": _SIZE_T,
                "watermarks": {"type": "array", "items": _SIZE_T, "minItems": 3, "maxItems": 3},
                "cpus": {"anyOf": [{"type": "string", "pattern": r"^[0-9,\- ]*$"},
                                   {"type": "array", "items": {"type": "integer", "minimum": 0}}],
                         "description": 'a CPU list: a string such as "0-3,8" or an array of '
                                        'CPU numbers'}}}},
        "distances": {"type": "array", "items": {"type": "array", "items": {
            "type": "integer", "minimum": 10, "maximum": 254}}},
        "process": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["pid", "name"],
            "properties": {
                "pid": {"type": "integer", "minimum": 1, "maximum": PID_T_MAX},
                "name": {"type": "string", "minLength": 1, "maxLength": 15, "pattern": "^[^\x00\n]*$",
                         "description": "a name without NUL or newline (the kernel's comm ends "
                                        "at a NUL; /proc/PID/status is one line per field)"},
                "uid": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                "gid": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                "ppid": {"type": "integer", "minimum": 0},
                "threads": {"type": "integer", "minimum": 1, "maximum": 4096},
                "cpu": {"type": "integer", "minimum": 0},
                "state": {"enum": ["running", "sleeping", "zombie"]},
                "exit_at": {"type": "number", "minimum": 0},
                "oom_score_adj": {"type": "integer", "minimum": -1000, "maximum": 1000},
                "fork_of": {"type": "integer", "minimum": 1},
                "mems_allowed": {"type": "string", "pattern": r"^[0-9,\- ]+$"},
                "policy": {"type": "string", "pattern": r"^(default|local|(prefer|bind|interleave):[0-9,\-]+)$"},
                "vma": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["start"],
                    "properties": {
                        "start": {"type": "integer", "minimum": 0}, "end": {"type": "integer"},
                        "size": _SIZE_T,
                        "perms": {"type": "string", "pattern": r"^[r-][w-][x-][ps]$"},
                        "kind": {"enum": ["anon", "file", "heap", "stack", "vdso", "vvar", "shm"]},
                        "path": {"type": "string"}, "offset": {"type": "integer", "minimum": 0},
                        "dev": {"type": "string", "pattern": r"^[0-9a-f]{2,3}:[0-9a-f]{2,5}$"},
                        "inode": {"type": "integer", "minimum": 0},
                        "deleted": {"type": "boolean"}, "hugetlb": {"type": "boolean"},
                        "thp": {"type": "boolean"}, "populate": {"type": "boolean"},
                        "node": {"type": "integer", "minimum": 0},
                        "pages": {"type": "string"},
                        "repeat": {"type": "integer", "minimum": 1}}}},
                "workload": _WORKLOAD_T,
                "vm": {"type": "object", "additionalProperties": False, "required": ["slot"],
                       "properties": {
                    "vcpu0": {"type": "boolean"}, "ept_ad": {"type": "boolean"},
                    "ept_levels": {"type": "integer", "minimum": 4, "maximum": 5},
                    "root_valid": {"type": "boolean"},
                    "slot": {"type": "array", "minItems": 1, "maxItems": 32, "items": {
                        "type": "object", "additionalProperties": False,
                        "required": ["gpa", "size", "hva"], "properties": {
                            "gpa": {"type": "integer", "minimum": 0}, "size": _SIZE_T,
                            "hva": {"type": "integer", "minimum": 0},
                            "node": {"type": "integer", "minimum": 0},
                            "pages": {"type": "string"}}}},
                    "workload": _WORKLOAD_T}}}}},
    },
}


class MachineFileError(ValueError):
    """A machine file is wrong: the message names the file, line, field and fix."""


@dataclass(frozen=True)
class Source:
    """A machine file's text and name, for error messages."""

    text: str
    name: str


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Map TOML paths (with array indices) to the line that defines them."""
    index: dict[tuple[Any, ...], int] = {}
    last: dict[tuple[Any, ...], int] = {}
    cur: tuple[Any, ...] = ()

    def resolve(parts: list[str]) -> tuple[Any, ...]:
        path: tuple[Any, ...] = ()
        for p in parts:
            path += (p,)
            if path in last:
                path += (last[path],)
        return path

    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if s.startswith("[["):
            parts = [p.strip() for p in s[2:s.find("]]")].split(".")]
            key = resolve(parts[:-1]) + (parts[-1],)
            last[key] = last.get(key, -1) + 1
            cur = key + (last[key],)
            index[cur] = lineno
        elif s.startswith("["):
            cur = resolve([p.strip() for p in s[1:s.find("]")].split(".")])
            index[cur] = lineno
        elif "=" in s:
            index[cur + (s.split("=", 1)[0].strip().strip('"'),)] = lineno
    return index


def _field_name(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


class _Checker:
    """Collects the context (file, line index) that every error message needs."""

    def __init__(self, src: Source) -> None:
        self.src = src
        self.lines = _line_index(src.text)

    def error(self, path: tuple[Any, ...], msg: str) -> MachineFileError:
        line = None
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                line = self.lines[path[:n]]
                break
        where = f"{self.src.name}:{line}" if line else self.src.name
        return MachineFileError(f"{where}: {_field_name(path)}: {msg}")


def parse_size(value: int | str) -> int:
    """'4GiB', '512M', '64KiB', 4096 -> bytes."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgGtT]?)(i?[bB])?\s*", value)
    if not m:
        raise ValueError(f"not a size: {value!r}")
    return int(m.group(1)) * _SIZE[m.group(2).lower()]


def parse_list(text: str, limit: int = MAX_LIST_ID + 1) -> list[int]:
    """'0-3,8' -> [0, 1, 2, 3, 8] (the kernel's list format). Every number must lie
    below ``limit``, checked before a range is expanded."""
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"{part!r} is not a number or a range a-b")
        a, b = int(lo), int(hi or lo)
        if b < a:
            raise ValueError(f"range {part!r} runs backwards")
        if b >= limit:
            raise ValueError(f"{b} is out of range (the largest is {limit - 1})")
        out.extend(range(a, b + 1))
    return out


@dataclass(frozen=True)
class PageRun:
    """One token of a VMA's ``pages`` string."""

    count: int
    state: str
    node: int | None


def parse_pages(text: str, states: dict[str, tuple[int, int]] | None = None) -> list[PageRun]:
    """'3 accessed, 7 idle@2, 6 none, pmd-idle' -> runs (markers have count 0).
    ``states``: the allowed states (PAGE_STATES, or EPT_STATES without markers)."""
    table = PAGE_STATES if states is None else states
    markers = PMD_MARKERS if states is None else {}
    runs = []
    for tok in (t.strip() for t in text.split(",")):
        if not tok:
            continue
        m = re.fullmatch(r"(?:(\d+)\s*[x*]?\s+)?([a-z-]+)(?:@(\d+))?", tok)
        if not m or (m.group(2) not in table and m.group(2) not in markers):
            known = ", ".join([*table, *markers])
            raise ValueError(f"bad run {tok!r}: write '<count> <state>[@node]' with a state of {known}")
        if m.group(2) in markers:
            if m.group(1) or m.group(3):
                raise ValueError(f"{m.group(2)} takes no count or node")
            runs.append(PageRun(0, m.group(2), None))
        else:
            runs.append(PageRun(int(m.group(1) or 1), m.group(2),
                                None if m.group(3) is None else int(m.group(3))))
    return runs


def _vma_from(ck: _Checker, path: tuple[Any, ...], raw: dict[str, Any]) -> Vma:
    start = raw["start"]
    if "end" in raw and "size" in raw:
        raise ck.error(path, "give either end or size, not both")
    try:
        end = raw["end"] if "end" in raw else start + parse_size(raw.get("size", 0))
    except ValueError as e:
        raise ck.error(path + ("size",), str(e)) from None
    if start % PAGE_SIZE or end % PAGE_SIZE:
        raise ck.error(path + ("start",), f"{start:#x}-{end:#x} is not 4 KiB aligned")
    if not start < end <= TASK_SIZE:
        raise ck.error(path + ("end",), f"need start < end <= TASK_SIZE ({TASK_SIZE:#x}); got {start:#x}-{end:#x}")
    kind = raw.get("kind", "file" if "path" in raw else "anon")
    if kind == "file" and "path" not in raw:
        raise ck.error(path + ("kind",), "a file mapping needs a path")
    perms = raw.get("perms", "rw-s" if kind == "shm" else "rw-p")
    if raw.get("thp") and (kind not in ("anon", "heap", "stack") or perms[3:4] == "s"):
        # the emulated THPs are anonymous pages (no shmem or page-cache THPs)
        raise ck.error(path + ("thp",), f"THPs need a private anonymous mapping, not a {kind} "
                       f"{'shared' if perms[3:4] == 's' else 'private'} one")
    if kind in ("anon", "heap", "stack") and perms[3:4] == "s":
        # MAP_SHARED | MAP_ANONYMOUS is a shmem file: its pages are shmem, and idle_pages
        # skips it; an anonymous VMA is private by definition
        raise ck.error(path + ("perms",), f"a {kind} mapping is private ('p'); shared anonymous "
                       f"memory is kind = \"shm\"")
    dev = raw.get("dev", "00:00")
    major, minor = (int(x, 16) for x in dev.split(":"))
    return Vma(start, end, perms, kind, raw.get("path"), raw.get("offset", 0), (major, minor),
               raw.get("inode", 0), raw.get("hugetlb", False), raw.get("thp", False),
               raw.get("deleted", False))


def _unit(run: PageRun) -> int:
    level = PAGE_STATES[run.state][0] if run.state in PAGE_STATES else 4
    return LEVEL_SIZE[level]


def _check_pages(ck: _Checker, path: tuple[Any, ...], vma: Vma, runs: list[PageRun],
                 node_ids: set[int], repeat: int = 1) -> None:
    """Every run aligned to its page size and inside the VMA. A repeated pattern whose
    length keeps every run's alignment is checked once (a 1 TiB machine is one line)."""
    period = sum(r.count * _unit(r) for r in runs)
    if repeat > 1 and all(period % _unit(r) == 0 for r in runs):
        _check_pages(ck, path, vma, runs, node_ids)
        if vma.start + repeat * period > vma.end:
            raise ck.error(path, f"the runs end at {vma.start + repeat * period:#x}, "
                           f"past the VMA's end {vma.end:#x}")
        return
    runs = runs * repeat
    addr = vma.start
    for run in runs:
        unit = _unit(run)
        if run.node is not None and run.node not in node_ids:
            raise ck.error(path, f"node {run.node} in {run.state!r} does not exist")
        if run.state == "pinned" and vma.kind in ("vdso", "vvar"):
            raise ck.error(path, f"{vma.kind} pages are kernel frames: they cannot be pinned")
        if addr % unit:
            raise ck.error(path, f"{run.state!r} at {addr:#x} is not aligned to {unit // 1024} KiB")
        addr += run.count * unit
        if addr > vma.end:
            raise ck.error(path, f"the runs end at {addr:#x}, past the VMA's end {vma.end:#x}")


class _MarkerError(Exception):
    """A PMD marker where no page table exists."""


class _VmaPlan(NamedTuple):
    vma: Vma
    raw: dict[str, Any]
    runs: list[PageRun]  # one period of the pattern
    repeat: int

    def pages(self) -> int:
        """Base pages the pattern and MAP_POPULATE set up (the progress bar's total)."""
        per = sum(r.count * _unit(r) for r in self.runs if PAGE_STATES.get(r.state, (4, 0))[1])
        return per // PAGE_SIZE * self.repeat + (self.vma.nr_pages if self.raw.get("populate") else 0)


@dataclass
class _ProcPlan:
    raw: dict[str, Any]
    path: tuple[Any, ...]
    vmas: list[_VmaPlan]
    slots: list[tuple[MemSlot, list[PageRun], int | None]]


def _nodes_from(ck: _Checker, doc: dict[str, Any]) -> tuple[list[NodeConfig], list[list[int]] | None]:
    nodes, seen_cpus = [], {}
    for i, raw in enumerate(doc["node"]):
        nid = raw.get("id", i)
        if any(n.id == nid for n in nodes):
            raise ck.error(("node", i, "id"), f"node {nid} is defined twice")
        try:
            size = parse_size(raw["size"])
        except ValueError as e:
            raise ck.error(("node", i, "size"), str(e)) from None
        try:
            cpus = parse_list(raw["cpus"]) if isinstance(raw.get("cpus"), str) else raw.get("cpus", [])
        except ValueError as e:
            raise ck.error(("node", i, "cpus"), str(e)) from None
        if any(c > MAX_LIST_ID for c in cpus):
            raise ck.error(("node", i, "cpus"), f"CPU ids stop at {MAX_LIST_ID}")
        if size <= 0 or size % PMD_SIZE:
            raise ck.error(("node", i, "size"), f"{size} bytes is not a positive multiple of 2 MiB")
        marks = None
        if "watermarks" in raw:
            try:
                marks = tuple(parse_size(w) // PAGE_SIZE for w in raw["watermarks"])
            except ValueError as e:
                raise ck.error(("node", i, "watermarks"), str(e)) from None
            if not marks[0] <= marks[1] <= marks[2] <= size // PAGE_SIZE:
                raise ck.error(("node", i, "watermarks"), "need min <= low <= high <= the node's size")
        for c in cpus:
            if c in seen_cpus:
                raise ck.error(("node", i, "cpus"), f"CPU {c} already belongs to node {seen_cpus[c]}")
            seen_cpus[c] = nid
        nodes.append(NodeConfig(nid, raw["type"], size // PAGE_SIZE, tuple(cpus), marks))  # type: ignore[arg-type]
    dist = doc.get("distances")
    if dist is not None:
        n = len(nodes)
        if len(dist) != n or any(len(r) != n for r in dist):
            raise ck.error(("distances",), f"need a {n}x{n} matrix (one row per node, in file order)")
        for i in range(n):
            if dist[i][i] != 10:
                raise ck.error(("distances",), f"row {i}: the local distance must be 10")
            for j in range(n):
                if i != j and dist[i][j] <= 10:
                    raise ck.error(("distances",), f"row {i}: remote distances must be above 10")
        # the kernel sorts nodes by id; rows follow the file's node order
        order = sorted(range(n), key=lambda i: nodes[i].id)
        dist = [[dist[i][j] for j in order] for i in order]
    return nodes, dist


def _plan_processes(ck: _Checker, doc: dict[str, Any], node_ids: set[int], nr_cpus: int) -> list[_ProcPlan]:
    plans: list[_ProcPlan] = []
    pids: set[int] = set()
    for i, raw in enumerate(doc.get("process", [])):
        plans.append(_plan_process(ck, ("process", i), raw, node_ids, nr_cpus, pids))
    return plans


def _plan_process(ck: _Checker, path: tuple[Any, ...], raw: dict[str, Any], node_ids: set[int],
                  nr_cpus: int, pids: set[int]) -> _ProcPlan:
    """Check one process table against the machine; adds its thread ids to pids."""
    tids = range(raw["pid"], raw["pid"] + raw.get("threads", 1))
    if pids & set(tids):
        raise ck.error(path + ("pid",), f"pid {raw['pid']} (or a thread id) is used twice")
    pids |= set(tids)
    if raw.get("cpu", 0) >= nr_cpus:
        raise ck.error(path + ("cpu",), f"CPU {raw['cpu']} does not exist (the machine has {nr_cpus})")
    if raw["pid"] + raw.get("threads", 1) - 1 > PID_T_MAX:
        raise ck.error(path + ("threads",), f"thread ids run past {PID_T_MAX}, the largest pid_t")
    pol = raw.get("policy", "default")
    if ":" in pol and not set(_node_list(ck, path + ("policy",), pol.split(":")[1])) <= node_ids:
        raise ck.error(path + ("policy",), f"{pol!r} names a node that does not exist")
    if "fork_of" in raw and ("vma" in raw or "vm" in raw):
        raise ck.error(path + ("fork_of",), "a forked process inherits its parent's VMAs: "
                       "give it no vma or vm tables")
    if "fork_of" in raw and "ppid" in raw:
        raise ck.error(path + ("ppid",), "a forked process's parent is its fork_of process")
    if "mems_allowed" in raw and \
            not set(_node_list(ck, path + ("mems_allowed",), raw["mems_allowed"])) <= node_ids:
        raise ck.error(path + ("mems_allowed",), f"{raw['mems_allowed']!r} names a node that does not exist")
    vmas: list[_VmaPlan] = []
    if len(raw.get("vma", [])) > MAX_MAP_COUNT:
        raise ck.error(path + ("vma", MAX_MAP_COUNT), f"one VMA too many: a process has at most "
                       f"{MAX_MAP_COUNT} (vm.max_map_count), this file gives it {len(raw['vma'])}")
    for j, vraw in enumerate(raw.get("vma", [])):
        vpath = path + ("vma", j)
        vma = _vma_from(ck, vpath, vraw)
        if vraw.get("node") is not None and vraw["node"] not in node_ids:
            raise ck.error(vpath + ("node",), f"node {vraw['node']} does not exist")
        try:
            runs = parse_pages(vraw.get("pages", ""))
        except ValueError as e:
            raise ck.error(vpath + ("pages",), str(e)) from None
        repeat = vraw.get("repeat", 1)
        if vma.hugetlb and any(r.state != "none" for r in runs if r.count):
            raise ck.error(vpath + ("pages",), "a hugetlb VMA takes no pages: fakeproc has no "
                           "hugetlb pool yet (idle_pages reports nothing for hugetlb VMAs)")
        _check_pages(ck, vpath + ("pages",), vma, runs, node_ids, repeat)
        vmas.append(_VmaPlan(vma, vraw, runs, repeat))
    _check_overlaps(ck, path, [v.vma for v in vmas])
    wl = raw.get("workload")
    if wl is not None and "fork_of" not in raw:  # a fork's count the VMAs it inherits: at build
        _check_workload_vmas(ck, path + ("workload",), wl, len(vmas))
    slots = _plan_slots(ck, path + ("vm",), raw.get("vm"), [v.vma for v in vmas], node_ids)
    return _ProcPlan(raw, path, vmas, slots)


def _node_list(ck: _Checker, path: tuple[Any, ...], text: str) -> list[int]:
    try:
        return parse_list(text, MAX_NUMNODES)
    except ValueError as e:
        raise ck.error(path, str(e)) from None


def _plan_slots(ck: _Checker, path: tuple[Any, ...], vm: dict[str, Any] | None, vmas: list[Vma],
                node_ids: set[int]) -> list[tuple[MemSlot, list[PageRun], int | None]]:
    """A VM's memory slots: each page aligned, inside one anonymous VMA, no overlaps."""
    out: list[tuple[MemSlot, list[PageRun], int | None]] = []
    for j, raw in enumerate((vm or {}).get("slot", [])):
        spath = path + ("slot", j)
        try:
            slot = MemSlot(raw["gpa"], parse_size(raw["size"]), raw["hva"])
            runs = parse_pages(raw.get("pages", ""), EPT_STATES)
        except ValueError as e:
            raise ck.error(spath, str(e)) from None
        if (slot.gpa | slot.hva | slot.size) % PAGE_SIZE or slot.size == 0:
            raise ck.error(spath, "gpa, hva and size must be non-zero multiples of 4 KiB")
        host = next((v for v in vmas if v.start <= slot.hva and slot.hva + slot.size <= v.end), None)
        if host is None or not host.is_anon_memory:
            raise ck.error(spath + ("hva",), f"{slot.hva:#x}+{slot.size:#x} must lie inside one "
                           "anonymous VMA of the process (the guest's RAM)")
        for other, _, _ in out:
            if (other.gpa < slot.gpa + slot.size and slot.gpa < other.gpa + other.size) or \
                    (other.hva < slot.hva + slot.size and slot.hva < other.hva + other.size):
                raise ck.error(spath, "overlaps another slot (in guest or host addresses)")
        if raw.get("node") is not None and raw["node"] not in node_ids:
            raise ck.error(spath + ("node",), f"node {raw['node']} does not exist")
        end = slot.gpa
        for run in runs:
            if run.node is not None and run.node not in node_ids:
                raise ck.error(spath + ("pages",), f"node {run.node} in {run.state!r} does not exist")
            unit = LEVEL_SIZE[EPT_STATES[run.state][0]]
            if end % unit:
                raise ck.error(spath + ("pages",), f"{run.state!r} at gpa {end:#x} is not aligned")
            end += run.count * unit
        if end > slot.gpa + slot.size:
            raise ck.error(spath + ("pages",), f"the runs end at gpa {end:#x}, past the slot's end")
        out.append((slot, runs, raw.get("node")))
    return out


def _check_overlaps(ck: _Checker, path: tuple[Any, ...], vmas: list[Vma]) -> None:
    """No two VMAs overlap: the first VMA in file order that overlaps an earlier one is
    named, with the first of those it overlaps. The earlier ones are kept sorted by
    start (they do not overlap each other), so only the neighbours of each new one can;
    a file in address order appends to the list, O(n log n) in all."""
    placed: list[tuple[int, int, int]] = []  # (start, end, index), by start
    for j, vma in enumerate(vmas):
        i = bisect.bisect_left(placed, (vma.start, vma.end, j))
        hits = [p for p in placed[max(0, i - 1):i + 1] if p[0] < vma.end and vma.start < p[1]]
        if not hits:
            placed.insert(i, (vma.start, vma.end, j))
            continue
        # a long VMA may cover several earlier ones: the first of them in file order
        first = min((p for p in placed[max(0, i - 1):bisect.bisect_left(placed, (vma.end,))]
                     if p[0] < vma.end and vma.start < p[1]), key=lambda p: p[2])
        raise ck.error(path + ("vma", j, "start"), f"{vma.start:#x}-{vma.end:#x} overlaps "
                       f"{first[0]:#x}-{first[1]:#x}")


def _check_workload_vmas(ck: _Checker, path: tuple[Any, ...], wl: dict[str, Any], nr_vmas: int) -> None:
    for k in wl.get("vmas", []):
        if k >= nr_vmas:
            raise ck.error(path + ("vmas",), f"there is no vma[{k}]")


# a build reports its progress as (base pages done, base pages in all) to this
Progress = Callable[[int, int], None]
_CHUNK = 1 << 20  # pages between progress reports


def _bulk(runs: list[PageRun]) -> bool:
    """Only 4 KiB pages, no pins or markers: the whole pattern goes to C at once."""
    return all(r.state in PAGE_STATES and PAGE_STATES[r.state][0] == 4 and r.state != "pinned"
               for r in runs)


def _apply_pages(kernel: Kernel, task: Any, plan: _VmaPlan, report: Callable[[int], None]) -> None:
    vma, runs, default_node = plan.vma, plan.runs, plan.raw.get("node")
    if plan.repeat > 1 and _bulk(runs):
        period = sum(r.count for r in runs)
        pattern = [(r.count, PAGE_STATES[r.state][1], r.node if r.node is not None else default_node)
                   for r in runs]
        live = sum(r.count for r in runs if PAGE_STATES[r.state][1])
        step = max(1, _CHUNK // max(period, 1))
        for first in range(0, plan.repeat, step):
            n = min(step, plan.repeat - first)
            kernel.set_pte_runs(task, vma.start + first * period * PAGE_SIZE, pattern, n, vma)
            report(n * live)
        return
    runs = runs * plan.repeat
    addr = vma.start
    markers: list[tuple[int, str]] = []
    for run in runs:
        if run.state in PMD_MARKERS:
            markers.append((addr, run.state))
            continue
        level, bits = PAGE_STATES[run.state]
        node = run.node if run.node is not None else default_node
        unit = LEVEL_SIZE[level]
        if level == 4:
            if bits:
                kernel.set_ptes(task, addr, run.count, bits, node, vma)
                report(run.count)
            if run.state == "pinned":
                for i in range(run.count):
                    kernel.pin_page(task, addr + i * unit)
            addr += run.count * unit
            continue
        for _ in range(run.count):
            if level == 3:
                kernel.set_thp(task, addr, bits, node)
            elif level == 2:
                kernel.set_pud(task, addr, bits)
            addr += unit
            report(unit // PAGE_SIZE if bits else 0)
    for maddr, marker in markers:
        set_bits, clear = PMD_MARKERS[marker]
        try:
            kernel.set_table_bits(task, maddr, 3, set_bits, clear)
        except KernelError:
            raise _MarkerError(f"{marker} at {maddr:#x}: no page table maps that 2 MiB region; "
                               "put the marker after a present page of it") from None


class _Reporter:
    """Counts built pages and passes (done, total) to the caller's Progress."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.done, self.total, self.progress = 0, total, progress

    def __call__(self, pages: int) -> None:
        self.done += pages
        if self.progress is not None and pages:
            self.progress(self.done, self.total)


def _build(ck: _Checker, doc: dict[str, Any], progress: Progress | None = None) -> Kernel:
    nodes, dist = _nodes_from(ck, doc)
    all_cpus = [c for n in nodes for c in n.cpus]
    nr_cpus = doc.get("machine", {}).get("nr_cpus", max(all_cpus) + 1 if all_cpus else 1)
    if all_cpus and max(all_cpus) >= nr_cpus:
        raise ck.error(("machine", "nr_cpus"), f"CPU {max(all_cpus)} is beyond nr_cpus={nr_cpus}")
    node_ids = {n.id for n in nodes}
    plans = _plan_processes(ck, doc, node_ids, nr_cpus)
    mach = doc.get("machine", {})
    try:
        swap = parse_size(mach.get("swap", 0))
    except ValueError as e:
        raise ck.error(("machine", "swap"), str(e)) from None
    if swap // PAGE_SIZE > MAX_PFNS:
        raise ck.error(("machine", "swap"), f"{swap} bytes: swap stops at 16 TiB")
    total = sum(n.nr_pages for n in nodes)
    if total > MAX_PFNS:
        raise ck.error(("node",), f"the nodes hold {total * PAGE_SIZE >> 30} GiB in all: fakeproc "
                       "emulates up to 16 TiB (32-bit page frame numbers)")
    try:
        kernel = Kernel(nodes, dist, nr_cpus, swap_pages=swap // PAGE_SIZE,
                        min_free_kbytes=mach.get("min_free_kbytes"),
                        watermark_scale_factor=mach.get("watermark_scale_factor", 10))
    except MemoryError:
        raise ck.error(("node",), f"this host cannot hold the page metadata of {total * PAGE_SIZE >> 30} "
                       f"GiB of emulated memory (about {total * 24 >> 30} GiB)") from None
    kernel.upstream = mach.get("upstream", False)
    if "numa_balancing" in mach:
        if not kernel.upstream:
            raise ck.error(("machine", "numa_balancing"), "memory-tiering NUMA balancing is an "
                           "upstream interface: set upstream = true too")
        kernel.numa_balancing = mach["numa_balancing"]
    seed = mach.get("seed", 1)
    report = _Reporter(sum(v.pages() for p in plans for v in p.vmas), progress)
    for plan in plans:
        _build_process(ck, kernel, plan, seed, report)
    return kernel


def _build_process(ck: _Checker, kernel: Kernel, plan: _ProcPlan, seed: int,
                   report: Callable[[int], None] = lambda pages: None) -> Task:
    """Spawn one checked process: VMAs, pinned pages, populate, workload, state."""
    raw = plan.raw
    mode, _, lst = raw.get("policy", "default").partition(":")
    policy = MemPolicy(mode, tuple(parse_list(lst))) if lst else MemPolicy(mode)  # type: ignore[arg-type]
    if "fork_of" in raw:
        if kernel.task(raw["fork_of"]) is None or kernel.task(raw["fork_of"]).mm_id is None:
            raise ck.error(plan.path + ("fork_of",), f"pid {raw['fork_of']} must be a live process "
                           "listed before this one")
        # the child as fork() leaves it, then what it set since (setuid(), clone(),
        # sched_setaffinity(), set_mempolicy(), its cpuset)
        task = kernel.fork(raw["fork_of"], raw["pid"], raw["name"],
                           threads=range(raw["pid"], raw["pid"] + raw.get("threads", 1)))
        task.uid, task.gid = raw.get("uid", task.uid), raw.get("gid", task.gid)
        task.cpu = raw.get("cpu", task.cpu)
        if "policy" in raw:
            task.policy = policy
    else:
        task = kernel.spawn(raw["pid"], raw["name"], uid=raw.get("uid", 0), gid=raw.get("gid", 0),
                            ppid=raw.get("ppid", 1),
                            threads=range(raw["pid"], raw["pid"] + raw.get("threads", 1)),
                            cpu=raw.get("cpu", 0), policy=policy)
    if "mems_allowed" in raw:
        task.mems_allowed = tuple(parse_list(raw["mems_allowed"]))
    kernel.set_policy(task, task.policy)  # the zonelist of its CPU, policy and cpuset
    for j, vplan in enumerate(plan.vmas):  # none for a fork: it has its parent's
        kernel.add_vma(task, vplan.vma)
        try:
            _apply_pages(kernel, task, vplan, report)
        except KernelError as e:
            raise ck.error(plan.path + ("vma", j, "pages"),
                           f"cannot map these pages: {e.strerror} (is the node large enough?)") from None
        except _MarkerError as e:
            raise ck.error(plan.path + ("vma", j, "pages"), str(e)) from None
        if vplan.raw.get("populate"):
            try:
                kernel.populate(task, vplan.vma, report=report)
            except KernelError as e:  # named apart from pages: that field may not be there at all
                raise ck.error(plan.path + ("vma", j, "populate"),
                               f"{e.strerror} (is the node large enough?)") from None
    if "workload" in raw:
        if "fork_of" in raw:
            _check_workload_vmas(ck, plan.path + ("workload",), raw["workload"],
                                 len(kernel.mm(task.mm_id).vmas))  # type: ignore[arg-type]
        wl = _workload_from(raw["workload"], seed + raw["pid"])
        if wl.vma_indices is not None and plan.vmas:  # file order -> address order (a fork: its parent's)
            rank = sorted(range(len(plan.vmas)), key=lambda j: plan.vmas[j].vma.start)
            wl.vma_indices = tuple(rank.index(j) for j in wl.vma_indices)
        kernel.attach_workload(task, wl)
    if plan.slots:
        _build_vm(ck, kernel, task, plan, seed)
    task.exit_at = raw.get("exit_at")
    if "oom_score_adj" in raw:  # as root set it: the floor too
        task.oom_score_adj = task.oom_score_adj_min = raw["oom_score_adj"]
    if raw.get("state", "sleeping") == "zombie":
        kernel.exit(task.pid, zombie=True)
    else:
        task.state = raw.get("state", "sleeping")
    return task


def _build_vm(ck: _Checker, kernel: Kernel, task: Task, plan: _ProcPlan, seed: int) -> None:
    vm = plan.raw["vm"]
    kvm.create_vm(kernel, task, [s for s, _, _ in plan.slots], vcpu0=vm.get("vcpu0", True),
                  ept_ad=vm.get("ept_ad", True), ept_levels=vm.get("ept_levels", 4),
                  root_valid=vm.get("root_valid", True))
    for j, (slot, runs, node) in enumerate(plan.slots):
        gpa = slot.gpa
        for run in runs:
            level, bits = EPT_STATES[run.state]
            unit = LEVEL_SIZE[level]
            for _ in range(run.count if bits else 0):
                try:
                    kvm.ept_set(kernel, task, gpa, level, bits, run.node if run.node is not None else node)
                except KernelError as e:
                    raise ck.error(plan.path + ("vm", "slot", j, "pages"),
                                   f"cannot map guest page {gpa:#x}: {e.strerror}") from None
                gpa += unit
            gpa += 0 if bits else run.count * unit
    if "workload" in vm:
        # the guest's own stream: a seed of its own, not the host workload's
        kvm.attach_guest_workload(kernel, task, _workload_from(vm["workload"], seed + plan.raw["pid"] + 1))


def _workload_from(w: dict[str, Any], default_seed: int) -> Workload:
    return Workload(pattern=w.get("pattern", "uniform"), rate=w.get("rate", 1e6),
                    hot=w.get("hot", 0.1), hot_access=w.get("hot_access", 0.9),
                    write=w.get("write", 0.3), zipf_s=w.get("zipf_s", 1.0),
                    seed=w.get("seed", default_seed),
                    phases=tuple(Phase(p["at"], p["hot_offset"]) for p in w.get("phases", [])),
                    vma_indices=tuple(w["vmas"]) if "vmas" in w else None)


def load(text: str, name: str = "<machine>", progress: Progress | None = None) -> Kernel:
    """Parse, validate and build: a Kernel, or MachineFileError naming line and field.
    progress, when given, hears (pages built, pages in all) during a long build."""
    ck = _Checker(Source(text, name))
    try:
        doc = tomllib.loads(text)
        _validate(ck, SCHEMA, doc)
    except tomllib.TOMLDecodeError as e:
        raise MachineFileError(f"{name}: not valid TOML: {e}{_quoted_line(text, str(e))}") from None
    except RecursionError:
        raise MachineFileError(f"{name}:{_deep_line(text)}: arrays or tables nested too deeply "
                               "(a machine file needs only a few levels)") from None
    return _build(ck, doc, progress)


def _quoted_line(text: str, message: str) -> str:
    """The line a TOML error names, quoted (tomllib's "Cannot overwrite a value" does
    not say which key)."""
    m = re.search(r"at line (\d+)", message)
    lines = text.splitlines()
    if m is None or not 0 < int(m.group(1)) <= len(lines):
        return ""
    return f": {lines[int(m.group(1)) - 1].strip()}"


def _deep_line(text: str, depth: int = 32) -> int:
    """The line where `[` and `{` first nest `depth` deep (strings not told apart: it
    only points at the place after the parser has given up)."""
    level = 0
    for i, ch in enumerate(text):
        level += (ch in "[{") - (ch in "]}")
        if level >= depth:
            return text.count("\n", 0, i) + 1
    return 1


def _is_integer(_checker: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # 1.0 and 1e300 are not


def _is_number(_checker: Any, value: Any) -> bool:
    """A finite number: TOML's inf and nan (and JSON's 1e400) are refused here."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# JSON Schema's own integer accepts 1.0 (and so 1e300); numbers may be inf or nan
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}))


def _validate(ck: _Checker, schema: dict[str, Any], doc: Any, toml_hint: bool = True) -> None:
    """The first schema error (in path order), as a MachineFileError naming the field."""
    errors = sorted(_Validator(schema).iter_errors(doc),
                    key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        e = errors[0]
        path = tuple(e.absolute_path)
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            extra = [k for k in e.instance if k not in e.schema.get("properties", {})]
            path += tuple(extra[:1])  # point at the offending key's own line
        elif e.validator == "maxItems":
            path += (e.validator_value,)  # the first entry too many
        raise ck.error(path, _schema_message(e, toml_hint))


PROCESS_SCHEMA: dict[str, Any] = SCHEMA["properties"]["process"]["items"]
WORKLOAD_SCHEMA: dict[str, Any] = PROCESS_SCHEMA["properties"]["workload"]


def add_process(kernel: Kernel, raw: dict[str, Any], name: str = "<ctl>", *, seed: int = 1) -> Task:
    """Spawn one process on a running machine from a dict shaped like a ``[[process]]``
    table (the control socket's ``spawn``). Checked like a machine file, so errors name
    the field (``NAME: vma[0].pages: ...``); a process that fails half-built is removed."""
    ck = _Checker(Source("", name))
    _validate(ck, PROCESS_SCHEMA, raw, toml_hint=False)
    used = {t for task in kernel.tasks.values() for t in task.tids}
    taken = sorted(used & set(range(raw["pid"], raw["pid"] + raw.get("threads", 1))))
    if taken:
        raise ck.error(("pid",), f"id {taken[0]} is already in use by a process or thread")
    plan = _plan_process(ck, (), raw, set(kernel.node_ids), kernel.nr_cpu_ids, used)
    try:
        return _build_process(ck, kernel, plan, seed)
    except BaseException:
        if raw["pid"] in kernel.tasks:
            kernel.exit(raw["pid"])
        raise


def set_workload(kernel: Kernel, task: Task, raw: dict[str, Any] | None, name: str = "<ctl>", *,
                 seed: int = 1) -> Workload | None:
    """Replace task's workload with one built from a ``[process.workload]``-shaped dict
    (None stops it). ``vmas`` indexes the task's VMAs in address order, as in maps."""
    ck = _Checker(Source("", name))
    if raw is None:
        kernel.workloads_changing(task)
        task.workload = None
        return None
    if not task.alive:
        raise ck.error((), f"process {task.pid} has exited; it cannot run a workload")
    _validate(ck, WORKLOAD_SCHEMA, raw, toml_hint=False)
    assert task.mm_id is not None
    _check_workload_vmas(ck, (), raw, len(kernel.mm(task.mm_id).vmas))
    wl = _workload_from(raw, seed + task.pid)
    kernel.attach_workload(task, wl)
    return wl


def _schema_message(e: jsonschema.ValidationError, toml_hint: bool = True) -> str:
    if e.validator == "additionalProperties":
        allowed = sorted(e.schema.get("properties", {}))
        hint = ""
        if toml_hint and any(k in SCHEMA["properties"] for k in e.instance) and e.absolute_path:
            hint = " (top-level keys such as distances must come before the first [table])"
        return f"{e.message}; allowed keys: {', '.join(allowed)}{hint}"
    if e.validator == "enum":
        return f"{e.instance!r} is not one of {', '.join(map(repr, e.validator_value))}"
    if e.validator == "type" and isinstance(e.instance, float) and not math.isfinite(e.instance):
        return f"{e.instance!r} is not a finite number"
    if e.validator in ("anyOf", "pattern") and "description" in e.schema:
        return f"{e.instance!r} is not {e.schema['description']}"
    if e.validator in ("maxItems", "minItems"):
        most = "most" if e.validator == "maxItems" else "least"
        return f"{len(e.instance)} entries: at {most} {e.validator_value} are allowed"
    return e.message


def load_file(path: str | Path, progress: Progress | None = None) -> Kernel:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise MachineFileError(f"{p}: cannot read: {e.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise MachineFileError(f"{p}: more than {MAX_FILE_BYTES >> 20} MiB: not a machine file "
                               "(65530 VMAs for each of many processes take far less)")
    return load(decode(data, str(p)), str(p), progress)


def decode(data: bytes, name: str) -> str:
    """A machine file's text: TOML is UTF-8 whatever the locale says; a byte that is
    not is reported at its line (and the field defined there), as any other error."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - data.rfind(b"\n", 0, e.start)
        fields = {n: path for path, n in _line_index(data.decode("utf-8", "replace")).items()}
        raise MachineFileError(f"{name}:{line}: {_field_name(fields.get(line, ()))}: byte "
                               f"{data[e.start]:#04x} at column {column} is not UTF-8 (save the "
                               "file as UTF-8)") from None


def default_text() -> str:
    """The built-in machine: 2 DRAM + 2 PMEM nodes as in the RFC's example."""
    return resources.files("fakeproc.machines").joinpath("default.toml").read_text()


def load_default() -> Kernel:
    return load(default_text(), "<built-in default machine>")

