"""Fuzzing the mounted default machine through real syscalls (hypothesis).

Each example opens a path (one from the mounted tree, a /proc/PID path with an
existing, missing or absurd pid, or garbage) with random flags, and runs a random
sequence of pread/read/lseek/write/fstat/close on it, plus path operations
(listdir, readlink, stat). Checked after every operation:

* nothing but OSError is raised, and every errno is one the kernel could give for
  that kind of file (idle_pages, proc text file, sysfs attribute, directory,
  symlink, missing path);
* every successful idle_pages read is a well-formed record stream (0xA0 + 8 address
  bytes; any other byte has type 0..9 and count 1..15) and never longer than asked;
* every operation returns within a bound (no hang), and the mount still answers
  after every example; at the end the control API's ``check`` is ok.

Runs twice: on a paused machine, and on an unpaused one whose clock runs while the
fuzzer reads (workloads touching pages, kswapd, etc. racing the scans).

Long mode: ``FAKEPROC_LONG=1`` keeps generating examples until at least 100 000
syscalls have been made per variant (about 10 minutes in total)::

    FAKEPROC_LONG=1 timeout -s KILL 3600 .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_fuzz.py
"""
from __future__ import annotations

import errno
import os
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakeproc.ctl.client import Client
from mountutil import mounted

pytestmark = pytest.mark.fuse

LONG = os.environ.get("FAKEPROC_LONG") == "1"
LONG_OPS = 100_000
SHORT_SECONDS = 6.0       # per variant, in CI
OP_TIMEOUT = 30.0         # seconds one example may take before it counts as a hang

TASK_SIZE = 0x7FFFFFFFF000
PIDS = [4200001, 4200101, 4200201]
VMA_STARTS = [0x55D0C0A00000, 0x55D0C0B00000, 0x55D0C1000000, 0x7F3A00000000, 0x7F3B00000000]
PROC_FILES = ["idle_pages", "maps", "status", "numa_maps", "smaps", "smaps_rollup", "task",
              "environ", "mem", "", "idle_pages/x", "..", "."]
SIZES = [0, 1, 18, 19, 20, 4096, 1 << 20, 4 << 20]
ACCESS = [os.O_RDONLY, os.O_RDWR, os.O_WRONLY]
EXTRA_FLAGS = [os.O_NONBLOCK, os.O_NOFOLLOW, os.O_NOATIME, os.O_DIRECTORY]

# errnos any path lookup/open may give
PATH_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.EACCES,
               errno.ENAMETOOLONG}
ALLOWED = {
    "idle": PATH_ERRNOS | {errno.EINVAL, errno.ESRCH, errno.EBADF},
    "proc": PATH_ERRNOS | {errno.EINVAL, errno.EBADF, errno.ESRCH},
    # a store() refuses: EBUSY (offline a CPU or memory block), ENODEV (drivers_probe)
    "sys": PATH_ERRNOS | {errno.EINVAL, errno.EIO, errno.EBADF, errno.EBUSY, errno.ENODEV},
    "dir": PATH_ERRNOS | {errno.EINVAL, errno.EBADF},
    "link": PATH_ERRNOS | {errno.EINVAL, errno.EBADF},
    "missing": PATH_ERRNOS | {errno.EINVAL, errno.EBADF},
}


def well_formed(data: bytes, count: int) -> None:
    assert len(data) <= count, f"read returned {len(data)} bytes for count {count}"
    i = 0
    while i < len(data):
        b = data[i]
        if b == 0xA0:
            assert i + 9 <= len(data), f"truncated SET_HVA at byte {i} of {len(data)}"
            i += 9
            continue
        t, n = b >> 4, b & 15
        assert t <= 9 and 1 <= n <= 15, f"bad record byte {b:#04x} at {i}: {data[max(0, i - 20):i + 4].hex()}"
        i += 1


class Mnt:
    """A mounted machine and the paths of its tree, by kind."""

    def __init__(self, m) -> None:
        self.m = m
        self.ops = 0
        self.tids = {pid: [int(t) for t in os.listdir(m.proc_path(f"{pid}/task"))] for pid in PIDS}
        # the tree is the same in both variants: walk it once (a walk of the unpaused
        # machine is slow, since the clock's steps hold the server up)
        if not _TREE:
            _TREE.extend(self.walk(m))
        self.paths = list(_TREE)

    @staticmethod
    def walk(m) -> list[tuple[str, str]]:
        paths: list[tuple[str, str]] = []
        root = str(m.path)
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            paths.append((rel, "dir"))
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                if os.path.islink(p):
                    paths.append((os.path.relpath(p, root), "link"))
            for name in filenames:
                r = os.path.relpath(os.path.join(dirpath, name), root)
                if os.path.islink(os.path.join(dirpath, name)):
                    continue
                kind = "idle" if name == "idle_pages" else "sys" if r.startswith("sys/") else "proc"
                paths.append((r, kind))
        return paths


_TREE: list[tuple[str, str]] = []


def kind_of(rel: str, tree: dict[str, str]) -> str:
    if rel in tree:
        return tree[rel]
    if rel.endswith("idle_pages"):
        return "idle"
    return "missing"


pid_st = st.one_of(
    st.sampled_from([str(p) for p in PIDS]),
    st.sampled_from(["1", "4200002", "99999", "4194304", "0", "-1", "2147483648", "18446744073709551616",
                     "1" + "0" * 30, "0x10", "04200001", "4200001 ", "self", "abc"]),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70).map(str),
)
garbage_st = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
            min_size=1, max_size=40),
    st.lists(st.sampled_from(["proc", "sys", "..", ".", "x", "idle_pages", "node0", "devices",
                              "\u00b2", "node\u00b2", "cpu\u0663", "4200001\u00b2",
                              "system", "node", "4200001", "task", "", "a" * 300]),
             min_size=1, max_size=6).map("/".join),
)
offset_st = st.one_of(
    st.sampled_from(VMA_STARTS + [0, 4096, TASK_SIZE - 4096, TASK_SIZE, TASK_SIZE + 4096,
                                  2 ** 62, 2 ** 63 - 4096, 2 ** 63 - 1]),
    st.integers(0, TASK_SIZE // 4096).map(lambda p: p * 4096),           # aligned
    st.sampled_from(VMA_STARTS).flatmap(lambda b: st.integers(0, 1 << 19).map(lambda d: b + d * 4096)),
    st.integers(0, 2 ** 63 - 1),                                         # anything
    st.sampled_from(VMA_STARTS).flatmap(lambda b: st.integers(0, 1 << 31).map(lambda d: b + d)),
)
op_st = st.one_of(
    st.tuples(st.just("pread"), st.sampled_from(SIZES), offset_st),
    st.tuples(st.just("read"), st.sampled_from(SIZES)),
    st.tuples(st.just("lseek"), st.one_of(offset_st, st.integers(-(2 ** 63), 2 ** 63 - 1)),
              st.sampled_from([os.SEEK_SET, os.SEEK_CUR, os.SEEK_END])),
    st.tuples(st.just("write"), st.sampled_from([b"", b"1", b"0\n", b"x" * 4096, b"\xff" * 20])),
    st.tuples(st.just("fstat")),
    st.tuples(st.just("close")),
)
path_op_st = st.sampled_from(["open", "open", "open", "listdir", "readlink", "stat", "lstat"])
flags_st = st.tuples(st.sampled_from(ACCESS),
                     st.sets(st.sampled_from(EXTRA_FLAGS[:3]), max_size=3),
                     st.integers(0, 7).map(lambda x: {os.O_DIRECTORY} if x == 0 else set()))


@st.composite
def example_st(draw, mnt: Mnt):
    tree_paths = mnt.paths
    choice = draw(st.integers(0, 11))
    if choice < 3:                                  # an existing idle_pages file
        pid = draw(st.sampled_from(PIDS))
        tid = draw(st.sampled_from(mnt.tids[pid]))
        rel = draw(st.sampled_from([f"proc/{pid}/idle_pages", f"proc/{pid}/task/{tid}/idle_pages",
                                    f"proc/{tid}/idle_pages"]))
    elif choice < 7:
        rel, _ = draw(st.sampled_from(tree_paths))
    elif choice < 10:
        pid = draw(pid_st)
        name = draw(st.sampled_from(PROC_FILES))
        if draw(st.booleans()):
            real = int(pid) if pid.isdigit() and int(pid) in mnt.tids else None
            tid = draw(st.sampled_from(mnt.tids[real])) if real and draw(st.booleans()) else draw(pid_st)
            rel = f"proc/{pid}/task/{tid}/{name}"
        else:
            rel = f"proc/{pid}/{name}"
    else:
        rel = draw(st.sampled_from(["proc/", "sys/", ""])) + draw(garbage_st)
    acc, extra, directory = draw(flags_st)
    flags = acc
    for f in extra | directory:
        flags |= f
    return rel, draw(path_op_st), flags, draw(st.lists(op_st, max_size=12))


def run_example(mnt: Mnt, tree: dict[str, str], rel: str, path_op: str, flags: int, ops) -> None:
    path = os.path.join(str(mnt.m.path), rel)
    kind = kind_of(rel.rstrip("/").replace("//", "/"), tree)
    if kind == "missing" and "idle_pages" in rel:
        kind = "idle"

    def allowed(e: OSError, what: str) -> None:
        ok = ALLOWED[kind] | ({errno.EINVAL} if what == "readlink" else set())
        assert e.errno in ok, f"{what} on {rel!r} ({kind}, flags {flags:#o}): {e!r}"

    mnt.ops += 1
    if path_op != "open":
        try:
            if path_op == "listdir":
                os.listdir(path)
            elif path_op == "readlink":
                os.readlink(path)
            elif path_op == "stat":
                os.stat(path)
            else:
                os.lstat(path)
        except OSError as e:
            allowed(e, path_op)
        return
    try:
        fd = os.open(path, flags)
    except OSError as e:
        allowed(e, "open")
        return
    is_idle = os.path.basename(path) == "idle_pages"
    try:
        for op in ops:
            mnt.ops += 1
            name = op[0]
            try:
                if name == "pread":
                    data = os.pread(fd, op[1], op[2])
                    if is_idle:
                        well_formed(data, op[1])
                    assert len(data) <= op[1]
                elif name == "read":
                    data = os.read(fd, op[1])
                    if is_idle:
                        well_formed(data, op[1])
                    assert len(data) <= op[1]
                elif name == "lseek":
                    os.lseek(fd, op[1], op[2])
                elif name == "write":
                    os.write(fd, op[1])
                elif name == "fstat":
                    os.fstat(fd)
                elif name == "close":
                    os.close(fd)
                    fd = -1
                    break
            except OSError as e:
                allowed(e, f"{name}{op[1:]}")
    finally:
        if fd >= 0:
            os.close(fd)


def bounded(fn, *args) -> None:
    """Run fn in a thread; a hang fails the test instead of the whole run."""
    err: list[BaseException] = []

    def body() -> None:
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            err.append(e)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(OP_TIMEOUT)
    assert not t.is_alive(), f"hang: {args[2:]} did not return within {OP_TIMEOUT}s"
    if err:
        raise err[0]


@pytest.fixture(scope="module", params=["paused", "unpaused"])
def mnt(request):
    args = ["--no-paused", "--rate", "1"] if request.param == "unpaused" else []
    with mounted(None, extra_args=args) as m:
        yield Mnt(m)
        with Client(m.path, timeout=60) as c:
            r = c.call("check")
        assert r["ok"], r["problems"]
        assert m.proc.poll() is None
        # EIO is also what a renderer's bug answers (logged with its traceback)
        assert "Traceback" not in m.log() and "answering EIO" not in m.log(), m.log()[-4000:]


@pytest.mark.timeout(7200 if LONG else 300)
def test_fuzz_syscalls(mnt):
    tree = dict(mnt.paths)

    @settings(max_examples=10, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(example_st(mnt))
    def one(example):
        rel, path_op, flags, ops = example
        bounded(run_example, mnt, tree, rel, path_op, flags, ops)
        assert mnt.m.read("sys/devices/system/node/online") == b"0-3\n"

    start = time.monotonic()
    while True:
        one()  # 10 fresh random examples per call
        if LONG:
            if mnt.ops >= LONG_OPS:
                break
        elif time.monotonic() - start > SHORT_SECONDS:
            break
    print(f"\n{mnt.ops} operations in {time.monotonic() - start:.1f}s")
    assert mnt.ops > 100
    assert "answering EIO" not in mnt.m.log(), mnt.m.log()[-4000:]
    # after the fuzzing the mount answers and the processes are intact
    assert mnt.m.read(f"proc/{PIDS[0]}/status").startswith(b"Name:\tredis-server\n")
    fd = os.open(mnt.m.proc_path(f"{PIDS[0]}/idle_pages"), os.O_RDONLY)
    try:
        well_formed(os.pread(fd, 1 << 20, VMA_STARTS[3]), 1 << 20)
    finally:
        os.close(fd)


def test_lseek_edges_on_idle_pages(mnt):
    """The offsets the fuzzer draws, one by one: at 2^63-1 (via lseek) a read is
    EINVAL (pos + count overflows, checked by the VFS); positions at/after TASK_SIZE read 0 bytes; unaligned ones EINVAL."""
    fd = os.open(mnt.m.proc_path(f"{PIDS[0]}/idle_pages"), os.O_RDONLY)
    try:
        assert os.lseek(fd, 2 ** 63 - 1, os.SEEK_SET) == 2 ** 63 - 1
        with pytest.raises(OSError) as e:
            os.read(fd, 4096)              # the VFS: pos + count overflows loff_t
        assert e.value.errno == errno.EINVAL
        with pytest.raises(OSError) as e:
            os.lseek(fd, 1, os.SEEK_CUR)   # would pass 2^63
        assert e.value.errno == errno.EINVAL
        assert os.pread(fd, 4096, TASK_SIZE) == b""
        with pytest.raises(OSError) as e:
            os.pread(fd, 4096, VMA_STARTS[3] + 1)
        assert e.value.errno == errno.EINVAL
        data = os.pread(fd, 19, VMA_STARTS[3])
        well_formed(data, 19)
    finally:
        os.close(fd)


UNICODE_DIGIT_NAMES = ["proc/\u00b2", "proc/4200001/task/\u00b2", "sys/devices/system/node/node\u00b2",
                       "sys/devices/system/cpu/cpu\u00b2", "sys/devices/system/memory/memory\u00b2",
                       "sys/bus/node/devices/node\u00b2"]


@pytest.fixture(scope="module")
def plain_mount():
    with mounted() as m:
        yield m


@pytest.mark.parametrize("rel", UNICODE_DIGIT_NAMES)
def test_unicode_digit_names_are_enoent(plain_mount, rel):
    # found by this fuzzer: str.isdigit() accepts "\u00b2", int() did not, and the
    # lookup answered EIO (fixed in d7ec3b5)
    with pytest.raises(FileNotFoundError):
        os.stat(plain_mount.path / rel)


def test_other_non_ascii_digit_names_are_enoent(plain_mount):
    # digits int() accepts (Arabic-Indic, leading zeros) are not aliases of real names
    for rel in ["proc/\u0664\u0662\u0660\u0660\u0660\u0660\u0661", "proc/04200001",
                "sys/devices/system/node/node\u0663", "sys/devices/system/node/node03",
                "sys/devices/system/cpu/cpu\u0663", "sys/devices/system/memory/memory03"]:
        with pytest.raises(FileNotFoundError):
            os.stat(plain_mount.path / rel)
