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


def dram_hit(tmp: pathlib.Path, *cmd: str) -> tuple[float, dict]:
    out = tmp / "report"
    r = subprocess.run([sys.executable, "-m", "fakeproc", "run", "--machine", MACHINE,
                        "--report", str(out), "--", *cmd], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    (row,) = summarize(json.loads((out / "report.json").read_text()))
    assert (out / "dram_hit.png").exists() and (out / "heat_4300001.png").exists()
    return row["dram_hit"], row


def test_the_daemon_raises_the_dram_hit_ratio(tmp_path):
    base, _ = dram_hit(tmp_path / "baseline", "sleep", "3")
    daemon, row = dram_hit(tmp_path / "daemon", sys.executable, str(ROOT / "examples" / "tiering_daemon.py"),
                           "--pid", "4300001", "--rounds", "4")
    print(f"DRAM hit: baseline {base:.1%}, with the daemon {daemon:.1%} ({daemon / max(base, 1e-9):.1f}x)")
    assert row["promoted_syscall"] > 3000      # the ~3277 hot pages were promoted
    assert daemon >= 3 * base and daemon - base >= 0.2
