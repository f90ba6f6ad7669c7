"""The example daemon (examples/tiering_daemon.py), unmodified, under `fakeproc run`:
its scans read the emulated idle_pages, its move_pages calls reach the emulator
through seccomp, and the ground truth shows it raising the DRAM-hit ratio of a
hot/cold workload whose hot set starts on PMEM, against a no-daemon baseline
measured in the same test."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from fakeproc.report import summarize

pytestmark = pytest.mark.fuse
ROOT = pathlib.Path(__file__).parent.parent
MACHINE = str(ROOT / "examples" / "tiering.toml")


def dram_hit(tmp: pathlib.Path, *cmd: str) -> tuple[float, float, dict]:
    """The DRAM-hit ratio over the whole run and in its last window, and the summary.
    The last window is the last one with at least half the accesses of the busiest: the
    run may end just after a window began (a window of almost nothing)."""
    out = tmp / "report"
    r = subprocess.run([sys.executable, "-m", "fakeproc", "run", "--machine", MACHINE,
                        "--report", str(out), "--", *cmd], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    (row,) = summarize(report)
    assert (out / "dram_hit.png").exists() and (out / "heat_4300001.png").exists()
    served = [s["dram"] + s["pmem"] for s in report["samples"]]
    last = [s for s, n in zip(report["samples"], served) if 2 * n >= max(served)][-1]
    return row["dram_hit"], last["dram"] / max(1, last["dram"] + last["pmem"]), row


def test_the_daemon_raises_the_dram_hit_ratio(tmp_path):
    base, base_last, _ = dram_hit(tmp_path / "baseline", "sleep", "3")
    daemon, daemon_last, row = dram_hit(tmp_path / "daemon", sys.executable,
                                        str(ROOT / "examples" / "tiering_daemon.py"),
                                        "--pid", "4300001", "--rounds", "6")
    print(f"DRAM hit: baseline {base:.1%}, with the daemon {daemon:.1%} ({daemon / max(base, 1e-9):.1f}x); "
          f"last window {base_last:.1%} -> {daemon_last:.1%}")
    assert row["promoted_syscall"] > 3000      # the ~3277 hot pages were promoted
    # The whole-run ratio depends on when the daemon promotes (normally round 0: every
    # request brings the virtual clock up to now); the last window shows where it left
    # the pages.
    assert daemon > base
    assert daemon_last >= 3 * base_last and daemon_last - base_last >= 0.2


def test_the_daemon_says_what_is_missing_instead_of_a_traceback():
    """On a kernel without node types (this host) and for a pid that does not exist
    (under the runner), one line on stderr and exit 1."""
    daemon = [sys.executable, str(ROOT / "examples" / "tiering_daemon.py"), "--rounds", "1", "--scans", "1"]
    r = subprocess.run([*daemon, "--pid", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr == ("tiering_daemon: /sys/devices/system/node/node0/type: no node types here: this "
                        "needs the RFC kernel (run it under `fakeproc run`)\n")
    r = subprocess.run([sys.executable, "-m", "fakeproc", "run", "--machine", MACHINE, "--", *daemon,
                        "--pid", "4399999"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "tiering_daemon: pid 4399999: No such file or directory: /proc/4399999/" in r.stderr
    assert "Traceback" not in r.stderr
