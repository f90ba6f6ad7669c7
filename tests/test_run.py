"""`fakeproc run -- CMD`: real tools and programs in the runner's namespace see the
emulated machine; everything else in /proc is the real kernel's; cleanup."""
from __future__ import annotations

import errno
import os
import shutil
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


STATUS_AT_SCRIPT = """
import os
d = os.open("/proc/self", os.O_RDONLY)
fd = os.open("status", os.O_RDONLY, dir_fd=d)
text = os.read(fd, 1 << 16).decode()
print(dict(l.split(":\t", 1) for l in text.splitlines() if ":\t" in l)["Cpus_allowed_list"])
"""


def test_a_status_opened_relative_to_proc_self_has_the_emulated_cpus():
    """A program that never set its CPUs nor opened /proc/self/status by its absolute
    path reads its status through the bind mount: every emulated CPU."""
    r = run(sys.executable, "-c", STATUS_AT_SCRIPT)
    assert (r.returncode, r.stdout) == (0, "0-7\n"), r.stderr


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
    high bits set has unknown flags: EINVAL (do_get_mempolicy). By hand."""
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
        f"-1 22 -1 {dead}",                 # flags 0x100000004: unknown flags, EINVAL
    ]


def test_the_sys_cpu_tree_is_emulated_and_cpuinfo_is_real():
    r = run("sh", "-c", "cat /sys/devices/system/cpu/online; head -1 /proc/cpuinfo")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "0-7"
    with open("/proc/cpuinfo") as f:
        assert lines[1] == f.readline().rstrip("\n")


def test_the_memory_block_tree_is_emulated():
    """The nodes' memoryN links lead to ../../memory/memoryN: that tree is the emulated
    one too (the same FUSE connection as the node tree), so the blocks exist, hold the
    node's pages, and lsmem shows the emulated machine's 40 GiB in 128 MiB blocks."""
    r = run("sh", "-c", "cat /sys/devices/system/node/node0/memory31/phys_index"
            " /sys/devices/system/node/node3/memory319/phys_index;"
            " stat -c %d /sys/devices/system/memory /sys/devices/system/node;"
            " lsmem -o RANGE,SIZE,STATE,BLOCK,NODE,ZONES")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["0000001f", "0000013f"]
    assert lines[2] == lines[3]
    assert [line.split() for line in lines[4:9]] == [
        ["RANGE", "SIZE", "STATE", "BLOCK", "NODE", "ZONES"],
        ["0x0000000000000000-0x00000000ffffffff", "4G", "online", "0-31", "0", "Normal"],
        ["0x0000000100000000-0x00000001ffffffff", "4G", "online", "32-63", "1", "Normal"],
        ["0x0000000200000000-0x00000005ffffffff", "16G", "online", "64-191", "2", "Normal"],
        ["0x0000000600000000-0x00000009ffffffff", "16G", "online", "192-319", "3", "Normal"]]
    assert re.search(r"^Memory block size: +128M\nTotal online memory: +40G$", r.stdout, re.M)


def test_exit_status_and_a_missing_command():
    assert run("sh", "-c", "exit 7").returncode == 7
    r = run("/nonexistent/program")
    assert r.returncode == 127 and "nonexistent" in r.stderr
    assert run("sh", "-c", "kill -TERM $$").returncode == 128 + signal.SIGTERM


def test_a_report_dir_that_cannot_be_written_is_refused_before_the_command(tmp_path):
    """Exit 2 (a usage error) and CMD never runs: no run that ends in a traceback."""
    afile, ran = tmp_path / "afile", tmp_path / "ran"
    afile.write_text("")
    for bad, why in ((afile, "not a directory"),
                     ("/proc/nope", "cannot create it: No such file or directory")):
        r = subprocess.run([*RUN[:-2], "--report", str(bad), "--", "touch", str(ran)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2
        assert r.stderr == f"fakeproc run: --report {bad}: {why}\n"
        assert not ran.exists()


def test_a_report_that_cannot_be_saved_at_the_end_keeps_the_commands_status(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([*RUN[:-1], "--report", str(out), "--", "sh", "-c",
                        f"rmdir {out} && touch {out}; exit 3"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 3, r.stderr
    assert f"fakeproc run: the report could not be saved in {out}: File exists: {out}\n" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_paused_run_says_why_its_report_is_empty(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([*RUN[:-1], "--report", str(out), "--", "true"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.endswith("fakeproc run: no samples (no workload ran while CMD did), no plots written\n")
    assert (out / "report.json").exists() and not list(out.glob("*.png"))


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


THREADED = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
[[process]]
pid = 4300001
name = "app"
threads = 2
[[process.vma]]
start = 0x7f0000000000
size = "2MiB"
pages = "512 idle"
"""


def test_a_thread_ids_idle_pages_file_gets_the_same_positions(tmp_path):
    """/proc/TID/idle_pages of a thread is the process's file (it shows its one address
    space): the runner answers its lseek(SEEK_CUR) with the cursor too (all pages idle:
    read(20) at B ends at B + 20 * 32 KiB, as in the test above)."""
    machine = tmp_path / "threaded.toml"
    machine.write_text(THREADED)
    script = LSEEK_SCRIPT.replace("/proc/4300001/", "/proc/4300002/")
    r = subprocess.run([sys.executable, "-m", "fakeproc", "run", "--paused", "--machine", str(machine),
                        "--", sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:3] == ["a0" + f"{BASE:016x}" + "5f5f" + "a0" + f"{BASE + 20 * 0x8000:016x}",
                                         hex(BASE + 20 * 0x8000), "SEEK_END EINVAL"]


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


FIONBIO_SCRIPT = """
import fcntl, os, struct, termios
B = 0x7F0000000000
fd = os.open("/proc/4300001/idle_pages", os.O_RDWR)
for on in (0, 1, 0):
    fcntl.ioctl(fd, termios.FIONBIO, struct.pack("i", on))
    os.lseek(fd, B, os.SEEK_SET)
    print(os.read(fd, 20)[:11].hex(), fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)
"""


def test_fionbio_after_open_changes_the_scan_under_the_runner():
    """ioctl(FIONBIO) sets or clears O_NONBLOCK in the file's status flags (the VFS's
    ioctl_fionbio()), so it changes the scan as F_SETFL does (the test above)."""
    r = run_machine(sys.executable, "-c", FIONBIO_SCRIPT)
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


def test_spawn_refuses_a_low_pid_while_a_runner_is_attached():
    """Under the runner a pid at or below 4194304 is a real process's (/proc/1, a
    move_pages(1, ...) go to the host), so while a runner is attached to the mount spawn
    refuses one, forks included, and takes it again once the runner is gone. A low pid
    spawned before makes the runner refuse to start, saying how to undo a spawn too."""
    from fakeproc.ctl.client import Client
    from fakeproc.ctl.protocol import CtlError
    from mountutil import mounted
    with mounted(None) as m, Client(m.path) as c:
        base = [sys.executable, "-m", "fakeproc", "run", "--mount", str(m.path), "--"]
        c.spawn({"name": "low", "pid": 1})
        r = subprocess.run([*base, "true"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1
        assert f"have pid 1); kill 1 (fakeproc ctl --mount {m.path.resolve()} kill PID) and " \
               "spawn again without a pid, or renumber 1 in the machine file" in r.stderr
        c.kill(1)
        runner = subprocess.Popen([*base, "sh", "-c", "echo ready; read x; head -1 /proc/1/status"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert runner.stdout.readline() == "ready\n"
            for table in ({"name": "low", "pid": 1}, {"name": "child", "pid": 2, "fork_of": 4200001}):
                with pytest.raises(CtlError) as e:
                    c.spawn(table)
                assert e.value.type == "bad_args" and e.value.errno == errno.EINVAL
                assert f"spawn: pid {table['pid']}: a `fakeproc run` is attached to this mount, " \
                       "and under it emulated pids must be above 4194304" in e.value.message
            out, _ = runner.communicate("\n", timeout=60)
        finally:
            if runner.poll() is None:
                runner.kill()
                runner.wait()
        assert runner.returncode == 0 and out.startswith("Name:\t") and out != "Name:\tlow\n"
        deadline = time.monotonic() + 10
        while True:  # the server sees the runner's connection close soon after it exits
            try:
                assert c.spawn({"name": "low", "pid": 1}) == 1
                break
            except CtlError:
                assert time.monotonic() < deadline, "spawn still refused after the runner ended"
                time.sleep(0.05)


def test_a_cpuset_file_that_cannot_be_covered_is_said_and_left():
    """The cpuset cover is best effort: binds that fail (here: no source) are reported
    on stderr and the program still runs. In a private mount namespace."""
    script = ("from pathlib import Path\nfrom fakeproc.run.namespace import _cover_cpuset\n"
              "_cover_cpuset(Path('/nonexistent/hostview'), Path('/proc'))\nprint('ran')\n")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", script],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "ran\n", r.stderr
    assert re.search(r"^fakeproc run: /proc/\d+/status keeps the host's cpuset: ", r.stderr, re.M)


AFFINITY_SCRIPT = """
import ctypes, os, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
def get(pid=0, length=128):
    buf = (ctypes.c_ubyte * 256)(*([0xAA] * 256))
    r = libc.syscall(204, pid, length, buf)
    return r, ctypes.get_errno() if r < 0 else 0, bytes(buf[:10]).hex()
def put(cpus, pid=0, length=8, ptr=None):
    m = ctypes.c_ulong(sum(1 << c for c in cpus))
    r = libc.syscall(203, pid, length, ctypes.byref(m) if ptr is None else ctypes.c_void_p(ptr))
    return r, ctypes.get_errno() if r < 0 else 0
def say(*a):
    print(*a, flush=True)
say(*get())
say(*get(length=4), *get(length=0), *get(length=0x20000000))
say(*put([5]), *get())
say(*put([9]), *put([1, 63]), *get())
say(*put([], length=0), *put([3], ptr=8), *get())
say(*get(pid=4200001), *get(pid=4299999), *put([1], pid=4200001))
say(*put([2]))
seen = []
def worker():
    seen.extend([*get(), *put([3]), *get()])
th = threading.Thread(target=worker)
th.start()
th.join()
say(*seen, *get())
child = os.fork()
if child == 0:
    say(*get())
    os._exit(0)
os.waitpid(child, 0)
say(*get(pid=int(sys.argv[1])))
"""


def _host_cpumask_size() -> int:
    """What the host kernel's sched_getaffinity returns for a 128-byte buffer here
    (its cpumask_size())."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(204, 0, 128, (ctypes.c_ubyte * 128)())


def test_sched_affinity_is_over_the_emulated_cpus():
    """sched_getaffinity/sched_setaffinity of the program's tasks are answered over the
    machine's 8 CPUs by 4.20's rules, by hand: cpumask_size() is one long (8 bytes
    written of the caller's 128, the rest keeps 0xaa); len 4 (not a multiple of 8), 0
    and 0x20000000 (len * 8 wraps to 0 as an unsigned int) are EINVAL; CPU 9 lies past
    nr_cpu_ids and is cut, leaving nothing: EINVAL; {1, 63} keeps 1; len 0 clears the
    mask: EINVAL; an unreadable mask EFAULT. An emulated pid reads its task's mask
    (every CPU), a missing one ESRCH; setting an emulated task's mask goes to the host:
    ESRCH. A thread created after the leader chose {2}
    starts with {2} and sets its own {3}; the leader keeps {2}; a forked child inherits
    {2}. A process outside the runner, pinned to host CPU 0, is the host's to answer:
    its mask 01, in the host's cpumask_size() bytes."""
    aa = "aa" * 2
    outside = subprocess.Popen(["sleep", "60"])
    try:
        os.sched_setaffinity(outside.pid, {0})
        r = run(sys.executable, "-c", AFFINITY_SCRIPT, str(outside.pid))
    finally:
        outside.kill()
        outside.wait()
    assert r.returncode == 0, r.stderr
    n = _host_cpumask_size()
    assert r.stdout.splitlines() == [
        f"8 0 ff00000000000000{aa}",
        f"-1 22 {'aa' * 10} -1 22 {'aa' * 10} -1 22 {'aa' * 10}",
        f"0 0 8 0 2000000000000000{aa}",
        f"-1 22 0 0 8 0 0200000000000000{aa}",
        f"-1 22 -1 14 8 0 0200000000000000{aa}",
        f"8 0 ff00000000000000{aa} -1 3 {'aa' * 10} -1 3",
        "0 0",
        f"8 0 0400000000000000{aa} 0 0 8 0 0800000000000000{aa} 8 0 0400000000000000{aa}",
        f"8 0 0400000000000000{aa}",
        f"{n} 0 {(bytes([1]) + bytes(n - 1) + bytes([0xaa]) * 10)[:10].hex()}",
    ]


def test_migratepages_moves_an_emulated_process_node_pair_by_node_pair():
    """numactl's migratepages(8), unmodified: its migrate_pages(2) on an emulated pid
    reaches the emulator. The default machine's redis heap (2048 pages on node 0) goes
    to node 1, then {0, 1} -> {2, 3} sends node 1 to node 3 (the i-th old node to the
    i-th new one)."""
    r = run("sh", "-c", "migratepages 4200001 0 1 && grep heap /proc/4200001/numa_maps && "
                        "migratepages 4200001 0,1 2,3 && grep heap /proc/4200001/numa_maps")
    assert r.returncode == 0, r.stderr
    heap = "55d0c1000000 default heap anon=2048 dirty=2048 N{} kernelpagesize_kB=4"
    assert r.stdout.splitlines() == [heap.format("1=2048"), heap.format("3=2048")]


def test_taskset_and_numactl_bind_to_emulated_cpus_and_nodes():
    """The tools' own calls: taskset -c 5 leaves the program on CPU 5 (it sees one CPU);
    numactl binding to node 1's CPUs (4-7) and node 3's memory shows both, as 4.20
    would (the host has neither CPU 4 nor node 3)."""
    r = run("taskset", "-c", "5", sys.executable, "-c",
            "import os; print(sorted(os.sched_getaffinity(0)), os.cpu_count())")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "[5] 8\n"
    r = run("numactl", "--cpunodebind=1", "--membind=3", "numactl", "--show")
    assert r.returncode == 0, r.stderr
    show = dict(line.split(":", 1) for line in r.stdout.splitlines())
    assert {k: v.strip() for k, v in show.items() if k in ("policy", "physcpubind", "cpubind",
                                                             "nodebind", "membind")} == {
        "policy": "bind", "physcpubind": "4 5 6 7", "cpubind": "1", "nodebind": "1",
        "membind": "3"}


MEMPOLICY_SCRIPT = """
import ctypes, os, threading
libc = ctypes.CDLL(None, use_errno=True)
def setpol(mode, nodes, maxnode=1025):
    m = (ctypes.c_ulong * 16)()
    for n in nodes:
        m[n // 64] |= 1 << (n % 64)
    r = libc.syscall(238, mode, m, ctypes.c_ulong(maxnode))
    return f"{r} {ctypes.get_errno() if r else 0}"
def getpol(flags=0, maxnode=1025, addr=0):
    mode, mask = ctypes.c_int(-1), (ctypes.c_ulong * 32)(*([0xdead] * 32))
    r = libc.syscall(239, ctypes.byref(mode), mask, ctypes.c_ulong(maxnode), ctypes.c_ulong(addr),
                     ctypes.c_ulong(flags))
    return f"{r} {ctypes.get_errno() if r else 0} {mode.value} {mask[0]:#x} {mask[16]:#x}"
def say(*a):
    print(*a, sep=" | ", flush=True)
say(getpol())
say(setpol(2, [2, 3]), getpol(), getpol(flags=1))
say(setpol(3, [1, 3]), getpol(flags=1), getpol())
say(setpol(1, [3]), getpol(), setpol(1, []), getpol())
say(setpol(4, []), getpol(), setpol(4, [1]))
say(setpol(0, [1]), setpol(0, []), getpol())
say(setpol(2, []), setpol(2, [7]), setpol(5, [1]), setpol(2 | 1 << 15 | 1 << 14, [1]))
say(setpol(2 | 1 << 15, [1, 7]), getpol())
say(setpol(3 | 1 << 14, [0, 5]), getpol(), getpol(flags=1))
say(setpol(2, [1], maxnode=2), setpol(2, [0], maxnode=2), getpol())
say(getpol(maxnode=2), getpol(addr=4096), getpol(flags=8), getpol(flags=5))
x = ctypes.c_long(1)
say(getpol(flags=3, addr=ctypes.addressof(x)))
say(setpol(2, [2]))
seen = []
th = threading.Thread(target=lambda: seen.extend([getpol(), setpol(1, [1]), getpol()]))
th.start()
th.join()
say(*seen, getpol())
child = os.fork()
if child == 0:
    say(getpol())
    os._exit(0)
os.waitpid(child, 0)
"""


def test_set_and_get_mempolicy_are_over_the_emulated_nodes():
    """set_mempolicy/get_mempolicy of the program's tasks over the machine's nodes 0-3,
    by 4.20's mm/mempolicy.c, by hand (mode numbers: 0 default, 1 preferred, 2 bind,
    3 interleave, 4 local; MPOL_F_STATIC_NODES 0x8000, MPOL_F_RELATIVE_NODES 0x4000;
    get flags: 1 NODE, 2 ADDR, 4 MEMS_ALLOWED). maxnode 1025 writes 128 bytes: words
    0-15 of the caller's 32, word 16 keeps 0xdead.
    * default: mode 0, no nodes;
    * bind {2,3}: mode 2, 0xc; MPOL_F_NODE needs interleave: EINVAL;
    * interleave {1,3}: MPOL_F_NODE gives the next node, the first (nothing here
      allocates under the policy), with the nodes 0xa;
    * preferred {3}: 0x8; preferred {} is local: mode 1, no nodes; so is local (mode 4,
      stored as preferred), which refuses nodes; default refuses nodes, clears;
    * EINVAL: bind without nodes, bind to node 7 (no memory), mode 5, both mode flags;
    * STATIC bind {1,7}: uses {1}, reports the mode with its flag (0x8002 = 32770)
      and the nodes asked (0x82); RELATIVE interleave {0,5}: node i is the (i mod 4)th
      of 0-3, so {0,1}, reported as asked (0x21) with flag (0x4003 = 16387);
      MPOL_F_NODE gives its first node used, 0;
    * maxnode 2 reads one bit: {1} is empty (EINVAL), {0} is kept;
    * get: maxnode below 1024 with a mask, an addr without MPOL_F_ADDR, flag 8 and
      MEMS_ALLOWED with NODE are EINVAL; NODE|ADDR on the program's own memory goes to
      the host: node 0 and the mapping's default policy (no nodes);
    * a thread created after bind {2} starts with it and sets its own preferred {1};
      the leader keeps bind {2}; a forked child inherits it."""
    dead = "0xdead"
    r = run(sys.executable, "-c", MEMPOLICY_SCRIPT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"0 0 0 0x0 {dead}",
        f"0 0 | 0 0 2 0xc {dead} | -1 22 -1 {dead} {dead}",
        f"0 0 | 0 0 1 0xa {dead} | 0 0 3 0xa {dead}",
        f"0 0 | 0 0 1 0x8 {dead} | 0 0 | 0 0 1 0x0 {dead}",
        f"0 0 | 0 0 1 0x0 {dead} | -1 22",
        f"-1 22 | 0 0 | 0 0 0 0x0 {dead}",
        "-1 22 | -1 22 | -1 22 | -1 22",
        f"0 0 | 0 0 32770 0x82 {dead}",
        f"0 0 | 0 0 16387 0x21 {dead} | 0 0 0 0x21 {dead}",
        f"-1 22 | 0 0 | 0 0 2 0x1 {dead}",
        f"-1 22 -1 {dead} {dead} | -1 22 -1 {dead} {dead} | -1 22 -1 {dead} {dead} | -1 22 -1 {dead} {dead}",
        f"0 0 0 0x0 {dead}",
        "0 0",
        f"0 0 2 0x4 {dead} | 0 0 | 0 0 1 0x2 {dead} | 0 0 2 0x4 {dead}",
        f"0 0 2 0x4 {dead}",
    ]


STATUS_SCRIPT = """
import os
def lines(flags):
    fd = os.open("/proc/self/status", flags)
    try:
        text = os.read(fd, 1 << 16).decode()
        try:
            os.write(fd, b"x")
            wrote = "wrote"
        except OSError as e:
            wrote = e.errno
    finally:
        os.close(fd)
    return dict(l.split(":\\t", 1) for l in text.splitlines()), wrote
ours, wrote = lines(os.O_RDONLY | os.O_CLOEXEC)
real, _ = lines(os.O_RDONLY | os.O_NOATIME)  # a flag the filter lets through
print(ours["Cpus_allowed"], ours["Cpus_allowed_list"], ours["Mems_allowed_list"], wrote)
print(real["Mems_allowed_list"] == "0", real["Cpus_allowed_list"] == ours["Cpus_allowed_list"])
print(all(ours[k] == real[k] for k in ("Name", "Pid", "PPid", "Tgid", "Uid", "Threads")))
import ctypes, threading
fd = os.open("/proc/self/status", os.O_RDONLY)
threads = lambda: [l for l in os.pread(fd, 1 << 16, 0).split(b"\\n") if l.startswith(b"Threads")]
before, ev = threads(), threading.Event()
th = threading.Thread(target=ev.wait)
th.start()
print(before, threads(), os.fstat(fd).st_size)  # read again at offset 0: live
ev.set()
th.join()
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(15, b"\\xd0\\xbe" * 7 + b"\\xd0")  # PR_SET_NAME: 15 bytes, the last one half a letter
name = [l for l in open("/proc/self/status", "rb").read().split(b"\\n") if l.startswith(b"Name")]
print(name, os.sched_getaffinity(0) == {5})
try:
    os.open(f"/proc/0{os.getpid()}/status", os.O_RDONLY)
except OSError as e:
    print("leading zero", e.errno)
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
fds = []
try:
    while True:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
try:
    os.open("/proc/self/status", os.O_RDONLY)
except OSError as e:
    print("full table", e.errno)
os.close(fds.pop())
print(os.read(os.open("/proc/self/status", os.O_RDONLY), 5))
"""


def test_every_task_under_the_runner_reads_its_emulated_cpuset():
    """A read-only open of a task's status, by any process under the runner (here a
    shell's child's child), shows the emulated cpuset: the task's own CPU mask (5
    after taskset -c 5: 20 hex) and the machine's nodes 0-3; the rest is the real
    file. An open with a flag outside the filter's set (O_NOATIME) reads the real
    status: the host's node 0 and the host's CPUs (the real affinity was never
    changed). The descriptor is read-only (a write: EBADF = 9), stats size 0 and
    renders again at each read from offset 0, as procfs (a second thread shows). A
    name that is not UTF-8 (prctl, cut in the middle of a letter) comes back byte for
    byte and breaks nothing. "/proc/0PID" is no name procfs knows (ENOENT = 2). With
    the descriptor table full the open fails with EMFILE (24), as it would, and works
    again once a descriptor is free. numactl in a shell's
    child binds to emulated node 1 and 3 (libnuma reads Mems_allowed there). init
    is outside the runner: the host's status."""
    r = run("sh", "-c", f"taskset -c 5 sh -c '{sys.executable} -c \"$0\"' '{STATUS_SCRIPT}';"
            " sh -c 'numactl -N 1 -m 3 numactl --show | grep -E \"^(nodebind|membind)\"';"
            " grep Mems_allowed_list /proc/1/status")
    assert r.returncode == 0, r.stderr
    with open("/proc/1/status") as f:
        init_mems = next(line for line in f if line.startswith("Mems_allowed_list"))
    assert r.stdout.splitlines() == [
        "20 5 0-3 9", "True False", "True",
        "[b'Threads:\\t1'] [b'Threads:\\t2'] 0",
        "[b'Name:\\t\\xd0\\xbe\\xd0\\xbe\\xd0\\xbe\\xd0\\xbe\\xd0\\xbe\\xd0\\xbe\\xd0\\xbe\\xd0'] True",
        "leading zero 2", "full table 24", "b'Name:'",
        "nodebind: 1 ", "membind: 3 ", init_mems.rstrip("\n")]


GAPS = """
distances = [[10, 21], [21, 10]]
[machine]
nr_cpus = 8
[[node]]
type = "dram"
size = "64MiB"
cpus = "0-1"
[[node]]
type = "dram"
size = "64MiB"
cpus = "4-5"
"""


def test_affinity_keeps_only_online_cpus(tmp_path):
    """8 possible CPUs of which 0, 1, 4 and 5 are online: sched_setaffinity keeps the
    mask's online CPUs (4.20 intersects with the cpuset's, the online ones), so
    taskset -c 1-3,6 leaves CPU 1; taskset -p ff gives 0,1,4,5 (33 hex); status agrees."""
    machine = tmp_path / "gaps.toml"
    machine.write_text(GAPS)
    r = subprocess.run([sys.executable, "-m", "fakeproc", "run", "--paused", "--machine", str(machine),
                        "--", "sh", "-c",
                        "taskset -c 1-3,6 sh -c 'taskset -p $$; grep Cpus_allowed_list /proc/$$/status;"
                        " taskset -p ff $$ | tail -1'"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split()[-1] for line in lines] == ["2", "1", "33"], lines


PERM_MACHINE = """
distances = [[10, 17], [17, 10]]
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "64MiB"

[[process]]
pid = 4300001
name = "rootapp"
[[process.vma]]
start = 0x7f0000000000
size = "16KiB"
pages = "4 accessed@1"

[[process]]
pid = 4300101
name = "userapp"
uid = 1000
gid = 1000
mems_allowed = "0"
[[process.vma]]
start = 0x7f0000000000
size = "16KiB"
pages = "4 accessed@1"
"""

MIGRATE_SCRIPT = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
def migrate(pid, old, new):
    o, n = ctypes.c_ulong(old), ctypes.c_ulong(new)
    r = libc.syscall(256, pid, 64, ctypes.byref(o), ctypes.byref(n))
    return f"{r} {ctypes.get_errno() if r < 0 else 0}"
print(migrate(4300001, 2, 1), migrate(4300101, 2, 2), migrate(4300101, 2, 1))
"""


def test_an_unprivileged_caller_gets_the_kernels_eperm(mp, tmp_path):
    """kernel_move_pages() and kernel_migrate_pages() check the caller: ptrace access
    (real uid and gid those of the target, or CAP_SYS_PTRACE), CAP_SYS_NICE for
    MPOL_MF_MOVE_ALL and for new nodes outside the target's cpuset. Run as uid 1000
    without capabilities: root's process is EPERM to both calls; its own process
    answers, but migrate_pages to node 1, outside its mems_allowed (0), is EPERM, and
    to node 0 moves its 4 pages (returns 0). As root both calls work."""
    shutil.copy(mp, tmp_path / "mp")
    script = tmp_path / "migrate.py"
    script.write_text(MIGRATE_SCRIPT)
    for p in (tmp_path, *tmp_path.parents):
        if str(p).startswith("/tmp/") or p == tmp_path:
            os.chmod(p, os.stat(p).st_mode | 0o755)
    machine = tmp_path / "perm.toml"
    machine.write_text(PERM_MACHINE)
    user = "setpriv --reuid=1000 --regid=1000 --clear-groups"
    py = shutil.which("python3", path="/usr/bin:/bin")
    cmd = (f"{user} {tmp_path}/mp 4300001 query 0x7f0000000000; "
           f"{user} {tmp_path}/mp 4300101 query 0x7f0000000000; "
           f"{user} {py} {script}; "
           f"{tmp_path}/mp 4300101 query 0x7f0000000000; "
           f"{py} {script}")
    r = subprocess.run([sys.executable, "-m", "fakeproc", "run", "--paused", "--machine", str(machine),
                        "--", "sh", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "ret=-1 errno=1 status=-1000",    # root's process: EPERM, status untouched
        "ret=0 errno=0 status=1",         # its own: on PMEM node 1
        "-1 1 -1 1 0 0",                  # root's: EPERM; node 1 not in its cpuset: EPERM; node 0: moved
        "ret=0 errno=0 status=0",         # (root sees the pages on node 0 now)
        "0 0 0 0 0 0",                    # root may do all three (the last two move nothing)
    ]


KNOB_PROBE = """
import os
for p in ("/proc/sys/kernel/numa_balancing", "/proc/sys/vm/overcommit_memory",
          "/sys/kernel/mm/transparent_hugepage/enabled"):
    if not os.path.exists(p):
        print(p, "absent")
        continue
    try:
        os.close(os.open(p, os.O_WRONLY))  # never written: a failed guard only opens
        print(p, "WRITABLE")
    except OSError as e:
        print(p, e.strerror)
"""


def test_the_hosts_knobs_are_read_only_under_the_runner(tmp_path):
    """A daemon that sets numa_balancing, THP or DAMON knobs must not change the host:
    the host's /proc/sys and /sys/kernel/mm are read-only in the runner's namespace
    (an open for writing fails with EROFS; the probe never writes)."""
    script = tmp_path / "probe.py"
    script.write_text(KNOB_PROBE)
    r = subprocess.run([sys.executable, "-m", "fakeproc", "run", "--paused", "--machine", TIERING,
                        "--", sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for line in r.stdout.splitlines():
        assert line.endswith(("Read-only file system", "absent")), line


UPSTREAM_RUN = """
distances = [[10, 17], [17, 10]]
[machine]
upstream = true
[[node]]
type = "dram"
size = "64MiB"
cpus = "0"
[[node]]
type = "pmem"
size = "64MiB"
[[process]]
pid = 4300001
name = "app"
"""


UPSTREAM_PROBE = """
import os, struct
print(open("/proc/sys/kernel/numa_balancing").read().strip())
open("/proc/sys/kernel/numa_balancing", "w").write("2")
print(open("/proc/sys/kernel/numa_balancing").read().strip())
print(open("/sys/devices/virtual/memory_tiering/memory_tier22/nodelist").read().strip())
print(open("/sys/kernel/mm/numa/demotion_enabled").read().strip())
with open("/proc/4300001/pagemap", "rb") as f:  # the app's two pages
    f.seek(0x7f0000000000 // 4096 * 8)
    a, b = (w & ((1 << 55) - 1) for w in struct.unpack("<2Q", f.read(16)))
fd = os.open("/sys/kernel/mm/page_idle/bitmap", os.O_RDWR)
os.pwrite(fd, struct.pack("<Q", 1 << a % 64), a // 64 * 8)  # mark the first one idle
word = lambda pfn: struct.unpack("<Q", os.pread(fd, 8, pfn // 64 * 8))[0]
print(word(a) >> a % 64 & 1, word(b) >> b % 64 & 1)
print(" ".join(sorted(os.listdir("/sys/kernel/mm"))))
try:
    open("/sys/kernel/mm/new", "w")
    print("CREATED")
except OSError as e:
    print(e.strerror)
"""


def test_an_upstream_machine_lays_its_knobs_over_the_hosts(tmp_path):
    """/proc/sys/kernel/numa_balancing under the runner is the emulated one (it takes
    2, memory tiering, and reads it back) while the host's keeps its value; the memory
    tiers, demotion_enabled and the page_idle bitmap are the emulated machine's (tier
    4: DRAM, tier 22: PMEM), also where the host has no such file (this host's kernel
    has no CONFIG_IDLE_PAGE_TRACKING): they are grafted in next to the host's entries,
    and nothing else can be created there."""
    machine = tmp_path / "up.toml"
    machine.write_text(UPSTREAM_RUN + '[[process.vma]]\nstart = 0x7f0000000000\nsize = "8KiB"\n'
                       'pages = "2 accessed"\n')
    with open("/proc/sys/kernel/numa_balancing") as f:
        host = f.read()
    script = tmp_path / "probe.py"
    script.write_text(UPSTREAM_PROBE)
    r = subprocess.run([sys.executable, "-m", "fakeproc", "run", "--paused", "--machine", str(machine),
                        "--", sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:5] == ["0", "2", "1", "true", "1 0"]  # the page marked idle, the other not
    assert set(lines[5].split()) == set(os.listdir("/sys/kernel/mm")) | {"numa", "page_idle"}
    assert lines[6:] == ["Read-only file system"]
    with open("/proc/sys/kernel/numa_balancing") as f:
        assert f.read() == host


@pytest.fixture(scope="module")
def mp_range(tmp_path_factory):
    src = __import__("pathlib").Path(__file__).parent / "c" / "mp_range.c"
    out = tmp_path_factory.mktemp("mp_range") / "mp_range"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(src)], check=True)
    return str(out)


def test_a_move_pages_call_of_100000_entries_is_one_call(mp_range):
    """4.20 takes any count in one call; the runner once sent the arrays in one 1 MiB
    control line, and a call past ~50000 entries failed EINVAL. The app's 128 MiB VMA:
    24576 pages on node 1, then 8192 on node 0; the other 67232 entries lie past it."""
    n = 100000
    r = run_machine("sh", "-c", f"{mp_range} {APP} query {BASE:#x} {n};"
                                f"{mp_range} {APP} move 1 {BASE:#x} {n};"
                                f"{mp_range} {APP} query {BASE:#x} {n}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "ret=0 errno=0", "-14:67232", "0:8192", "1:24576",
        "ret=0 errno=0", "-14:67232", "1:32768",        # the DRAM pages moved to PMEM
        "ret=0 errno=0", "-14:67232", "1:32768",
    ]


def test_a_move_pages_call_past_one_control_request_fails_enomem(mp_range):
    """A call whose arrays do not fit one control request (3.2 M entries: 64 MiB of
    base64) fails ENOMEM before anything is sent or moved (docs/guide.md)."""
    r = run_machine("sh", "-c", f"{mp_range} {APP} move 0 {BASE:#x} 3200000; "
                                f"{mp_range} {APP} query {BASE:#x} 32768")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["ret=-1 errno=12", "-1000:3200000",
                                     "ret=0 errno=0", "0:8192", "1:24576"]


# ---- CMD as a job: signals, terminal stops, the processes it leaves ------------------

def test_cmd_starts_with_the_default_sigpipe_and_sigxfsz():
    """Python ignores SIGPIPE and SIGXFSZ, and exec keeps an ignored signal: CMD must
    not inherit that (a pipeline `yes | head -1` would end in EPIPE errors)."""
    script = "grep SigIgn /proc/self/status; yes | head -1"
    r = run("sh", "-c", script)
    assert r.returncode == 0, r.stderr
    # the same outside the runner (subprocess gives SIGPIPE and SIGXFSZ back their
    # defaults): whatever else this environment ignores, CMD ignores as much, no more
    direct = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    ignored = int(direct.stdout.split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1))
    assert r.stdout == direct.stdout and "Broken pipe" not in r.stderr


def test_processes_cmd_leaves_are_ended_when_it_ends(tmp_path):
    """A daemon's worker or `job &` outlives CMD; with the supervisor gone its
    intercepted calls would fail ENOSYS. The runner (a subreaper) ends them: SIGTERM,
    and SIGKILL for one that ignores it, then says which it ended."""
    script = ("sleep 300 & echo $!; (trap '' TERM; exec sleep 301) & echo $!;"
              "sh -c 'sleep 302 & echo $!' ")  # a double fork: its sleep is an orphan at once
    r = run("sh", "-c", script)
    assert r.returncode == 0, r.stderr
    left = [int(p) for p in r.stdout.split()]
    assert len(left) == 3 and not any(_alive(p) for p in left)
    assert "ending the 3 process(es) it left" in r.stderr and all(str(p) in r.stderr for p in left)


def test_a_signal_to_the_runner_reaches_cmd_once(tmp_path):
    """kill(RUNNER, SIGINT), as a script that started the runner in the background
    ends it: CMD gets it once, passed on."""
    prog = tmp_path / "count.py"
    prog.write_text("import signal, sys, time\nn = 0\n"
                    "def h(s, f):\n    global n; n += 1\n"
                    "signal.signal(signal.SIGINT, h)\nprint('ready', flush=True)\n"
                    "time.sleep(2)\nprint(n, flush=True)\n")
    proc = subprocess.Popen([*RUN, sys.executable, str(prog)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline() == "ready\n"
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out == "1\n", err


def test_run_in_process_leaves_the_callers_children_alone(tmp_path):
    """run() called in a process with children of its own: they are not CMD's, so
    they are neither ended nor reaped by it, and the process is no subreaper after."""
    script = tmp_path / "caller.py"
    script.write_text(
        "import ctypes, subprocess, sys\n"
        "from fakeproc.run.runner import run\n"
        "quick = subprocess.Popen(['sh', '-c', 'exit 3'])\n"
        "slow = subprocess.Popen(['sh', '-c', 'sleep 3; exit 7'])\n"
        "rc = run(['sh', '-c', 'sleep 1 & exit 5'], paused=True)\n"
        "flag = ctypes.c_int(9)\n"
        "ctypes.CDLL(None).prctl(37, ctypes.byref(flag), 0, 0, 0)\n"
        "print(rc, quick.wait(), slow.wait(), flag.value)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["5", "3", "7", "0"], r.stderr
    assert "ending the 1 process(es) it left" in r.stderr  # CMD's own `sleep 1 &`


def test_ctrl_c_and_ctrl_z_from_a_terminal(tmp_path):
    """In an interactive shell CMD and the runner are one job: Ctrl-C (the kernel's
    SIGINT to the foreground group) reaches CMD once, not also through the runner;
    Ctrl-Z stops the job, `fg` continues it, and the job's status is CMD's."""
    import pty
    import select
    prog = tmp_path / "count.py"
    prog.write_text("import signal, sys, time\nn = 0\n"
                    "def h(s, f):\n    global n; n += 1; print(f'INT {n}', flush=True)\n"
                    "signal.signal(signal.SIGINT, h)\nprint('ready', flush=True)\n"
                    "while n < 2:\n    time.sleep(0.02)\nsys.exit(7)\n")
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(PS1="$ ", TERM="dumb")
        os.execv("/bin/bash", ["bash", "--norc", "--noprofile", "-i"])
    out = b""

    def until(word: bytes) -> None:
        nonlocal out
        deadline = time.monotonic() + 60
        while word not in out:
            assert time.monotonic() < deadline, out
            if select.select([fd], [], [], 0.1)[0]:
                out += os.read(fd, 4096)
    try:
        os.write(fd, " ".join([*RUN, sys.executable, str(prog)]).encode() + b"\n")
        until(b"ready")
        os.write(fd, b"\x03")
        until(b"INT 1")
        os.write(fd, b"\x1a")
        until(b"Stopped")
        os.write(fd, b"fg\n")
        time.sleep(0.5)
        os.write(fd, b"\x03")
        until(b"INT 2")
        os.write(fd, b"echo rc=$?\n")
        until(b"rc=7")
    finally:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
    assert out.count(b"INT ") == 2, out


def test_a_ctrl_c_while_the_machine_starts_leaves_nothing(tmp_path):
    """SIGINT as soon as the runner's emulator exists: exit 130, no traceback, the
    emulator gone and its temporary directory removed."""
    machine = tmp_path / "slow.toml"
    machine.write_text('[[node]]\ntype = "dram"\nsize = "12GiB"\ncpus = "0-1"\n'
                       '[[node]]\ntype = "pmem"\nsize = "32GiB"\n'
                       '[[process]]\npid = 4300001\n[[process.vma]]\nstart = 0x7f0000000000\n'
                       'size = "24GiB"\npages = "6291456 idle@1"\n')
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "fakeproc", "run", "--machine", str(machine),
                             "--", "sleep", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, "TMPDIR": str(tmp)})
    deadline = time.monotonic() + 30
    while not (server := _children(proc.pid, "mount")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert not _alive(server[0]) and list(tmp.iterdir()) == []


def test_a_killed_runners_directory_is_removed_by_the_next_runner(tmp_path):
    """SIGKILL leaves the runner's temporary directory (its server unmounts, nothing
    removes the directory); the next runner removes it, and leaves a directory that
    has no owner file (not known to be a runner's)."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    (tmp_path / "fakeproc-run-foreign").mkdir()
    proc = subprocess.Popen([*RUN, "sleep", "300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env=env)
    deadline = time.monotonic() + 30
    while not _children(proc.pid, "sleep"):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    (left,) = [d for d in tmp_path.glob("fakeproc-run-*") if d.name != "fakeproc-run-foreign"]
    assert (left / ".runner").read_text().split()[0] == str(proc.pid)
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while is_mounted(str(left / "mnt")):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert left.exists()
    r = subprocess.run([*RUN, "true"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fakeproc-run-foreign"]


def test_a_hangup_reaches_cmd_when_the_runner_leads_the_session(tmp_path):
    """`ssh -t host fakeproc run -- CMD`: the runner leads the terminal's session, and
    a hangup's SIGHUP goes to the session leader alone (tty_signal_session_leader());
    the runner passes it on, so CMD gets it (it kept running before)."""
    import pty
    mark = tmp_path / "hup"
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, *RUN[1:], "sh", "-c",
                                  f"trap 'echo HUP > {mark}; exit 0' HUP; echo ready; "
                                  "while :; do sleep 0.1; done"])
    out = b""
    deadline = time.monotonic() + 60
    while b"ready" not in out:
        assert time.monotonic() < deadline, out
        out += os.read(fd, 4096)
    os.close(fd)  # the terminal hangs up
    deadline = time.monotonic() + 30
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        assert time.monotonic() < deadline, "the runner did not end"
        time.sleep(0.05)
    assert mark.read_text() == "HUP\n"


def test_processes_are_ended_even_when_stderr_is_gone(tmp_path):
    """The runner says which processes it ends on stderr; a closed pipe there (`... |
    true`) must not stop it ending them, nor change CMD's status."""
    pidfile = tmp_path / "left"
    proc = subprocess.Popen([*RUN, "sh", "-c", f"sleep 300 & echo $! > {pidfile}; sleep 1; exit 3"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc.stderr.close()  # nobody reads it: the runner's writes fail with EPIPE
    assert proc.wait(60) == 3
    left = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(left):
        assert time.monotonic() < deadline, "the left-behind process survived"
        time.sleep(0.05)
