"""The fakeproc pytest plugin: any project can test a tiering daemon against an
emulated machine.

    import pytest

    @pytest.mark.fakeproc_machine('''
    [[node]]
    type = "dram"
    size = "1GiB"
    cpus = "0"
    ''')
    def test_my_daemon(fakeproc_machine, fakeproc_client):
        assert (fakeproc_machine.path / "sys/devices/system/node/node0/type").read_text() == "dram\\n"
        assert fakeproc_client.call("ping")["pong"]

Fixtures: ``fakeproc_machine`` (a mounted machine: the marker's TOML text or file path,
else the built-in default machine; paused unless the marker says ``paused=False``) and
``fakeproc_client`` (the control API client of that mount). Tests that need FUSE and
root are skipped with the reason when either is missing.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from .mounting import Mount, mounted

MARKER = "fakeproc_machine"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(machine=None, paused=True): the machine the fakeproc_machine "
        "fixture mounts (TOML text or a file path; the built-in default when omitted)")


def fuse_unavailable() -> str | None:
    """Why a FUSE mount cannot be made here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "fakeproc needs FUSE: /dev/fuse does not exist"
    if os.geteuid() != 0:
        return f"fakeproc mounts need root (running as uid {os.geteuid()})"
    return None


def _machine_text(marker: pytest.Mark | None, test_dir: Path) -> tuple[str | None, bool]:
    """The marker's machine as TOML text, and whether to mount it paused. A path (a
    Path, or one line with neither `=` nor `[`, which no machine's TOML is) is read:
    a relative one from the test file's directory, else the current one."""
    if marker is None:
        return None, True
    machine = marker.args[0] if marker.args else marker.kwargs.get("machine")
    paused = marker.kwargs.get("paused", True)
    if isinstance(machine, Path) or (machine is not None and "\n" not in machine
                                     and not any(c in machine for c in "=[")):
        tried = [test_dir / machine, Path(machine)]
        found = next((p for p in tried if p.is_file()), None)
        if found is None:
            raise pytest.UsageError(f"{MARKER}: no machine file {str(machine)!r} (looked for "
                                    + " and ".join(str(p.absolute()) for p in tried) + ")")
        machine = found.read_text()
    return machine, paused


@pytest.fixture
def fakeproc_machine(request: pytest.FixtureRequest) -> Iterator[Mount]:
    """A machine mounted over FUSE in a subprocess for this test, unmounted after."""
    reason = fuse_unavailable()
    if reason:
        pytest.skip(reason)
    text, paused = _machine_text(request.node.get_closest_marker(MARKER), request.path.parent)
    with mounted(text, extra_args=() if paused else ("--no-paused",)) as m:
        yield m


@pytest.fixture
def fakeproc_client(fakeproc_machine: Mount) -> Iterator[Any]:
    """The control API client of the mounted machine (fakeproc.ctl.client.Client)."""
    from ..ctl.client import Client
    with Client(fakeproc_machine.path) as c:
        yield c
