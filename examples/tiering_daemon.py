#!/usr/bin/env python3
"""A small user-space tiering daemon, written only against the real interfaces.

It does what the RFC's migration daemon does, in miniature:
  * reads the node types and peers from /sys/devices/system/node/nodeN/{type,peer_node};
  * every round, scans /proc/PID/idle_pages of each anonymous VMA (from /proc/PID/maps)
    N times, each after a moment of waiting (so every scan sees one whole interval, the
    first one included): a page accessed in every scan is hot, in none cold
    (1 MiB reads; after a full read it goes on from the last reported unit, since the
    kernel skips the pages between it and the read's end);
  * asks move_pages(2) (query form) where those pages are;
  * promotes hot pages that sit on PMEM to DRAM with MPOL_MF_MOVE | MPOL_MF_SW_YOUNG,
    and, to make room, demotes cold DRAM pages to their PMEM peer.
It knows nothing of fakeproc: run it on the RFC kernel, or under `fakeproc run`.

    python3 tiering_daemon.py --pid PID [--pid PID...] [--rounds 5] [--scans 3]
"""
from __future__ import annotations

import argparse
import ctypes
import os
import re
import sys
import time

SYS_move_pages = 279
MPOL_MF_MOVE, MPOL_MF_SW_YOUNG = 2, 0x80
PAGE, PMD = 4096, 2 << 20
UNIT = {0: PAGE, 1: PMD, 2: 1 << 30, 3: PAGE, 4: PMD, 5: PAGE, 6: PMD, 7: PMD, 8: PAGE, 9: PMD}
ACCESSED, IDLE = {0, 1, 2, 3, 4}, {5, 6, 7}
NODE_DIR = "/sys/devices/system/node"
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def nodes() -> dict[int, tuple[str, int]]:
    """node id -> (type, peer_node)"""
    out = {}
    for name in os.listdir(NODE_DIR):
        if re.fullmatch(r"node\d+", name):
            d = f"{NODE_DIR}/{name}"
            out[int(name[4:])] = (read(f"{d}/type")[:-1], int(read(f"{d}/peer_node")[:-1]))
    return out


def free_pages(node: int) -> int:
    for line in read(f"{NODE_DIR}/node{node}/meminfo").splitlines():
        if " MemFree:" in line:
            return int(line.split()[3]) // 4
    return 0


def anon_vmas(pid: int) -> list[tuple[int, int]]:
    out = []
    for line in read(f"/proc/{pid}/maps").splitlines():
        fields = line.split()
        if len(fields) == 5 or (len(fields) == 6 and fields[5] in ("[heap]", "[stack]")):
            if fields[1][1] == "w" and fields[1][3] == "p":
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                out.append((lo, hi))
    return out


def scan(pid: int, counts: dict[int, int]) -> None:
    """One pass over every anonymous VMA: +1 for accessed pages, 0 for idle ones."""
    fd = os.open(f"/proc/{pid}/idle_pages", os.O_RDWR)
    try:
        for lo, hi in anon_vmas(pid):
            va = lo
            while va < hi:
                os.lseek(fd, va, os.SEEK_SET)
                size = 1 << 20
                data = os.read(fd, size)
                if not data:
                    break
                last_unit_end, cursor = decode(data, hi, counts, va)
                # a full buffer ends with A0 be64(end): the pages between the last unit
                # and end were not reported, so go on from the last unit, not the cursor.
                # So does one that kept less room than a SET_HVA and a unit need (19
                # bytes): it comes back up to 18 bytes short.
                full = len(data) > size - 19
                va = last_unit_end if full and last_unit_end > va else cursor
    finally:
        os.close(fd)


def decode(data: bytes, end: int, counts: dict[int, int], cursor: int) -> tuple[int, int]:
    """Count the units into `counts`; returns (where the last unit ended, the cursor)."""
    i, last = 0, cursor
    while i < len(data):
        b = data[i]
        if b == 0xA0:
            cursor = int.from_bytes(data[i + 1:i + 9], "big")
            i += 9
            continue
        t, n = b >> 4, b & 15
        size = UNIT.get(t, PAGE) * n
        if cursor >= end:
            break
        if cursor % UNIT.get(t, PAGE) == 0 and (t in ACCESSED or t in IDLE):
            inc = 1 if t in ACCESSED else 0
            for a in range(cursor, min(cursor + size, end), PAGE):
                counts[a] = counts.get(a, 0) + inc
        cursor += size
        last = cursor
        i += 1
    return last, cursor


def move_pages(pid: int, pages: list[int], nodes_: list[int] | None, flags: int) -> list[int]:
    n = len(pages)
    arr = (ctypes.c_void_p * n)(*pages)
    status = (ctypes.c_int * n)(*([-1] * n))
    nd = (ctypes.c_int * n)(*nodes_) if nodes_ is not None else None
    r = libc.syscall(SYS_move_pages, pid, ctypes.c_ulong(n), arr, nd, status, flags)
    if r < 0:
        raise OSError(ctypes.get_errno(), f"move_pages: {os.strerror(ctypes.get_errno())}")
    return list(status)


def batched(xs: list, n: int = 1024):  # noqa: ANN001, ANN201
    for i in range(0, len(xs), n):
        yield xs[i:i + n]


def one_round(pid: int, topo: dict[int, tuple[str, int]], scans: int, interval: float) -> str:
    counts: dict[int, int] = {}
    for _ in range(scans):
        time.sleep(interval)  # the first scan too: moved pages come back old (SW_YOUNG aside)
        scan(pid, counts)
    hot = sorted(a for a, c in counts.items() if c == scans)
    cold = sorted(a for a, c in counts.items() if c == 0)
    where = {}
    for chunk in batched(hot + cold):
        where.update(zip(chunk, move_pages(pid, chunk, None, 0)))
    promote: dict[int, list[int]] = {}
    for a in hot:
        n = where.get(a, -1)
        if n >= 0 and topo[n][0] == "pmem" and topo[n][1] >= 0:
            promote.setdefault(topo[n][1], []).append(a)
    moved_up = moved_down = 0
    for dram, pages in promote.items():
        need = len(pages) - (free_pages(dram) - 1024)  # keep a little headroom
        if need > 0:  # make room: the cold pages of that DRAM node go to its peer
            victims = [a for a in cold if where.get(a) == dram][:need]
            for chunk in batched(victims):
                move_pages(pid, chunk, [topo[dram][1]] * len(chunk), MPOL_MF_MOVE)
                moved_down += len(chunk)
        for chunk in batched(pages):
            st = move_pages(pid, chunk, [dram] * len(chunk), MPOL_MF_MOVE | MPOL_MF_SW_YOUNG)
            moved_up += sum(1 for s in st if s == dram)
    return f"pid {pid}: {len(counts)} pages, {len(hot)} hot, {len(cold)} cold, " \
           f"promoted {moved_up}, demoted {moved_down}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pid", type=int, action="append", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--scans", type=int, default=3)
    p.add_argument("--interval", type=float, default=0.2, help="seconds between scans")
    args = p.parse_args()
    try:
        topo = nodes()
    except FileNotFoundError as e:
        print(f"tiering_daemon: {e.filename}: no node types here: this needs the RFC kernel "
              "(run it under `fakeproc run`)", file=sys.stderr)
        return 1
    for r in range(args.rounds):
        for pid in args.pid:
            try:
                print(f"round {r}: {one_round(pid, topo, args.scans, args.interval)}", flush=True)
            except (FileNotFoundError, ProcessLookupError) as e:
                print(f"tiering_daemon: pid {pid}: {e.strerror}: {e.filename}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
