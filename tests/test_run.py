"""`fakeproc run -- CMD`: real tools and programs in the runner's namespace see the
emulated machine; everything else in /proc is the real kernel's; cleanup."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from mountutil import is_mounted

pytestmark = pytest.mark.fuse
RUN = [sys.executable, "-m", "fakeproc", "run", "--paused", "--"]


def run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUN, *cmd], capture_output=True, text=True, timeout=timeout)


def fakeproc_mounts() -> list[str]:
    """The runner's own mounts (other fakeproc mounts may come and go meanwhile)."""
    with open("/proc/self/mounts") as f:
        return [line for line in f if line.startswith("fakeproc ") and "fakeproc-run-" in line]


def _stale(line: str) -> bool:
    try:
        os.listdir(line.split()[1])
    except OSError:
        return True
    return False


@pytest.fixture(autouse=True)
def no_leftover_mounts():
    """No mount a runner started is left behind (a live one may be another user's)."""
    before = set(fakeproc_mounts())
    yield
    deadline = time.monotonic() + 10
    while [m for m in set(fakeproc_mounts()) - before if _stale(m)]:
        assert time.monotonic() < deadline, "a runner left its mount behind"
        time.sleep(0.1)


def test_numactl_and_numastat_see_the_emulated_nodes():
    r = run("sh", "-c", "numactl --hardware && numastat")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "available: 4 nodes (0-3)" in out
    assert re.search(r"^node 2 size: 16384 MB$", out, re.M)
    assert re.search(r"^  0:\s+10\s+21\s+17\s+28\s*$", out, re.M)
    assert re.search(r"^numa_hit\s+\d+\s+\d+\s+0\s+0\s*$", out, re.M)


def test_emulated_processes_and_the_real_rest_of_proc():
    r = run("sh", "-c", "cat /proc/4200001/maps; cat /proc/4200101/status;"
            " cat /proc/self/status; cat /proc/meminfo; readlink /proc/self; ls /proc")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "7f3a00000000-7f3a80000000 rw-p 00000000 00:00 0 \n" in out
    assert "Name:\tmemcached\n" in out
    assert "Name:\tcat\n" in out                      # the program's own status is real
    assert "MemTotal:       41943040 kB\n" in out      # /proc/meminfo is the emulated one
    names = out.split()
    assert "4200001" in names and "1" in names         # emulated and real pids side by side


ALLOWED_SCRIPT = """
import os
lines = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
print(lines["Mems_allowed_list"], lines["Cpus_allowed_list"], lines["Cpus_allowed"])
print(lines["Mems_allowed"])
print(lines["Pid"] == str(os.getpid()), lines["Threads"])
"""


def test_the_program_sees_the_emulated_cpuset():
    """libnuma sizes its node masks from /proc/self/status, hwloc hides the nodes
    outside its cgroup's cpuset.mems: both are the emulated machine's (4 nodes, CPUs
    0-7) for the program the runner starts; the rest of its status is its own."""
    r = run(sys.executable, "-c", ALLOWED_SCRIPT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["0-3 0-7 ff", ",".join(["00000000"] * 31 + ["0000000f"]),
                                     "True 1"]
    r = run("lstopo-no-graphics", "--of", "console")
    assert r.returncode == 0, r.stderr
    assert len(re.findall(r"NUMANode L#\d+ \(P#\d", r.stdout)) == 4, r.stdout


MEMS_ALLOWED_SCRIPT = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def call(maxnode, nmask=True, flags=4):  # MPOL_F_MEMS_ALLOWED
    mode, mask = ctypes.c_int(-1), (ctypes.c_ulong * 32)(*([0xdead] * 32))
    r = libc.syscall(239, ctypes.byref(mode), mask if nmask else None, ctypes.c_ulong(maxnode),
                     None, ctypes.c_ulong(flags))
    print(r, ctypes.get_errno() if r else 0, mode.value, *[hex(mask[i]) for i in (0, 1, 15, 16, 31)])
for maxnode in (1025, 2, 1023, 1024, 2049, 70000):
    call(maxnode)
call(1025, nmask=False)
call(1025, flags=0x100000004)
"""


def test_get_mempolicy_mems_allowed_is_the_emulated_cpuset():
    """get_mempolicy(MPOL_F_MEMS_ALLOWED), libnuma's numa_get_mems_allowed(), answers
    with the machine's nodes 0-3 in every process of the runner (the filter is
    inherited), by 4.20's rules (MAX_NUMNODES 1024; 5.1 moved them to nr_node_ids, so
    the host kernel answers otherwise): maxnode below 1024 is EINVAL; ALIGN(maxnode - 1,
    64) / 8 bytes are written, zeros past the first 128 bytes and then the bitmap (0xf
    and zeros); more than a page EINVAL after the mode was stored. A flags word with
    high bits set is not MPOL_F_MEMS_ALLOWED: the real kernel's EINVAL. By hand."""
    dead = "0xdead 0xdead 0xdead 0xdead 0xdead"
    r = run("sh", "-c", f"{sys.executable} -c '{MEMS_ALLOWED_SCRIPT}'")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "0 0 0 0xf 0x0 0x0 0xdead 0xdead",  # 1024 bits: 128 bytes, words 0-15
        f"-1 22 -1 {dead}",                 # maxnode < MAX_NUMNODES
        f"-1 22 -1 {dead}",
        "0 0 0 0xf 0x0 0x0 0xdead 0xdead",  # 1023 bits: 128 bytes too
        "0 0 0 0xf 0x0 0x0 0x0 0x0",        # 2048 bits: 256 bytes, the last 128 cleared
        f"-1 22 0 {dead}",                  # 8752 bytes > a page, after put_user(mode)
        f"0 0 0 {dead}",                    # no nmask: the mode only
        f"-1 22 -1 {dead}",                 # flags 0x100000004: the real kernel's EINVAL
    ]


def test_the_sys_cpu_tree_is_emulated_and_cpuinfo_is_real():
    r = run("sh", "-c", "cat /sys/devices/system/cpu/online; head -1 /proc/cpuinfo")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "0-7"
    with open("/proc/cpuinfo") as f:
        assert lines[1] == f.readline().rstrip("\n")


def test_exit_status_and_a_missing_command():
    assert run("sh", "-c", "exit 7").returncode == 7
    r = run("/nonexistent/program")
    assert r.returncode == 127 and "nonexistent" in r.stderr
    assert run("sh", "-c", "kill -TERM $$").returncode == 128 + signal.SIGTERM


def test_the_emulator_dying_ends_the_command_and_the_mount():
    proc = subprocess.Popen([*RUN, "sleep", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 30
    server = None
    while server is None:  # this runner's own emulator (its child), once its mount is up
        assert time.monotonic() < deadline
        out = subprocess.run(["pgrep", "-a", "-P", str(proc.pid)], capture_output=True,
                             text=True).stdout.split()
        if "mount" in out and is_mounted(out[out.index("mount") + 1]):
            server = int(out[0])
        time.sleep(0.05)
    os.kill(server, signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 70 and "the emulator died" in err


def test_a_killed_runner_takes_its_emulator_and_command_along(tmp_path):
    """SIGKILL leaves the runner no time to clean up: its emulator gets SIGTERM and
    unmounts, CMD gets SIGKILL (PR_SET_PDEATHSIG), so nothing is left behind."""
    mnt = tmp_path / "mnt"
    proc = subprocess.Popen([sys.executable, "-m", "fakeproc", "run", "--paused", "--mount", str(mnt),
                             "--", "sleep", "300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 30
    while not (is_mounted(str(mnt)) and _children(proc.pid, "sleep")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    server, (cmd,) = _children(proc.pid, "mount"), _children(proc.pid, "sleep")
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while is_mounted(str(mnt)) or _alive(cmd) or any(_alive(p) for p in server):
        assert time.monotonic() < deadline, "the runner's emulator or CMD outlived it"
        time.sleep(0.1)


def _children(pid: int, word: str) -> list[int]:
    out = subprocess.run(["pgrep", "-a", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if word in line.split()[1:]]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


# ---- memory syscalls on emulated pids, answered by the emulator (seccomp) ----------

TIERING = str(__import__("pathlib").Path(__file__).parent.parent / "examples" / "tiering.toml")
APP = "4300001"
BASE = 0x7F0000000000
ON_DRAM = BASE + 24576 * 4096   # the last 32 MiB of the app's VMA were placed on node 0


@pytest.fixture(scope="module", params=["dynamic", "static"])
def mp(request, tmp_path_factory):
    src = __import__("pathlib").Path(__file__).parent / "c" / "mp.c"
    out = tmp_path_factory.mktemp("mp") / f"mp-{request.param}"
    flags = ["-static"] if request.param == "static" else []
    r = subprocess.run(["gcc", "-O2", *flags, "-o", str(out), str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build a {request.param} binary here: {r.stderr.strip()[:200]}")
    return str(out)


def run_machine(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fakeproc", "run", "--paused", "--machine", TIERING,
                           "--", *cmd], capture_output=True, text=True, timeout=120)


def test_move_pages_on_an_emulated_pid(mp):
    script = (f"{mp} {APP} query {BASE:#x} {ON_DRAM:#x} {BASE + (128 << 20):#x};"
              f"{mp} {APP} move 0 {BASE:#x} {BASE + 4096:#x};"
              f"{mp} {APP} query {BASE:#x} {BASE + 4096:#x};"
              f"{mp} {APP} move 7 {BASE:#x};"
              f"{mp} 4399999 query {BASE:#x}")
    r = run_machine("sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "ret=0 errno=0 status=1,0,-14",   # PMEM, DRAM, outside every VMA: -EFAULT
        "ret=0 errno=0 status=0,0",       # both moved to node 0
        "ret=0 errno=0 status=0,0",       # and they are there
        "ret=-1 errno=19 status=-1000",   # ENODEV for node 7, the entry unwritten
        "ret=-1 errno=3 status=-1000",    # an emulated-range pid nobody has: ESRCH
    ]


def test_a_read_only_status_array_faults_even_where_the_value_is_the_same(mp):
    """put_user() of each status entry the kernel stores faults on a read-only array,
    whatever the value: the host kernel on the program's own page (node 0 here) and
    the emulator on an emulated one (BASE is on PMEM node 1) both give EFAULT."""
    r = run_machine("sh", "-c", f"{mp} self roquery 0 own; {mp} {APP} roquery 1 {BASE:#x}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["ret=-1 errno=14 status=0", "ret=-1 errno=14 status=1"]


def test_move_pages_on_a_real_pid_is_the_real_kernels(mp):
    # the program's own page: the host's node 0 answers, the emulator is not asked
    r = run_machine(mp, "self", "query", "own")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ret=0 errno=0 status=0"
    # and a stock kernel rejects MPOL_MF_SW_YOUNG (0x80): proof the real one answered
    r = run_machine(mp, "self", "move", "0", "own")
    assert r.stdout.strip() == "ret=-1 errno=22 status=-1000"


LSEEK_SCRIPT = """
import errno, os
B = 0x7F0000000000
fd = os.open("/proc/4300001/idle_pages", os.O_RDWR)
os.lseek(fd, B, os.SEEK_SET)
print(os.read(fd, 20).hex())
print(hex(os.lseek(fd, 0, os.SEEK_CUR)))
try:
    os.lseek(fd, 0, os.SEEK_END)
except OSError as e:
    print("SEEK_END", errno.errorcode[e.errno])
print(hex(os.lseek(fd, 4096, os.SEEK_CUR)))
print(os.read(fd, 4096)[:9].hex())
other = os.open("/etc/hostname", os.O_RDONLY)
print(os.lseek(other, 0, os.SEEK_END) == os.fstat(other).st_size)
"""


def test_idle_pages_positions_are_the_kernels_under_the_runner():
    # every page of the app is idle: read(20) at B holds A0 B, 5F 5F (30 idle pages) and,
    # the buffer full, A0 be64(end) with end = B + 20 * 32 KiB; the RFC kernel leaves the
    # file position at that cursor (FUSE alone would say B + 20), refuses SEEK_END, and
    # SEEK_CUR moves from the cursor
    r = run_machine(sys.executable, "-c", LSEEK_SCRIPT)
    assert r.returncode == 0, r.stderr
    end = BASE + 20 * 0x8000
    assert r.stdout.splitlines() == [
        "a0" + f"{BASE:016x}" + "5f5f" + "a0" + f"{end:016x}",
        hex(end),
        "SEEK_END EINVAL",
        hex(end + 4096),
        "a0" + f"{end + 4096:016x}",
        "True",
    ]


FCNTL_SCRIPT = """
import fcntl, os
B = 0x7F0000000000
fd = os.open("/proc/4300001/idle_pages", os.O_RDWR)
for flags in (0, os.O_NONBLOCK, 0):
    fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    os.lseek(fd, B, os.SEEK_SET)
    print(os.read(fd, 20)[:11].hex(), fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)
"""


def test_fcntl_o_nonblock_after_open_changes_the_scan_under_the_runner():
    # INTERFACES.md 1.1: the scan flags are the file's status flags on every read, so
    # O_NONBLOCK set with F_SETFL after open makes the next read SCAN_HUGE_PAGE: the
    # app's first 2 MiB (all pages idle, mapped by a page table) is one PMD_IDLE_PTES
    # unit (0x71) instead of PTE_IDLE runs (0x5f = 15 idle pages); cleared, the PTEs
    # come back. F_GETFL still sees what was set. read(20) scans [B, B + 640 KiB): the
    # unit takes the cursor to B + 2 MiB, past the end, so that read is 10 bytes.
    r = run_machine(sys.executable, "-c", FCNTL_SCRIPT)
    assert r.returncode == 0, r.stderr
    hva = "a0" + f"{BASE:016x}"
    assert r.stdout.splitlines() == [hva + "5f5f 0", hva + "71 2048", hva + "5f5f 0"]


def test_a_machine_with_low_pids_is_refused():
    low = __import__("pathlib").Path(__import__("tempfile").mkdtemp()) / "low.toml"
    low.write_text('[[node]]\ntype = "dram"\nsize = "64MiB"\ncpus = "0"\n'
                   '[[process]]\npid = 100\nname = "low"\n')
    r = subprocess.run([sys.executable, "-m", "fakeproc", "run", "--machine", str(low), "--", "true"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "emulated pids must be above 4194304" in r.stderr and "renumber 100" in r.stderr


def test_run_on_a_live_mount_uses_it_and_says_which_options_it_ignores():
    """--mount DIR of a serving machine runs the command on that machine (the one the
    mount was started with), leaves the mount up, and names the machine options that
    it cannot apply instead of dropping them silently."""
    from mountutil import mounted
    with mounted(None) as m:
        base = [sys.executable, "-m", "fakeproc", "run", "--mount", str(m.path)]
        plain = subprocess.run([*base, "--", "cat", "/sys/devices/system/node/node2/type"],
                               capture_output=True, text=True, timeout=60)
        assert plain.returncode == 0 and plain.stdout == "pmem\n", plain.stderr
        assert plain.stderr == ""
        other = subprocess.run([*base, "--machine", "examples/tiering.toml", "--rate", "2",
                                "--", "cat", "/sys/devices/system/node/online"],
                               capture_output=True, text=True, timeout=60)
        assert other.returncode == 0 and other.stdout == "0-3\n"  # still the default machine
        assert "is already serving a machine; --machine, --rate apply only" in other.stderr
        assert is_mounted(m.path)


def test_a_cpuset_file_that_cannot_be_covered_is_said_and_left():
    """The cpuset cover is best effort: binds that fail (here: no source) are reported
    on stderr and the program still runs. In a private mount namespace."""
    script = ("from pathlib import Path\nfrom fakeproc.run.namespace import _cover_cpuset\n"
              "_cover_cpuset(Path('/nonexistent/hostview'), Path('/proc'))\nprint('ran')\n")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", script],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "ran\n", r.stderr
    assert re.search(r"^fakeproc run: /proc/\d+/status keeps the host's cpuset: ", r.stderr, re.M)
