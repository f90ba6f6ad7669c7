"""The guide's shell sessions that promise the same output on every run are run as
written, and their output compared byte for byte: an example that drifts from the
program fails here instead of misleading a reader.

A session is one or more fenced blocks of docs/guide.md, `$ command` lines each
followed by the lines it prints; `/tmp/m` is replaced by a scratch mount point, and
`fakeproc` by this checkout's. Files a session names (reclaim.toml) are written from
the docs that define them into its working directory.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mountutil import TMP_ROOT, is_mounted

pytestmark = pytest.mark.fuse

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```\n", re.S | re.M)


def blocks(text: str) -> list[str]:
    return [m.group(1) for m in FENCE.finditer(text)]


def session(command: str, count: int) -> list[tuple[str, str]]:
    """(command, expected output) pairs of `count` guide blocks from the only one
    that runs `$ command`."""
    found = blocks((DOCS / "guide.md").read_text())
    starts = [i for i, b in enumerate(found) if f"$ {command}\n" in b]
    assert len(starts) == 1, f"{len(starts)} blocks of the guide run {command}"
    start = starts[0]
    pairs: list[tuple[str, str]] = []
    for block in found[start:start + count]:
        for line in block.splitlines(keepends=True):
            if line.startswith("$ "):
                pairs.append((line[2:].rstrip("\n"), ""))
            else:
                pairs[-1] = (pairs[-1][0], pairs[-1][1] + line)
    return pairs


def toml_example(doc: str, heading: str) -> str:
    text = (DOCS / doc).read_text()
    section = text[text.index(heading):]
    return next(b for b in blocks(section) if "[[node]]" in b)


def run_session(pairs: list[tuple[str, str]], cwd: Path) -> None:
    mnt = cwd / "m"
    mnt.mkdir()
    fakeproc = f"{shlex.quote(sys.executable)} -m fakeproc"
    try:
        for command, want in pairs:
            real = re.sub(r"^fakeproc\b", fakeproc, command).replace("/tmp/m", str(mnt))
            r = subprocess.run(real, shell=True, cwd=cwd, capture_output=True, text=True,
                               timeout=120)
            assert r.returncode == 0, (command, r.stderr)
            if command.startswith("fakeproc mount "):
                continue  # its summary is the guide's own example elsewhere
            assert r.stdout.replace(str(mnt), "/tmp/m") == want, command
    finally:
        if is_mounted(mnt):
            subprocess.run([sys.executable, "-m", "fakeproc", "umount", str(mnt)], timeout=120)


@pytest.fixture
def workdir():
    TMP_ROOT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=TMP_ROOT) as d:
        yield Path(d)


def test_the_control_session_prints_what_the_guide_shows(workdir):
    pairs = session("fakeproc ctl -m /tmp/m workload 4200201 --rate 1e5", 2)
    assert [c.split()[:4] for c, _ in pairs][:2] == [
        ["fakeproc", "mount", "/tmp/m", "--paused"], ["fakeproc", "ctl", "-m", "/tmp/m"]]
    assert len(pairs) == 10  # mount, workload, step, kill; then six calls
    run_session(pairs, workdir)


def test_the_paused_reclaim_example_gives_the_guides_numbers(workdir):
    (workdir / "reclaim.toml").write_text(
        toml_example("machine-file.md", "## Example: reclaim with fixed watermarks and swap"))
    pairs = session("fakeproc mount /tmp/m --machine reclaim.toml --paused", 1)
    assert len(pairs) == 3 and pairs[1][1] == "virtual time 10.000 s, paused, rate 1 (500000 touches)\n"
    run_session(pairs, workdir)
