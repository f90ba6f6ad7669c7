"""Read-only sysfs attributes served from the host kernel's page cache (fs/pagecache.py).

An unchanged attribute costs OPEN only (its bytes come from the page cache); a changed
one must never be read stale or cut short at a cached size. Expected values are worked
out by hand from the machine below: one 64 MiB DRAM node (16384 pages), idle at boot
(all of it free, every counter 0), and a process the tests spawn or kill whose 40 MiB
VMA (10240 pages) is populated.
"""
from __future__ import annotations

import errno
import os

import pytest

from fakeproc.ctl.client import Client
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


def read_fd(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 4096):
        out += chunk
    return out


def spawn_filler(m) -> None:
    with Client(m.path) as c:
        c.call("spawn", **FILLER)


def kill_filler(m) -> None:
    with Client(m.path) as c:
        c.call("kill", pid=100)


def vmstat(data: bytes) -> dict[str, str]:
    text = data.decode()
    assert text.endswith("\n")
    return dict(line.split(" ") for line in text.splitlines())


def test_an_unchanged_attribute_is_read_once(mnt):
    before = requests(mnt)
    for _ in range(3):
        assert mnt.read(f"{NODE0}/cpulist") == b"0\n"
    after = requests(mnt)
    assert after["open"] - before.get("open", 0) == 3  # kernfs's open check runs each time
    assert after["read"] - before.get("read", 0) == 1  # then the page cache answers


def test_a_longer_rendering_is_not_cut_at_the_cached_size(mnt):
    first = vmstat(mnt.read(f"{NODE0}/vmstat"))
    assert (first["nr_free_pages"], first["nr_anon_pages"]) == ("16384", "0")
    spawn_filler(mnt)
    second = vmstat(mnt.read(f"{NODE0}/vmstat"))
    assert second["nr_anon_pages"] == "10240"  # 1 digit became 5: the file grew
    free = int(second["nr_free_pages"])
    assert 16384 - 10240 - 64 < free < 16384 - 10240  # the VMA and its page tables
    assert second.keys() == first.keys()  # nothing cut off at the end


def test_a_same_length_change_is_seen(mnt):
    def memfree() -> str:
        line = mnt.read(f"{NODE0}/meminfo").decode().splitlines()[1]
        assert line.startswith("Node 0 MemFree:")
        return line

    assert memfree() == "Node 0 MemFree:           65536 kB"
    spawn_filler(mnt)
    used = memfree()
    assert used != "Node 0 MemFree:           65536 kB" and len(used) == 34
    kill_filler(mnt)
    assert memfree() == "Node 0 MemFree:           65536 kB"


def test_a_descriptor_opened_before_a_change_reads_the_new_bytes(mnt):
    """kernfs renders at the first read, and the page cache has one copy per file: a
    descriptor opened before the change must not fill it with the old bytes."""
    path = str(mnt.sys("devices/system/node/node0/vmstat"))
    spawn_filler(mnt)
    old = os.open(path, os.O_RDONLY)
    try:
        kill_filler(mnt)
        new = os.open(path, os.O_RDONLY)
        try:
            assert vmstat(read_fd(old))["nr_free_pages"] == "16384"
            assert vmstat(read_fd(new))["nr_free_pages"] == "16384"
        finally:
            os.close(new)
    finally:
        os.close(old)


def test_stat_reports_4096_around_cached_reads(mnt):
    """Like real sysfs. A read marks the atime stale, so a full stat asks the server,
    whose 4096 replaces the length the host kernel took from the short read (and
    drops the cached page: the next read refills it)."""
    path = mnt.sys("devices/system/node/node0/cpulist")
    for _ in range(2):
        assert os.stat(path).st_size == 4096
        assert mnt.read(f"{NODE0}/cpulist") == b"0\n"
    assert os.stat(path).st_size == 4096


def test_writing_a_cached_attribute_is_still_refused_at_open(mnt):
    path = str(mnt.sys("devices/system/node/node0/cpulist"))
    assert mnt.read(f"{NODE0}/cpulist") == b"0\n"  # cached now
    for flags in (os.O_WRONLY, os.O_RDWR):
        with pytest.raises(OSError) as e:
            os.open(path, flags)
        assert e.value.errno == errno.EACCES


def test_writable_attributes_stay_direct(mnt):
    """A write through the page cache would leave the writer's bytes in it: "1" over
    a cached "false\n" would read back "1alse\n"."""
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
