"""The pytest plugin, used the way another project would: a pytester run of a test
file that only knows the fixtures and the marker."""
from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.fuse

USER_TESTS = '''
import os
import pytest

@pytest.mark.fakeproc_machine("""
[[node]]
type = "dram"
size = "64MiB"
cpus = "0-1"
[[node]]
type = "pmem"
size = "128MiB"
[[process]]
pid = 4300001
name = "app"
[[process.vma]]
start = 0x7f0000000000
size = "16KiB"
pages = "4 accessed@1"
""")
def test_custom_machine(fakeproc_machine, fakeproc_client):
    node = fakeproc_machine.path / "sys/devices/system/node"
    assert (node / "node1/type").read_text() == "pmem\\n"
    assert (node / "node0/peer_node").read_text() == "1\\n"
    r = fakeproc_client.call("move_pages", pid=4300001, pages=[0x7f0000000000], nodes=[0], flags=2)
    assert r == {"ret": 0, "status": [0]}

def test_default_machine(fakeproc_machine):
    assert "4200001" in os.listdir(fakeproc_machine.path / "proc")
'''


def test_plugin_fixtures_and_marker(pytester: pytest.Pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_plugin_skips_with_a_reason_without_fuse(pytester: pytest.Pytester, monkeypatch):
    pytester.makepyfile(test_user="def test_it(fakeproc_machine):\n    pass\n")
    pytester.makeconftest("import os\nos.geteuid = lambda: 1000\n")
    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*fakeproc mounts need root (running as uid 1000)*"])


MACHINE_FILE = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
"""


def test_marker_reads_a_machine_file_next_to_the_test(pytester: pytest.Pytester):
    """A relative path is found from the test file's directory whatever the current
    one; a missing file is named, not parsed as TOML text."""
    sub = pytester.mkpydir("suite")
    (sub / "one.toml").write_text(MACHINE_FILE)
    (sub / "test_user.py").write_text(
        "import pytest\n"
        "@pytest.mark.fakeproc_machine('one.toml')\n"
        "def test_file(fakeproc_machine):\n"
        "    assert (fakeproc_machine.path / 'sys/devices/system/node/online').read_text() == '0\\n'\n"
        "@pytest.mark.fakeproc_machine('nosuch.toml')\n"
        "def test_missing(fakeproc_machine):\n"
        "    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "suite")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fakeproc_machine: no machine file 'nosuch.toml' (looked for */suite/nosuch.toml and */nosuch.toml)*"])
