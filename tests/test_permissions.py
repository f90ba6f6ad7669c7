"""Who may open what: file modes and owners as another uid sees them, through the
real mount (FUSE ``default_permissions``), with and without ``--allow-other``, and
the control socket's owner-only access.

The other uid is a child run under ``setpriv --reuid=U --regid=U --clear-groups``
with the system Python (it imports nothing from fakeproc); it reports, as JSON, the
errno (or "ok") of each operation.

Long mode: ``FAKEPROC_LONG=1`` makes each child repeat its probes until it has made
at least 100 000 operations, and fails if any answer ever changes::

    FAKEPROC_LONG=1 timeout -s KILL 1800 .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_permissions.py
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

from fakeproc.ctl.protocol import socket_path
from mountutil import mounted

pytestmark = pytest.mark.fuse

LONG = os.environ.get("FAKEPROC_LONG") == "1"
LONG_OPS = 100_000
NOBODY = 65534
REDIS, REDIS_UID = 4200001, 999      # the default machine's redis-server runs as uid 999
MEMCACHED = 4200101                  # uid 998
HEAP = 0x7F3A00000000
PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable

CHILD = textwrap.dedent("""
    import json, os, socket, sys
    out = {}
    def probe(name, fn):
        try:
            r = fn()
            out[name] = "ok" if not isinstance(r, (bytes, int)) or isinstance(r, bool) else ["ok", r if isinstance(r, int) else len(r)]
        except OSError as e:
            out[name] = e.errno
    def read(path, flags=os.O_RDONLY, count=1 << 16, pos=None):
        fd = os.open(path, flags)
        try:
            return os.pread(fd, count, pos) if pos is not None else os.read(fd, count)
        finally:
            os.close(fd)
    def connect(path):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
    probes, target = json.loads(sys.argv[1]), int(sys.argv[2])
    done, first = 0, None
    while True:
        for name, how, *args in probes:
            if how == "stat":
                probe(name, lambda: os.stat(args[0]) and True)
            elif how == "listdir":
                probe(name, lambda: os.listdir(args[0]) and True)
            elif how == "connect":
                probe(name, lambda: connect(args[0]))
            else:
                probe(name, lambda: read(*args))
            done += 1
        if first is None:
            first = dict(out)
        elif {k: (v if isinstance(v, int) else "ok" if v == "ok" else v[0]) for k, v in out.items()} != \
                {k: (v if isinstance(v, int) else "ok" if v == "ok" else v[0]) for k, v in first.items()}:
            first["_changed"] = [done, out]
            break
        if done >= target:
            break
    first["_ops"] = done
    print(json.dumps(first))
""")


def as_user(uid: int, probes: list) -> dict:
    r = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                        PYTHON, "-c", CHILD, json.dumps(probes), str(LONG_OPS if LONG else 1)],
                       capture_output=True, text=True, timeout=3600 if LONG else 60, cwd="/")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "_changed" not in out, f"an answer changed after {out['_changed'][0]} operations: {out}"
    out.pop("_ops")
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in out.items()}


def open_up(m) -> None:
    """Let other uids reach the mount point: mkdtemp made its parent 0700."""
    p = m.path.parent
    while p != p.parent and str(p).startswith("/tmp/"):
        os.chmod(p, os.stat(p).st_mode | 0o755)
        p = p.parent


@pytest.fixture(autouse=True)
def need_setpriv():
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")


def probes(m) -> list:
    proc, node = str(m.path / "proc"), str(m.sys("devices/system/node"))
    return [
        ["mount_stat", "stat", str(m.path)],
        ["idle", "read", f"{proc}/{REDIS}/idle_pages", os.O_RDONLY, 4096, HEAP],
        ["idle_rdwr", "read", f"{proc}/{REDIS}/idle_pages", os.O_RDWR, 4096, HEAP],
        ["idle_task", "read", f"{proc}/{REDIS}/task/{REDIS}/idle_pages", os.O_RDONLY, 4096, HEAP],
        ["idle_stat", "stat", f"{proc}/{REDIS}/idle_pages"],
        ["maps", "read", f"{proc}/{REDIS}/maps"],
        ["numa_maps", "read", f"{proc}/{REDIS}/numa_maps"],
        ["smaps", "read", f"{proc}/{REDIS}/smaps"],
        ["smaps_rollup", "read", f"{proc}/{REDIS}/smaps_rollup"],
        ["task_maps", "read", f"{proc}/{REDIS}/task/{REDIS}/maps"],
        ["status", "read", f"{proc}/{MEMCACHED}/status"],
        ["meminfo", "read", f"{node}/node0/meminfo"],
        ["online", "read", f"{node}/online"],
        ["listdir_proc", "listdir", proc],
        ["write_meminfo", "read", f"{node}/node0/meminfo", os.O_WRONLY],
        ["ctl", "connect", str(socket_path(m.path))],
    ]


def test_modes_and_owners_as_root_sees_them():
    with mounted() as m:
        st = os.stat(m.proc_path(f"{REDIS}/idle_pages"))
        assert stat.S_IMODE(st.st_mode) == 0o600 and stat.S_ISREG(st.st_mode)
        assert (st.st_uid, st.st_gid) == (REDIS_UID, REDIS_UID)
        tst = os.stat(m.proc_path(f"{REDIS}/task/{REDIS}/idle_pages"))
        assert (stat.S_IMODE(tst.st_mode), tst.st_uid, tst.st_gid) == (0o600, REDIS_UID, REDIS_UID)
        assert os.stat(m.proc_path(f"{MEMCACHED}/idle_pages")).st_uid == 998
        # root opens anyone's idle_pages: no ptrace check (docs/interfaces.md)
        fd = os.open(m.proc_path(f"{MEMCACHED}/idle_pages"), os.O_RDONLY)
        os.close(fd)
        path = socket_path(m.path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert os.stat(path).st_uid == os.geteuid()


@pytest.mark.timeout(7200 if LONG else 300)
def test_other_uid_with_allow_other():
    with mounted(extra_args=["--allow-other"]) as m:
        open_up(m)
        r = as_user(NOBODY, probes(m))
        assert r["mount_stat"] == "ok"
        assert r["idle"] == r["idle_rdwr"] == r["idle_task"] == errno.EACCES, r
        assert r["idle_stat"] == "ok"               # stat needs no permission on the file
        # 0444, but proc_mem_open() needs the right to ptrace-read: nobody has not
        for name in ("maps", "numa_maps", "smaps", "smaps_rollup", "task_maps"):
            assert r[name] == errno.EACCES, (name, r)
        assert r["status"][0] == "ok" and r["meminfo"][0] == "ok" and r["online"][0] == "ok", r
        assert r["listdir_proc"] == "ok"
        assert r["write_meminfo"] == errno.EACCES, r   # 0444 attribute
        assert r["ctl"] == errno.EACCES, r            # 0700 directory, 0600 socket

        # the process's own uid may scan it (0600 owned by 999), not memcached's (998)
        owner = as_user(REDIS_UID, [p for p in probes(m) if p[0].startswith("idle") or "maps" in p[0]] +
                        [["other_idle", "read", str(m.proc_path(f"{MEMCACHED}/idle_pages")),
                          os.O_RDONLY, 4096, HEAP],
                         ["other_maps", "read", str(m.proc_path(f"{MEMCACHED}/maps"))]])
        assert owner["idle"][0] == owner["idle_rdwr"][0] == owner["idle_task"][0] == "ok", owner
        assert owner["idle"][1] > 0, owner
        assert owner["other_idle"] == errno.EACCES, owner
        # the process's own uid and gid may read its maps, not another uid's
        for name in ("maps", "numa_maps", "smaps", "smaps_rollup", "task_maps"):
            assert owner[name][0] == "ok" and owner[name][1] > 0, (name, owner)
        assert owner["other_maps"] == errno.EACCES, owner
        assert m.proc.poll() is None


@pytest.mark.timeout(7200 if LONG else 300)
def test_other_uid_without_allow_other_sees_nothing():
    with mounted() as m:
        open_up(m)
        r = as_user(NOBODY, probes(m))
        denied = {errno.EACCES, errno.EPERM}
        for name, res in r.items():
            assert res in denied, (name, r)   # FUSE refuses every other uid, root's mount
        owner = as_user(REDIS_UID, probes(m))
        assert owner["mount_stat"] in denied and owner["idle"] in denied, owner
        # root still reads
        assert m.read("sys/devices/system/node/online") == b"0-3\n"


PAGEMAP_MACHINE = """
[machine]
upstream = true
swap = "1MiB"
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"

[[process]]
pid = 4300001
name = "owned"
uid = 1000
gid = 1000
[[process.vma]]
start = 0x7f0000000000
size = "8KiB"
pages = "1 accessed, 1 swap"
"""

READ_PAGEMAP = ("import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
                "print(os.pread(fd, 16, 0x7f0000000000 // 4096 * 8).hex())")


def pagemap_as(m, *prefix: str) -> tuple[int, int]:
    r = subprocess.run([*prefix, PYTHON, "-c", READ_PAGEMAP, str(m.proc_path("4300001/pagemap"))],
                       capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    raw = bytes.fromhex(r.stdout.strip())
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")


def test_pagemap_shows_pfns_only_to_cap_sys_admin():
    """pagemap_read(): pm.show_pfn = file_ns_capable(file, &init_user_ns,
    CAP_SYS_ADMIN), the opener's credentials; without it a present page reads as
    PM_PRESENT | PM_MMAP_EXCLUSIVE | PM_SOFT_DIRTY with frame 0. 4.20 still shows a
    swap entry's offset to everyone (slot 1: 1 << 5)."""
    with mounted(PAGEMAP_MACHINE, extra_args=["--allow-other"]) as m:
        open_up(m)
        present, swapped = pagemap_as(m)  # root: the PFN
        flags = (1 << 63) | (1 << 56) | (1 << 55)
        assert present & ~((1 << 55) - 1) == flags and present & ((1 << 55) - 1) != 0
        assert swapped == (1 << 62) | (1 << 55) | (1 << 5)
        # the process's owner opens its 0400 file: no CAP_SYS_ADMIN, no PFN
        owner = pagemap_as(m, "setpriv", "--reuid=1000", "--regid=1000", "--clear-groups")
        assert owner == (flags, swapped)
        # root without CAP_SYS_ADMIN (dropped from the bounding set before exec): none
        # either, so the check is the capability, not the uid
        assert pagemap_as(m, "setpriv", "--bounding-set=-sys_admin") == (flags, swapped)
