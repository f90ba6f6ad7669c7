"""The private mount namespace `fakeproc run` puts a program in.

In a forked child, before exec: a new mount namespace (unshare(CLONE_NEWNS)),
all mounts made private so nothing leaks to the host, the real procfs bound at
the mount's ``realproc`` directory, then the emulated trees bound over the real
ones: /sys/devices/system/node, /sys/devices/system/cpu, /sys/devices/system/memory,
/sys/bus/node, and the merged /proc view (emulated pids + links into the real procfs) over /proc. Last,
the emulated cpuset over the files where the program reads its own (its real
/proc/PID/status and its cgroup's cpuset files; fs/hostview.py).
The host's knobs stay the host's but read-only there: its /proc/sys and
/sys/kernel/mm are remounted read-only in the namespace (a write fails with EROFS),
so a daemon that sets numa_balancing, THP or DAMON knobs cannot change the host; on
an upstream-mode machine the emulated numa_balancing, demotion_enabled, page_idle
bitmap and memory tiers are bound over the host's files, or, where the host has
none (a kernel without CONFIG_IDLE_PAGE_TRACKING, before 6.1), grafted into the
host's directory: a read-only tmpfs over it holds the host's entries, each bound
back, and the emulated one.
Linux: unshare(2), mount(2) with MS_BIND | MS_REC, MS_PRIVATE and MS_REMOUNT | MS_RDONLY.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_libc.unshare.argtypes = [ctypes.c_int]

# (path in the mount, where it goes); the order matters: realproc before /proc
BINDS = (
    ("sys/devices/system/node", "/sys/devices/system/node"),
    ("sys/devices/system/cpu", "/sys/devices/system/cpu"),
    ("sys/devices/system/memory", "/sys/devices/system/memory"),  # the nodes' memoryN links
    ("sys/bus/node", "/sys/bus/node"),
)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def bind(src: str | Path, dst: str | Path, recursive: bool = False) -> None:
    flags = MS_BIND | (MS_REC if recursive else 0)
    _check(_libc.mount(os.fsencode(src), os.fsencode(dst), None, flags, None),
           f"bind {src} on {dst}")


def read_only(path: str | Path) -> None:
    """Make path (a directory of the host's) read-only in this namespace: bound onto
    itself, then that bind remounted MS_RDONLY."""
    bind(path, path, recursive=True)
    _check(_libc.mount(None, os.fsencode(path), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None),
           f"remount {path} read-only")


# the host's knobs a daemon might set, and the emulated ones an upstream-mode machine
# lays over them (path in the mount, where it goes; skipped where either is missing)
HOST_KNOBS = ("sys", "/sys/kernel/mm")  # "sys": the real procfs's, under realproc
UPSTREAM_COVERS = (
    ("proc/sys/kernel/numa_balancing", "sys/kernel/numa_balancing"),  # under realproc
    ("sys/kernel/mm/numa/demotion_enabled", "/sys/kernel/mm/numa/demotion_enabled"),
    ("sys/kernel/mm/page_idle/bitmap", "/sys/kernel/mm/page_idle/bitmap"),
    ("sys/devices/virtual/memory_tiering", "/sys/devices/virtual/memory_tiering"),
)


def enter(mountpoint: Path, realproc: Path) -> None:
    """Make this process's view the emulated machine's. Call in the child only."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    bind("/proc", realproc, recursive=True)  # the real procfs, for the procview links
    for rel, dst in BINDS:
        if os.path.isdir(dst):
            bind(mountpoint / rel, dst)
    _protect_host_knobs(mountpoint, realproc)
    bind(mountpoint / "procview", "/proc")
    _cover_cpuset(mountpoint / "hostview", realproc)


def _protect_host_knobs(mountpoint: Path, realproc: Path) -> None:
    """The host's /proc/sys and /sys/kernel/mm read-only here, then the emulated
    upstream knobs over the host's files. Best effort, said once on stderr: a host
    that refuses the remount keeps them writable (the program is then warned)."""
    for knobs in HOST_KNOBS:
        path = realproc / knobs if not knobs.startswith("/") else Path(knobs)
        if path.is_dir():
            try:
                read_only(path)
            except OSError as e:
                os.write(2, f"fakeproc run: the host's {path} stays writable: {e}\n".encode())
    grafts: dict[Path, dict[str, Path]] = {}
    for rel, dst in UPSTREAM_COVERS:
        src, target = mountpoint / rel, (Path(dst) if dst.startswith("/") else realproc / dst)
        if not os.path.lexists(src):
            continue
        if os.path.lexists(target):
            try:
                bind(src, target)
            except OSError as e:
                os.write(2, f"fakeproc run: {target} stays the host's: {e}\n".encode())
            continue
        while not os.path.lexists(target.parent):  # graft the highest missing directory
            src, target = src.parent, target.parent
        grafts.setdefault(target.parent, {})[target.name] = src
    for parent, entries in grafts.items():
        try:
            graft(parent, entries)
        except OSError as e:
            os.write(2, f"fakeproc run: {', '.join(entries)} not added to {parent}: {e}\n".encode())


def graft(parent: Path, entries: dict[str, Path]) -> None:
    """Add entries (name -> what to bind there) to the host's directory `parent`,
    which lacks them: a tmpfs over it holds an entry of the same type for each of
    the host's, with the host's bound on it (reached through a descriptor opened
    before the cover; a bind keeps the read-only flag of the mount it comes from),
    and the new ones bound from their sources; the tmpfs is then made read-only, so
    nothing can be created there either."""
    fd = os.open(parent, os.O_PATH | os.O_DIRECTORY)
    try:
        names = os.listdir(parent)
        _check(_libc.mount(b"tmpfs", os.fsencode(parent), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                           b"mode=0755"), f"tmpfs on {parent}")
        for name in names:
            host = f"/proc/self/fd/{fd}/{name}"
            if os.path.islink(host):
                os.symlink(os.readlink(host), parent / name)
                continue
            _placeholder(parent / name, os.path.isdir(host))
            bind(host, parent / name, recursive=True)
        for name, src in entries.items():
            _placeholder(parent / name, os.path.isdir(src))
            bind(src, parent / name)
        _check(_libc.mount(None, os.fsencode(parent), None,
                           MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
               f"remount {parent} read-only")
    finally:
        os.close(fd)


def _placeholder(path: Path, is_dir: bool) -> None:
    """An empty directory or file to bind onto."""
    if is_dir:
        path.mkdir()
    else:
        path.touch()


# the cpuset files of a cgroup, v1 and v2, and which emulated file stands for each
CPUSET_FILES = {"cpuset.cpus": "cpuset.cpus", "cpuset.effective_cpus": "cpuset.cpus",
                "cpuset.cpus.effective": "cpuset.cpus", "cpuset.mems": "cpuset.mems",
                "cpuset.effective_mems": "cpuset.mems", "cpuset.mems.effective": "cpuset.mems"}


def _cover_cpuset(hostview: Path, realproc: Path) -> None:
    """Bind the emulated cpuset over this process's status (libnuma reads its
    Mems_allowed through /proc/self) and its cgroup's cpuset files (hwloc hides the
    nodes outside cpuset.mems). Processes it forks later see the host's again. Best
    effort: a file that cannot be covered (a host that refuses the bind) is said
    once on stderr and left as the host's."""
    pid = os.getpid()
    covers = [(hostview / "status" / str(pid), realproc / rel)
              for rel in (f"{pid}/status", f"{pid}/task/{pid}/status")]
    try:
        covers += [(hostview / src, d / name) for d in cpuset_dirs(pid, realproc)
                   for name, src in CPUSET_FILES.items() if (d / name).is_file()]
    except OSError:
        pass  # no cgroup information: the status files are covered still
    for src, dst in covers:
        try:
            bind(src, dst)
        except OSError as e:
            os.write(2, f"fakeproc run: {dst} keeps the host's cpuset: {e}\n".encode())


def cpuset_dirs(pid: int, proc: Path = Path("/proc")) -> list[Path]:
    """The cgroup directories holding pid's cpuset files: its cpuset hierarchy's (v1)
    and its unified one's (v2), from PROC/PID/cgroup and where mountinfo shows them."""
    with open(proc / str(pid) / "cgroup") as f:
        groups = [line.rstrip("\n").split(":", 2) for line in f]
    with open(proc / str(pid) / "mountinfo") as f:
        mounts = [line.split() for line in f]
    out = []
    for fields in mounts:
        sep = fields.index("-")
        fstype, root, point, opts = fields[sep + 1], fields[3], fields[4], fields[sep + 3]
        for _, controllers, path in groups:
            v1 = fstype == "cgroup" and "cpuset" in controllers.split(",") and \
                "cpuset" in opts.split(",")
            v2 = fstype == "cgroup2" and controllers == ""
            if (v1 or v2) and (path + "/").startswith(root.rstrip("/") + "/"):
                out.append(Path(point) / path[len(root.rstrip("/")):].lstrip("/"))
    return out
