"""Machine-file errors: each class names the file, the line, the field and what is
wrong, and nothing half-starts (no mount is left when the file is bad)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from fakeproc.machine import MachineFileError, load, load_default, load_file, parse_pages, parse_size

NODE = '[[node]]\ntype = "dram"\nsize = "64MiB"\ncpus = "0-1"\n'


def err(text: str) -> str:
    with pytest.raises(MachineFileError) as e:
        load(text, "m.toml")
    return str(e.value)


def test_deep_nesting_is_named_with_its_line():
    deep = NODE + "x = " + "[" * 3000 + "]" * 3000 + "\n"
    assert err(deep) == "m.toml:5: arrays or tables nested too deeply (a machine file needs only a few levels)"


@pytest.mark.parametrize("text, where, what", [
    ("[[node]\n", r"m\.toml", r"not valid TOML"),
    ('[[node]]\ntype = "dram"\nsize = "64MiB"\ntype = "pmem"\n', r"m\.toml",
     r'not valid TOML: Cannot overwrite a value \(at line 4, column 14\): type = "pmem"$'),
    ('[[node]]\ntype = "dram"\nsize = -4096\n', r"m\.toml:3",
     r'node\[0\]\.size: -4096 is not a size: a number of bytes \(0 or more\) or a string such as "4KiB"'),
    (NODE.replace('cpus = "0-1"', "cpus = true"), r"m\.toml:4",
     r'node\[0\]\.cpus: True is not a CPU list: a string such as "0-3,8" or an array of CPU numbers'),
    (NODE + '[[process]]\npid = 1\nname = "a\\u0000b"\n', r"m\.toml:7",
     r"process\[0\]\.name: 'a\\x00b' is not a name without NUL or newline"),
    (NODE * 65, r"m\.toml:257", r"node\[64\]: 65 entries: at most 64 are allowed$"),
    (NODE + "colour = 1\n", r"m\.toml:5", r"node\[0\]\.colour: .*'colour' was unexpected.*allowed keys: cpus, id, size, type"),
    ('[[node]]\ntype = "ddr"\nsize = "1GiB"\n', r"m\.toml:2", r"node\[0\]\.type: 'ddr' is not one of 'dram', 'pmem'"),
    ('[[node]]\ntype = "dram"\nsize = "3MiB"\n', r"m\.toml:3", r"node\[0\]\.size: 3145728 bytes is not a positive multiple of 2 MiB"),
    ('[[node]]\ntype = "dram"\nsize = "lots"\n', r"m\.toml:3", r"node\[0\]\.size: "),
    (NODE + NODE, r"m\.toml:8", r"node\[1\]\.cpus: CPU 0 already belongs to node 0"),
    ("distances = [[10, 20]]\n" + NODE, r"m\.toml:1", r"distances: need a 1x1 matrix"),
    ("distances = [[12]]\n" + NODE, r"m\.toml:1", r"distances: row 0: the local distance must be 10"),
    (NODE + NODE.replace('"0-1"', '"2"') + "\ndistances = [[10, 20], [20, 10]]\n", r"m\.toml:10",
     r"node\[1\]\.distances: .*top-level keys such as distances must come before the first \[table\]"),
    (NODE + '[[process]]\npid = 1\nname = "a"\n[[process]]\npid = 1\nname = "b"\n', r"m\.toml:9",
     r"process\[1\]\.pid: pid 1 \(or a thread id\) is used twice"),
    (NODE + '[[process]]\npid = 1\nname = "a"\ncpu = 9\n', r"m\.toml:8", r"process\[0\]\.cpu: CPU 9 does not exist"),
    (NODE + '[[process]]\npid = 1\nname = "a"\npolicy = "bind:3"\n', r"m\.toml:8", r"process\[0\]\.policy: 'bind:3' names a node"),
    (NODE + '[[process]]\npid = 1\nname = "a"\n[[process.vma]]\nstart = 0x1001\nsize = "4KiB"\n', r"m\.toml:9",
     r"process\[0\]\.vma\[0\]\.start: 0x1001-0x2001 is not 4 KiB aligned"),
    (NODE + '[[process]]\npid = 1\nname = "a"\n[[process.vma]]\nstart = 0x1000\nsize = "8KiB"\n'
     '[[process.vma]]\nstart = 0x2000\nsize = "8KiB"\n', r"m\.toml:12",
     r"process\[0\]\.vma\[1\]\.start: 0x2000-0x4000 overlaps 0x1000-0x3000"),
    # the first VMA (in file order) that overlaps an earlier one, whatever comes after
    (NODE + '[[process]]\npid = 1\nname = "a"\n' + "".join(
        f'[[process.vma]]\nstart = {s:#x}\nsize = "{k}KiB"\n'
        for s, k in ((0x100000, 4), (0x10000, 64), (0x18000, 64), (0, 4096))),
     r"m\.toml:15", r"process\[0\]\.vma\[2\]\.start: 0x18000-0x28000 overlaps 0x10000-0x20000"),
    # a long VMA listed later, over a short one listed first; then two it covers
    (NODE + '[[process]]\npid = 1\nname = "a"\n[[process.vma]]\nstart = 0x4000\nsize = "4KiB"\n'
     '[[process.vma]]\nstart = 0x1000\nsize = "32KiB"\n', r"m\.toml:12",
     r"process\[0\]\.vma\[1\]\.start: 0x1000-0x9000 overlaps 0x4000-0x5000"),
    (NODE + '[[process]]\npid = 1\nname = "a"\n[[process.vma]]\nstart = 0x1000\nsize = "32KiB"\n'
     '[[process.vma]]\nstart = 0x6000\nsize = "4KiB"\n[[process.vma]]\nstart = 0x2000\nsize = "4KiB"\n',
     r"m\.toml:12", r"process\[0\]\.vma\[1\]\.start: 0x6000-0x7000 overlaps 0x1000-0x9000"),
    (NODE + '[[process]]\npid = 1\nname = "a"\n[[process.vma]]\nstart = 0x1000\nsize = "8KiB"\npages = "3 idle"\n',
     r"m\.toml:11", r"process\[0\]\.vma\[0\]\.pages: the runs end at 0x4000, past the VMA's end 0x3000"),
    (NODE + '[[process]]\npid = 1\nname = "a"\n[[process.vma]]\nstart = 0x1000\nsize = "8KiB"\npages = "2 sleepy"\n',
     r"m\.toml:11", r"pages: bad run '2 sleepy': write '<count> <state>\[@node\]' with a state of none, idle"),
    (NODE + '[[process]]\npid = 1\nname = "a"\n[[process.vma]]\nstart = 0x1000\nsize = "8KiB"\npages = "1 idle@5"\n',
     r"m\.toml:11", r"pages: node 5 in 'idle' does not exist"),
    (NODE + '[[process]]\npid = 1\nname = "a"\n[[process.vma]]\nstart = 0x1000\nsize = "4MiB"\npages = "1 thp-idle"\n',
     r"m\.toml:11", r"pages: 'thp-idle' at 0x1000 is not aligned to 2048 KiB"),
    (NODE + '[[process]]\npid = 1\nname = "a"\n[[process.vma]]\nstart = 0x7f0000000000\nsize = "128MiB"\n'
     'pages = "20000 idle"\n', r"m\.toml:11", r"pages: cannot map these pages: Cannot allocate memory"),
    (NODE + '[[process]]\npid = 1\nname = "a"\n[process.workload]\nvmas = [0]\n', r"m\.toml:9",
     r"process\[0\]\.workload\.vmas: there is no vma\[0\]"),
    (NODE + '[[process]]\npid = 1\nname = "a-name-longer-than-15"\n', r"m\.toml:7", r"process\[0\]\.name: .* is too long"),
    # out-of-range and non-finite values: a field error, never a traceback or a hang
    (NODE.replace('"0-1"', '"1-0"'), r"m\.toml:4", r"node\[0\]\.cpus: range '1-0' runs backwards"),
    (NODE.replace('"0-1"', '"0-99999999"'), r"m\.toml:4", r"node\[0\]\.cpus: 99999999 is out of range \(the largest is 8191\)"),
    (NODE.replace('"64MiB"', '"17TiB"'), r"m\.toml", r"node: the nodes hold 17408 GiB in all: fakeproc emulates up to 16 TiB"),
    ('[machine]\nswap = "17TiB"\n' + NODE, r"m\.toml:2", r"machine\.swap: 18691697672192 bytes: swap stops at 16 TiB"),
    (NODE + '[[process]]\npid = 1\nname = "a"\npolicy = "prefer:1-0"\n', r"m\.toml:8", r"process\[0\]\.policy: range '1-0' runs backwards"),
    (NODE + '[[process]]\npid = 1\nname = "a"\nmems_allowed = "0-99999999999"\n', r"m\.toml:8",
     r"process\[0\]\.mems_allowed: 99999999999 is out of range \(the largest is 1023\)"),
    (NODE + '[[process]]\npid = 1\nname = "a"\n[process.workload]\nrate = inf\n', r"m\.toml:9",
     r"process\[0\]\.workload\.rate: inf is not a finite number"),
    (NODE + '[[process]]\npid = 1\nname = "a"\n[process.workload]\nhot = nan\n', r"m\.toml:9",
     r"process\[0\]\.workload\.hot: nan is not a finite number"),
    (NODE + '[[process]]\npid = 1\nname = "a"\nexit_at = 1e400\n', r"m\.toml:8", r"process\[0\]\.exit_at: inf is not a finite number"),
    (NODE + '[[process]]\npid = 1\nname = "a"\n[process.workload]\nseed = 1e300\n', r"m\.toml:9",
     r"process\[0\]\.workload\.seed: 1e\+300 is not of type 'integer'"),
    (NODE + '[[process]]\npid = 1\nname = "a"\nuid = 4294967295\n', r"m\.toml:8",
     r"process\[0\]\.uid: 4294967295 is greater than the maximum of 4294967294"),
    (NODE + '[[process]]\npid = 2147483646\nname = "a"\nthreads = 3\n', r"m\.toml:8",
     r"process\[0\]\.threads: thread ids run past 2147483647, the largest pid_t"),
    (NODE + '[[process]]\npid = 1\nname = "a"\n[[process]]\npid = 2\nname = "b"\nfork_of = 1\nppid = 7\n',
     r"m\.toml:12", r"process\[1\]\.ppid: a forked process's parent is its fork_of process"),
])
def test_error_names_file_line_and_field(text, where, what):
    msg = err(text)
    assert re.match(where + ": ", msg), msg
    assert re.search(what, msg), msg


def test_sizes_and_page_runs():
    assert parse_size("4GiB") == 4 << 30
    assert parse_size("512M") == 512 << 20
    assert parse_size(4096) == 4096
    runs = parse_pages("3 accessed, 7 idle@2, pmd-idle, none")
    assert [(r.count, r.state, r.node) for r in runs] == [
        (3, "accessed", None), (7, "idle", 2), (0, "pmd-idle", None), (1, "none", None)]


def test_default_machine_is_the_rfc_topology():
    k = load_default()
    assert [(n.id, n.type, n.peer) for n in k.nodes] == [
        (0, "dram", 2), (1, "dram", 3), (2, "pmem", 0), (3, "pmem", 1)]
    assert [[k.distance(a, b) for b in range(4)] for a in range(4)] == [
        [10, 21, 17, 28], [21, 10, 28, 17], [17, 28, 10, 28], [28, 17, 28, 10]]
    assert all(pid > 4194304 for pid in k.tasks)  # above PID_MAX_LIMIT: never a real pid
    assert all(t.workload is not None for t in k.tasks.values())


@pytest.mark.fuse
def test_bad_file_mounts_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[node]]\ntype = "dram"\nsize = "3MiB"\n')
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run([sys.executable, "-m", "fakeproc", "mount", str(mnt), "-f", "--machine", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"{bad}:3: node[0].size: 3145728 bytes is not a positive multiple of 2 MiB" in r.stderr
    assert not os.path.ismount(mnt)


def test_vm_slot_errors_and_populate_that_does_not_fit():
    base = NODE + '[[process]]\npid = 1\nname = "q"\n[[process.vma]]\nstart = 0x7f0000000000\nsize = "4MiB"\n'
    msg = err(base + '[process.vm]\n[[process.vm.slot]]\ngpa = 0\nsize = "4MiB"\nhva = 0x7f0000000000\n'
              'pages = "2 accessed@7"\n')
    assert re.search(r"m\.toml:\d+: process\[0\]\.vm\.slot\[0\]\.pages: node 7 in 'accessed' does not exist", msg)
    msg = err(base + '[process.vm]\n[[process.vm.slot]]\ngpa = 0\nsize = "8MiB"\nhva = 0x7f0000000000\n')
    assert "must lie inside one anonymous VMA" in msg
    msg = err(NODE + '[[process]]\npid = 1\nname = "q"\n[[process.vma]]\nstart = 0x7f0000000000\n'
              'size = "128MiB"\npopulate = true\n')
    assert msg == ("m.toml:11: process[0].vma[0].populate: 1 page of 0x7f0000000000 could not be "
                   "faulted in (is the node large enough?)")


def test_a_file_that_is_not_utf8_names_the_line_of_the_first_bad_byte(tmp_path):
    """check and mount --machine: exit 2 and FILE:LINE: FIELD: message, no traceback."""
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[machine]\nname = "caf\xe9"\n[[node]]\ntype = "dram"\nsize = "2GiB"\n')
    msg = f"fakeproc: {latin}:2: machine.name: byte 0xe9 at column 12 is not UTF-8 (save the file as UTF-8)\n"
    r = subprocess.run([sys.executable, "-m", "fakeproc", "check", str(latin)], capture_output=True,
                       text=True, timeout=60)
    assert (r.returncode, r.stderr) == (2, msg)
    latin.write_bytes(b'# caf\xe9 machine\n[[node]]\ntype = "dram"\nsize = "2GiB"\n')
    mnt = tmp_path / "mnt"
    r = subprocess.run([sys.executable, "-m", "fakeproc", "mount", str(mnt), "-f", "--machine", str(latin)],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (2, msg.replace(":2: machine.name:", ":1: (top level):")
                                        .replace("column 12", "column 6"))
    assert not os.path.ismount(mnt)


@pytest.mark.parametrize("kind", ["anon", "heap", "stack"])
def test_shared_anonymous_memory_is_kind_shm(kind):
    """MAP_SHARED | MAP_ANONYMOUS memory is a shmem file (idle_pages skips it, its pages
    are shmem): an anonymous VMA spelled shared is refused at its perms, naming shm."""
    text = ('[[node]]\ntype = "dram"\nsize = "64MiB"\ncpus = "0"\n[[process]]\npid = 1\nname = "a"\n'
            f'[[process.vma]]\nstart = 0x7f0000000000\nsize = "8KiB"\nkind = "{kind}"\nperms = "rw-s"\n')
    with pytest.raises(MachineFileError, match=r"vma\[0\]\.perms: a .* mapping is private.*kind = \"shm\""):
        load(text)


FORK_SETS = """
[[node]]
type = "dram"
size = "64MiB"
cpus = "0-1"
[[node]]
type = "pmem"
size = "64MiB"
[[node]]
type = "dram"
size = "64MiB"
cpus = "2-3"
[[process]]
pid = 1
name = "parent"
threads = 2
[[process.vma]]
start = 0x7f0000000000
size = "8KiB"
pages = "2 dirty"
[[process]]
pid = 10
name = "child"
fork_of = 1
threads = 3
cpu = 2
uid = 1000
gid = 100
policy = "interleave:0,2"
mems_allowed = "0,2"
state = "running"
"""


def test_a_fork_takes_what_it_set_after_the_fork():
    """fork() copies the parent (one thread, its CPU, policy, ids and cpuset); the
    child's own threads, cpu, uid/gid, policy, mems_allowed and state are what it set
    since, not ignored. Its parent is the fork_of process."""
    k = load(FORK_SETS)
    parent, child = k.task(1), k.task(10)
    assert (child.ppid, child.threads, child.cpu, child.uid, child.gid, child.state) == \
        (1, (10, 11, 12), 2, 1000, 100, "running")
    assert (child.policy.mode, child.policy.nodes, child.mems_allowed) == ("interleave", (0, 2), (0, 2))
    assert (parent.threads, parent.cpu, parent.policy.mode) == ((1, 2), 0, "default")
    assert k.thread(12) is child and k.mm_counters(child)["rss_anon"] == 2
    assert k.zonelist(child) == [2, 0] and k.zonelist(parent) == [0, 2]
    assert k.check() == []


FORK_WORKLOAD = FORK_SETS.replace('state = "running"\n', 'state = "running"\n[process.workload]\nvmas = [{}]\n')


def test_a_forks_workload_chooses_among_the_vmas_it_inherits():
    """A fork has no vma tables: its workload's `vmas` count the inherited VMAs (in
    address order); one past them names the field."""
    k = load(FORK_WORKLOAD.format(0))
    wl = k.task(10).workload
    assert wl is not None and wl.ranges == ((0x7F0000000000, 0x7F0000002000),)
    with pytest.raises(MachineFileError, match=r"process\[1\]\.workload\.vmas: there is no vma\[1\]"):
        load(FORK_WORKLOAD.format(1))


def test_vmas_are_capped_at_max_map_count(monkeypatch):
    import fakeproc.machine as machine
    monkeypatch.setattr(machine, "MAX_MAP_COUNT", 2)
    vmas = "".join(f'[[process.vma]]\nstart = {0x1000 * (2 * i + 1):#x}\nsize = "4KiB"\n' for i in range(3))
    assert err(NODE + '[[process]]\npid = 1\nname = "a"\n' + vmas) == \
        "m.toml:14: process[0].vma[2]: one VMA too many: a process has at most 2 " \
        "(vm.max_map_count), this file gives it 3"


def test_a_file_too_large_is_not_read_to_its_end():
    """/dev/zero never ends: it is refused after MAX_FILE_BYTES, not read into memory."""
    with pytest.raises(MachineFileError, match=r"^/dev/zero: more than 256 MiB: not a machine file"):
        load_file("/dev/zero")
