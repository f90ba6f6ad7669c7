"""Writes to the writable sysfs attributes, through the mount, with real syscalls and
`sh -c 'echo ... > ...'`: each answers as the attribute's 4.20 store() does.

kernfs_fop_write() gives store() at most a page per write(2) and sysfs_kf_write()
skips an empty one; the stores (drivers/base/node.c, memory.c, core.c, bus.c,
mm/hugetlb.c) parse with kstrtoul, kstrtobool and sysfs_streq. Expected values are
worked out by hand from those sources and the default machine (nodes 0-3, CPUs 0-7,
40 GiB in 128 MiB memory blocks).
"""
from __future__ import annotations

import errno
import os
import subprocess

import pytest

from fsops import errno_of, refused_access, write_once as write
from mountutil import mounted

pytestmark = pytest.mark.fuse

NODE = "sys/devices/system/node"
HUGE = ("hugepages-2048kB", "hugepages-1048576kB")


@pytest.fixture(scope="module")
def mnt():
    with mounted(None) as m:
        yield m


def outcome(path, data: bytes) -> int | str:
    """The count a write returned, or the errno's name."""
    try:
        return write(path, data)
    except OSError as e:
        return errno.errorcode[e.errno]


def sh(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)


def test_compact_takes_any_write_and_a_page_at_most(mnt):
    # sysfs_compact_node() returns count for an online node, whatever the bytes
    path = mnt.path.joinpath(f"{NODE}/node2/compact")
    assert write(path, b"1") == 1
    assert write(path, b"anything at all\n") == 16
    assert write(path, b"x" * 5000) == 4096  # kernfs_fop_write: one page per write(2)
    assert write(path, b"") == 0
    assert write(path, b"1\n", os.O_WRONLY | os.O_TRUNC) == 2
    r = sh(f"echo 1 > {path}")
    assert (r.returncode, r.stderr) == (0, "")


def test_nr_hugepages_parses_like_kstrtoul_and_reads_back_0(mnt):
    for size in HUGE:
        path = mnt.path.joinpath(f"{NODE}/node0/hugepages/{size}/nr_hugepages")
        cases = [(b"4\n", 2), (b"+7", 2), (b"0", 1), (b"7\0junk", 6),
                 (b"18446744073709551615\n", 21),
                 (b"18446744073709551616\n", "ERANGE"), (b"99999999999999999999x", "ERANGE"),
                 (b"x\n", "EINVAL"), (b"-1\n", "EINVAL"), (b" 4", "EINVAL"), (b"4 \n", "EINVAL"),
                 (b"4\n\n", "EINVAL"), (b"0x10", "EINVAL"), (b"+\n", "EINVAL"), (b"\n", "EINVAL")]
        assert [(data, outcome(path, data)) for data, _ in cases] == cases, size
        # no hugetlb pool: nothing is allocated, as on a kernel that finds no free huge page
        assert path.read_bytes() == b"0\n"


def test_echo_to_a_writable_attribute_works(mnt):
    # sh opens with O_WRONLY|O_CREAT|O_TRUNC
    path = mnt.path.joinpath(f"{NODE}/node1/hugepages/hugepages-2048kB/nr_hugepages")
    r = sh(f"echo 64 > {path}")
    assert (r.returncode, r.stderr) == (0, "")
    assert path.read_bytes() == b"0\n"
    r = sh(f"/bin/echo lots > {path}")  # (dash's own echo says "I/O error" for any errno)
    assert r.returncode == 1 and "write error: Invalid argument" in r.stderr, r.stderr


def test_uevent_returns_the_count_even_for_an_unknown_action(mnt):
    # 4.20's uevent_store() and bus_uevent_store() only log a kobject_synth_uevent()
    # failure (returning it is 5.0's df44b479654f)
    for rel in (f"{NODE}/node0/uevent", f"{NODE}/uevent", "sys/bus/node/uevent"):
        path = mnt.path / rel
        assert [outcome(path, d) for d in (b"change\n", b"add", b"bogus\n", b"")] == [7, 3, 6, 0], rel
    assert mnt.read(f"{NODE}/node0/uevent") == b""


def test_drivers_autoprobe_reads_back_what_was_stored(mnt):
    path = mnt.sys("bus/node/drivers_autoprobe")
    assert path.read_bytes() == b"1\n"
    read_back = []
    for data in (b"0\n", b"1", b"0abc", b"yes", b"0", b"\n"):
        assert write(path, data) == len(data)
        read_back.append(path.read_bytes())
    # drivers_autoprobe_store(): 0 when the first byte is '0', else 1
    assert read_back == [b"0\n", b"1\n", b"0\n", b"1\n", b"0\n", b"1\n"]


def test_drivers_probe_names_a_node(mnt):
    path = mnt.sys("bus/node/drivers_probe")
    cases = [(b"node1\n", 6), (b"node3", 5), (b"node0\0x", 7), (b"node4\n", "ENODEV"),
             (b"node01", "ENODEV"), (b"node1\n\n", "ENODEV"), (b"cpu0", "ENODEV"), (b"", 0)]
    assert [(data, outcome(path, data)) for data, _ in cases] == cases


def test_online_takes_1_and_cannot_offline(mnt):
    # online_store(): kstrtobool; device_online() of an online device is a no-op, and
    # fakeproc cannot offline a CPU or a memory block (EBUSY)
    cases = [(b"1\n", 2), (b"on", 2), (b"y", 1), (b"Yes", 3), (b"1junk", 5),
             (b"0\n", "EBUSY"), (b"off", "EBUSY"), (b"n", "EBUSY"),
             (b"2", "EINVAL"), (b"o", "EINVAL"), (b"\n", "EINVAL"), (b"true", "EINVAL")]
    for rel in ("devices/system/cpu/cpu1/online", "devices/system/cpu/cpu7/online",
                "devices/system/memory/memory0/online", "devices/system/memory/memory319/online"):
        path = mnt.sys(rel)
        assert [(data, outcome(path, data)) for data, _ in cases] == cases, rel
        assert path.read_bytes() == b"1\n"


def test_memory_state_is_einval_for_online_and_ebusy_for_offline(mnt):
    # store_mem_state(): device_online() returns 1 for an online block -> EINVAL
    path = mnt.sys("devices/system/memory/memory5/state")
    cases = [(b"online\n", "EINVAL"), (b"online", "EINVAL"), (b"online_movable", "EINVAL"),
             (b"online_kernel\n", "EINVAL"), (b"offline\n", "EBUSY"), (b"offline", "EBUSY"),
             (b"offline\n\n", "EINVAL"), (b"Offline", "EINVAL"), (b"1", "EINVAL"), (b"", 0)]
    assert [(data, outcome(path, data)) for data, _ in cases] == cases
    assert path.read_bytes() == b"online\n"


# what writing "1\n" to each writable attribute does (the cases above)
ONE = {"compact": 2, "nr_hugepages": 2, "uevent": 2, "drivers_autoprobe": 2,
       "drivers_probe": "ENODEV", "online": 2, "state": "EINVAL"}


def test_every_writable_attribute_has_its_store(mnt):
    seen: dict[str, set] = {}
    for dirpath, _, filenames in os.walk(mnt.path / "sys"):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.stat(path).st_mode & 0o222:
                continue
            seen.setdefault(name, set()).add(outcome(path, b"1\n"))
    assert seen == {name: {result} for name, result in ONE.items()}
    assert mnt.sys("bus/node/drivers_autoprobe").read_bytes() == b"1\n"


def test_a_write_only_attribute_reads_eio_once_chmod_lets_it_open(mnt):
    # the open check follows the mode (kernfs_fop_open); there is no show()
    # (dev_attr_show, bus_attr_show: EIO)
    for rel in (f"{NODE}/node3/compact", "sys/bus/node/drivers_probe"):
        path = mnt.path / rel
        assert refused_access(path, os.O_RDONLY) == errno.EACCES
        os.chmod(path, 0o600)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert errno_of(lambda: os.read(fd, 4096)) == errno.EIO
        finally:
            os.close(fd)


@pytest.mark.parametrize("rel", [f"{NODE}/node0/distance", f"{NODE}/node1/meminfo"])
def test_a_refused_store_through_a_shared_mapping_leaves_no_trace(mnt, rel):
    """kernfs refuses the mmap (ENODEV, deviation z5); under /sys/devices/system root
    may map an attribute shared and writable, and the store lands in the host's page
    cache. Its writeback is refused (EACCES), and the host must then drop the page:
    readers see the attribute's own bytes again, not what root stored."""
    import mmap
    import time
    path = mnt.path / rel
    orig = path.read_bytes()
    fd = os.open(path, os.O_RDWR)
    try:
        mapping = mmap.mmap(fd, len(orig), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        mapping[0:2] = b"99"
        with pytest.raises(OSError) as e:
            mapping.flush()  # msync: the writeback's refusal
        assert e.value.errno == errno.EACCES
        mapping.close()
    finally:
        os.close(fd)
    deadline = time.monotonic() + 5
    while (now := path.read_bytes()) != orig and time.monotonic() < deadline:
        time.sleep(0.01)  # the host drops the page as soon as the server's notice lands
    assert now == orig and not now.startswith(b"99")


def test_a_server_stops_while_root_keeps_an_attribute_dirty_through_a_mapping(tmp_path):
    """The host's invalidation of a dirty page writes it back first, and that WRITE
    needs the server's pump: stopping the server while a writer keeps its shared
    mapping dirty left the server's dropper thread and the writer in an unkillable
    wait for good. The server must exit, and the writer see errors, not hang."""
    import re
    import signal
    import sys
    import time
    from mountutil import is_mounted
    mnt = tmp_path / "mnt"
    r = subprocess.run([sys.executable, "-m", "fakeproc", "mount", str(mnt)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    server = int(re.search(r"serving as pid (\d+)", r.stdout).group(1))
    writer = subprocess.Popen([sys.executable, "-c", (
        "import mmap, os, sys, time\n"
        "p = sys.argv[1]; fd = os.open(p, os.O_RDWR); n = len(open(p, 'rb').read())\n"
        "m = mmap.mmap(fd, n, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)\n"
        "end = time.monotonic() + 6; i = 0\n"
        "while time.monotonic() < end:\n"
        "    m[0:2] = b'99'; i += 1\n"
        "    if i % 20 == 0:\n"
        "        try: m.flush()\n"
        "        except OSError: pass\n"
        "print('done', flush=True)\n"), str(mnt / NODE / "node0/distance")],
        stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        os.kill(server, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _live_threads(server):
            assert time.monotonic() < deadline, "the server did not end"
            time.sleep(0.1)
        out, _ = writer.communicate(timeout=20)
        assert writer.returncode == 0 and out == "done\n"
    finally:
        writer.kill()
        writer.communicate()
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
    assert not is_mounted(str(mnt))


def _live_threads(pid: int) -> list[str]:
    """The threads of pid that are not zombies (a thread stuck in the host shows D)."""
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(tid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out
