"""The CLI's mount lifecycle: what it prints, how it stops, stale-mount cleanup,
background mode, and workloads running on the virtual clock while mounted."""
from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fakeproc.ctl.protocol import runtime_dir
from fakeproc.fs.server import is_serving, mounts_below
from mountutil import is_mounted, mounted

pytestmark = pytest.mark.fuse
FAKEPROC = [sys.executable, "-m", "fakeproc"]
REDIS = 4200001
HOT_START = 0x7F3A00000000  # the redis VMA whose first 10% is hot


def wait_for(pred, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def start_foreground(mnt: Path, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([*FAKEPROC, "mount", str(mnt), "-f", "--paused", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: is_mounted(mnt) and _ready(mnt))
    return proc


def _ready(mnt: Path) -> bool:
    try:
        return is_serving(mnt)  # not exists(): a dead daemon's mount answers that from caches
    except OSError:  # ENOTCONN: a stale mount not yet cleaned
        return False


def test_prints_what_it_mounted_and_stops_on_sigint(tmp_path):
    mnt = tmp_path / "mnt"
    proc = start_foreground(mnt)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert not is_mounted(mnt)
    assert "node0  dram      4 GiB  cpus 0-3      peer_node  2  distances 10 21 17 28" in out
    assert "node3  pmem     16 GiB  cpus -        peer_node  1  distances 28 17 28 10" in out
    assert f"pid {REDIS}  redis-server" in out
    assert f"stop: fakeproc umount {mnt}" in out
    assert f"unmounted {mnt}" in out


def test_fakeproc_umount_stops_the_server(tmp_path):
    """Two mounts (/sys/devices/system has its own connection): umount takes the inner
    one first, as a plain fusermount3 -u of the outer one would fail with EBUSY."""
    mnt = tmp_path / "mnt"
    proc = start_foreground(mnt)
    assert mounts_below(mnt) == [str(mnt / "sys/devices/system"), str(mnt)]
    subprocess.run([*FAKEPROC, "umount", str(mnt)], check=True, timeout=30)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert mounts_below(mnt) == []


def test_sigterm_under_readers_exits_0_and_leaves_no_mount(tmp_path):
    """SIGTERM detaches /sys/devices/system from a worker while the trio thread still
    pumps it: the session must be freed only by the thread that pumps it."""
    for cycle in range(12):
        mnt = tmp_path / f"mnt{cycle}"
        proc = start_foreground(mnt)
        stop = threading.Event()

        def reader(rel: str) -> None:
            while not stop.is_set():
                try:
                    (mnt / rel).read_bytes()
                except OSError:
                    return

        threads = [threading.Thread(target=reader, args=(rel,), daemon=True) for rel in (
            "sys/devices/system/node/node0/meminfo", "sys/devices/system/node/node1/meminfo",
            "sys/devices/system/node/node2/meminfo", "sys/devices/system/node/node3/meminfo")]
        for t in threads:
            t.start()
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        stop.set()
        for t in threads:
            t.join(10)
        assert proc.returncode == 0, out
        assert "Traceback" not in out, out
        assert mounts_below(mnt) == []


SLOW_INNER_MOUNT = """
import sys, time
from fakeproc.fs import sysmount
real = sysmount.SystemMount.mount
def slow(self):
    time.sleep(1.5)  # the window a SIGTERM must not fall into unanswered
    real(self)
sysmount.SystemMount.mount = slow
from fakeproc.cli import main
sys.exit(main(["mount", sys.argv[1], "-f", "--paused"]))
"""


def test_sigterm_while_the_inner_mount_is_being_made_exits_0(tmp_path):
    """Its mount(2) walks the main mount's path: the main connection must go on
    answering until it is done, and only then may the server stop."""
    mnt = tmp_path / "mnt"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_INNER_MOUNT, str(mnt)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: is_mounted(mnt))
        assert mounts_below(mnt) == [str(mnt)]  # the inner one is still to come
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert mounts_below(mnt) == []


SLOW_DETACH = """
import pathlib, sys, time
from fakeproc.fs import sysmount
real = sysmount.SystemMount.detach
def slow(self):
    pathlib.Path(sys.argv[2]).touch()
    time.sleep(1.5)  # stopping: the window the second SIGTERM falls into
    real(self)
sysmount.SystemMount.detach = slow
from fakeproc.cli import main
sys.exit(main(["mount", sys.argv[1], "-f", "--paused"]))
"""


def test_a_second_sigterm_while_stopping_changes_nothing(tmp_path):
    """A runner killed by SIGKILL sends its server SIGTERM once per thread of it that
    exits (PR_SET_PDEATHSIG): the second one must not kill the server before it has
    unmounted (it exits 0, having unmounted, as after one)."""
    mnt, detaching = tmp_path / "mnt", tmp_path / "detaching"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_DETACH, str(mnt), str(detaching)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: is_mounted(mnt) and _ready(mnt))
        proc.send_signal(signal.SIGTERM)
        wait_for(detaching.exists)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if is_mounted(mnt):
            subprocess.run([*FAKEPROC, "umount", str(mnt)], check=False, timeout=30)
    assert proc.returncode == 0, out
    assert mounts_below(mnt) == []


def test_the_main_mount_serves_the_system_tree_when_its_own_mount_is_gone(tmp_path):
    mnt = tmp_path / "mnt"
    proc = start_foreground(mnt)
    try:
        cpulist = mnt / "sys/devices/system/node/node0/cpulist"
        fast = cpulist.read_bytes()
        subprocess.run(["fusermount3", "-u", str(mnt / "sys/devices/system")], check=True, timeout=30)
        assert mounts_below(mnt) == [str(mnt)]
        assert cpulist.read_bytes() == fast == b"0-3\n"
    finally:
        subprocess.run([*FAKEPROC, "umount", str(mnt)], check=True, timeout=30)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def test_stale_mount_of_a_killed_daemon_is_cleaned_on_next_start(tmp_path):
    mnt = tmp_path / "mnt"
    proc = start_foreground(mnt)
    proc.kill()
    proc.communicate()
    with pytest.raises(OSError) as e:
        os.listdir(mnt)
    assert e.value.errno == errno.ENOTCONN
    proc2 = start_foreground(mnt)
    try:
        assert (mnt / "sys/devices/system/node/node0/type").read_text() == "dram\n"
    finally:
        proc2.send_signal(signal.SIGTERM)
        out, _ = proc2.communicate(timeout=30)
    assert "cleaned a stale mount" in out
    assert proc2.returncode == 0 and not is_mounted(mnt)


def test_background_mount_and_umount(tmp_path):
    mnt = tmp_path / "mnt"
    r = subprocess.run([*FAKEPROC, "mount", str(mnt), "--paused"], capture_output=True, text=True,
                       timeout=60)
    try:
        assert r.returncode == 0, r.stderr
        assert "serving as pid" in r.stdout
        assert (mnt / "sys/devices/system/node/node2/type").read_text() == "pmem\n"
        again = subprocess.run([*FAKEPROC, "mount", str(mnt)], capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "already mounted" in again.stderr
    finally:
        u = subprocess.run([*FAKEPROC, "umount", str(mnt)], capture_output=True, text=True, timeout=60)
    assert u.returncode == 0
    wait_for(lambda: not is_mounted(mnt))


def test_umount_of_a_mount_in_use_leaves_both_mounts(tmp_path):
    """A file held open in the main mount: the inner /sys/devices/system mount must
    not go while the outer stays (the guide: a mount in use is left as it was)."""
    mnt = tmp_path / "mnt"
    r = subprocess.run([*FAKEPROC, "mount", str(mnt), "--paused"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        inner_dev = os.stat(mnt / "sys/devices/system").st_dev
        with open(mnt / "proc/meminfo", "rb"):
            u = subprocess.run([*FAKEPROC, "umount", str(mnt)], capture_output=True, text=True,
                               timeout=60)
            assert u.returncode == 1
            assert f"fakeproc: {mnt} is in use: a process has a file or its working directory " \
                f"under it (pid {os.getpid()})" in u.stderr
            assert is_mounted(mnt) and is_mounted(mnt / "sys/devices/system")
            assert os.stat(mnt / "sys/devices/system").st_dev == inner_dev
    finally:
        u = subprocess.run([*FAKEPROC, "umount", str(mnt)], capture_output=True, text=True, timeout=60)
    assert u.returncode == 0, u.stderr
    wait_for(lambda: not is_mounted(mnt))


def test_umount_of_a_stopped_server_does_not_hang(tmp_path):
    """A server that cannot answer (SIGSTOP) is unmounted without it, then ended."""
    mnt = tmp_path / "mnt"
    r = subprocess.run([*FAKEPROC, "mount", str(mnt), "--paused"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    pid = int(re.search(r"serving as pid (\d+)", r.stdout).group(1))
    os.kill(pid, signal.SIGSTOP)
    try:
        u = subprocess.run([*FAKEPROC, "umount", str(mnt)], capture_output=True, text=True, timeout=60)
        assert u.returncode == 0, u.stderr
        assert u.stderr == f"fakeproc: the server of {mnt} (pid {pid}) did not answer within 5 s: " \
            "unmounted, and sent it SIGTERM\n"
        assert not is_mounted(mnt) and not is_mounted(mnt / "sys/devices/system")
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _state(pid) == "Z")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_two_mounts_on_one_path_at_once_one_wins_and_the_other_says_so(tmp_path):
    """Both launches may pass the 'already mounted' check; the loser's server then
    finds the control socket taken. Its launcher must not take the winner's mount for
    its own (it printed 'serving as pid' with a dead pid and exited 0)."""
    from fakeproc.ctl.client import server_pid
    for attempt in range(3):
        mnt = tmp_path / f"mnt{attempt}"
        procs = [subprocess.Popen([*FAKEPROC, "mount", str(mnt), "--paused"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        try:
            outs = [p.communicate(timeout=90) for p in procs]
            codes = sorted(p.returncode for p in procs)
            assert codes == [0, 1], outs
            won = next(o for p, o in zip(procs, outs) if p.returncode == 0)[0]
            assert int(re.search(r"serving as pid (\d+)", won).group(1)) == server_pid(mnt)
        finally:
            subprocess.run([*FAKEPROC, "umount", str(mnt)], capture_output=True, timeout=60)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _hot_scan(m) -> bytes:
    fd = os.open(m.proc_path(f"{REDIS}/idle_pages"), os.O_RDWR)
    try:
        return os.pread(fd, 4096, HOT_START)  # 128 MiB from the hot set's start
    finally:
        os.close(fd)


def _accessed_units(stream: bytes) -> int:
    """Count PTE_ACCESSED units, skipping SET_HVA operands."""
    n, i = 0, 0
    while i < len(stream):
        b = stream[i]
        if b == 0xA0:
            i += 9
            continue
        if b >> 4 == 0:
            n += b & 15
        i += 1
    return n


def test_workloads_run_on_the_virtual_clock():
    with mounted(None, extra_args=["--no-paused", "--rate", "1"]) as m:
        _hot_scan(m)  # clear
        time.sleep(1.0)
        assert _accessed_units(_hot_scan(m)) > 1000
    with mounted(None) as m:  # paused: nothing touches memory between scans
        _hot_scan(m)
        time.sleep(0.5)
        assert _accessed_units(_hot_scan(m)) == 0


def test_a_mount_point_that_is_no_utf8_does_not_break_the_mount_table_readers(tmp_path):
    """/proc/mounts names mount points in bytes: one that is not UTF-8 (another
    program's) must not make is_mounted() or mounts_below() raise. In a private mount
    namespace, so the host's table is untouched."""
    odd = os.fsencode(tmp_path) + b"/odd\xff"
    script = (f"import os, subprocess\nos.makedirs({odd!r})\n"
              f"subprocess.run(['mount', '-t', 'tmpfs', 'none', {odd!r}], check=True)\n"
              "from fakeproc.fs.server import is_mounted, mounts_below\n"
              f"print(is_mounted({os.fsdecode(odd)!r}), mounts_below({str(tmp_path)!r}))\n")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", script],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "True"  # and mounts_below lists only fakeproc's: none here
    assert r.stdout.split()[1] == "[]"


def test_a_reader_that_goes_away_gets_no_traceback():
    """`fakeproc check | head -0`: the summary meets a closed pipe (EPIPE, Python's
    BrokenPipeError); the command exits 1 without a traceback."""
    r, w = os.pipe()
    os.close(r)  # nobody will read: the first write fails with EPIPE
    try:
        proc = subprocess.run([*FAKEPROC, "check"], stdout=w, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_report_of_a_missing_file_and_plots_of_no_samples(tmp_path):
    """A path that is neither a saved report nor a mount point is named as such (not
    taken for a mount without a control socket); a machine that has run no window
    yet has nothing to plot: no empty figure is written."""
    proc = subprocess.run([*FAKEPROC, "report", str(tmp_path / "missing.json")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == (f"fakeproc report: {tmp_path / 'missing.json'}: [Errno 2] neither a saved "
                           "report nor a mount point\n")
    with mounted() as m:  # paused: no window has closed
        proc = subprocess.run([*FAKEPROC, "report", str(m.path), "--plots", str(tmp_path / "plots")],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "fakeproc report: no samples yet, no plots written\n"
    assert not list((tmp_path / "plots").glob("*.png"))


def test_report_of_json_that_is_no_report_and_outputs_that_cannot_be_written(tmp_path):
    """Another JSON file, and --json/--plots where nothing can be written: one line
    on stderr and exit 1, no traceback. A saved report still loads."""
    def report(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*FAKEPROC, "report", *args], capture_output=True, text=True, timeout=60)

    saved = tmp_path / "saved.json"
    with mounted() as m:
        subprocess.run([*FAKEPROC, "ctl", "-m", str(m.path), "clock", "step", "2"], check=True,
                       capture_output=True, timeout=60)
        assert report(str(m.path), "--json", str(saved)).returncode == 0
    r = report(str(saved))
    assert r.returncode == 0 and f"{REDIS}" in r.stdout, r.stderr
    for text, why in (('{"x": 1}', "not a fakeproc report (no 'window' and 'samples')"),
                      ("[1, 2]", "not a fakeproc report (no 'window' and 'samples')"),
                      ('{"window": 1, "samples": [{"t": 1}]}',
                       "not a fakeproc report (samples[0] has no 'pid')"),
                      ("nope", "not JSON: Expecting value: line 1 column 1 (char 0)")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        r = report(str(bad))
        assert (r.returncode, r.stderr) == (1, f"fakeproc report: {bad}: {why}\n")
    r = report(str(saved), "--json", "/nonexistent/dir/x.json")
    assert (r.returncode, r.stderr) == (
        1, "fakeproc report: --json /nonexistent/dir/x.json: cannot write: No such file or directory\n")
    r = report(str(saved), "--plots", "/proc/nope")
    assert (r.returncode, r.stderr) == (
        1, "fakeproc report: --plots /proc/nope: cannot write: No such file or directory\n")


def test_umount_of_what_is_no_fakeproc_mount_says_so_and_fails(tmp_path):
    """A missing path, a plain directory, and a directory with a mount below it: exit
    1 and one line, nothing unmounted; a stale mount is still cleaned (exit 0)."""
    def umount(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*FAKEPROC, "umount", str(path)], capture_output=True, text=True,
                              timeout=60)

    r = umount(tmp_path / "missing")
    assert (r.returncode, r.stderr) == (1, f"fakeproc: {tmp_path / 'missing'} does not exist\n")
    r = umount(tmp_path)
    assert (r.returncode, r.stderr) == (1, f"fakeproc: {tmp_path} is not a fakeproc mount\n")
    mnt = tmp_path / "mnt"
    proc = start_foreground(mnt)
    try:
        r = umount(tmp_path)
        assert (r.returncode, r.stderr) == (
            1, f"fakeproc: {tmp_path} is not a fakeproc mount (one is mounted below it: {mnt})\n")
        assert is_serving(mnt)
    finally:
        proc.kill()
        proc.communicate()
    r = umount(mnt)
    assert (r.returncode, r.stdout) == (0, f"fakeproc: cleaned a stale mount on {mnt}\n")
    assert not is_mounted(mnt)


def test_a_background_mounts_log_goes_with_a_clean_stop_and_stays_when_it_failed(tmp_path):
    mnt = tmp_path / "mnt"
    r = subprocess.run([*FAKEPROC, "mount", str(mnt), "--paused"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    log = Path(re.search(r"; log: (\S+)$", r.stdout, re.M).group(1))
    try:
        assert log.exists()
    finally:
        subprocess.run([*FAKEPROC, "umount", str(mnt)], check=True, timeout=60)
    wait_for(lambda: not log.exists())  # the server removes it once it has unmounted
    blocked = runtime_dir(tmp_path / "failing")  # a file where the control socket's directory goes
    blocked.write_text("")
    try:
        r = subprocess.run([*FAKEPROC, "mount", str(tmp_path / "failing"), "--paused"],
                           capture_output=True, text=True, timeout=60)
        log = Path(re.search(r"its log is kept: (\S+)$", r.stderr, re.M).group(1))
        assert r.returncode == 1 and "fakeproc: control socket:" in log.read_text()
        log.unlink()
    finally:
        blocked.unlink()


def test_a_mount_point_that_cannot_be_one_is_said_in_one_line(tmp_path):
    """A regular file, or a path that cannot be made: exit 2, no traceback, for mount
    (either mode), run --mount and demo."""
    afile = tmp_path / "afile"
    afile.write_text("")
    for argv, msg in ((["mount", str(afile), "-f"], f"fakeproc: {afile}: not a directory"),
                      (["mount", "/proc/nope"], "fakeproc: /proc/nope: cannot create it: No such file or directory"),
                      (["run", "--mount", str(afile), "--", "true"], f"fakeproc run: --mount {afile}: not a directory"),
                      (["demo", str(afile)], f"fakeproc demo: {afile}: not a directory")):
        r = subprocess.run([*FAKEPROC, *argv], capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stderr) == (2, msg + "\n"), argv


def test_a_rate_that_is_no_number_is_named_by_its_option():
    for cmd in (["run", "--rate", "abc", "--", "true"], ["mount", "--rate", "abc"]):
        r = subprocess.run([*FAKEPROC, *cmd], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2
        assert r.stderr.splitlines()[-1] == f"fakeproc {cmd[0]}: error: argument --rate: not a number: 'abc'"


def test_numbers_json_cannot_carry_are_refused_by_the_cli():
    for cmd, arg in ((["mount", "--rate", "inf"], "--rate"), (["ctl", "clock", "step", "nan"], "value"),
                     (["ctl", "workload", "1", "--hot", "inf"], "--hot")):
        r = subprocess.run([*FAKEPROC, *cmd], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert r.stderr.splitlines()[-1].endswith(f"argument {arg}: not a finite number: {cmd[-1]}"), r.stderr


def test_a_mount_point_given_with_a_slash_gives_a_path_to_paste(tmp_path):
    mnt = tmp_path / "mnt"
    proc = subprocess.Popen([*FAKEPROC, "mount", f"{mnt}/", "-f", "--paused"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: _ready(mnt))
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"  try: cat {mnt}/sys/devices/system/node/node0/meminfo\n" in out


def test_the_mount_point_is_named_without_a_look_at_it(tmp_path, monkeypatch):
    """A stopped server never answers a GETATTR of its root, and once the root's
    attributes left the kernel's cache, realpath() of the mount point (an lstat of
    it) hung `fakeproc umount` and `fakeproc mount` for good. The mount point's path
    is found from its parent, as fusermount finds it; only a symlink that is not a
    mount point is followed."""
    from fakeproc.ctl.protocol import mount_key, mountpoint_path
    from fakeproc.fs.server import is_mounted as mounted_here, mounts_below
    mnt = tmp_path / "mnt"
    r = subprocess.run([*FAKEPROC, "mount", str(mnt), "--paused"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        link = tmp_path / "link"
        link.symlink_to("mnt")
        real_lstat = os.lstat

        def lstat(path, *a, **k):
            assert os.fspath(path) != str(mnt), "looked at the mount point"
            return real_lstat(path, *a, **k)
        monkeypatch.setattr(os, "lstat", lstat)
        (tmp_path / "sub" / "deep").mkdir(parents=True)
        (tmp_path / "up").symlink_to(tmp_path / "sub" / "deep")
        for name in (mnt, f"{mnt}/", f"{mnt}/.", f"{tmp_path}/./mnt", f"{tmp_path}/sub/../mnt"):
            assert mountpoint_path(name) == str(mnt)
        # ".." after a symlink goes up from where the link points, as the kernel goes
        # (not lexically, which would give tmp_path/deep)
        assert mountpoint_path(f"{tmp_path}/up/../deep") == str(tmp_path / "sub" / "deep")
        assert mountpoint_path(link) == str(mnt)  # followed: the link itself is no mount
        assert mounted_here(str(mnt)) and mounts_below(mnt) == [f"{mnt}/sys/devices/system", str(mnt)]
        assert mount_key(mnt)[0] == str(mnt)
    finally:
        monkeypatch.undo()
        subprocess.run([*FAKEPROC, "umount", str(mnt)], capture_output=True, timeout=60)


def test_umount_says_when_other_mount_namespaces_keep_a_copy(tmp_path):
    """`unshare -m` (or a `fakeproc run`) started while a machine is mounted copies
    the mount into its namespace; `fakeproc umount` removes ours, and says that the
    server goes on serving the copy (it exits once that namespace ends)."""
    mnt = tmp_path / "mnt"
    r = subprocess.run([*FAKEPROC, "mount", str(mnt), "--paused"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    server = int(re.search(r"serving as pid (\d+)", r.stdout).group(1))
    holder = subprocess.Popen(["unshare", "-m", "sleep", "60"])
    try:
        wait_for(lambda: os.readlink(f"/proc/{holder.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt"))
        u = subprocess.run([*FAKEPROC, "umount", str(mnt)], capture_output=True, text=True, timeout=60)
        assert u.returncode == 0 and not is_mounted(mnt), u.stderr
        assert f"{mnt} is unmounted here, but 1 other mount namespace(s) hold a copy of it " \
               f"(pid {holder.pid}:" in u.stderr
        assert _state(server) != "Z"  # still serving the copy
    finally:
        holder.kill()
        holder.wait()
    wait_for(lambda: not os.path.exists(f"/proc/{server}") or _state(server) == "Z")
