"""Faults: the emulator killed under a reader, processes exiting under open
idle_pages files (through /proc/PID/task/TID), and rude control-socket clients
(the cases tests/test_ctl.py does not already cover).

Long mode: ``FAKEPROC_LONG=1`` repeats the kill-and-remount cycle 20 times, and
keeps rude control clients coming for 10 minutes (well over 100 000 operations)::

    FAKEPROC_LONG=1 timeout -s KILL 1800 .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_faults.py
"""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fakeproc.ctl.client import Client
from fakeproc.ctl.protocol import MAX_LINE, socket_path
from mountutil import is_mounted, mounted

pytestmark = pytest.mark.fuse

LONG = os.environ.get("FAKEPROC_LONG") == "1"
KILL_CYCLES = 20 if LONG else 1
RUDE_SECONDS = 600.0 if LONG else 0.0
FAKEPROC = [sys.executable, "-m", "fakeproc"]
HEAP = 0x7F3A00000000
BASE = 0x7F0000000000
READY = "proc/meminfo"  # direct_io: a dead server's mount cannot answer it from a cache


def wait_for(pred, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def well_formed(data: bytes) -> None:
    i = 0
    while i < len(data):
        if data[i] == 0xA0:
            assert i + 9 <= len(data), f"truncated SET_HVA at {i}"
            i += 9
            continue
        assert data[i] >> 4 <= 9 and data[i] & 15, f"bad byte {data[i]:#04x} at {i}"
        i += 1


def serving(mnt: Path) -> bool:
    """Is mnt mounted and answering? Probed in a daemon thread (a dead server's stale
    mount answers ENOTCONN at once, but a hung one would block)."""
    if not is_mounted(mnt):
        return False
    res: list[bool] = []

    def probe() -> None:
        try:
            res.append(bool((mnt / READY).read_bytes()))
        except OSError:
            res.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(10)
    return bool(res and res[0])


def start(mnt: Path) -> subprocess.Popen:
    proc = subprocess.Popen([*FAKEPROC, "mount", str(mnt), "-f", "--paused"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: proc.poll() is not None or serving(mnt), 30, "the mount to serve")
    assert proc.poll() is None, proc.communicate()[0]
    return proc


# ---- (a) the emulator dies under a reader -----------------------------------------------

@pytest.mark.parametrize("cycle", range(KILL_CYCLES))
def test_sigkill_under_readers_then_a_new_mount_cleans_the_stale_one(tmp_path, cycle):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = start(mnt)
    try:
        results: dict[str, object] = {}
        started = threading.Barrier(5)

        def reader(name: str, rel: str, count: int, pos: int) -> None:
            try:
                fd = os.open(mnt / rel, os.O_RDONLY)
                started.wait(10)
                while True:
                    data = os.pread(fd, count, pos)
                    if rel.endswith("idle_pages"):
                        well_formed(data)
            except OSError as e:
                results[name] = e.errno
            except BaseException as e:  # noqa: BLE001 - reported below
                results[name] = repr(e)

        def opener() -> None:   # opens, reads and closes in a loop
            started.wait(10)
            try:
                while True:
                    (mnt / "proc/4200001/status").read_bytes()
                    os.listdir(mnt / "proc")
            except OSError as e:
                results["opener"] = e.errno

        threads = [threading.Thread(target=reader, args=a, daemon=True) for a in (
            ("idle_4M", "proc/4200001/idle_pages", 4 << 20, HEAP),
            ("idle_1M_task", "proc/4200101/task/4200101/idle_pages", 1 << 20, 0),
            ("numa_maps", "proc/4200001/numa_maps", 1 << 20, 0),
            ("meminfo", "sys/devices/system/node/node0/meminfo", 4096, 0))]
        threads.append(threading.Thread(target=opener, daemon=True))
        for t in threads:
            t.start()
        time.sleep(0.5)
        assert not results, f"readers failed before the kill: {results}"
        proc.kill()
        proc.communicate(timeout=30)
        for t in threads:
            t.join(20)
        assert not [t for t in threads if t.is_alive()], f"readers hang after SIGKILL: {results}"
        dead = {errno.ENOTCONN, errno.ECONNABORTED}
        assert all(v in dead for v in results.values()) and len(results) == 5, results

        # the mount is stale now: calls fail fast, and it is still listed as mounted
        assert is_mounted(mnt)
        with pytest.raises(OSError) as e:
            os.stat(mnt / READY)
        assert e.value.errno in dead

        # the next `fakeproc mount` on the same mount point cleans it and serves
        proc = start(mnt)
        assert (mnt / "sys/devices/system/node/online").read_bytes() == b"0-3\n"
        fd = os.open(mnt / "proc/4200001/idle_pages", os.O_RDONLY)
        try:
            well_formed(os.pread(fd, 1 << 20, HEAP))
        finally:
            os.close(fd)
        with Client(mnt, timeout=30) as c:
            assert c.ping()["pid"] == proc.pid
            assert c.call("check")["ok"]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert not is_mounted(mnt)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False, timeout=30)


# ---- (b) a process exits while its files are open ----------------------------------------

EXITING = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"

[[process]]
pid = 300
name = "short-lived"
threads = 3
exit_at = 0.5
[[process.vma]]
start = 0x7f0000000000
size = "16KiB"
pages = "4 accessed"

[[process]]
pid = 400
name = "stays"
[[process.vma]]
start = 0x7f0000000000
size = "16KiB"
pages = "4 accessed"
"""


def test_thread_idle_pages_after_exit_gives_esrch_then_enoent():
    with mounted(EXITING, extra_args=["--no-paused"]) as m:
        tids = sorted(os.listdir(m.proc_path("300/task")))
        assert tids == ["300", "301", "302"]
        fds = {tid: os.open(m.proc_path(f"300/task/{tid}/idle_pages"), os.O_RDWR) for tid in tids}
        other = os.open(m.proc_path("400/idle_pages"), os.O_RDONLY)
        try:
            # read in a loop until the exit: every read is a whole stream or ESRCH
            seen = []
            deadline = time.monotonic() + 20
            while True:
                assert time.monotonic() < deadline, "the process never exited"
                try:
                    well_formed(os.pread(fds["301"], 4096, BASE))
                    seen.append("ok")
                except OSError as e:
                    assert e.errno == errno.ESRCH, e
                    break
                time.sleep(0.01)
            assert "ok" in seen
            for tid, fd in fds.items():
                with pytest.raises(OSError) as e:
                    os.pread(fd, 4096, BASE)
                assert e.value.errno == errno.ESRCH, tid
                # checks 1-4 still come first
                with pytest.raises(OSError) as e:
                    os.pread(fd, 18, BASE)
                assert e.value.errno == errno.EINVAL, tid
                assert os.pread(fd, 4096, 0x7FFFFFFFF000) == b""
                os.lseek(fd, BASE, os.SEEK_SET)
                with pytest.raises(OSError) as e:
                    os.read(fd, 4096)
                assert e.value.errno == errno.ESRCH, tid
            wait_for(lambda: not os.path.exists(m.proc_path("300")), 20, "/proc/300 to go")
            for tid in tids:
                for rel in (f"300/task/{tid}/idle_pages", f"{tid}/idle_pages"):
                    with pytest.raises(FileNotFoundError):
                        os.open(m.proc_path(rel), os.O_RDONLY)
            # the other process is unaffected
            data = os.pread(other, 4096, BASE)
            well_formed(data)
            assert data.startswith(b"\xa0")
        finally:
            for fd in fds.values():
                os.close(fd)
            os.close(other)
        with Client(m.path, timeout=30) as c:
            assert c.call("check")["ok"]


# ---- (c) rude control clients --------------------------------------------------------------

def raw_conn(m) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(30)
        s.connect(str(socket_path(m.path)))
    except BaseException:
        s.close()
        raise
    return s


@pytest.mark.timeout(RUDE_SECONDS + 300)
def test_rude_ctl_clients_without_newlines():
    with mounted() as m:
        with raw_conn(m) as s:                      # 1 MB of garbage, no newline, hang up
            s.sendall(os.urandom(1 << 20).replace(b"\n", b"x"))
        with raw_conn(m) as s:                      # over MAX_LINE, no newline, hang up
            try:
                s.sendall(b"y" * (MAX_LINE + 4096))
            except (BrokenPipeError, ConnectionResetError):
                pass                                # the server may drop it first
        with raw_conn(m) as s:                      # invalid UTF-8 without newline
            s.sendall(b'{"id": 1, "cmd": "\xff\xfe\xc3')
        with raw_conn(m) as s, s.makefile("rb") as f:   # invalid UTF-8 inside a string
            s.sendall(b'{"id": 9, "cmd": "pi\xffng"}\n')
            r = json.loads(f.readline())
            assert r["ok"] is False and r["error"]["type"] == "bad_request", r
            s.sendall(b'{"id": 10, "cmd": "ping"}\n')   # the connection goes on
            assert json.loads(f.readline())["result"]["pong"] is True

        # a client stalled mid-line (connection open) does not block the others
        stalled = raw_conn(m)
        try:
            stalled.sendall(b'{"id": 1, "cmd": "pi')
            quiet = raw_conn(m)                     # and one that never sends anything
            try:
                with Client(m.path, timeout=10) as c:
                    assert c.ping()["pong"] is True
                assert m.read("sys/devices/system/node/online") == b"0-3\n"
            finally:
                quiet.close()
        finally:
            stalled.close()

        # many rude clients at once (for 10 minutes in long mode)
        def rude(k: int) -> None:
            with raw_conn(m) as s:
                s.sendall(bytes([0xFF, 0x00, 0x0A][k % 3:]) * 1000)
        end = time.monotonic() + RUDE_SECONDS
        rounds = 0
        while True:
            ts = [threading.Thread(target=rude, args=(k,)) for k in range(32)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(30)
            assert not [t for t in ts if t.is_alive()]
            with Client(m.path, timeout=30) as c:
                assert c.ping()["pong"] is True
                if rounds % 50 == 0:
                    assert c.call("check")["ok"]
            rounds += 1
            if time.monotonic() >= end:
                break
        assert m.proc.poll() is None
