"""NUMA nodes: type, size, CPUs, SLIT distances, peer_node and fallback order.

Linux: drivers/base/node.c (the node tree's values), the RFC's peer_node
selection (INTERFACES.md 2.2), mm/page_alloc.c build_zonelists() with the
RFC's rule that DRAM nodes fall back only to DRAM and PMEM only to PMEM.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NewType, Sequence

NodeId = NewType("NodeId", int)
NodeType = Literal["dram", "pmem"]

LOCAL_DISTANCE = 10
REMOTE_DISTANCE = 20  # the ACPI SLIT default when a machine file gives none
PAGE_SIZE = 4096
HPAGE_PAGES = 512


@dataclass(frozen=True)
class Node:
    """One online NUMA node. ``nr_pages`` is a multiple of 512 (2 MiB blocks)."""

    id: int
    type: NodeType
    nr_pages: int
    cpus: tuple[int, ...] = ()
    peer: int = -1
    fallback: tuple[int, ...] = field(default=())

    @property
    def size_bytes(self) -> int:
        return self.nr_pages * PAGE_SIZE


def default_distances(ids: Sequence[int]) -> list[list[int]]:
    """10 on the diagonal, the SLIT default 20 elsewhere."""
    return [[LOCAL_DISTANCE if a == b else REMOTE_DISTANCE for b in ids] for a in ids]


def compute_peers(ids: Sequence[int], dist: Sequence[Sequence[int]]) -> dict[int, int]:
    """peer_node for every node, by the RFC's boot-time rule (INTERFACES.md 2.2).

    Nodes in ascending order share one "already chosen" set; node n takes the
    nearest unchosen node m != n whose distance is not the local distance
    (ties: lowest id). Types are ignored. Returns -1 where none is left.
    """
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    chosen: set[int] = set()
    peers: dict[int, int] = {}
    for i in order:
        best: tuple[int, int] | None = None
        for j in order:
            if j == i or ids[j] in chosen or dist[i][j] == LOCAL_DISTANCE:
                continue
            cand = (dist[i][j], ids[j])
            if best is None or cand < best:
                best = cand
        peers[ids[i]] = -1 if best is None else best[1]
        if best is not None:
            chosen.add(best[1])
    return peers


def compute_fallback(ids: Sequence[int], types: Sequence[NodeType], dist: Sequence[Sequence[int]],
                     has_cpus: Sequence[bool]) -> dict[int, tuple[int, ...]]:
    """Zonelist per node, as the RFC's build_zonelists() makes them, node by node in id
    order: a PMEM node lists itself, then the other PMEM nodes in id order; a DRAM node
    lists the DRAM nodes that find_next_best_node() picks in turn: the smallest
    (distance + 1 for a lower id + 1 for a node with CPUs) * (nodes * MAX_NUMNODES) +
    node_load, where the first node of each new distance gets node_load = the nodes
    still to place, so nodes at equal distance take turns across the lists (4.20's
    round robin; node_load carries from one node's list to the next)."""
    out: dict[int, tuple[int, ...]] = {}
    load = [0] * len(ids)
    scale = len(ids) * 1024  # MAX_NODE_LOAD * MAX_NUMNODES
    for i, nid in enumerate(ids):
        if types[i] == "pmem":
            out[nid] = (nid, *(ids[j] for j in range(len(ids)) if j != i and types[j] == "pmem"))
            continue
        order, prev, left = [i], i, len(ids) - 1  # load-- after the local node too
        while True:
            cands = [j for j in range(len(ids)) if j not in order and types[j] == "dram"]
            if not cands:
                break
            best = min(cands, key=lambda j: ((dist[i][j] + (ids[j] < nid) + has_cpus[j]) * scale
                                             + load[j], j))
            if dist[i][best] != dist[i][prev]:
                load[best] = left
            order.append(best)
            prev, left = best, left - 1
        out[nid] = tuple(ids[j] for j in order)
    return out
