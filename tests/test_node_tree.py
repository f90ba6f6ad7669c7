"""The node tree (INTERFACES.md 2) byte for byte through the mount, on three topologies.

Every expected value below is written by hand from the machine file next to it and the
rules of 2.1/2.2 (the peer_node derivations are in the comments), never produced by
fakeproc. The machines run no processes unless noted, so every node's memory is free
and its counters are zero.

  RFC     the patch's example: nodes 0,1 dram, 2,3 pmem, distances 10/21/17/28
  SPARSE  node ids 0,1,2,5 (three dram, one pmem): a dram node's peer is dram, a tie
          broken by the lower id, a node whose nearest candidate was already chosen,
          and a node left with peer -1
  WIDE    104 CPUs (the spec's 0-25,52-77 layout): cpumaps of four comma groups and a
          CPU-less node printing zeros of the same width
  NOZERO  nodes 1 and 3 only: without node 0 every distance line starts with a space
"""
from __future__ import annotations

import os
import stat

import pytest

from mountutil import mounted

pytestmark = pytest.mark.fuse

NODE = "sys/devices/system/node"

# --------------------------------------------------------------------------- machines

RFC = """
distances = [
  [10, 21, 17, 28],
  [21, 10, 28, 17],
  [17, 28, 10, 28],
  [28, 17, 28, 10],
]

[[node]]
type = "dram"
size = "512MiB"
cpus = "0-1"

[[node]]
type = "dram"
size = "512MiB"
cpus = "2-3"

[[node]]
type = "pmem"
size = "1GiB"

[[node]]
type = "pmem"
size = "1GiB"
"""
# peer_node, nodes in ascending order, one "chosen" set (2.2):
#   node 0: candidates 1 (21), 2 (17), 3 (28)       -> 2   chosen {2}
#   node 1: candidates 0 (21), 3 (17); 2 is chosen  -> 3   chosen {2,3}
#   node 2: candidates 0 (17), 1 (28); 3 is chosen  -> 0   chosen {0,2,3}
#   node 3: candidate 1 (17); 0 and 2 are chosen    -> 1
# = the patch's 0->2, 1->3, 2->0, 3->1.

SPARSE = """
distances = [
  [10, 20, 20, 30],
  [20, 10, 15, 30],
  [20, 15, 10, 30],
  [30, 30, 30, 10],
]

[[node]]
id = 0
type = "dram"
size = "256MiB"
cpus = "0"

[[node]]
id = 1
type = "dram"
size = "256MiB"
cpus = "1"

[[node]]
id = 2
type = "dram"
size = "256MiB"

[[node]]
id = 5
type = "pmem"
size = "512MiB"
"""
# peer_node (rows/columns are nodes 0, 1, 2, 5):
#   node 0: candidates 1 (20), 2 (20), 5 (30): tie at 20, lowest id   -> 1   chosen {1}
#   node 1: candidates 0 (20), 2 (15), 5 (30)                         -> 2   chosen {1,2}
#   node 2: 1 (15) would be nearest but is chosen; 0 (20), 5 (30)    -> 0   chosen {0,1,2}
#   node 5: 0, 1, 2 are all chosen                                    -> -1
# Node types are ignored: dram 0 -> dram 1, and the pmem node gets no peer at all.

WIDE = """
distances = [
  [10, 21, 17],
  [21, 10, 28],
  [17, 28, 10],
]

[[node]]
type = "dram"
size = "1GiB"
cpus = "0-25,52-77"

[[node]]
type = "dram"
size = "1GiB"
cpus = "26-51,78-103"

[[node]]
type = "pmem"
size = "2GiB"
"""
# peer_node:
#   node 0: candidates 1 (21), 2 (17)       -> 2   chosen {2}
#   node 1: candidate 0 (21); 2 is chosen   -> 0   chosen {0,2}
#   node 2: candidate 1 (28); 0 is chosen   -> 1
# cpumap over nr_cpu_ids = 104 bits: 104 mod 32 = 8 -> first group 2 digits, then 3 x 8.
#   node 0, bits 0-25 and 52-77:
#     bits 96-103: none             -> 00
#     bits 64-95:  64-77 = bits 0-13  -> 00003fff
#     bits 32-63:  52-63 = bits 20-31 -> fff00000
#     bits 0-31:   0-25               -> 03ffffff
#   node 1, bits 26-51 and 78-103:
#     bits 96-103: all              -> ff
#     bits 64-95:  78-95 = bits 14-31 -> ffffc000
#     bits 32-63:  32-51 = bits 0-19  -> 000fffff
#     bits 0-31:   26-31              -> fc000000
#   (each group of node 0 OR node 1 is all ones)

NOZERO = """
distances = [
  [10, 20],
  [20, 10],
]

[[node]]
id = 1
type = "dram"
size = "256MiB"
cpus = "0-1"

[[node]]
id = 3
type = "pmem"
size = "256MiB"
"""
# peer_node: node 1: candidate 3 (20) -> 3, chosen {3}; node 3: candidate 1 (20) -> 1.
# distance: node_read_distance() writes " " before every node but node 0.


@pytest.fixture(scope="module")
def rfc():
    with mounted(RFC) as m:
        yield m


@pytest.fixture(scope="module")
def sparse():
    with mounted(SPARSE) as m:
        yield m


@pytest.fixture(scope="module")
def wide():
    with mounted(WIDE) as m:
        yield m


@pytest.fixture(scope="module")
def nozero():
    with mounted(NOZERO) as m:
        yield m


def _files(machine: str, table: dict[str, str]) -> list:
    return [pytest.param(machine, rel, want, id=f"{machine}:{rel}") for rel, want in table.items()]


EXPECTED = (
    _files("rfc", {
        "possible": "0-3\n", "online": "0-3\n", "has_normal_memory": "0-3\n",
        "has_memory": "0-3\n", "has_cpu": "0-1\n",
        "node0/type": "dram\n", "node1/type": "dram\n",
        "node2/type": "pmem\n", "node3/type": "pmem\n",
        "node0/peer_node": "2\n", "node1/peer_node": "3\n",
        "node2/peer_node": "0\n", "node3/peer_node": "1\n",
        # 4 CPUs: one group of ceil(4 / 4) = 1 digit
        "node0/cpumap": "3\n", "node1/cpumap": "c\n",
        "node2/cpumap": "0\n", "node3/cpumap": "0\n",
        "node0/cpulist": "0-1\n", "node1/cpulist": "2-3\n",
        "node2/cpulist": "\n", "node3/cpulist": "\n",
        "node0/distance": "10 21 17 28\n", "node1/distance": "21 10 28 17\n",
        "node2/distance": "17 28 10 28\n", "node3/distance": "28 17 28 10\n",
    })
    + _files("sparse", {
        "possible": "0-2,5\n", "online": "0-2,5\n", "has_normal_memory": "0-2,5\n",
        "has_memory": "0-2,5\n", "has_cpu": "0-1\n",
        "node0/type": "dram\n", "node1/type": "dram\n",
        "node2/type": "dram\n", "node5/type": "pmem\n",
        "node0/peer_node": "1\n", "node1/peer_node": "2\n",
        "node2/peer_node": "0\n", "node5/peer_node": "-1\n",
        # nr_cpu_ids = 2: one digit
        "node0/cpumap": "1\n", "node1/cpumap": "2\n",
        "node2/cpumap": "0\n", "node5/cpumap": "0\n",
        "node0/cpulist": "0\n", "node1/cpulist": "1\n",
        "node2/cpulist": "\n", "node5/cpulist": "\n",
        "node0/distance": "10 20 20 30\n", "node1/distance": "20 10 15 30\n",
        "node2/distance": "20 15 10 30\n", "node5/distance": "30 30 30 10\n",
    })
    + _files("wide", {
        "possible": "0-2\n", "online": "0-2\n", "has_normal_memory": "0-2\n",
        "has_memory": "0-2\n", "has_cpu": "0-1\n",
        "node0/type": "dram\n", "node1/type": "dram\n", "node2/type": "pmem\n",
        "node0/peer_node": "2\n", "node1/peer_node": "0\n", "node2/peer_node": "1\n",
        "node0/cpumap": "00,00003fff,fff00000,03ffffff\n",
        "node1/cpumap": "ff,ffffc000,000fffff,fc000000\n",
        "node2/cpumap": "00,00000000,00000000,00000000\n",
        "node0/cpulist": "0-25,52-77\n", "node1/cpulist": "26-51,78-103\n",
        "node2/cpulist": "\n",
        "node0/distance": "10 21 17\n", "node1/distance": "21 10 28\n",
        "node2/distance": "17 28 10\n",
    })
    + _files("nozero", {
        "possible": "1,3\n", "online": "1,3\n", "has_normal_memory": "1,3\n",
        "has_memory": "1,3\n", "has_cpu": "1\n",
        "node1/type": "dram\n", "node3/type": "pmem\n",
        "node1/peer_node": "3\n", "node3/peer_node": "1\n",
        "node1/cpumap": "3\n", "node3/cpumap": "0\n",
        "node1/cpulist": "0-1\n", "node3/cpulist": "\n",
        "node1/distance": " 10 20\n", "node3/distance": " 20 10\n",
    })
)


@pytest.mark.parametrize("machine,rel,want", EXPECTED)
def test_node_file(request, machine, rel, want):
    m = request.getfixturevalue(machine)
    assert m.read(f"{NODE}/{rel}").decode() == want


@pytest.mark.parametrize("machine,nodes", [
    ("rfc", ["node0", "node1", "node2", "node3"]),
    ("sparse", ["node0", "node1", "node2", "node5"]),
    ("wide", ["node0", "node1", "node2"]),
    ("nozero", ["node1", "node3"]),
])
def test_node_directories_and_bus_links(request, machine, nodes):
    m = request.getfixturevalue(machine)
    root = m.path / NODE
    assert sorted(n for n in os.listdir(root) if n.startswith("node")) == nodes
    bus = m.sys("bus/node/devices")
    assert sorted(os.listdir(bus)) == nodes
    for n in nodes:
        assert os.readlink(bus / n) == f"../../../devices/system/node/{n}"
        assert os.path.samefile(bus / n, root / n)
        assert os.readlink(root / n / "subsystem") == "../../../../bus/node"
        assert os.path.samefile(root / n / "subsystem", m.sys("bus/node"))


def test_absent_nodes_do_not_exist(sparse):
    for name in ("node3", "node4", "node6", "node05", "node-1"):
        assert not os.path.lexists(sparse.path / NODE / name)
        assert not os.path.lexists(sparse.sys("bus/node/devices") / name)


ZERO_NUMASTAT = ("numa_hit 0\nnuma_miss 0\nnuma_foreign 0\n"
                 "interleave_hit 0\nlocal_node 0\nother_node 0\n")


@pytest.mark.parametrize("machine,node", [("rfc", 0), ("rfc", 3), ("sparse", 5), ("wide", 1)])
def test_numastat_of_an_idle_node(request, machine, node):
    m = request.getfixturevalue(machine)
    assert m.read(f"{NODE}/node{node}/numastat").decode() == ZERO_NUMASTAT


# Whole files: the RFC machine's node 0 (512 MiB = 524288 kB) and node 2 (1 GiB = 1048576
# kB), nothing allocated. Each label `Key:` is padded to 16 columns, then %8lu kB; the
# HugePages lines pad `Key:` to 17 columns, then %5u.
RFC_NODE0_MEMINFO = """\
Node 0 MemTotal:         524288 kB
Node 0 MemFree:          524284 kB
Node 0 MemUsed:               4 kB
Node 0 Active:                0 kB
Node 0 Inactive:              0 kB
Node 0 Active(anon):          0 kB
Node 0 Inactive(anon):        0 kB
Node 0 Active(file):          0 kB
Node 0 Inactive(file):        0 kB
Node 0 Unevictable:           0 kB
Node 0 Mlocked:               0 kB
Node 0 Dirty:                 0 kB
Node 0 Writeback:             0 kB
Node 0 FilePages:             0 kB
Node 0 Mapped:                0 kB
Node 0 AnonPages:             0 kB
Node 0 Shmem:                 0 kB
Node 0 KernelStack:           0 kB
Node 0 PageTables:            0 kB
Node 0 NFS_Unstable:          0 kB
Node 0 Bounce:                0 kB
Node 0 WritebackTmp:          0 kB
Node 0 KReclaimable:          0 kB
Node 0 Slab:                  0 kB
Node 0 SReclaimable:          0 kB
Node 0 SUnreclaim:            0 kB
Node 0 AnonHugePages:         0 kB
Node 0 ShmemHugePages:        0 kB
Node 0 ShmemPmdMapped:        0 kB
Node 0 HugePages_Total:     0
Node 0 HugePages_Free:      0
Node 0 HugePages_Surp:      0
"""

RFC_NODE2_MEMINFO = """\
Node 2 MemTotal:        1048576 kB
Node 2 MemFree:         1048576 kB
Node 2 MemUsed:               0 kB
Node 2 Active:                0 kB
Node 2 Inactive:              0 kB
Node 2 Active(anon):          0 kB
Node 2 Inactive(anon):        0 kB
Node 2 Active(file):          0 kB
Node 2 Inactive(file):        0 kB
Node 2 Unevictable:           0 kB
Node 2 Mlocked:               0 kB
Node 2 Dirty:                 0 kB
Node 2 Writeback:             0 kB
Node 2 FilePages:             0 kB
Node 2 Mapped:                0 kB
Node 2 AnonPages:             0 kB
Node 2 Shmem:                 0 kB
Node 2 KernelStack:           0 kB
Node 2 PageTables:            0 kB
Node 2 NFS_Unstable:          0 kB
Node 2 Bounce:                0 kB
Node 2 WritebackTmp:          0 kB
Node 2 KReclaimable:          0 kB
Node 2 Slab:                  0 kB
Node 2 SReclaimable:          0 kB
Node 2 SUnreclaim:            0 kB
Node 2 AnonHugePages:         0 kB
Node 2 ShmemHugePages:        0 kB
Node 2 ShmemPmdMapped:        0 kB
Node 2 HugePages_Total:     0
Node 2 HugePages_Free:      0
Node 2 HugePages_Surp:      0
"""


def test_meminfo_whole_file_of_idle_nodes(rfc):
    assert rfc.read(f"{NODE}/node0/meminfo").decode() == RFC_NODE0_MEMINFO
    assert rfc.read(f"{NODE}/node2/meminfo").decode() == RFC_NODE2_MEMINFO


def test_meminfo_sizes_on_every_node(rfc, sparse, wide):
    # the first two lines of each node: MemTotal = MemFree = the node's size in kB,
    # but on node 0, where PFN 0 is reserved at boot (4 kB used)
    cases = [(rfc, 1, 524288), (rfc, 3, 1048576), (sparse, 2, 262144), (sparse, 5, 524288),
             (wide, 0, 1048576), (wide, 2, 2097152)]
    for m, nid, kb in cases:
        lines = m.read(f"{NODE}/node{nid}/meminfo").decode().splitlines()
        used = 4 if nid == 0 else 0
        assert lines[0] == f"Node {nid} MemTotal:       {kb:8d} kB"
        assert lines[1] == f"Node {nid} MemFree:        {kb - used:8d} kB"
        assert lines[2] == f"Node {nid} MemUsed:        {used:8d} kB"
        assert len(lines) == 32


# The RFC machine's node 2 (1 GiB = 262144 free pages): the keys in the order of 2.2,
# zone counters, NUMA counters, node counters.
RFC_NODE2_VMSTAT = """\
nr_free_pages 262144
nr_zone_inactive_anon 0
nr_zone_active_anon 0
nr_zone_inactive_file 0
nr_zone_active_file 0
nr_zone_unevictable 0
nr_zone_write_pending 0
nr_mlock 0
nr_page_table_pages 0
nr_kernel_stack 0
nr_bounce 0
nr_zspages 0
nr_free_cma 0
numa_hit 0
numa_miss 0
numa_foreign 0
numa_interleave 0
numa_local 0
numa_other 0
nr_inactive_anon 0
nr_active_anon 0
nr_inactive_file 0
nr_active_file 0
nr_unevictable 0
nr_slab_reclaimable 0
nr_slab_unreclaimable 0
nr_isolated_anon 0
nr_isolated_file 0
workingset_nodes 0
workingset_refault 0
workingset_activate 0
workingset_restore 0
workingset_nodereclaim 0
nr_anon_pages 0
nr_mapped 0
nr_file_pages 0
nr_dirty 0
nr_writeback 0
nr_writeback_temp 0
nr_shmem 0
nr_shmem_hugepages 0
nr_shmem_pmdmapped 0
nr_anon_transparent_hugepages 0
nr_unstable 0
nr_vmscan_write 0
nr_vmscan_immediate_reclaim 0
nr_dirtied 0
nr_written 0
nr_kernel_misc_reclaimable 0
"""


def test_vmstat_whole_file_of_an_idle_node(rfc):
    assert rfc.read(f"{NODE}/node2/vmstat").decode() == RFC_NODE2_VMSTAT


@pytest.mark.parametrize("machine", ["rfc", "sparse", "wide"])
def test_vmstat_has_the_keys_the_daemon_needs(request, machine):
    m = request.getfixturevalue(machine)
    for n in (n for n in os.listdir(m.path / NODE) if n.startswith("node")):
        text = m.read(f"{NODE}/{n}/vmstat").decode()
        keys = [line.split(" ")[0] for line in text.splitlines()]
        for k in ("nr_free_pages", "nr_active_anon", "nr_inactive_anon",
                  "nr_anon_transparent_hugepages"):
            assert keys.count(k) == 1, (n, k)
        # every line is "name value"
        assert all(len(line.split(" ")) == 2 and line.split(" ")[1].isdigit()
                   for line in text.splitlines())


@pytest.mark.parametrize("machine,nid", [("rfc", 0), ("rfc", 3), ("sparse", 5), ("wide", 2)])
def test_hugepages_files(request, machine, nid):
    m = request.getfixturevalue(machine)
    hp = m.path / NODE / f"node{nid}" / "hugepages"
    assert sorted(os.listdir(hp)) == ["hugepages-1048576kB", "hugepages-2048kB"]
    for size in ("hugepages-2048kB", "hugepages-1048576kB"):
        assert sorted(os.listdir(hp / size)) == ["free_hugepages", "nr_hugepages",
                                                 "surplus_hugepages"]
        for f, mode in (("nr_hugepages", 0o644), ("free_hugepages", 0o444),
                        ("surplus_hugepages", 0o444)):
            assert m.read(f"{NODE}/node{nid}/hugepages/{size}/{f}") == b"0\n"
            assert stat.S_IMODE(os.stat(hp / size / f).st_mode) == mode


@pytest.mark.parametrize("machine,nid,cpus", [
    ("rfc", 0, [0, 1]), ("rfc", 1, [2, 3]), ("rfc", 2, []), ("rfc", 3, []),
    ("sparse", 0, [0]), ("sparse", 1, [1]), ("sparse", 2, []), ("sparse", 5, []),
    ("wide", 0, [*range(0, 26), *range(52, 78)]), ("wide", 1, [*range(26, 52), *range(78, 104)]),
    ("wide", 2, []),
])
def test_cpu_links(request, machine, nid, cpus):
    m = request.getfixturevalue(machine)
    d = m.path / NODE / f"node{nid}"
    links = sorted((n for n in os.listdir(d) if n.startswith("cpu") and n[3:].isdigit()),
                   key=lambda n: int(n[3:]))
    assert links == [f"cpu{c}" for c in cpus]
    for c in cpus:
        assert os.readlink(d / f"cpu{c}") == f"../../cpu/cpu{c}"
        assert os.path.samefile(d / f"cpu{c}", m.sys(f"devices/system/cpu/cpu{c}"))


def test_cpu_tree_of_the_wide_machine(wide):
    assert wide.read("sys/devices/system/cpu/possible") == b"0-103\n"
    assert wide.read("sys/devices/system/cpu/online") == b"0-103\n"
    cpus = [n for n in os.listdir(wide.sys("devices/system/cpu"))
            if n.startswith("cpu") and n[3:].isdigit()]
    assert len(cpus) == 104


def test_memory_block_links(rfc):
    # 3 GiB in all (< 64 GiB): 128 MiB blocks; the nodes lie back to back in id order:
    # node 0 = blocks 0-3, node 1 = 4-7, node 2 = 8-15, node 3 = 16-23
    assert rfc.read("sys/devices/system/memory/block_size_bytes") == b"8000000\n"
    for nid, blocks in ((0, range(0, 4)), (1, range(4, 8)), (2, range(8, 16)), (3, range(16, 24))):
        d = rfc.path / NODE / f"node{nid}"
        names = sorted((n for n in os.listdir(d) if n.startswith("memory")), key=lambda n: int(n[6:]))
        assert names == [f"memory{b}" for b in blocks]
        for b in blocks:
            assert os.readlink(d / f"memory{b}") == f"../../memory/memory{b}"
            assert os.path.samefile(d / f"memory{b}", rfc.sys(f"devices/system/memory/memory{b}"))


SPANNING = """
[[node]]
type = "dram"
size = "100MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "156MiB"
"""


def test_a_block_across_a_node_boundary_links_to_both_nodes():
    """register_mem_sect_under_node() links a block to every node with a page in it:
    node 0 is [0, 100 MiB), node 1 [100, 256 MiB); block 0 [0, 128 MiB) holds pages of
    both, block 1 [128, 256 MiB) of node 1 only."""
    with mounted(SPANNING) as m:
        def links(d: str, prefix: str) -> dict[str, str]:
            path = m.path / d
            return {n: os.readlink(path / n) for n in sorted(os.listdir(path)) if n.startswith(prefix)}
        assert links(f"{NODE}/node0", "memory") == {"memory0": "../../memory/memory0"}
        assert links(f"{NODE}/node1", "memory") == {"memory0": "../../memory/memory0",
                                                    "memory1": "../../memory/memory1"}
        mem = "sys/devices/system/memory"
        assert links(f"{mem}/memory0", "node") == {"node0": "../../node/node0",
                                                   "node1": "../../node/node1"}
        assert links(f"{mem}/memory1", "node") == {"node1": "../../node/node1"}
        assert os.path.samefile(m.path / mem / "memory0/node1", m.path / NODE / "node1")
        assert not os.path.lexists(m.path / mem / "memory1/node0")
        # sysfs and procfs symlinks stat size 0 (the kernel never sets i_size on them)
        assert os.lstat(m.path / mem / "memory0/node1").st_size == 0
        assert os.lstat(m.path / NODE / "node0/subsystem").st_size == 0
        # show_valid_zones(): an online block in one zone names it, across two "none";
        # arch_get_memory_phys_device() is 0 on x86
        assert m.read(f"{mem}/memory0/valid_zones") == b"none\n"
        assert m.read(f"{mem}/memory1/valid_zones") == b"Normal\n"
        assert m.read(f"{mem}/memory1/phys_device") == b"0\n"


def test_node_directory_listing(rfc):
    # 2.2: the attributes, hugepages/, power/, subsystem, uevent, compact, and the links
    names = set(os.listdir(rfc.path / NODE / "node2"))
    fixed = {"type", "peer_node", "cpumap", "cpulist", "distance", "numastat", "meminfo",
             "vmstat", "hugepages", "compact", "power", "subsystem", "uevent"}
    assert fixed <= names
    assert names - fixed == {f"memory{b}" for b in range(8, 16)}
    assert not {"access0", "has_generic_initiator"} & names
    root = set(os.listdir(rfc.path / NODE))
    assert root == {"possible", "online", "has_normal_memory", "has_memory", "has_cpu",
                    "uevent", "power", "node0", "node1", "node2", "node3"}
