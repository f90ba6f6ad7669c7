"""fakeproc.run.seccomp: real programs (dynamic and static, compiled here) make
move_pages/migrate_pages calls; those on emulated pids (> PID_MAX_LIMIT) reach the
supervisor's handler through seccomp user notification, those on real pids run in the
real kernel and never reach it. No mocks: real fork/exec, BPF, ioctls, process_vm_*.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import shutil
import signal
import subprocess
import struct
import sys
from pathlib import Path

import pytest
import trio

from fakeproc.run import seccomp as S

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                       reason="seccomp interception is implemented for x86_64 Linux"),
]

PROBE_SRC = Path(__file__).parent / "c" / "move_pages_probe.c"
EMU_PID = S.PID_MAX_LIMIT + 1  # the smallest emulated pid
FLAGS = 0x82  # MPOL_MF_MOVE | MPOL_MF_SW_YOUNG


def _compile(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["gcc", "-O2", "-Wall", "-pthread", *extra, "-o", str(out), str(PROBE_SRC)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def probes(tmp_path_factory) -> dict[str, Path | str]:
    """The probe built twice: dynamically linked, and -static (or why not)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    d = tmp_path_factory.mktemp("probe")
    out: dict[str, Path | str] = {}
    r = _compile(d / "probe-dynamic")
    assert r.returncode == 0, r.stderr
    out["dynamic"] = d / "probe-dynamic"
    r = _compile(d / "probe-static", "-static")
    out["static"] = d / "probe-static" if r.returncode == 0 else (
        "static libc unavailable (apt-get install libc6-dev provides libc.a): " + r.stderr[-300:])
    return out


@pytest.fixture(params=["dynamic", "static"])
def probe(request, probes) -> Path:
    p = probes[request.param]
    if isinstance(p, str):
        pytest.skip(p)
    if request.param == "static":
        file = subprocess.run(["file", "-b", str(p)], capture_output=True, text=True).stdout
        assert "statically linked" in file or not file
    return p


def _wait(pid: int, timeout: float) -> int:
    """Reap pid within timeout seconds (SIGKILL and fail otherwise)."""
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    if not ready:
        os.kill(pid, signal.SIGKILL)
        S.wait(pid)
        pytest.fail(f"child {pid} did not finish within {timeout} s")
    return S.wait(pid)


def run_under(argv: list, handler, tmp_path: Path, *, intercept=S.DEFAULT_INTERCEPT,
              timeout: float = 10) -> tuple[int, str, S.Supervisor]:
    """spawn() argv with a Supervisor(handler) thread; its exit code, stdout and the
    (closed) supervisor."""
    out_path = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
    with open(out_path, "wb") as out:
        pid, fd = S.spawn([str(a) for a in argv], intercept=intercept, stdout=out.fileno())
    sup = S.Supervisor(fd, handler)
    thread = sup.start()
    try:
        code = _wait(pid, timeout)
        thread.join(timeout)  # EPOLLHUP once the child is reaped
        assert not thread.is_alive(), "the supervisor did not see the filter's end"
    finally:
        sup.stop()
        thread.join(timeout)
        sup.close()
    assert not sup.errors, sup.errors
    return code, out_path.read_text(), sup


LINE = re.compile(r"ret=(-?\d+) errno=(\d+) status=(-?\d+),(-?\d+) pages=(\S+),(\S+) "
                  r"pid=(\d+) tid=(\d+)")


def parse(out: str) -> list[dict]:
    rows = []
    for m in LINE.finditer(out):
        g = m.groups()
        rows.append({"ret": int(g[0]), "errno": int(g[1]), "status": [int(g[2]), int(g[3])],
                     "pages": [int(g[4], 16), int(g[5], 16)], "pid": int(g[6]), "tid": int(g[7])})
    assert rows, out
    return rows


class FakeProcess:
    """The test's emulation of one process: a page -> node table (default from
    ``default(addr)``); move_pages writes a status only for pages it moves, as 4.20
    leaves entries already on their node unwritten when nothing of their batch moved."""

    def __init__(self, pid: int, default=lambda addr: 1) -> None:
        self.pid, self.default = pid, default
        self.table: dict[int, int] = {}
        self.calls: list[tuple] = []

    def node(self, addr: int) -> int:
        return self.table.get(addr & ~0xFFF, self.default(addr))

    def move_pages(self, pid, pages, nodes, status, flags, notif=None):
        self.calls.append((pid, list(pages), None if nodes is None else list(nodes), list(status),
                           flags, notif.pid if notif else None))
        if pid != self.pid:
            return -errno.ESRCH
        if nodes is None:
            for i, addr in enumerate(pages):
                status[i] = self.node(addr)
            return 0
        left = 0
        for i, (addr, node) in enumerate(zip(pages, nodes)):
            if node == 7:  # the test's "full" node: not migrated, counted
                left += 1
            elif self.node(addr) != node:
                self.table[addr & ~0xFFF] = node
                status[i] = node
        return left


def mp_handler(fake: FakeProcess, packed: bool = False):
    """The fake behind move_pages_handler; ``packed`` hands it the caller's bytes (u64
    pages, i32 nodes, a bytearray status) as the runner takes them."""
    if not packed:
        return S.dispatch({"move_pages": S.move_pages_handler(fake.move_pages, pass_notif=True)})

    def emulate(pid, pages, nodes, status, flags, notif=None):
        assert isinstance(pages, bytes) and isinstance(status, bytearray)
        n = len(pages) // 8
        st = list(struct.unpack(f"<{n}i", status))
        ret = fake.move_pages(pid, list(struct.unpack(f"<{n}Q", pages)),
                              None if nodes is None else list(struct.unpack(f"<{n}i", nodes)),
                              st, flags, notif)
        status[:] = struct.pack(f"<{n}i", *st)
        return ret
    return S.dispatch({"move_pages": S.move_pages_handler(emulate, pass_notif=True, packed=True)})


@pytest.fixture(params=[False, True], ids=["lists", "packed"])
def packed(request):
    return request.param


# --- intercepted calls ---------------------------------------------------------------------


def test_move_is_emulated_and_unwritten_status_is_kept(probe, tmp_path, packed):
    fake = FakeProcess(EMU_PID)
    code, out, sup = run_under([probe, EMU_PID, "move", 2, 1], mp_handler(fake, packed), tmp_path)
    (row,) = parse(out)
    assert code == 0 and sup.handled == 1
    # page 0 moved 1 -> 2 (status written); page 1 already on node 1: status untouched
    assert (row["ret"], row["errno"], row["status"]) == (0, 0, [2, -1001])
    assert fake.calls == [(EMU_PID, row["pages"], [2, 1], [-1000, -1001], FLAGS, row["pid"])]
    assert fake.table == {row["pages"][0]: 2}


def test_query_reports_the_fake_table(probe, tmp_path, packed):
    fake = FakeProcess(EMU_PID, default=lambda addr: 1 + (addr >> 12) % 2)
    code, out, sup = run_under([probe, EMU_PID, "query"], mp_handler(fake, packed), tmp_path)
    (row,) = parse(out)
    assert code == 0 and sup.handled == 1
    expect = [1 + (p >> 12) % 2 for p in row["pages"]]
    assert sorted(expect) == [1, 2]  # two neighbouring pages: two different nodes
    assert (row["ret"], row["status"]) == (0, expect)
    assert fake.calls[0][2] is None and fake.calls[0][4] == 0


def test_positive_and_negative_results(probe, tmp_path, packed):
    fake = FakeProcess(EMU_PID)
    # node 7 is "full": 2 pages left unmigrated, a positive return, status unwritten
    _, out, _ = run_under([probe, EMU_PID, "move", 7, 7], mp_handler(fake, packed), tmp_path)
    assert [(r["ret"], r["status"]) for r in parse(out)] == [(2, [-1000, -1001])]
    # an emulated pid the emulation does not know: -ESRCH -> -1 and errno in the program
    _, out, _ = run_under([probe, EMU_PID + 1, "move", 2, 2], mp_handler(fake, packed), tmp_path)
    (row,) = parse(out)
    assert (row["ret"], row["errno"], row["status"]) == (-1, errno.ESRCH, [-1000, -1001])

    def refuse(*args):  # an OSError raised by the emulation is its -errno
        raise PermissionError(errno.EPERM, "no")
    _, out, _ = run_under([probe, EMU_PID, "query"], S.move_pages_handler(refuse, packed=packed), tmp_path)
    assert [(r["ret"], r["errno"]) for r in parse(out)] == [(-1, errno.EPERM)]


def test_faulting_arrays_give_efault(probe, tmp_path, packed):
    fake = FakeProcess(EMU_PID)
    # pages = NULL: no chunk readable, the emulation sees no page, the caller EFAULT
    _, out, _ = run_under([probe, EMU_PID, "badpages"], mp_handler(fake, packed), tmp_path)
    assert [(r["ret"], r["errno"]) for r in parse(out)] == [(-1, errno.EFAULT)]
    assert fake.calls[-1][1] == []
    # status = NULL: the status write-back faults
    _, out, _ = run_under([probe, EMU_PID, "badstatus", 3, 3], mp_handler(fake, packed), tmp_path)
    assert [(r["ret"], r["errno"]) for r in parse(out)] == [(-1, errno.EFAULT)]
    # ...but an up-front error (unknown pid) comes first, as in kernel_move_pages
    _, out, _ = run_under([probe, EMU_PID + 5, "badpages"], mp_handler(fake, packed), tmp_path)
    assert [(r["ret"], r["errno"]) for r in parse(out)] == [(-1, errno.ESRCH)]


def test_a_second_thread_is_intercepted_with_its_tid(probe, tmp_path):
    fake = FakeProcess(EMU_PID)
    code, out, sup = run_under([probe, EMU_PID, "thread", 2, 3], mp_handler(fake), tmp_path)
    (row,) = parse(out)
    assert code == 0 and (row["ret"], row["status"]) == (0, [2, 3])
    assert row["tid"] != row["pid"]
    assert fake.calls[0][5] == row["tid"]  # notif.pid: the calling thread


def test_migrate_pages_bitmasks(probe, tmp_path):
    calls = []

    def emulate(pid, old, new):
        calls.append((pid, old, new))
        return 5 if pid == EMU_PID else -errno.ESRCH

    handler = S.dispatch({"migrate_pages": S.migrate_pages_handler(emulate)})
    # maxnode 65 -> 64 bits read (get_nodes' --maxnode)
    _, out, _ = run_under([probe, EMU_PID, "migrate", 65, "0x3", "0x8000000000000004"], handler,
                          tmp_path)
    assert parse(out)[0]["ret"] == 5
    assert calls[-1] == (EMU_PID, [0, 1], [2, 63])
    # maxnode 2 -> only bit 0 counts
    run_under([probe, EMU_PID, "migrate", 2, "0x3", "0x6"], handler, tmp_path)
    assert calls[-1] == (EMU_PID, [0], [])
    # a node >= MAX_NUMNODES (1024: word 16) -> EINVAL before the pid is looked up
    words = ",".join(["0"] * 16 + ["1"])
    n = len(calls)
    _, out, _ = run_under([probe, EMU_PID + 9, "migrate", 1100, words, "1"], handler, tmp_path)
    assert [(r["ret"], r["errno"]) for r in parse(out)] == [(-1, errno.EINVAL)]
    assert len(calls) == n
    _, out, _ = run_under([probe, EMU_PID + 9, "migrate", 65, "1", "2"], handler, tmp_path)
    assert [(r["ret"], r["errno"]) for r in parse(out)] == [(-1, errno.ESRCH)]


# --- calls that must NOT be intercepted --------------------------------------------------------


def test_real_pids_reach_the_real_kernel(probe, tmp_path):
    seen = []

    def handler(notif):
        seen.append(notif)
        return S.Return(-errno.ENOSYS)

    # own pid, query: the real kernel's node of two touched pages (node 0 on this host)
    _, out, _ = run_under([probe, "self", "query"], handler, tmp_path)
    assert [(r["ret"], r["status"]) for r in parse(out)] == [(0, [0, 0])]
    # own pid, a node that does not exist: the real kernel's -ENODEV, status[1] unwritten
    _, out, _ = run_under([probe, "self", "move", 0, 5, 0], handler, tmp_path)
    assert [(r["ret"], r["errno"], r["status"]) for r in parse(out)] == [(-1, errno.ENODEV, [0, -1001])]
    # MPOL_MF_SW_YOUNG is this project's kernel's flag: a stock kernel says EINVAL
    _, out, _ = run_under([probe, "self", "move", 0, 0], handler, tmp_path)
    assert [(r["ret"], r["errno"]) for r in parse(out)] == [(-1, errno.EINVAL)]
    # pid 0 (self), PID_MAX_LIMIT itself (no such real task) and a negative pid
    _, out, _ = run_under([probe, "0", "query"], handler, tmp_path)
    assert [(r["ret"], r["status"]) for r in parse(out)] == [(0, [0, 0])]
    for pid in (S.PID_MAX_LIMIT, -5, -EMU_PID):
        _, out, _ = run_under([probe, pid, "query"], handler, tmp_path)
        assert [(r["ret"], r["errno"]) for r in parse(out)] == [(-1, errno.ESRCH)], pid
    _, out, _ = run_under([probe, os.getpid(), "migrate", 3, "1", "1"], handler, tmp_path)
    assert parse(out)[0]["ret"] == 0  # migrate_pages(real pid, node 0 -> node 0)
    assert seen == []


def test_get_mems_allowed_intercepts_that_form_only(tmp_path):
    """The intercept name get_mems_allowed stops get_mempolicy only when its flags are
    MPOL_F_MEMS_ALLOWED; every other get_mempolicy goes to the real kernel."""
    code_ = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); mode = ctypes.c_int(-1)\n"
             "for flags in (0, 4, 0):\n"
             "    r = libc.syscall(239, ctypes.byref(mode), None, 0, None, flags)\n"
             "    print(r, ctypes.get_errno() if r else 0, mode.value)")
    seen = []

    def handler(notif):
        seen.append(notif.name)
        return S.Return(-errno.EACCES)
    _, out, _ = run_under([sys.executable, "-I", "-c", code_], handler, tmp_path,
                          intercept=["get_mems_allowed"])
    assert out.splitlines() == ["0 0 0", "-1 13 0", "0 0 0"] and seen == ["get_mempolicy"]


def test_intercept_set_is_a_parameter(tmp_path):
    """get_mempolicy acts on the caller: intercepted only on request, and then always;
    Continue() hands it to the real kernel."""
    code_ = ("import ctypes, sys; mode = ctypes.c_int(-1);"
             "r = ctypes.CDLL(None, use_errno=True).syscall(239, ctypes.byref(mode), None, 0, None, 0);"
             "print(r, ctypes.get_errno(), mode.value)")
    seen = []

    def handler(notif):
        seen.append(notif.name)
        return S.Return(-errno.EACCES) if len(seen) == 1 else S.Continue()

    argv = [sys.executable, "-I", "-c", code_]
    _, out, _ = run_under(argv, handler, tmp_path)  # default: not intercepted
    assert out.split() == ["0", "0", "0"] and seen == []  # MPOL_DEFAULT from the kernel
    _, out, _ = run_under(argv, handler, tmp_path, intercept=["get_mempolicy"])
    assert out.split() == ["-1", str(errno.EACCES), "-1"] and seen == ["get_mempolicy"]
    _, out, _ = run_under(argv, handler, tmp_path, intercept=[S.NR_GET_MEMPOLICY])
    assert out.split() == ["0", "0", "0"] and seen == ["get_mempolicy"] * 2


def notified(code_: str, syscall: str, arg: int, tmp_path: Path) -> tuple[list[str], list[tuple]]:
    """Run python -c code_ with `syscall` intercepted and every call continued: its
    output, and (name, args[arg]) of each call that reached the supervisor."""
    seen = []

    def handler(notif):
        seen.append((notif.name, notif.args[arg]))
        return S.Continue()

    _, out, _ = run_under([sys.executable, "-I", "-S", "-c", code_], handler, tmp_path,
                          intercept=[syscall])
    return out.split(), seen


def test_lseek_reaches_the_supervisor_only_when_not_seek_set(tmp_path):
    """The runner intercepts lseek for idle_pages positions, but a SEEK_SET position
    needs no emulation: the filter lets it through without a round trip (the
    interpreter's own lseeks show that it is decided per call)."""
    data = tmp_path / "data"
    data.write_bytes(b"x" * 100)
    out, seen = notified(f"import os; fd = os.open({str(data)!r}, os.O_RDONLY);"
                         "print(os.lseek(fd, 5, os.SEEK_SET), os.lseek(fd, 2, os.SEEK_CUR),"
                         " os.lseek(fd, -1, os.SEEK_END), os.lseek(fd, 9, os.SEEK_SET))",
                         "lseek", 2, tmp_path)
    assert out == ["5", "7", "99", "9"]  # the real kernel's answers
    assert ("lseek", os.SEEK_CUR) in seen and ("lseek", os.SEEK_END) in seen
    assert all(name == "lseek" and whence != os.SEEK_SET for name, whence in seen)


def test_fcntl_reaches_the_supervisor_only_for_f_setfl(tmp_path):
    """The runner intercepts fcntl for idle_pages scan flags; only F_SETFL stops."""
    out, seen = notified("import fcntl, os; fd = os.open('/dev/null', os.O_RDONLY);"
                         "fl = fcntl.fcntl(fd, fcntl.F_GETFL);"
                         "fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_NONBLOCK);"
                         "fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC);"
                         "print(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)",
                         "fcntl", 1, tmp_path)
    assert out == [str(os.O_NONBLOCK)]  # the call went on to the real kernel
    assert seen and all(x == ("fcntl", fcntl.F_SETFL) for x in seen)


def test_bpf_program_shape():
    prog = S.build_filter()
    assert len(prog) % 8 == 0
    ins = [S.SOCK_FILTER.unpack_from(prog, i) for i in range(0, len(prog), 8)]
    assert ins[0] == (S.BPF_LD_W_ABS, 0, 0, 4)  # arch
    assert ins[1][3] == S.AUDIT_ARCH_X86_64
    assert {k for code, _, _, k in ins if code == S.BPF_JEQ_K} == {
        S.AUDIT_ARCH_X86_64, S.NR_MOVE_PAGES, S.NR_MIGRATE_PAGES}
    assert (S.BPF_JGT_K, S.PID_MAX_LIMIT) in {(c, k) for c, _, _, k in ins}
    assert {k for code, _, _, k in ins if code == S.BPF_RET_K} == {
        S.SECCOMP_RET_ALLOW, S.SECCOMP_RET_USER_NOTIF}
    with pytest.raises(ValueError):
        S.build_filter(["nosuchcall"])


# --- process handling ----------------------------------------------------------------------


def test_exit_status_and_exec_failure(probe, tmp_path):
    fake = FakeProcess(EMU_PID)
    code, out, sup = run_under([probe, EMU_PID, "exit", 7], mp_handler(fake), tmp_path)
    assert code == 7 and sup.handled == 1
    code, _, _ = run_under(["sh", "-c", "kill -KILL $$"], mp_handler(fake), tmp_path)
    assert code == -signal.SIGKILL
    with pytest.raises(S.SpawnError) as e:
        S.spawn([str(tmp_path / "no-such-program")])
    assert (e.value.errno, e.value.exitcode, e.value.stage) == (errno.ENOENT, 127, "exec")
    with pytest.raises(S.SpawnError) as e:
        S.spawn(["fakeproc-no-such-command-on-path"])
    assert e.value.errno == errno.ENOENT and e.value.filename == "fakeproc-no-such-command-on-path"
    with pytest.raises(S.SpawnError) as e:
        S.spawn(["true"], cwd=str(tmp_path / "no-such-dir"))
    assert (e.value.errno, e.value.stage) == (errno.ENOENT, "setup")
    not_exec = tmp_path / "plain.txt"
    not_exec.write_text("x")
    with pytest.raises(S.SpawnError) as e:
        S.spawn([str(not_exec)])
    assert e.value.errno == errno.EACCES


def test_caller_killed_while_waiting(probe, tmp_path):
    """The caller dies during the handler: NOTIF_ID_VALID turns false, a SEND fails with
    ENOENT, and both are counted in ``gone`` without disturbing the supervisor."""
    def kill_and_wait(notif):
        assert notif.valid()
        os.kill(notif.pid, signal.SIGKILL)
        for _ in range(10_000):  # bounded poll: the kernel drops the notification
            if not notif.valid():
                break
            os.sched_yield()
        assert not notif.valid()

    def then_answer(notif):
        kill_and_wait(notif)
        return S.Return(0)  # SEND -> ENOENT

    def then_check(notif):
        kill_and_wait(notif)
        notif.check()  # raises NotificationGone: nothing is sent
        raise AssertionError("unreachable")

    for handler in (then_answer, then_check):
        code, out, sup = run_under([probe, EMU_PID, "query"], handler, tmp_path)
        assert code == -signal.SIGKILL and out == ""
        assert (sup.handled, sup.gone) == (0, 1)


def _kernel_at_least(major: int, minor: int) -> bool:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return m is not None and (int(m[1]), int(m[2])) >= (major, minor)


@pytest.mark.skipif(not _kernel_at_least(5, 19), reason="WAIT_KILLABLE_RECV needs Linux 5.19")
def test_nonfatal_signal_does_not_restart_a_received_call(tmp_path):
    """Once received, a call waits through a non-fatal signal (WAIT_KILLABLE_RECV):
    it is answered once, never restarted (a handler's side effects happen once)."""
    code_ = ("import ctypes, signal; signal.signal(signal.SIGUSR1, lambda *a: print('usr1'));"
             "libc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long;"
             f"r = libc.syscall(279, {EMU_PID}, 0, None, None, None, 0);"
             "print(r, ctypes.get_errno(), flush=True)")
    seen = []

    def handler(notif):
        seen.append(notif.id)
        os.kill(notif.pid, signal.SIGUSR1)
        for _ in range(100_000):  # bounded poll: the signal is pending, the call still waits
            with open(f"/proc/{notif.pid}/status") as f:
                pending = [int(v, 16) for k, v in (ln.split(":") for ln in f)
                           if k in ("SigPnd", "ShdPnd")]
            if any(p >> (signal.SIGUSR1 - 1) & 1 for p in pending):
                break
        assert notif.valid()
        return S.Return(42)

    code, out, sup = run_under([sys.executable, "-I", "-c", code_], handler, tmp_path)
    assert code == 0 and sorted(out.splitlines()) == ["42 0", "usr1"]  # handled, not EINTR
    assert len(seen) == 1 and sup.handled == 1


def test_memory_helpers_fault_like_the_kernel():
    import ctypes

    buf = ctypes.create_string_buffer(b"0123456789abcdef", 16)
    addr, me = ctypes.addressof(buf), os.getpid()
    assert S.read_mem(me, addr, 16) == b"0123456789abcdef"
    S.write_mem(me, addr + 4, b"WXYZ")
    assert buf.raw == b"0123WXYZ89abcdef"
    for bad in (lambda: S.read_mem(me, 0, 8), lambda: S.write_mem(me, 8, b"x"),
                lambda: S.read_mem(me, (1 << 64) - 4, 8)):
        with pytest.raises(OSError) as e:
            bad()
        assert e.value.errno == errno.EFAULT
    assert S.read_mem_prefix(me, 0, 64) == b""
    with pytest.raises(OSError) as e:
        S.read_mem(EMU_PID, addr, 8)  # no such real process
    assert e.value.errno == errno.ESRCH


def test_round_trip_latency(probe, tmp_path, record_property):
    """1000 intercepted move_pages calls through move_pages_handler (arrays read, a
    trivial emulation): all answered; ns/call printed by the program."""
    handler = S.move_pages_handler(lambda pid, pages, nodes, status, flags: 0)
    code, out, sup = run_under([probe, EMU_PID, "loop", 1000], handler, tmp_path)
    assert code == 0 and sup.handled == 1000, out
    ns = int(re.search(r"ns_per_call=(\d+)", out).group(1))
    record_property("ns_per_intercepted_move_pages", ns)
    print(f"{probe.name}: {ns} ns per intercepted move_pages round trip")
    assert ns < 5_000_000


async def test_trio_serve(probe, tmp_path):
    fake = FakeProcess(EMU_PID)
    out_path = tmp_path / "out"
    with open(out_path, "wb") as out:
        pid, fd = S.spawn([str(probe), str(EMU_PID), "move", "3", "1"], stdout=out.fileno())
    with S.Supervisor(fd, mp_handler(fake)) as sup:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sup.serve)  # returns on EPOLLHUP after the reap
                code = await S.wait_async(pid)
    assert code == 0 and sup.handled == 1
    (row,) = parse(out_path.read_text())
    assert (row["ret"], row["status"]) == (0, [3, -1001])


def test_mems_allowed_writes_nothing_for_a_caller_that_is_gone():
    """The caller may have died and its pid been reused: the handler checks the
    notification is still valid before it writes (this process stands for the caller)."""
    import ctypes

    from fakeproc.run.mempolicy import get_mempolicy_handler
    from fakeproc.run.tasks import MachineFacts, TaskStates

    class Gone:
        def id_valid(self, _id):
            return False

    mode, mask = ctypes.c_int(-1), (ctypes.c_ulong * 16)(*([0xdead] * 16))
    notif = S.Notification(1, os.getpid(), 0, S.NR_GET_MEMPOLICY, S.AUDIT_ARCH_X86_64, 0,
                           (ctypes.addressof(mode), ctypes.addressof(mask), 1025, 0, 4, 0), Gone())
    facts = MachineFacts(8, frozenset(range(8)), frozenset(range(4)))
    handler = get_mempolicy_handler(lambda: facts, TaskStates(os.getpid()))
    with pytest.raises(S.NotificationGone):
        handler(notif)
    assert mode.value == -1 and list(mask) == [0xdead] * 16
    notif.supervisor = None  # a caller still waiting: mode 0, 128 bytes of bitmap
    assert handler(notif) == S.Return(0)
    assert mode.value == 0 and list(mask) == [0xF] + [0] * 15
