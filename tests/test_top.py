"""`fakeproc top`: its snapshots agree with the mount's own files and control API."""
from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time

import pytest
from rich.console import Console

from fakeproc.ctl.client import Client
from fakeproc.testing.mounting import mounted
from fakeproc.top import Snapshot, read_meminfo, render, run_top

pytestmark = pytest.mark.fuse

NAMES = ("redis-server", "memcached", "stream")


@pytest.fixture(scope="module")
def running_mount():
    with mounted(None, extra_args=["--no-paused", "--rate", "2"]) as m:
        yield m


def _top(path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fakeproc", "top", str(path), *args],
                          capture_output=True, text=True, timeout=120)


def _last_snapshot(out: str) -> str:
    snaps = out.split("fakeproc top — ")
    assert len(snaps) == 3, out  # "" before the first, then two snapshots
    return snaps[-1]


def test_top_snapshots_agree_with_the_mount(running_mount):
    m = running_mount
    r = _top(m.path, "--iterations", "2", "--interval", "0.5")
    assert r.returncode == 0, r.stderr
    snap = _last_snapshot(r.stdout)
    assert re.search(r"virtual time \d+\.\d+ s \(running, rate 2\)", snap), snap
    # the second refresh has rates against the first
    assert re.search(r"migrations/s \d", snap), snap
    assert re.search(r"demotions/s \(reclaim\) \d", snap), snap

    node_rows = {g[0]: g[1:] for g in (mm.groups() for mm in re.finditer(
        r"^\s*node(\d)\s+(\w+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+\S+\s*$",
        snap, re.M))}
    assert sorted(node_rows) == ["0", "1", "2", "3"], snap
    for nid, (ntype, total, free, anon, active, inactive) in node_rows.items():
        d = m.sys(f"devices/system/node/node{nid}")
        assert ntype == (d / "type").read_text().strip()
        mi = read_meminfo(d / "meminfo")
        assert total == f"{mi['MemTotal'] / 1024:.1f}"
        assert float(free) <= float(total)
        assert float(active) + float(inactive) == pytest.approx(float(anon), abs=0.2)
    assert [node_rows[n][0] for n in "0123"] == ["dram", "dram", "pmem", "pmem"]
    assert node_rows["2"][1] == f"{16 * 1024:.1f}"  # 16 GiB of PMEM

    with Client(m.path) as c:
        procs = {p["name"]: p for p in c.list()}
    for name in NAMES:
        row = re.search(rf"^\s*(\d+)\s+{re.escape(name)}\s+\w+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)"
                        rf"\s+([\d.]+)\s+([\d.]+)\s+([\d.]+%|-)\s+([\d.]+%|-)\s*$", snap, re.M)
        assert row, (name, snap)
        pid, rss, *per_node = row.groups()[:6]
        assert int(pid) == procs[name]["pid"]
        assert sum(map(float, per_node)) == pytest.approx(float(rss), abs=0.3)
        assert float(rss) == pytest.approx(procs[name]["rss"] * 4 / 1024, rel=0.05)
        assert row[7] != "-"  # a running clock has recorded windows


def test_top_live_view_on_a_terminal_console(running_mount):
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=160)
    assert run_top(str(running_mount.path), interval=0.2, iterations=2, console=console) == 0
    out = buf.getvalue()
    for text in ("node0", "node3", "pmem", *NAMES, "virtual time"):
        assert text in out


def test_top_ctrl_c_exits_0(running_mount):
    p = subprocess.Popen([sys.executable, "-m", "fakeproc", "top", str(running_mount.path),
                          "--interval", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout is not None
        assert "fakeproc top" in p.stdout.readline()  # it is refreshing
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_top_without_a_mount_fails_cleanly(tmp_path):
    r = _top(tmp_path, "--iterations", "1")
    assert r.returncode == 1
    assert "fakeproc top" in r.stderr


def _window_rates(window: float, samples: list[tuple]) -> dict:
    """Snapshot.window_rates of a report whose samples are (t, pid, demoted_reclaim[,
    windows])."""
    report = {"window": window, "samples": [
        {"t": t, "pid": pid, "demoted_reclaim": n, "promoted_syscall": 2 * n, "demoted_syscall": 0,
         "windows": w[0] if w else 1}
        for t, pid, n, *w in samples]}
    return Snapshot(clock={"now": 0.0}, nodes=[], vmstat={}, procs=[], report=report).window_rates()


@pytest.mark.parametrize("window, samples, reclaim, promoted", [
    # full 1 s windows: the latest (t=10) holds 20 + 5 pages
    (1.0, [(9.0, 1, 10), (9.0, 2, 0), (10.0, 1, 20), (10.0, 2, 5)], 25.0, 50.0),
    # `report` closed the running window at 10.5: 10 pages in half a second
    (1.0, [(9.0, 1, 10), (10.0, 1, 20), (10.5, 1, 7), (10.5, 2, 3)], 20.0, 40.0),
    # the first window, closed early at 0.25 s (it started at 0)
    (1.0, [(0.25, 1, 4)], 16.0, 32.0),
    # the first full 2 s window
    (2.0, [(2.0, 1, 4)], 2.0, 4.0),
    # a first sample covering 5 windows (one 5 s step): 40 pages over 5 s, not 1 s
    (1.0, [(5.0, 1, 40, 5)], 8.0, 16.0),
])
def test_window_rates_divide_by_the_latest_windows_own_length(window, samples, reclaim, promoted):
    rates = _window_rates(window, samples)
    assert rates["demoted_reclaim"] == pytest.approx(reclaim)
    assert rates["promoted_syscall"] == pytest.approx(promoted)
    assert rates["demoted_syscall"] == 0


def test_window_rates_without_a_window_are_blank():
    assert set(_window_rates(1.0, []).values()) == {None}


def test_the_window_end_is_shown_to_hundredths_as_the_virtual_time():
    """`report` closes a window at any moment: its end reads 10.42, not 10.4218."""
    sample = {"t": 10.4218, "pid": 1, "demoted_reclaim": 0, "promoted_syscall": 0, "demoted_syscall": 0}
    snap = Snapshot(clock={"now": 10.4218, "paused": False, "rate": 1.0}, nodes=[], vmstat={}, procs=[],
                    report={"window": 1.0, "samples": [sample]})
    buf = io.StringIO()
    Console(file=buf, width=200).print(render(snap, "/m", plain=True))
    assert "virtual time 10.42 s (running, rate 1)" in buf.getvalue()
    assert "[pages; window ending t=10.42]" in buf.getvalue()


def test_top_on_an_80_column_terminal_keeps_pids_whole(running_mount):
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=80)
    assert run_top(str(running_mount.path), interval=0.2, iterations=1, console=console) == 0
    with Client(running_mount.path) as c:
        pids = [p["pid"] for p in c.list()]
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())
    for pid in pids:
        assert re.search(rf"(^|\s){pid}\s", out, re.M), (pid, out)


@pytest.mark.parametrize("clock, shown", [
    ({"paused": True, "running": False, "rate": 1.0}, "(paused, rate 1)"),
    ({"paused": False, "running": False, "rate": 0.0}, "(stopped, rate 0)"),  # --rate 0
    ({"paused": False, "running": True, "rate": 2.0}, "(running, rate 2)"),
])
def test_the_header_names_the_clock_as_ctl_clock_does(clock, shown):
    snap = Snapshot(clock={"now": 1.0, **clock}, nodes=[], vmstat={}, procs=[], report={})
    buf = io.StringIO()
    Console(file=buf, width=200).print(render(snap, "/m", plain=True))
    assert f"virtual time 1.00 s {shown}" in buf.getvalue()
