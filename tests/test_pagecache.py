"""/sys/devices/system served from the host kernel's page cache without OPEN
(fs/sysmount.py): fixed attributes (the topology, fs/pagecache.py) with no request at
all, changing ones with one LOOKUP per open and a READ only when their bytes changed,
every open seeing one whole rendering.

Expected values are worked out by hand from the machine below: one 64 MiB DRAM node
(16384 pages) with CPU 0, idle at boot (all of it free but PFN 0, which x86 reserves:
16383 pages, every other counter 0), and a
process the tests spawn or kill whose 40 MiB VMA (10240 pages) is populated.
"""
from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from fakeproc.ctl.client import Client
from fakeproc.fs.server import make_root
from fakeproc.fs.tree import Ctx, Dir, File, list_children
from fakeproc.machine import load_default
from fsops import refused_access
from mountutil import mounted

pytestmark = pytest.mark.fuse

NODE0 = "sys/devices/system/node/node0"
MACHINE = """
[machine]
upstream = true

[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
"""
FILLER = {"pid": 100, "name": "filler",
          "vma": [{"start": 0x7F0000000000, "size": "40MiB", "populate": True}]}


@pytest.fixture
def mnt():
    with mounted(MACHINE) as m:
        yield m


def requests(m) -> dict[str, int]:
    with Client(m.path) as c:
        return c.call("fs_requests")


def spawn_filler(m) -> None:
    with Client(m.path) as c:
        c.call("spawn", **FILLER)


def kill_filler(m) -> None:
    with Client(m.path) as c:
        c.call("kill", pid=100)


def vmstat(data: bytes) -> dict[str, str]:
    text = data.decode()
    assert text.endswith("\n") and "\0" not in text
    pairs = [line.split(" ") for line in text.splitlines()]
    assert all(len(p) == 2 and p[1].isdigit() for p in pairs), text
    return dict(pairs)


def test_a_fixed_attribute_is_read_once(mnt):
    before = requests(mnt)
    for _ in range(3):
        assert mnt.read(f"{NODE0}/cpulist") == b"0\n"
    after = requests(mnt)
    assert after.get("open", 0) == before.get("open", 0)  # no OPEN reaches the server
    assert after["read"] - before.get("read", 0) == 1  # then the page cache answers


def test_attributes_stat_their_length(mnt):
    """INTERFACES.md 2: sysfs files stat 4096 "where the FUSE read path allows it"; the
    page-cache path stops at the size, so each attribute has its rendering's length
    (meminfo: 29 lines; vmstat: 54 "name value" lines, the values all 0 but
    nr_free_pages 16383 at boot); /sys/bus/node stays on direct_io at 4096."""
    for rel, length in (("cpulist", 2), ("cpumap", 2), ("distance", 3), ("type", 5),
                        ("peer_node", 3), ("meminfo", None), ("vmstat", None)):
        path = mnt.sys(f"devices/system/node/node0/{rel}")
        for _ in range(2):  # before and after a read
            data = mnt.read(f"{NODE0}/{rel}")
            assert os.stat(path).st_size == len(data), rel
            assert length is None or len(data) == length, rel
    vm = mnt.read(f"{NODE0}/vmstat")
    assert vm.startswith(b"nr_free_pages 16383\nnr_zone_inactive_anon 0\n")
    assert os.stat(mnt.sys("bus/node/devices/node0/cpulist")).st_size == 2  # the same file
    assert os.stat(mnt.sys("bus/node/drivers_autoprobe")).st_size == 4096
    assert os.stat(mnt.sys("devices/system/node/online")).st_size == 2          # "0\n"
    assert os.stat(mnt.sys("devices/system/cpu/kernel_max")).st_size == 5       # "8191\n"


def test_a_changing_attribute_is_read_from_the_server_every_time(mnt):
    before = requests(mnt)
    first = vmstat(mnt.read(f"{NODE0}/vmstat"))
    assert (first["nr_free_pages"], first["nr_anon_pages"]) == ("16383", "0")
    spawn_filler(mnt)
    second = vmstat(mnt.read(f"{NODE0}/vmstat"))
    assert second["nr_anon_pages"] == "10240"  # 1 digit became 5: the file grew
    free = int(second["nr_free_pages"])
    assert 16383 - 10240 - 64 < free < 16383 - 10240  # the VMA and its page tables
    assert second.keys() == first.keys()
    kill_filler(mnt)
    assert vmstat(mnt.read(f"{NODE0}/vmstat"))["nr_free_pages"] == "16383"
    assert requests(mnt)["read"] - before.get("read", 0) >= 3


def test_concurrent_readers_and_stat_see_whole_renderings(mnt):
    """The regression a review found in a first design that cached changing attributes
    too: with stat and a spawn/kill loop running beside them, readers got the bytes
    followed by NULs, or a cut-off or mixed rendering. Every read here must be one whole
    rendering (well-formed vmstat; cpulist exactly "0\\n")."""
    vm = str(mnt.sys("devices/system/node/node0/vmstat"))
    cl = str(mnt.sys("devices/system/node/node0/cpulist"))
    nkeys = len(vmstat(mnt.read(f"{NODE0}/vmstat")))
    stop, bad, reads = threading.Event(), [], [0]

    def flipper() -> None:
        with Client(mnt.path) as c:
            while not stop.is_set():
                c.call("spawn", **FILLER)
                c.call("kill", pid=100)

    def opener(path: str) -> None:
        while not stop.is_set():
            fd = os.open(path, os.O_RDONLY)
            try:
                data = os.read(fd, 4096)
                data += os.read(fd, 4096)
            finally:
                os.close(fd)
            reads[0] += 1
            try:
                ok = data == b"0\n" if path == cl else len(vmstat(data)) == nkeys
            except AssertionError:
                ok = False
            if not ok:
                bad.append(data)

    def held(path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            while not stop.is_set():
                data = os.pread(fd, 4096, 0)
                if path == cl and data != b"0\n":
                    bad.append(data)
        finally:
            os.close(fd)

    def statter() -> None:
        while not stop.is_set():
            os.stat(vm)
            os.stat(cl)

    threads = [threading.Thread(target=flipper), threading.Thread(target=statter),
               threading.Thread(target=held, args=(cl,))]
    threads += [threading.Thread(target=opener, args=(p,)) for p in (vm, vm, cl, cl)]
    for t in threads:
        t.start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(30)
    assert reads[0] > 100
    assert not bad, (len(bad), bad[:3])


def test_writing_a_cached_attribute_is_still_refused(mnt):
    path = str(mnt.sys("devices/system/node/node0/cpulist"))
    assert mnt.read(f"{NODE0}/cpulist") == b"0\n"  # cached now
    for flags in (os.O_WRONLY, os.O_RDWR):
        assert refused_access(path, flags) == errno.EACCES
    assert mnt.read(f"{NODE0}/cpulist") == b"0\n"


def test_a_changing_attribute_costs_one_lookup_per_open_and_a_read_per_change(mnt):
    path = mnt.sys("devices/system/node/node0/meminfo")
    first = path.read_bytes()
    before = requests(mnt)
    for _ in range(5):
        assert path.read_bytes() == first
    mid = requests(mnt)
    delta = {k: mid.get(k, 0) - before.get(k, 0) for k in ("lookup", "read", "open", "getattr")}
    assert delta == {"lookup": 5, "read": 0, "open": 0, "getattr": 0}, delta
    spawn_filler(mnt)
    second = path.read_bytes()
    # 40 MiB populated: 40960 kB, plus its page tables: 20 PTE pages (one per 2 MiB)
    # and one each of PMD, PUD and PGD, 23 pages of 4 kB, and PFN 0: 41056 kB used
    assert b"Node 0 MemFree:           24480 kB\nNode 0 MemUsed:           41056 kB\n" in second
    assert b"Node 0 MemFree:           65532 kB\nNode 0 MemUsed:               4 kB\n" in first
    after = requests(mnt)
    assert after["read"] - mid["read"] == 1


def test_an_open_file_keeps_its_rendering_and_a_new_open_sees_the_change(mnt):
    """kernfs renders once per open (seq_file): reads through a held descriptor, in
    any number of pieces, come from the rendering taken at its open; st_ino stays the
    path's while the host's inode (a new rendering) changes."""
    path = mnt.sys("devices/system/node/node0/vmstat")
    fd = os.open(path, os.O_RDONLY)
    try:
        head = os.read(fd, 7)
        assert head == b"nr_free"
        ino = os.fstat(fd).st_ino
        spawn_filler(mnt)
        fresh = path.read_bytes()
        assert vmstat(fresh)["nr_anon_pages"] == "10240"
        rest = b""
        while chunk := os.read(fd, 10):
            rest += chunk
        old = head + rest
        assert vmstat(old)["nr_anon_pages"] == "0" and vmstat(old)["nr_free_pages"] == "16383"
        assert len(old) == os.fstat(fd).st_size != len(fresh)
        assert os.pread(fd, 4096, 0) == old
        assert os.stat(path).st_ino == ino
    finally:
        os.close(fd)


def test_writable_attributes_stay_direct(mnt):
    """A write through the page cache would leave the writer's bytes in it: "1" over
    a cached "false\\n" would read back "1alse\\n"."""
    rel = "sys/kernel/mm/numa/demotion_enabled"
    for value, want in ((b"1", b"true\n"), (b"0", b"false\n"), (b"1", b"true\n")):
        before = requests(mnt)
        fd = os.open(mnt.path / rel, os.O_WRONLY)
        try:
            assert os.write(fd, value) == 1
        finally:
            os.close(fd)
        assert mnt.read(rel) == want
        assert requests(mnt)["read"] - before.get("read", 0) >= 1  # read by the server


def fixed_files(kernel) -> dict[tuple[str, ...], str]:
    """Every File marked fixed under /sys, by path, rendered now."""
    out: dict[tuple[str, ...], str] = {}

    def walk(d: Dir, ctx: Ctx, path: tuple[str, ...]) -> None:
        for name, entry, c in list_children(d, ctx):
            if isinstance(entry, Dir) and path + (name,) != ("proc",):
                walk(entry, c, path + (name,))
            elif isinstance(entry, File) and entry.fixed:
                out[path + (name,)] = entry.render(c)

    walk(make_root(None), Ctx(kernel), ())
    return out


def test_fixed_attributes_do_not_change_while_the_kernel_runs():
    """What File.fixed promises (the page cache never invalidates them): the default
    machine's ~700 fixed attributes render the same after its workloads run, reclaim
    scans every node, kswapd runs and processes end."""
    kernel = load_default()
    before = fixed_files(kernel)
    assert {p[-1] for p in before} >= {"cpulist", "distance", "peer_node", "core_siblings_list"}
    kernel.advance(5.0)
    for node in kernel.nodes:
        kernel.shrink_node(node.id, 1000)
    kernel.run_kswapd()
    for pid in list(kernel.tasks)[:2]:
        kernel.exit(pid)
    kernel.advance(5.0)
    assert fixed_files(kernel) == before


def test_a_write_leaves_no_bytes_in_the_page_cache(mnt):
    """The host copies written bytes into its page of the file; kernfs keeps none.
    nr_hugepages is always 0 here (no hugetlb pool), so "1\\n" written over a cached
    "0\\n" must not be read back, neither by a new open nor through the writer's own
    descriptor (which shows its open's rendering)."""
    rel = f"{NODE0}/hugepages/hugepages-2048kB/nr_hugepages"
    path = mnt.path / rel
    assert mnt.read(rel) == b"0\n"  # cached now
    fd = os.open(path, os.O_RDWR)
    try:
        assert os.pread(fd, 4096, 0) == b"0\n"
        assert os.write(fd, b"1\n") == 2
        assert os.pread(fd, 4096, 0) == b"0\n"
        assert mnt.read(rel) == b"0\n"
    finally:
        os.close(fd)
    for _ in range(3):
        assert mnt.read(rel) == b"0\n"


def test_a_changing_attribute_made_unreadable_is_refused_to_root(mnt):
    path = mnt.sys("devices/system/node/node0/meminfo")
    assert path.read_bytes().startswith(b"Node 0 MemTotal:")  # cached now
    os.chmod(path, 0o200)
    try:
        assert refused_access(path, os.O_RDONLY) == errno.EACCES
    finally:
        os.chmod(path, 0o444)
    assert path.read_bytes().startswith(b"Node 0 MemTotal:")
