import os
import subprocess

import pytest

from mountutil import CLEANUP_SCRIPT, TMP_ROOT, mounted


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "fuse: mounts a machine over FUSE in a subprocess (needs /dev/fuse and root)")


def require_fuse():
    """Skip the calling test unless this process can make FUSE mounts."""
    if not os.path.exists("/dev/fuse"):
        pytest.skip("FUSE unavailable: /dev/fuse does not exist")
    if os.geteuid() != 0:
        pytest.skip(f"FUSE mount tests need root (running as uid {os.geteuid()})")


def pytest_runtest_setup(item):
    if item.get_closest_marker("fuse"):
        require_fuse()


@pytest.fixture(scope="session")
def default_mount():
    """The built-in default machine, paused, mounted once for the whole session."""
    require_fuse()
    with mounted() as m:
        yield m


@pytest.fixture(scope="session", autouse=True)
def _cleanup_mounts_at_session_end():
    """Remove fakeproc mounts the harness left behind (only those: a developer's own
    mount elsewhere survives; `make test` and .ci/run clean every fakeproc mount)."""
    yield
    subprocess.run(["bash", str(CLEANUP_SCRIPT), str(TMP_ROOT)], check=False, timeout=60)
