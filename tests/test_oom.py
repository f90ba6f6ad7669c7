"""/proc/PID/oom_score, oom_score_adj and oom_adj (4.20 fs/proc/base.c) and the OOM
killer's choice (mm/oom_kill.c oom_badness(), select_bad_process()), through the
mount and in-process. Every value is worked out by hand: RAM 64 MiB = 16384 pages and
no swap, so totalpages // 1000 = 16; a populated 4 MiB VMA is 1024 pages plus its
PUD, PMD and two PTE tables (mm_pgtables_bytes(): 4 pages; the PGD is not counted)."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import pytest

from fakeproc.kernel import oom_kill
from fakeproc.machine import load
from machines import small_machine
from mountutil import mounted
from test_permissions import open_up

pytestmark = pytest.mark.fuse


def proc(pid: int, adj: int | None = None, uid: int = 0) -> str:
    return (f'[[process]]\npid = {pid}\nname = "p{pid}"\nuid = {uid}\ngid = {uid}\n'
            + (f"oom_score_adj = {adj}\n" if adj is not None else "")
            + f'[[process.vma]]\nstart = 0x7f0000000000\nsize = "4MiB"\npopulate = true\n')


# 14's floor is -1000 (a machine file's value is as root set it), so that its writes
# below 0 need no CAP_SYS_RESOURCE (this host's root may lack it)
MACHINE = small_machine() + proc(10) + proc(11, 500) + proc(12, uid=1000) + \
    '[[process]]\npid = 13\nname = "gone"\nstate = "zombie"\n' + proc(14, -1000)


@pytest.fixture(scope="module")
def m():
    with mounted(MACHINE, extra_args=["--allow-other"]) as mnt:
        open_up(mnt)
        yield mnt


def read(m, pid: int, name: str) -> str:
    return m.read(f"proc/{pid}/{name}").decode()


def write(m, pid: int, name: str, data: bytes) -> int:
    fd = os.open(m.proc_path(f"{pid}/{name}"), os.O_WRONLY)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def test_scores_as_proc_oom_score_prints_them(m):
    # (1024 + 4) * 1000 // 16384 = 62; with 500: (1028 + 500 * 16) * 1000 // 16384 = 551;
    # a zombie has no mm: 0
    assert [read(m, p, "oom_score") for p in (10, 11, 13)] == ["62\n", "551\n", "0\n"]
    assert [read(m, p, "oom_score_adj") for p in (10, 11)] == ["0\n", "500\n"]
    assert read(m, 11, "oom_adj") == "8\n"  # 500 * 17 / 1000 = 8.5, truncated
    modes = {n: oct(os.stat(m.proc_path(f"12/{n}")).st_mode & 0o777) for n in ("oom_score", "oom_adj", "oom_score_adj")}
    assert modes == {"oom_score": "0o444", "oom_adj": "0o644", "oom_score_adj": "0o644"}
    assert os.stat(m.proc_path("12/oom_score_adj")).st_uid == 1000


def test_writes_parse_with_base_0_and_check_the_range(m):
    """kstrtoint(strstrip(buf), 0): 0x.. hex, 0.. octal; at most 12 bytes are read and
    their count returned; -1000..1000 (oom_adj: -17..15), else EINVAL."""
    assert read(m, 14, "oom_score") == "0\n"  # OOM_SCORE_ADJ_MIN: no points at all
    for data, got, adj in ((b"-500\n", 5, "-500"), (b"0x64", 4, "100"), (b"010", 3, "8"),
                           (b" 7 ", 3, "7"), (b"3" + b" " * 20, 12, "3"), (b"+1000", 5, "1000")):
        assert write(m, 14, "oom_score_adj", data) == got, data
        assert read(m, 14, "oom_score_adj") == adj + "\n", data
    for data, err in ((b"1001", errno.EINVAL), (b"-1001", errno.EINVAL), (b"abc", errno.EINVAL),
                      (b"0x", errno.EINVAL), (b"09", errno.EINVAL), (b"99999999999", errno.ERANGE)):
        with pytest.raises(OSError) as e:
            write(m, 14, "oom_score_adj", data)
        assert e.value.errno == err, data
    write(m, 14, "oom_score_adj", b"-500")
    # 1028 - 8000 < 0: at least 1 point, 1000 // 16384 = 0; oom_adj -8.5 -> -8
    assert (read(m, 14, "oom_score"), read(m, 14, "oom_adj")) == ("0\n", "-8\n")
    # the legacy scale, upwards (lowering it needs CAP_SYS_RESOURCE): -17 is
    # OOM_DISABLE, 15 the maximum, the rest * 1000 / 17 and back * 17 / 1000
    write(m, 14, "oom_score_adj", b"-1000")
    for value, adj, back in ((b"-17", "-1000", "-17"), (b"-16", "-941", "-15"), (b"4", "235", "3"),
                             (b"15", "1000", "15")):
        write(m, 14, "oom_adj", value)
        assert (read(m, 14, "oom_score_adj"), read(m, 14, "oom_adj")) == (adj + "\n", back + "\n"), value
    assert read(m, 14, "oom_score") == "1039\n"  # (1028 + 1000 * 16) * 1000 // 16384
    for data in (b"16", b"-18"):
        with pytest.raises(OSError) as e:
            write(m, 14, "oom_adj", data)
        assert e.value.errno == errno.EINVAL, data


PROBE = """
import os, sys
def w(path, data):
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return "ok"
    except OSError as e:
        return e.strerror
d = sys.argv[1]
print(w(d + "/oom_score_adj", b"100"), w(d + "/oom_score_adj", b"-1"), w(d + "/oom_score_adj", b"0"),
      w(d + "/oom_adj", b"1"), w(d + "/oom_adj", b"0"), open(d + "/oom_score_adj").read().strip())
"""


@pytest.mark.skipif(not shutil.which("setpriv"), reason="setpriv (util-linux) is not installed")
def test_an_owner_without_cap_sys_resource_may_not_go_below_the_floor(m):
    """__set_oom_adj(): oom_score_adj below oom_score_adj_min (0 here) needs
    CAP_SYS_RESOURCE, so does an oom_adj below the current value; raising is free."""
    r = subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", sys.executable,
                        "-c", PROBE, m.proc_path("12")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # 100 ok; -1 below the floor; 0 (not below 0) ok; oom_adj 1 -> 58, ok; 0 -> 0 < 58: EACCES
    assert r.stdout.split() == ["ok", "Permission", "denied", "ok", "ok", "Permission", "denied", "58"]


KILL = small_machine(dram="16MiB") + proc(20) + proc(21) + proc(22, -1000)


def test_the_oom_killer_takes_the_most_points_and_the_later_of_equals():
    """select_bad_process(): most points first; of two with as many, the later in the
    process list; OOM_SCORE_ADJ_MIN never (its badness is 0). 20 and 21 have 1028 points
    each, 22 (the largest footprint once it grows) is exempt."""
    k = load(KILL)
    assert k.oom_kill().pid == 21
    assert k.oom_kill().pid == 20
    assert k.oom_kill() is None and k.task(22).alive
    k2 = load(KILL.replace("oom_score_adj = -1000", "oom_score_adj = 1"))
    assert oom_kill.select_victim(k2).pid == 22  # 1028 + 1 * (4096 // 1000) = 1032
