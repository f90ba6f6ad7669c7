"""The control socket, over the real socket while the FUSE mount is up: round trips
checked through the mount, structured errors, robustness against bad clients,
permissions, stale sockets, and the `fakeproc ctl` command line."""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import stat
import subprocess
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fakeproc.ctl.client import Client
from fakeproc.ctl.protocol import MAX_LINE, CtlError, socket_path
from fakeproc.fs.server import is_serving, realproc_dir
from fakeproc.idle_format import decode, page_counts
from mountutil import is_mounted, mounted

pytestmark = pytest.mark.fuse
FAKEPROC = [sys.executable, "-m", "fakeproc"]

MACHINE = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0-1"

[[node]]
type = "pmem"
size = "128MiB"

[[process]]
pid = 100
name = "worked"
threads = 2
[[process.vma]]
start = 0x7f0000000000
size = "64KiB"
pages = "3 accessed, 7 idle, 6 none"
"""
VMA = 0x7F1000000000


@pytest.fixture(scope="module")
def mnt():
    with mounted(MACHINE) as m:
        yield m


@pytest.fixture
def ctl(mnt):
    with Client(mnt.path, timeout=30) as c:
        yield c


def wait_for(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def scan(m, pid: int, start: int, end: int) -> dict[str, int]:
    """One idle_pages scan of [start, end) through the mount: pages per type."""
    fd = os.open(m.proc_path(f"{pid}/idle_pages"), os.O_RDWR)
    try:
        runs, _ = decode(os.pread(fd, 4096, start))
    finally:
        os.close(fd)
    return page_counts([r for r in runs if start <= r.addr < end])


def raw_conn(m) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(str(socket_path(m.path)))
    return s


def read_reply(f) -> dict:
    line = f.readline()
    assert line.endswith(b"\n"), line
    return json.loads(line)


# ---- round trips -----------------------------------------------------------------------

def test_ping_and_owner_only_socket(mnt, ctl):
    r = ctl.ping()
    assert r["pong"] is True and r["pid"] == mnt.proc.pid and r["protocol"] == 1
    path = socket_path(mnt.path)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert (path.parent / "mountpoint").read_text() == os.path.realpath(mnt.path) + "\n"


def test_list_matches_proc(mnt, ctl):
    procs = ctl.list()
    listed = {int(n) for n in os.listdir(mnt.proc_path("")) if n.isdigit()}
    assert {p["pid"] for p in procs} == listed
    worked = next(p for p in procs if p["pid"] == 100)
    assert worked["name"] == "worked" and worked["threads"] == [100, 101]
    assert worked["rss"] == worked["rss_anon"] == 10 and worked["state"] == "sleeping"
    assert worked["rss_nodes"] == {"0": 10}


def test_spawn_shows_in_maps_and_status(mnt, ctl):
    pid = ctl.spawn({"pid": 5000, "name": "spawned", "threads": 3, "vma": [
        {"start": VMA, "size": "64KiB", "pages": "4 dirty@1, 4 idle"}]})
    assert pid == 5000
    maps = mnt.read(f"proc/{pid}/maps").decode()
    assert maps.startswith(f"{VMA:x}-{VMA + 0x10000:x} rw-p 00000000 00:00 0")
    status = mnt.read(f"proc/{pid}/status").decode()
    assert "Name:\tspawned\n" in status and "Threads:\t3\n" in status
    assert "VmRSS:\t      32 kB\n" in status
    assert sorted(os.listdir(mnt.proc_path(f"{pid}/task"))) == ["5000", "5001", "5002"]
    assert ctl.touch(pid, VMA)["node"] == 1                        # pinned on node 1
    assert ctl.touch(pid, hex(VMA + 4 * 4096))["node"] == 0         # the policy's node
    assert next(p for p in ctl.list() if p["pid"] == pid)["rss_nodes"] == {"0": 4, "1": 4}
    ctl.kill(pid)


def test_spawn_without_pid_picks_a_free_one(ctl):
    info = ctl.call("spawn", name="auto")
    assert info["pid"] > 4194304 and info["rss"] == 0
    ctl.kill(info["pid"])


def test_kill_removes_proc_pid(mnt, ctl):
    pid = ctl.spawn({"pid": 5100, "name": "victim", "vma": [{"start": VMA, "size": "8KiB", "pages": "2 dirty"}]})
    assert mnt.proc_path(f"{pid}/maps").exists()
    assert ctl.kill(pid) == {"pid": pid, "state": "gone"}
    with pytest.raises(FileNotFoundError):
        os.stat(mnt.proc_path(str(pid)))
    assert pid not in {p["pid"] for p in ctl.list()}


def test_kill_as_zombie(mnt, ctl):
    pid = ctl.spawn({"pid": 5200, "name": "undead"})
    ctl.kill(pid, zombie=True)
    status = mnt.read(f"proc/{pid}/status").decode()
    # task_state() reads max_fds from p->files, which exit_files() has cleared: 0
    assert "State:\tZ (zombie)\n" in status and "\nFDSize:\t0\n" in status
    # no mm left: maps and smaps are empty (m_start() finds none), smaps_rollup's
    # show_smaps_rollup() fails with ESRCH
    assert mnt.read(f"proc/{pid}/maps") == b"" and mnt.read(f"proc/{pid}/smaps") == b""
    fd = os.open(mnt.proc_path(f"{pid}/smaps_rollup"), os.O_RDONLY)
    try:
        with pytest.raises(ProcessLookupError):
            os.read(fd, 4096)
    finally:
        os.close(fd)
    ctl.kill(pid)  # reap
    assert not mnt.proc_path(str(pid)).exists()


def test_workload_runs_only_when_the_clock_steps(mnt, ctl):
    pid = ctl.spawn({"pid": 5300, "name": "busy", "vma": [{"start": VMA, "size": "256KiB", "pages": "64 idle"}]})
    end = VMA + 64 * 4096
    assert scan(mnt, pid, VMA, end) == {"PTE_IDLE": 64}
    r = ctl.set_workload(pid, {"pattern": "uniform", "rate": 10000, "write": 0.0, "seed": 3})
    assert r["workload"]["pattern"] == "uniform" and r["workload"]["touches"] == 0
    assert scan(mnt, pid, VMA, end) == {"PTE_IDLE": 64}             # paused: nothing ran
    before = ctl.clock()["now"]
    st = ctl.step(0.5)
    assert st["now"] == pytest.approx(before + 0.5, abs=1e-9) and st["touches"] == 5000
    counts = scan(mnt, pid, VMA, end)
    assert counts.get("PTE_ACCESSED", 0) > 32 and sum(counts.values()) == 64
    ctl.set_workload(pid, None)                                      # stop it
    ctl.step(0.5)
    assert scan(mnt, pid, VMA, end) == {"PTE_IDLE": 64}
    ctl.kill(pid)


def test_clock_status_pause_resume_rate(ctl):
    st = ctl.clock()
    assert st["paused"] is True and st["running"] is False         # mountutil mounts --paused
    t0 = st["now"]
    assert ctl.clock("status")["now"] == t0
    ctl.set_rate(100.0)
    assert ctl.resume()["running"] is True
    wait_for(lambda: ctl.clock()["now"] > t0 + 1.0)                 # 10 ms of wall time at rate 100
    paused = ctl.pause()
    assert paused["paused"] is True
    assert ctl.clock()["now"] == paused["now"]
    assert ctl.step(2.5)["now"] == pytest.approx(paused["now"] + 2.5, abs=1e-9)
    assert ctl.set_rate(1.0)["rate"] == 1.0


def test_a_running_clock_is_current_at_every_request(mnt, ctl):
    """Two scans a few ms apart, well inside one period of the clock's ticks (50 ms),
    see the accesses made between them: every request first brings the clock up to
    now. (It used to advance only on the periodic tick, so the second scan usually
    found every page idle, and the example daemon's round 0 often found no hot page.)"""
    pid = ctl.spawn({"pid": 5301, "name": "fast", "vma": [{"start": VMA, "size": "256KiB", "pages": "64 idle"}]})
    end = VMA + 64 * 4096
    ctl.set_workload(pid, {"pattern": "uniform", "rate": 1e6, "write": 0.0, "seed": 5})
    try:
        ctl.set_rate(1.0)
        ctl.resume()
        for _ in range(5):
            t0 = ctl.clock()["now"]
            assert ctl.clock()["now"] > t0                                # a command sees now
            scan(mnt, pid, VMA, end)                                      # clears the bits
            t = time.monotonic()
            while time.monotonic() - t < 0.002:
                pass                                                      # 2 ms: ~2000 touches
            counts = scan(mnt, pid, VMA, end)
            assert counts.get("PTE_ACCESSED", 0) > 32, counts
    finally:
        ctl.pause()
        ctl.set_workload(pid, None)
        ctl.kill(pid)


# ---- structured errors -----------------------------------------------------------------

@pytest.mark.parametrize("cmd, args, etype, eno", [
    ("nope", {}, "unknown_command", None),
    ("kill", {}, "bad_args", errno.EINVAL),
    ("kill", {"pid": "100"}, "bad_args", errno.EINVAL),
    ("kill", {"pid": True}, "bad_args", errno.EINVAL),
    ("kill", {"pid": 100, "signal": 9}, "bad_args", errno.EINVAL),
    ("kill", {"pid": 999999}, "no_such_process", errno.ESRCH),
    ("clock", {"action": "step"}, "bad_args", errno.EINVAL),
    ("clock", {"action": "step", "seconds": -1}, "bad_args", errno.EINVAL),
    ("clock", {"action": "warp"}, "bad_args", errno.EINVAL),
    ("touch", {"pid": 100, "addr": 0x1000}, "kernel", errno.EFAULT),
    ("touch", {"pid": 100, "addr": "nowhere"}, "bad_args", errno.EINVAL),
    ("set_workload", {"pid": 100, "workload": {"pattern": "bursty"}}, "bad_args", errno.EINVAL),
    ("set_workload", {"pid": 100, "workload": {"vmas": [5]}}, "bad_args", errno.EINVAL),
])
def test_bad_requests_get_structured_errors(ctl, cmd, args, etype, eno):
    with pytest.raises(CtlError) as ei:
        ctl.call(cmd, **args)
    assert (ei.value.type, ei.value.errno) == (etype, eno), ei.value.message
    assert ctl.ping()["pong"]


def test_spawn_errors_name_the_field_and_leave_nothing(mnt, ctl):
    with pytest.raises(CtlError) as ei:
        ctl.spawn({"pid": 5400, "name": "bad", "vma": [{"start": VMA, "size": "8KiB", "pages": "3 idle"}]})
    assert ei.value.type == "bad_args" and "vma[0].pages" in ei.value.message
    with pytest.raises(CtlError, match=r"pid: id 101 is already in use"):
        ctl.spawn({"pid": 101, "name": "dup"})
    with pytest.raises(CtlError, match=r"colour: Additional properties"):
        ctl.spawn({"pid": 5400, "name": "bad", "colour": "red"})
    free = mnt.read("sys/devices/system/node/node0/meminfo")
    with pytest.raises(CtlError, match=r"vma\[0\]\.pages: cannot map these pages: Cannot allocate memory"):
        ctl.spawn({"pid": 5400, "name": "huge", "vma": [
            {"start": VMA, "size": "128MiB", "pages": "20000 dirty@0"}]})
    assert not mnt.proc_path("5400").exists()
    assert mnt.read("sys/devices/system/node/node0/meminfo") == free  # all of it given back


def test_garbage_and_rude_clients_do_not_hurt_the_server(mnt):
    with raw_conn(mnt) as s, s.makefile("rb") as f:
        for line, etype in ((b"this is not json", "bad_request"), (b"[1, 2]", "bad_request"),
                            (b'{"id": 3, "args": {}}', "bad_request"),
                            (b'{"id": 4, "cmd": "ping", "args": [1]}', "bad_request"),
                            (b'{"id": 5, "cmd": "clock", "args": {"action": "step", "seconds": NaN}}',
                             "bad_request"),
                            (b'\xff\xfe{"id": 6}', "bad_request"),
                            (b'{"id": ' + b"[" * 5000 + b"]" * 5000 + b"}", "bad_request"),
                            (b'{"id": 7, "cmd": "fly"}', "unknown_command")):
            s.sendall(line + b"\n")
            r = read_reply(f)
            assert r["ok"] is False and r["error"]["type"] == etype, (line, r)
        assert r["id"] == 7
        s.sendall(b'\n{"id": "x", "cmd": "ping"}\n')                  # blank lines are skipped
        r = read_reply(f)
        assert r["id"] == "x" and r["ok"] is True and r["result"]["pong"] is True

    with raw_conn(mnt) as s:                                           # hangs up mid-line
        s.sendall(b'{"id": 1, "cmd": "pi')
    wait_for(lambda: "closed mid-request" in mnt.log())

    with raw_conn(mnt) as s:                                           # hangs up before its reply
        s.sendall(b'{"id": 1, "cmd": "list"}\n')

    with raw_conn(mnt) as s, s.makefile("rb") as f:                    # an oversized line
        s.sendall(b"x" * (2 * MAX_LINE) + b'\n{"id": 2, "cmd": "ping"}\n')
        r = read_reply(f)
        assert r["id"] is None and r["error"]["type"] == "too_long"
        assert read_reply(f)["result"]["pong"] is True                 # same connection goes on

    with Client(mnt.path) as c:
        assert c.ping()["pong"]
    assert mnt.read("sys/devices/system/node/online") == b"0-1\n"
    assert mnt.read("proc/100/status").startswith(b"Name:\tworked\n")
    assert mnt.proc.poll() is None


@pytest.mark.parametrize("cmd, args, etype, what", [
    # numbers beyond a double are no JSON value fakeproc takes (1e400 would be inf)
    ("spawn", '{"name": "e", "exit_at": 1e400}', "bad_request", "out of a double's range"),
    ("set_workload", '{"pid": 100, "workload": {"rate": -1e999}}', "bad_request", "out of a double's range"),
    # arrays are checked element by element
    ("move_pages", '{"pid": 100, "pages": [null]}', "bad_args", "pages: expected array of \\(integer or string\\) or string, got array"),
    ("move_pages", '{"pid": 100, "pages": [[1]]}', "bad_args", "pages: expected array of"),
    ("move_pages", '{"pid": 100, "pages": [1e300]}', "bad_args", "pages: expected array of"),
    ("migrate_pages", '{"pid": 100, "old_nodes": ["x"], "new_nodes": [1]}', "bad_args",
     "old_nodes: expected array of integer"),
    # numbers beyond what the kernel keeps them in
    ("reclaim", '{"node": 0, "pages": -1}', "bad_args", "out of range"),
    ("reclaim", '{"node": 0, "pages": 18446744073709551616}', "bad_args", "out of range"),
    ("truth", '{"pid": 100, "start": 18446744073709551616}', "bad_args", "out of range"),
    ("set_workload", '{"pid": 100, "workload": {"seed": 1e300}}', "bad_args", "seed: 1e\\+300 is not of type 'integer'"),
    ("spawn", '{"name": "u", "uid": 4294967296}', "bad_args", "uid: 4294967296 is greater than the maximum"),
    ("spawn", '{"name": "t", "pid": 2147483647, "threads": 2}', "bad_args",
     "threads: thread ids run past 2147483647"),
])
def test_out_of_range_arguments_are_refused_cleanly(mnt, cmd, args, etype, what):
    """Values a kernel could not hold are answered with an error, never a traceback
    (internal) or a process half made; the server goes on."""
    with raw_conn(mnt) as s, s.makefile("rb") as f:
        s.sendall(b'{"id": 1, "cmd": "%s", "args": %s}\n' % (cmd.encode(), args.encode()))
        r = read_reply(f)
        assert r["ok"] is False and r["error"]["type"] == etype, r
        assert re.search(what, r["error"]["message"]), r
    with Client(mnt.path) as c:
        assert [p["name"] for p in c.list()] == ["worked"]
        assert c.ping()["pong"]


def test_a_whole_address_space_truth_costs_its_present_pages_only(mnt, ctl):
    """truth over [0, 2^64 - 4 KiB): the buffer follows the pages present, not the span."""
    r = ctl.call("truth", pid=100, start=0, end=(1 << 64) - 4096, reset=False)
    assert [row[0] for row in r["pages"]] == [0x7F0000000000 + i * 4096 for i in range(10)]


def test_huge_rates_slow_the_virtual_clock_and_do_not_wedge_the_mount(mnt, ctl):
    """A workload of 1e20 touches per virtual second: a running clock makes at most
    TICK_TOUCHES per tick (virtual time slips), a step that would make more than
    MAX_STEP_TOUCHES is refused, and the mount answers throughout."""
    from fakeproc.ctl.clock import MAX_STEP_TOUCHES
    pid = ctl.spawn({"name": "busy", "vma": [{"start": VMA, "size": "64KiB", "pages": "16 accessed"}]})
    try:
        ctl.call("set_workload", pid=pid, workload={"rate": 1e20, "pattern": "uniform"})
        with pytest.raises(CtlError) as ei:
            ctl.clock("step", seconds=1)
        assert ei.value.type == "bad_args" and "step in parts" in str(ei.value)
        assert f"{MAX_STEP_TOUCHES:.0e}" in str(ei.value)
        ctl.clock("resume")
        for _ in range(3):  # each request ticks the clock first
            r = subprocess.run(["cat", str(mnt.path / f"proc/{pid}/status")], capture_output=True,
                               timeout=60)
            assert r.returncode == 0 and r.stdout.startswith(b"Name:\tbusy\n")
            assert ctl.ping()["pong"]
    finally:
        ctl.clock("pause")
        ctl.kill(pid)


def test_spawn_picks_free_ids_below_the_largest_pid_t(mnt, ctl):
    """Next to a process ending at the largest pid_t, a spawn without a pid takes the
    lowest free ids above PID_MAX_LIMIT, as the kernel's allocator wraps around."""
    top = ctl.spawn({"pid": 2147483647 - 3, "name": "top", "threads": 4})
    try:
        pid = ctl.spawn({"name": "next"})
        assert pid == 4194305
        ctl.kill(pid)
    finally:
        ctl.kill(top)


# ---- lifecycle ---------------------------------------------------------------------------

def _start(mnt: Path) -> subprocess.Popen:
    proc = subprocess.Popen([*FAKEPROC, "mount", str(mnt), "-f", "--paused", "--machine", str(mnt.parent / "m.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: proc.poll() is not None or (is_mounted(mnt) and _ready(mnt)), 30)
    assert proc.poll() is None, proc.communicate()[0]
    return proc


def _ready(mnt: Path) -> bool:
    try:
        return is_serving(mnt)  # not exists(): a dead daemon's mount answers that from caches
    except OSError:
        return False


def test_stale_socket_is_replaced_and_a_clean_exit_removes_it(tmp_path):
    mnt = tmp_path / "mnt"
    (tmp_path / "m.toml").write_text(MACHINE)
    proc = _start(mnt)
    try:
        path = socket_path(mnt)
        with Client(mnt) as c:
            first = c.ping()["pid"]
        proc.kill()                                   # SIGKILL: the socket file stays behind
        proc.communicate(timeout=30)
        assert path.exists()
        with pytest.raises(CtlError) as ei, Client(mnt) as c:
            c.ping()
        assert ei.value.type == "connect"
        other = path.parent.parent / "0123456789abcdef"   # another killed server's leftovers
        other.mkdir(mode=0o700)
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(other / "ctl.sock"))
        (other / "mountpoint").write_text("/nowhere\n")
        unlinked = path.parent.parent / "0123456789abcdee"  # one whose socket went
        unlinked.mkdir(mode=0o700)
        (unlinked / "mountpoint").write_text("/nowhere/else\n")
        proc = _start(mnt)                            # cleans the stale mount and sockets
        assert socket_path(mnt) == path and not other.exists() and not unlinked.exists()
        with Client(mnt) as c:
            assert c.ping()["pid"] == proc.pid != first
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert not path.exists() and not path.parent.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)


def test_a_starting_mount_removes_the_realproc_dirs_of_dead_servers_only(tmp_path):
    """A killed server leaves <key>/ and <key>.proc/; the next mount (of any path)
    removes both, and an orphan <key>.proc/, but never a live server's, nor a
    directory whose name is not a key's."""
    (tmp_path / "m.toml").write_text(MACHINE)
    live, dead, new = tmp_path / "live", tmp_path / "dead", tmp_path / "new"
    procs = [_start(live)]
    try:
        killed = _start(dead)
        killed.kill()
        killed.communicate(timeout=30)
        subprocess.run(["fusermount3", "-uz", str(dead)], check=True)
        base = realproc_dir(live).parent
        left = [realproc_dir(dead), socket_path(dead).parent]
        orphan, foreign = base / "0123456789abcde1.proc", base / "not-a-key.proc"
        orphan.mkdir()
        foreign.mkdir()
        try:
            assert all(p.exists() for p in left)
            procs.append(_start(new))
            assert not any(p.exists() for p in [*left, orphan])
            assert realproc_dir(live).is_dir() and socket_path(live).exists() and foreign.is_dir()
            assert realproc_dir(new).is_dir()
        finally:
            foreign.rmdir()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0, out
    assert not realproc_dir(live).exists() and not realproc_dir(new).exists()


# ---- the command line --------------------------------------------------------------------

def ctl_cli(mnt, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*FAKEPROC, "ctl", "--mount", str(mnt.path), *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_cli_list_json_and_table(mnt):
    r = ctl_cli(mnt, "list", "--json")
    assert r.returncode == 0, r.stderr
    pids = {p["pid"] for p in json.loads(r.stdout)}
    assert pids == {int(n) for n in os.listdir(mnt.proc_path("")) if n.isdigit()}
    r = ctl_cli(mnt, "list")
    assert r.returncode == 0 and "PID" in r.stdout and "worked" in r.stdout
    # JSON that no request may carry is the user's error (exit 2), not a traceback
    for bad in ('{"action": "step", "seconds": Infinity}', '{"action": "step", "seconds": 1e999}'):
        r = ctl_cli(mnt, "call", "clock", bad)
        assert r.returncode == 2 and r.stderr.startswith("fakeproc ctl: call args: not JSON: "), r.stderr


def test_cli_spawn_workload_clock_kill(mnt):
    toml = f'[[process]]\npid = 5500\nname = "fromcli"\n[[process.vma]]\nstart = {VMA:#x}\nsize = "64KiB"\npages = "16 idle"\n'
    r = ctl_cli(mnt, "spawn", "-", stdin=toml)
    assert (r.returncode, r.stdout) == (0, "spawned pid 5500 (fromcli)\n"), r.stderr
    r = ctl_cli(mnt, "workload", "5500", "--pattern", "seq", "--rate", "3.2e1", "--write", "0")
    assert r.returncode == 0 and "seq workload, 32 touches/s" in r.stdout, r.stderr
    r = ctl_cli(mnt, "workload", "5500", "--rate", "16")             # changes the rate only
    assert r.returncode == 0 and "seq workload, 16 touches/s" in r.stdout, r.stderr
    r = ctl_cli(mnt, "clock", "step", "1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["touches"] == 16
    assert scan(mnt, 5500, VMA, VMA + 0x10000) == {"PTE_ACCESSED": 16}
    r = ctl_cli(mnt, "clock")
    assert r.returncode == 0 and "paused" in r.stdout
    r = ctl_cli(mnt, "call", "kill", '{"pid": 5500}')
    assert r.returncode == 0 and json.loads(r.stdout) == {"pid": 5500, "state": "gone"}
    r = ctl_cli(mnt, "kill", "5500")
    assert r.returncode == 1 and r.stderr == "fakeproc ctl: no_such_process: pid 5500: no process\n"
    r = ctl_cli(mnt, "spawn", "-", stdin="{not json")
    assert r.returncode == 2 and "not valid JSON" in r.stderr


def test_cli_spawn_json_takes_hex_address_strings(mnt):
    """JSON has no hex literals: spawn takes a VMA's start and end and a VM slot's gpa
    and hva as "0x..." strings, as touch and move_pages take addresses; a string that is
    no address names its field."""
    doc = {"pid": 5600, "name": "j", "vma": [{"start": "0x7f1000000000", "size": "2MiB"},
                                             {"start": "0x7f2000000000", "end": "0x7f2000010000"}],
           "vm": {"slot": [{"gpa": "0x100000000", "size": "2MiB", "hva": "0x7f1000000000"}]}}
    r = ctl_cli(mnt, "spawn", "-", stdin=json.dumps(doc))
    assert (r.returncode, r.stdout) == (0, "spawned pid 5600 (j)\n"), r.stderr
    maps = mnt.read("proc/5600/maps").decode().splitlines()
    assert [line.split()[0] for line in maps[:2]] == ["7f1000000000-7f1000200000", "7f2000000000-7f2000010000"]
    assert ctl_cli(mnt, "kill", "5600").returncode == 0
    for table, what in (({"vma": [{"start": "0x7f1000000000"}, {"start": "0xzz"}]},
                         "vma[1].start: not an address: '0xzz'"),
                        ({"vma": [{"start": 0x7F1000000000, "size": "2MiB"}],
                          "vm": {"slot": [{"gpa": 0, "size": "2MiB", "hva": "-0x1"}]}},
                         "vm.slot[0].hva: not an address: -1")):
        r = ctl_cli(mnt, "spawn", "-", stdin=json.dumps({"pid": 5601, "name": "bad", **table}))
        assert (r.returncode, r.stderr) == (1, f"fakeproc ctl: bad_args: spawn: {what}\n")
    assert not mnt.proc_path("5601").exists()


# ---- kernel calls through the control API (issue 3) ---------------------------------

MIGRATE_MACHINE = """
distances = [[10, 17], [17, 10]]
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "64MiB"
[[process]]
pid = 700
name = "mover"
[[process.vma]]
start = 0x7f0000000000
size = "64KiB"
pages = "4 accessed"
"""


def test_move_pages_get_mempolicy_truth_and_check_over_the_socket():
    from fakeproc.ctl.client import Client

    with mounted(MIGRATE_MACHINE) as m, Client(m.path) as c:
        base = 0x7F0000000000
        r = c.call("move_pages", pid=700, pages=[base, base + 4096, base + 0x8000],
                   nodes=[1, 1, 1], flags=0x82, status=[-99, -99, -99])
        # two pages queued and moved; the untouched one is EFAULT (batch rules of 4.20)
        assert r == {"ret": 0, "status": [1, 1, -14]}
        assert c.call("get_mempolicy", pid=700, addr=base)["node"] == 1
        assert c.call("move_pages", pid=700, pages=[base], nodes=None)["status"] == [1]
        # written: the entries the kernel stored. A query stores each; a move to where
        # the page is queues nothing, so its final batch is never stored
        assert c.call("move_pages", pid=700, pages=[base, base + 4096], written=True) == \
            {"ret": 0, "status": [1, 1], "written": [[0, 2]]}
        assert c.call("move_pages", pid=700, pages=[base], nodes=[1], status=[-99],
                      written=True) == {"ret": 0, "status": [-99], "written": []}
        numa = m.read("proc/700/numa_maps").decode()
        assert "N0=2 N1=2" in numa  # the mount shows the new residency
        c.call("touch", pid=700, addr=base, write=True)
        c.call("touch", pid=700, addr=base)
        rows = c.call("truth", pid=700)["pages"]
        assert [base, 1, 2] in rows                 # two touches, on node 1
        assert all(r[2] == 0 for r in c.call("truth", pid=700)["pages"])  # reset by the first
        assert c.call("check") == {"ok": True, "problems": []}
        assert c.call("reclaim", node=0, pages=32, mode="age") == {"reclaimed": 0}
        assert c.call("migrate_pages", pid=700, old_nodes=[1], new_nodes=[0]) == {"ret": 0}
        assert c.call("move_pages", pid=700, pages=[base], nodes=[5])["ret"] == -19  # ENODEV


def test_move_pages_takes_and_gives_packed_arrays():
    """The packed form (base64 of little-endian u64 pages, i32 nodes and status) is the
    same call: bytes written by hand here, not by the code under test."""
    import base64

    with mounted(MIGRATE_MACHINE) as m, Client(m.path) as c:
        # pages 0x7f0000000000 and 0x7f0000001000, then 0x7f0000008000 (not faulted in)
        pages = (bytes.fromhex("00000000007f0000") + bytes.fromhex("00100000007f0000")
                 + bytes.fromhex("00800000007f0000"))
        nodes = bytes.fromhex("01000000" * 3)
        status = bytes.fromhex("9dffffff" * 3)  # -99 each
        r = c.call("move_pages", pid=700, pages=base64.b64encode(pages).decode(),
                   nodes=base64.b64encode(nodes).decode(), flags=2,
                   status=base64.b64encode(status).decode(), packed=True)
        assert r["ret"] == 0
        # 1, 1, -EFAULT (-14 = 0xfffffff2)
        assert base64.b64decode(r["status"]) == bytes.fromhex("01000000" "01000000" "f2ffffff")
        assert numa_nodes(m.read("proc/700/numa_maps").decode()) == "N0=2 N1=2"
        for bad, msg in (("!!", "not base64"), (base64.b64encode(b"12345").decode(), "5 bytes")):
            with pytest.raises(CtlError) as ei:
                c.call("move_pages", pid=700, pages=bad, nodes=None)
            assert msg in str(ei.value)
        # no status given: it starts as zeros; a list reply from packed arguments. The
        # first page is already on node 1 (its batch is flushed when the node changes,
        # so written), the second goes back to node 0
        r = c.call("move_pages", pid=700, pages=base64.b64encode(pages[:16]).decode(),
                   nodes=base64.b64encode(bytes.fromhex("01000000" "00000000")).decode())
        assert r == {"ret": 0, "status": [1, 0]}
        assert numa_nodes(m.read("proc/700/numa_maps").decode()) == "N0=3 N1=1"
        for nodes_hex, status_hex, msg in (("01000000", None, "pages and nodes"),
                                           ("0100000001000000", "00", "4-byte"),
                                           ("0100000001000000", "00000000", "pages and status")):
            args = {"status": base64.b64encode(bytes.fromhex(status_hex)).decode()} \
                if status_hex else {}
            with pytest.raises(CtlError) as ei:
                c.call("move_pages", pid=700, pages=base64.b64encode(pages[:16]).decode(),
                       nodes=base64.b64encode(bytes.fromhex(nodes_hex)).decode(), **args)
            assert msg in str(ei.value) and ei.value.type == "bad_args"


def test_a_kept_descriptor_rereads_at_offset_0_as_seq_file_does():
    """seq_read() renders again at offset 0 (and at any offset but where the last read
    ended): a daemon that keeps /proc/vmstat or numa_maps open and reads it again from
    0 sees new values, while the chunks of one sequential read stay one rendering. A
    reaped process's file is ESRCH (get_proc_task() fails)."""
    with mounted(MIGRATE_MACHINE) as m, Client(m.path) as c:
        base = 0x7F0000000000
        vmstat = os.open(m.path / "proc/vmstat", os.O_RDONLY)
        numa = os.open(m.path / "proc/700/numa_maps", os.O_RDONLY)
        try:
            # 4 pages faulted in on node 0 by the machine file, none migrated yet
            assert b"\npgmigrate_success 0\n" in os.pread(vmstat, 1 << 16, 0)
            assert numa_nodes(os.pread(numa, 4096, 0).decode()) == "N0=4"
            head = os.read(numa, 10)  # a sequential read, 10 bytes at a time
            assert c.call("move_pages", pid=700, pages=[base, base + 4096], nodes=[1, 1])["ret"] == 0
            rest = b"".join(iter(lambda: os.read(numa, 10), b""))
            assert numa_nodes((head + rest).decode()) == "N0=4"  # the rendering it began
            assert b"\npgmigrate_success 2\n" in os.pread(vmstat, 1 << 16, 0)
            assert numa_nodes(os.pread(numa, 4096, 0).decode()) == "N0=2 N1=2"
            os.lseek(numa, 0, os.SEEK_SET)
            assert numa_nodes(os.read(numa, 4096).decode()) == "N0=2 N1=2"
            head = os.pread(numa, 10, 0)  # the buffer holds the rest of the line
            c.call("kill", pid=700)
            with pytest.raises(OSError) as ei:
                os.pread(numa, 4096, 0)
            assert ei.value.errno == errno.ESRCH
            # the failed read reset the seq_file (seq_read()'s "with prejudice"): the
            # rest of the old rendering is gone, and a read where the last one ended
            # re-renders, and fails
            with pytest.raises(OSError) as ei:
                os.pread(numa, 4096, len(head))
            assert ei.value.errno == errno.ESRCH
        finally:
            os.close(vmstat)
            os.close(numa)


def numa_nodes(numa_maps: str) -> str:
    """The N<node>=<pages> fields of the first numa_maps line."""
    return " ".join(f for f in numa_maps.splitlines()[0].split() if f.startswith("N"))


def test_another_user_gets_a_runtime_dir_beside_roots_private_one():
    """root's /run/fakeproc is 0700: another user's stat under it is EACCES, which
    must count as "not there", not end the command."""
    run = Path("/run/fakeproc")
    run.mkdir(mode=0o700, exist_ok=True)
    assert stat.S_IMODE(run.stat().st_mode) == 0o700 and run.stat().st_uid == 0
    xdg = Path(tempfile.mkdtemp(prefix="fakeproc-xdg-", dir="/tmp"))
    os.chown(xdg, 65534, 65534)
    code = ("from fakeproc.ctl.protocol import runtime_dir; "
            "print(runtime_dir('/tmp/some/mount'))")
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "XDG_RUNTIME_DIR": str(xdg)}, cwd="/", timeout=60)
    shutil.rmtree(xdg)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{xdg}/fakeproc/"), out.stdout


def test_cli_clock_resumed_at_rate_0_says_stopped_and_the_rate_once(mnt):
    try:
        assert ctl_cli(mnt, "clock", "rate", "0").returncode == 0
        r = ctl_cli(mnt, "clock", "resume")
        assert r.returncode == 0 and re.fullmatch(r"virtual time \d+\.\d{3} s, stopped, rate 0\n", r.stdout)
    finally:
        ctl_cli(mnt, "clock", "pause")
        ctl_cli(mnt, "clock", "rate", "1")


def test_a_rewound_proc_directory_lists_the_processes_of_now(mnt, ctl):
    """procfs walks the pid table at each getdents from position 0: the same open
    directory, rewound, shows a process spawned since and not one killed since."""
    fd = os.open(mnt.proc_path(""), os.O_RDONLY | os.O_DIRECTORY)
    try:
        before = set(os.listdir(fd))  # (CPython rewinds the shared offset after listing)
        pid = ctl.call("spawn", name="late")["pid"]
        assert str(pid) not in before and str(pid) in set(os.listdir(fd))
        ctl.call("kill", pid=pid)
        assert str(pid) not in set(os.listdir(fd))
    finally:
        os.close(fd)


def test_the_virtual_clock_stops_short_of_infinity(mnt):
    """A step that would pass MAX_CLOCK, or a rate above MAX_RATE, is refused and the
    clock goes on working (1e308 twice made it inf, and every later step failed)."""
    with Client(mnt.path) as c:
        now = c.call("clock")["now"]
        for args in ({"action": "step", "seconds": 1e308}, {"action": "rate", "rate": 1e308}):
            with pytest.raises(CtlError) as e:
                c.call("clock", **args)
            assert e.value.type == "bad_args"
        assert c.call("clock")["now"] == now
        assert c.call("clock", action="step", seconds=1)["now"] == now + 1
