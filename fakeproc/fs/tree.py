"""The mounted tree as entry tables, and the inode table over it.

Modelled on fs/proc/base.c's pid_entry tables: a directory is a table of
entries (or a lister of dynamic names such as PIDs and nodeN), a text file
renders when read from offset 0 (seq_file), a special file (idle_pages) is a class with its
own read rules. lookup, readdir and getattr all read these tables, so no name
is listed twice.
"""
from __future__ import annotations

import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, Union

if TYPE_CHECKING:
    from .seq_file import Split
    from ..kernel.kernel import Kernel


@dataclass(frozen=True)
class Ctx:
    """What a path binds on the way down: the kernel and e.g. pid, tid, nid, cpu."""

    kernel: "Kernel"
    values: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str) -> Any:
        for k, v in reversed(self.values):
            if k == key:
                return v
        raise KeyError(key)

    def get_or(self, key: str, default: Any = None) -> Any:
        try:
            return self.get(key)
        except KeyError:
            return default

    def bind(self, key: str, value: Any) -> "Ctx":
        return Ctx(self.kernel, self.values + ((key, value),))


Render = Callable[[Ctx], str]


@dataclass(frozen=True)
class File:
    """A text file, rendered as seq_file does (fs/server.TextHandle). sysfs files
    stat 4096 bytes, procfs ones 0.
    ``fixed``: read-only bytes that never change while mounted (the topology), served
    from the host's page cache and stat-ed with their length (fs/pagecache.py).
    ``render`` None: a write-only file, with no show(); a read fails with
    ``read_errno`` (a sysfs attribute: EIO, as dev_attr_show() and bus_attr_show()
    answer once root has chmod-ed it readable; a proc file without .read: EINVAL).
    ``store``: a sysfs attribute's store(), called once per write(2) with the bytes
    (fs/sysfs.py kernfs_write); it raises OSError(errno) to fail the write, and may
    return the count the write returns (a proc file's .write). A file without one
    fails every write with ``write_errno``. ``ptrace_read``: open needs
    the right to ptrace-read the process (proc_mem_open(), e.g. /proc/PID/maps)."""

    name: str
    render: Render | None
    mode: int = 0o444
    size: int = 4096
    write_errno: int = 5  # EIO: a sysfs attribute without store() (dev_attr_store)
    read_errno: int = 5   # EIO: a sysfs attribute without show() (dev_attr_show)
    owner: Callable[[Ctx], tuple[int, int]] | None = None
    fixed: bool = False
    store: Callable[[Ctx, bytes], int | None] | None = None
    ptrace_read: bool = False
    split: Split | None = None  # one record per VMA or counter: seq_read() cuts reads (fs/seq_file.py)

    def __post_init__(self) -> None:
        if self.fixed and self.mode & 0o222:
            raise ValueError(f"{self.name}: a writable file cannot be fixed")
        if bool(self.store) != bool(self.mode & 0o222) or (self.render is None) == bool(self.mode & 0o444):
            raise ValueError(f"{self.name}: a file has a show() and a store() exactly when its mode says so")


@dataclass(frozen=True)
class Special:
    """A file with its own handle class (``opener(ctx, flags) -> handle``);
    ``ptrace_read`` as for File; ``size`` what stat shows (a sysfs text attribute:
    4096, a proc file or binary attribute: 0)."""

    name: str
    opener: Callable[[Ctx, int], Any]
    mode: int = 0o600
    owner: Callable[[Ctx], tuple[int, int]] | None = None
    ptrace_read: bool = False
    size: int = 0


@dataclass(frozen=True)
class Link:
    name: str
    target: Callable[[Ctx], str]


@dataclass(frozen=True)
class Dir:
    """A directory: static children, then what its listers list. ``order``, when
    given, sorts the listed names (a stable sort by that key) for readdir."""

    name: str
    children: Sequence["Entry"] = ()
    lister: "Lister | tuple[Lister, ...] | None" = None

    @property
    def listers(self) -> tuple["Lister", ...]:
        """Dynamic children in order: the first lister that accepts a name wins."""
        if self.lister is None:
            return ()
        return self.lister if isinstance(self.lister, tuple) else (self.lister,)
    mode: int = 0o755
    owner: Callable[[Ctx], tuple[int, int]] | None = None
    order: Callable[[str], Any] | None = None


@dataclass(frozen=True)
class Lister:
    """Dynamic children: ``names(ctx)`` lists them, ``parse`` maps a name to a value
    (None = no such entry), ``key`` binds it in the child's Ctx, ``child`` is the
    entry each dynamic name stands for (its own name is ignored)."""

    key: str
    names: Callable[[Ctx], Iterable[str]]
    parse: Callable[[Ctx, str], Any]  # the value bound for a name, None = no such entry
    child: "Entry | Callable[[Ctx], Entry]"  # a callable picks the entry per name

    def entry(self, ctx: Ctx) -> "Entry":
        """The entry a dynamic name stands for (ctx already binds ``key``)."""
        return self.child if isinstance(self.child, (File, Special, Link, Dir)) else self.child(ctx)


Entry = Union[File, Special, Link, Dir]


def decimal(text: str) -> int | None:
    """The number a directory name like a pid or the N of nodeN spells, in the kernel's
    canonical form (ASCII digits, no leading zeros), else None."""
    if not text.isascii() or not text.isdigit() or text != str(int(text)):
        return None
    return int(text)


def _static(d: Dir, name: str) -> Entry | None:
    for e in d.children:
        if e.name == name:
            return e
    return None


def lookup_child(d: Dir, ctx: Ctx, name: str) -> tuple[Entry, Ctx] | None:
    """The entry `name` of directory `d` and its context, or None."""
    e = _static(d, name)
    if e is not None:
        return e, ctx
    for lister in d.listers:
        value = lister.parse(ctx, name)
        if value is not None:
            bound = ctx.bind(lister.key, value)
            return lister.entry(bound), bound
    return None


def list_children(d: Dir, ctx: Ctx) -> list[tuple[str, Entry, Ctx]]:
    """Every child in readdir order: static entries, then dynamic names."""
    out = [(e.name, e, ctx) for e in d.children]
    seen = {e.name for e in d.children}
    listed = []
    for lister in d.listers:
        for name in lister.names(ctx):
            value = lister.parse(ctx, name)
            if value is not None and name not in seen:
                seen.add(name)
                bound = ctx.bind(lister.key, value)
                listed.append((name, lister.entry(bound), bound))
    if d.order is not None:
        listed.sort(key=lambda item: d.order(item[0]))
    return out + listed


def subdir_count(d: Dir, ctx: Ctx) -> int:
    """How many of d's children are directories, without building their entries
    where a lister names only directories (/proc's pids, a task's threads)."""
    seen = {e.name for e in d.children}
    count = sum(isinstance(e, Dir) for e in d.children)
    for lister in d.listers:
        if isinstance(lister.child, Dir):
            count += sum(1 for name in lister.names(ctx) if name not in seen)
        elif not isinstance(lister.child, (File, Special, Link)):  # picked per name
            for name in lister.names(ctx):
                value = lister.parse(ctx, name)
                if value is not None and name not in seen:
                    count += isinstance(lister.entry(ctx.bind(lister.key, value)), Dir)
    return count


def resolve(root: Dir, ctx: Ctx, path: Sequence[str]) -> tuple[Entry, Ctx] | None:
    """Walk a path of names from the root; None when any part is missing."""
    entry: Entry = root
    for name in path:
        if not isinstance(entry, Dir):
            return None
        found = lookup_child(entry, ctx, name)
        if found is None:
            return None
        entry, ctx = found
    return entry, ctx


def file_mode(entry: Entry) -> int:
    if isinstance(entry, Dir):
        return stat.S_IFDIR | entry.mode
    if isinstance(entry, Link):
        return stat.S_IFLNK | 0o777
    return stat.S_IFREG | entry.mode


def per_process(path: tuple[str, ...]) -> bool:
    """A path under one process (/proc/PID/..., the runner's procview/PID/... and
    hostview/status/PID): procfs gives these a new inode at each iget
    (proc_pid_make_inode(): new_inode(), get_next_ino()), so their numbers may change
    once the host has forgotten them. Every other path has a fixed number (kernfs's
    node id, a proc_dir_entry's low_ino)."""
    if path[:1] in (("proc",), ("procview",)):
        return len(path) > 1 and path[1].isdigit()
    return path[:2] == ("hostview", "status") and len(path) > 2


def process_dir(path: tuple[str, ...]) -> tuple[str, ...]:
    """The per-process path's process directory (proc/PID, hostview/status/PID)."""
    return path[:3] if path[0] == "hostview" else path[:2]


@dataclass
class InodeTable:
    """Paths <-> inode numbers. A per-process path is freed when the host forgets its
    inode (its lookup count back at 0), so a mount that outlives many processes holds
    only what the host holds; its next lookup gets a new number. Every other path is
    interned for the mount's lifetime (a fixed tree, which /sys/devices/system's own
    connection numbers the same way). A path that no longer resolves (an exited PID)
    answers ENOENT while the host still holds it."""

    paths: dict[int, tuple[str, ...]] = field(default_factory=lambda: {1: ()})
    by_path: dict[tuple[str, ...], int] = field(default_factory=lambda: {(): 1})
    lookups: dict[int, int] = field(default_factory=dict)  # per-process inodes the host holds
    # the same inodes by process directory (its path's first two names): what a
    # released process leaves in the host's caches
    held: dict[tuple[str, ...], set[int]] = field(default_factory=dict)
    # the attributes a per-process inode last showed: the in-core inode's, which an
    # fstat() of an open descriptor still reads once the process is gone
    last: dict[int, Any] = field(default_factory=dict)
    # the process a per-process inode was numbered for (an emulated task): procfs ties
    # its inodes to a struct pid, so a pid used again gets new ones, and the old ones
    # answer ENOENT (pid_revalidate(), proc_pid_lookup())
    owners: dict[int, Any] = field(default_factory=dict)
    next_ino: int = 2

    def inode(self, path: tuple[str, ...], owner: Any = None) -> int:
        """The path's number; a per-process path numbered for another owner than
        `owner` (its pid now names a new process) gets a new one."""
        ino = self.by_path.get(path)
        if ino is not None and self.owners.get(ino, owner) is not owner:
            del self.by_path[path]  # the old number stays with the old process
            ino = None
        if ino is None:
            ino = self.next_ino
            self.next_ino += 1
            self.paths[ino] = path
            self.by_path[path] = ino
            if owner is not None:
                self.owners[ino] = owner
        return ino

    def owned_by(self, ino: int, owner: Any) -> bool:
        """Was the inode numbered for this owner (or for none)?"""
        return self.owners.get(ino, owner) is owner

    def path(self, ino: int) -> tuple[str, ...] | None:
        return self.paths.get(ino)

    def looked_up(self, ino: int) -> None:
        """A reply that hands the host a reference went out (LOOKUP, a readdirplus
        entry): count it, as the host's nlookup does."""
        path = self.paths.get(ino)
        if path is not None and per_process(path):
            self.lookups[ino] = self.lookups.get(ino, 0) + 1
            self.held.setdefault(process_dir(path), set()).add(ino)

    def unused(self, ino: int) -> bool:
        """Free a per-process inode the host does not hold (a readdir entry that did
        not fit, or one its last FORGET left at 0); True if freed."""
        path = self.paths.get(ino)
        if path is None or not per_process(path) or self.lookups.get(ino, 0) > 0:
            return False
        del self.paths[ino]
        if self.by_path.get(path) == ino:
            del self.by_path[path]
        self.lookups.pop(ino, None)
        self.last.pop(ino, None)
        self.owners.pop(ino, None)
        inos = self.held.get(process_dir(path))
        if inos is not None:
            inos.discard(ino)
            if not inos:
                del self.held[process_dir(path)]
        return True

    def held_under(self, top: tuple[str, ...]) -> list[int]:
        """The inodes the host holds at or below a process directory, deepest first
        (a dentry can go only after its children)."""
        inos = self.held.get(top, ())
        return sorted(inos, key=lambda i: (-len(self.paths[i]), i))

    def forget(self, ino: int, nlookup: int) -> bool:
        """The host dropped nlookup references (FORGET); True if the inode was freed."""
        if ino not in self.lookups:
            return False
        self.lookups[ino] -= nlookup
        if self.lookups[ino] > 0:
            return False
        self.lookups[ino] = 0
        return self.unused(ino)
