"""/proc/PID/stat, statm, cmdline and comm (what ps, pgrep and top read), through the
mount with real syscalls, and ps itself under `fakeproc run`. Expected bytes are
counted by hand from the machine below and 4.20's fs/proc/array.c (do_task_stat,
proc_pid_statm) and fs/proc/base.c (proc_pid_cmdline_read, comm_show, comm_write)."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time

import pytest

from fakeproc.fs import formats as fmt
from mountutil import mounted
from test_permissions import PYTHON, open_up

MACHINE = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0-1"

[[process]]
pid = 4300001
name = "app"
uid = 1000
gid = 1000
threads = 2
cpu = 1
[[process.vma]]
start = 0x400000
size = "8KiB"
kind = "file"
path = "/usr/bin/app"
perms = "r-xp"
pages = "2 accessed"
[[process.vma]]
start = 0x600000
size = "4KiB"
kind = "file"
path = "/usr/bin/app"
perms = "rw-p"
pages = "1 dirty"
[[process.vma]]
start = 0x1000000
size = "16KiB"
kind = "heap"
pages = "3 dirty"
[[process.vma]]
start = 0x7f0000000000
size = "12KiB"
kind = "shm"
path = "/SYSV00000000"
pages = "2 dirty"
[[process.vma]]
start = 0x7ffffffde000
size = "132KiB"
kind = "stack"
pages = "1 dirty"
"""

# Hand counts (pages): VmSize 2 + 1 + 4 + 3 + 33 = 43 (172 kB, 176128 bytes);
# resident: anon 1 (the data page, a private copy) + 3 heap + 1 stack = 5, file 2
# (the text), shmem 2 -> 9; shared = file + shmem = 4; text = VmExe 8 kB = 2;
# data = VmData (data 4 + heap 16 kB: writable private, not stack) 5 + VmStk 33 = 38.
STATM = "43 9 4 2 0 38 0\n"
TOP = 0x7FFFFFFFF000  # the stack's end: start_stack, then argv "app\0" (4 bytes)


def expected_stat(pid: int, *, permitted: bool = True, leader: bool = True) -> list[str]:
    """The 52 fields but starttime (index 21), as strings."""
    code = ["4194304", "4202496", str(TOP)] if permitted else ["1", "1", "0"]
    tail = ([str(0x600000), str(0x601000), str(0x1000000), str(TOP), str(TOP + 4), str(TOP + 4),
             str(TOP + 4)] if permitted else ["0"] * 7)
    return [str(pid), "(app)", "S", "1", "4300001", "4300001", "0", "-1", str(0x400000),
            "0", "0", "0", "0", "0", "0", "0", "0", "20", "0", "2", "0", "START",
            "176128", "9", str((1 << 64) - 1), *code, "0", "0", "0", "0", "0", "0",
            "0", "0", "0", "17" if leader else "-1", "1", "0", "0", "0", "0", "0", *tail, "0"]


def test_the_formats_by_hand():
    s = fmt.TaskStat(pid=7, comm="a b", state="R", ppid=1, pgrp=7, session=7, flags=0x400000,
                     num_threads=1, start_time=1234, has_mm=True, permitted=True, vsize=8192,
                     rss=2, start_code=0x400000, end_code=0x401000, start_stack=0x7ffc0000,
                     processor=3, start_data=0x600000, end_data=0x601000, start_brk=0x602000,
                     arg_start=0x7ffc0000, arg_end=0x7ffc0004, env_start=0x7ffc0004,
                     env_end=0x7ffc0004)
    assert fmt.proc_pid_stat(s) == (
        "7 (a b) R 1 7 7 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 1234 8192 2 "
        "18446744073709551615 4194304 4198400 2147221504 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0 "
        "6291456 6295552 6299648 2147221504 2147221508 2147221508 2147221508 0\n")
    # a zombie: no mm, so no sizes, no addresses, and the mm block reads 0 0 0 0 0 0 0
    z = fmt.proc_pid_stat(fmt.TaskStat(pid=7, comm="a", state="Z", ppid=1, pgrp=7, session=7,
                                       flags=0x400004, num_threads=1, start_time=5, has_mm=False,
                                       permitted=True, vsize=8192, rss=2, start_code=1))
    assert z == ("7 (a) Z 1 7 7 0 -1 4194308 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 18446744073709551615 "
                 "0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n")
    assert fmt.proc_pid_statm(3, 2, 1, 1, 2) == "3 2 1 1 0 2 0\n"


def read(path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def test_stat_statm_cmdline_and_comm_through_the_mount():
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    with mounted(MACHINE, extra_args=["--allow-other"]) as m:
        after = time.clock_gettime(time.CLOCK_BOOTTIME)
        proc = m.proc_path("4300001")
        fields = read(proc / "stat").decode().split(" ")
        assert fields[-1].endswith("\n") and len(fields) == 52
        fields[-1] = fields[-1][:-1]
        # starttime: clock ticks (USER_HZ 100) of CLOCK_BOOTTIME when the process was made
        assert int(before * 100) <= int(fields[21]) <= int(after * 100) + 1
        fields[21] = "START"
        assert fields == expected_stat(4300001)
        # the second thread: its own pid, not the group leader (exit_signal -1)
        thread = read(proc / "task" / "4300002" / "stat").decode()[:-1].split(" ")
        thread[21] = "START"
        assert thread == expected_stat(4300002, leader=False)
        assert read(proc / "statm") == STATM.encode()
        assert read(proc / "cmdline") == b"app\0"
        assert read(proc / "comm") == b"app\n"
        assert oct(os.stat(proc / "comm").st_mode & 0o777) == "0o644"
        fd = os.open(proc / "comm", os.O_WRONLY)
        try:
            with pytest.raises(OSError) as e:
                os.write(fd, b"renamed\n")
            assert e.value.errno == errno.EINVAL  # no reader is in the task's thread group
        finally:
            os.close(fd)
        # another uid may read stat, but not the addresses (ptrace_may_access() fails)
        open_up(m)
        r = subprocess.run(["setpriv", "--reuid=2000", "--regid=2000", "--clear-groups", PYTHON, "-c",
                            "import sys; print(open(sys.argv[1]).read(), end='')", str(proc / "stat")],
                           capture_output=True, text=True, timeout=60, cwd="/", check=True)
        other = r.stdout[:-1].split(" ")
        other[21] = "START"
        assert other == expected_stat(4300001, permitted=False)


RUN_MACHINE = MACHINE.replace('uid = 1000\ngid = 1000\n', '')


@pytest.mark.skipif(not shutil.which("ps"), reason="procps is not installed")
def test_ps_pgrep_and_top_see_the_emulated_process(tmp_path):
    machine = tmp_path / "m.toml"
    machine.write_text(RUN_MACHINE)
    script = ("ps -p 4300001 -o pid=,ppid=,comm=,rss=,vsz=,stat=,psr=,nlwp=,time=,args=; "
              "pgrep -x app; top -b -n 1 -p 4300001 | tail -1")
    r = subprocess.run([sys.executable, "-m", "fakeproc", "run", "--machine", str(machine), "--",
                        "sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # RSS 9 pages = 36 kB, VSZ 172 kB; S, session leader (s), multithreaded (l); CPU 1
    assert lines[0].split() == ["4300001", "1", "app", "36", "172", "Ssl", "1", "2", "00:00:00", "app"]
    assert lines[1] == "4300001"
    top = lines[2].split()
    # (top cuts the pid to its column width: 4300+)
    assert top[0].startswith("4300") and top[-1] == "app" and top[5:7] == ["36", "16"]  # RES, SHR kB
