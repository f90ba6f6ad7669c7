"""Real tools read the emulated machine (INTERFACES.md 2.3): numactl, numastat, lscpu, hwloc.

numactl/numastat (libnuma) only read fixed paths, so they run in a private mount
namespace with the mount's node tree bound over /sys/devices/system/node (never
touching the host's tree). lscpu and hwloc take another root (--sysroot, HWLOC_FSROOT).
Expected values are worked out by hand from the machine below.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from mountutil import mounted

pytestmark = [pytest.mark.fuse, pytest.mark.tools]

NODE = "sys/devices/system/node"

MACHINE = """
distances = [
  [10, 21, 17, 28],
  [21, 10, 28, 17],
  [17, 28, 10, 28],
  [28, 17, 28, 10],
]

[[node]]
type = "dram"
size = "1GiB"
cpus = "0-19"

[[node]]
type = "dram"
size = "1GiB"
cpus = "20-39"

[[node]]
type = "pmem"
size = "2GiB"

[[node]]
type = "pmem"
size = "2GiB"

[[process]]
pid = 5000
name = "on-node0"
cpu = 0
[[process.vma]]
start = 0x7f0000000000
size = "4MiB"
pages = "1000 dirty"

[[process]]
pid = 5001
name = "on-node1"
cpu = 20
[[process.vma]]
start = 0x7f0000000000
size = "2MiB"
pages = "300 accessed"
[[process.vma]]
start = 0x7f0000200000
size = "4MiB"
thp = true
node = 3
pages = "2 thp-accessed"
"""
# Free memory by hand (pages of 4 KiB; MB = kB // 1024, as numactl prints free >> 20):
#   node 0: 262144 - 1000 - 5 tables (PGD, PUD, PMD, 2 PTE: the 1000 pages span two
#           2 MiB regions) = 261139 pages = 1044556 kB -> 1020 MB
#   node 1: 262144 - 300 - 6 tables (PGD, PUD, PMD, PTE, and a page table deposited
#           with each THP's PMD, from the task's node) = 261838 pages = 1047352 kB
#           -> 1022 MB
#   node 2: untouched: 2048 MB
#   node 3: 524288 - 2 THPs (1024) = 523264 pages = 2093056 kB -> 2044 MB
# NUMA: the two THPs of on-node1 (preferred node 1) land on node 3: numa_miss 2 and
# other_node 2 on node 3, numa_foreign 2 on node 1; nothing else misses.
SIZES_MB = [1024, 1024, 2048, 2048]
FREE_MB = [1020, 1022, 2048, 2044]
CPUS = [list(range(0, 20)), list(range(20, 40)), [], []]
DIST = [[10, 21, 17, 28], [21, 10, 28, 17], [17, 28, 10, 28], [28, 17, 28, 10]]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install numactl util-linux hwloc-nox)")
    return path


@pytest.fixture(scope="module")
def m():
    with mounted(MACHINE) as mnt:
        yield mnt


def run(argv: list[str], env: dict[str, str] | None = None) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                       env=None if env is None else {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env})
    assert r.returncode == 0, f"{shlex.join(argv)} exited {r.returncode}: {r.stderr}"
    return r.stdout


def with_node_tree(m, command: str) -> str:
    """Run `command` with the mount's node tree over /sys/devices/system/node, in a
    private mount namespace (the host's tree is never touched)."""
    need("unshare")
    src = shlex.quote(str(m.sys("devices/system/node")))
    return run(["unshare", "-m", "sh", "-c",
                f"mount --make-rprivate / && mount --bind {src} /sys/devices/system/node"
                f" && exec {command}"])


def node_memfree_kb(m, nid: int) -> int:
    for line in m.read(f"{NODE}/node{nid}/meminfo").decode().splitlines():
        if line.startswith(f"Node {nid} MemFree:"):
            return int(line.split()[3])
    raise AssertionError("no MemFree line")


def node_numastat(m, nid: int) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in
                                   m.read(f"{NODE}/node{nid}/numastat").decode().splitlines())}


# ------------------------------------------------------------------------ numactl


def test_numactl_hardware(m):
    need("numactl")
    out = with_node_tree(m, "numactl --hardware")
    lines = out.splitlines()
    assert lines[0] == "available: 4 nodes (0-3)"
    for nid in range(4):
        cpus = re.search(rf"^node {nid} cpus:(.*)$", out, re.M).group(1).split()
        assert [int(c) for c in cpus] == CPUS[nid]
        size = int(re.search(rf"^node {nid} size: (\d+) MB$", out, re.M).group(1))
        free = int(re.search(rf"^node {nid} free: (\d+) MB$", out, re.M).group(1))
        assert size == SIZES_MB[nid]
        assert free == FREE_MB[nid]
        assert free == node_memfree_kb(m, nid) // 1024  # the emulated node's MemFree
    i = lines.index("node distances:")
    assert lines[i + 1].split() == ["node", "0", "1", "2", "3"]
    matrix = [lines[i + 2 + r].split() for r in range(4)]
    assert [row[0] for row in matrix] == ["0:", "1:", "2:", "3:"]
    assert [[int(x) for x in row[1:]] for row in matrix] == DIST


def test_numastat_table(m):
    need("numastat")
    out = with_node_tree(m, "numastat")
    lines = out.splitlines()
    assert lines[0].split() == ["node0", "node1", "node2", "node3"]
    table = {row.split()[0]: [int(x) for x in row.split()[1:]] for row in lines[1:]}
    assert list(table) == ["numa_hit", "numa_miss", "numa_foreign", "interleave_hit",
                           "local_node", "other_node"]
    # by hand: only the THPs on node 3 missed
    assert table["numa_miss"] == [0, 0, 0, 2]
    assert table["numa_foreign"] == [0, 2, 0, 0]
    assert table["other_node"] == [0, 0, 0, 2]
    assert table["interleave_hit"] == [0, 0, 0, 0]
    assert table["numa_hit"][2:] == [0, 0]
    assert table["numa_hit"][0] >= 1000 and table["numa_hit"][1] >= 300
    # every cell is the emulated counter
    for nid in range(4):
        ns = node_numastat(m, nid)
        for key, row in table.items():
            assert row[nid] == ns[key], (key, nid)


def test_numastat_meminfo(m):
    need("numastat")
    out = with_node_tree(m, "numastat -m")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.split() and line.split()[0] in ("MemTotal", "MemFree", "AnonPages")}
    # MB with two decimals per node, then the total
    assert rows["MemTotal"] == ["1024.00", "1024.00", "2048.00", "2048.00", "6144.00"]
    # 1044556 kB = 1020.07 MB, 1047352 kB = 1022.80 MB, 2093056 kB = 2044.00 MB
    assert rows["MemFree"][:4] == ["1020.07", "1022.80", "2048.00", "2044.00"]
    # 1000 pages = 3.91 MB, 300 pages = 1.17 MB, the two THPs on node 3 = 4.00 MB
    assert rows["AnonPages"][:4] == ["3.91", "1.17", "0.00", "4.00"]


# -------------------------------------------------------------------------- lscpu


def test_lscpu_summary(m):
    need("lscpu")
    data = json.loads(run(["lscpu", "-J", "--sysroot", str(m.path)]))
    fields = {e["field"].rstrip(":"): e.get("data") for e in data["lscpu"]}
    assert fields["CPU(s)"] == "40"
    assert fields["On-line CPU(s) list"] == "0-39"
    assert fields["NUMA node(s)"] == "4"
    assert fields["Socket(s)"] == "2"
    assert fields["NUMA node0 CPU(s)"] == "0-19"
    assert fields["NUMA node1 CPU(s)"] == "20-39"
    assert fields["NUMA node2 CPU(s)"] in (None, "")
    assert fields["NUMA node3 CPU(s)"] in (None, "")


def test_lscpu_per_cpu(m):
    need("lscpu")
    out = run(["lscpu", "-p=CPU,NODE,SOCKET,ONLINE", "--sysroot", str(m.path)])
    rows = [line.split(",") for line in out.splitlines() if not line.startswith("#")]
    assert [int(r[0]) for r in rows] == list(range(40))
    assert [int(r[1]) for r in rows] == [0] * 20 + [1] * 20
    assert [int(r[2]) for r in rows] == [0] * 20 + [1] * 20
    assert {r[3] for r in rows} == {"Y"}


# -------------------------------------------------------------------------- hwloc


def hwloc_xml(m) -> ET.Element:
    tool = need("lstopo-no-graphics")
    env = {"HWLOC_FSROOT": str(m.path), "HWLOC_ALLOW": "all",
           # the x86 backend would add the host's own caches from CPUID
           "HWLOC_COMPONENTS": "-x86"}
    return ET.fromstring(run([tool, "--of", "xml"], env=env))


def test_hwloc_numa_nodes_and_memory(m):
    root = hwloc_xml(m)
    nodes = {int(o.get("os_index")): o for o in root.iter("object") if o.get("type") == "NUMANode"}
    assert sorted(nodes) == [0, 1, 2, 3]
    for nid, mb in enumerate(SIZES_MB):
        assert int(nodes[nid].get("local_memory")) == mb << 20
    assert len([o for o in root.iter("object") if o.get("type") == "PU"]) == 40
    # each package holds a DRAM node and the PMEM node nearest to it (17 < 28)
    packages = [o for o in root.iter("object") if o.get("type") == "Package"]
    attached = {int(p.get("os_index")): sorted(int(c.get("os_index")) for c in p
                                               if c.get("type") == "NUMANode")
                for p in packages}
    assert attached == {0: [0, 2], 1: [1, 3]}
    pus = {int(p.get("os_index")): sorted(int(u.get("os_index")) for u in p.iter("object")
                                          if u.get("type") == "PU") for p in packages}
    assert pus == {0: CPUS[0], 1: CPUS[1]}


def test_hwloc_distances(m):
    root = hwloc_xml(m)
    dist = [d for d in root.iter("distances2") if d.get("type") == "NUMANode"]
    assert len(dist) == 1
    d = dist[0]
    assert d.get("nbobjs") == "4"
    assert d.find("indexes").text.split() == ["0", "1", "2", "3"]
    values = [int(v) for u in d.findall("u64values") for v in u.text.split()]
    assert values == [x for row in DIST for x in row]
