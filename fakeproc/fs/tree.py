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


@dataclass
class InodeTable:
    """Paths <-> inode numbers. Inodes are interned for the mount's lifetime;
    a path that no longer resolves (an exited PID) answers ENOENT."""

    paths: list[tuple[str, ...]] = field(default_factory=lambda: [(), ()])
    by_path: dict[tuple[str, ...], int] = field(default_factory=lambda: {(): 1})

    def inode(self, path: tuple[str, ...]) -> int:
        ino = self.by_path.get(path)
        if ino is None:
            ino = len(self.paths)
            self.paths.append(path)
            self.by_path[path] = ino
        return ino

    def path(self, ino: int) -> tuple[str, ...] | None:
        return self.paths[ino] if 0 < ino < len(self.paths) else None
