"""The benchmark script must keep running (CI runs its quick mode; speed is not
asserted: these machines are noisy, and the figures go to docs/performance.md)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fuse


def test_benchmarks_quick_mode_runs():
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--quick"], capture_output=True, text=True,
                       timeout=600, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr
    for name in ("idle_pages scan", "longest nodeN/meminfo", "open+read+close", "floor: a C FUSE",
                 "simulated touches", "move_pages", "fork + ", "start-up"):
        assert name in r.stdout


def test_the_churn_benchmark_runs():
    r = subprocess.run([sys.executable, "-m", "benchmarks.churn", "40"], capture_output=True,
                       text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr
    assert "new pids:" in r.stdout and "one pid reused:" in r.stdout
