"""pyfuse3 Operations over the entry tables, and the mount's main loop.

The handlers only resolve paths, render and map errors; every number comes
from the kernel. All kernel state is touched from the one trio thread that
serves requests, so the virtual clock, the control socket (fakeproc.ctl) and the
handlers never race.
(Pitfall from the notes: never touch the mount from this thread.)
"""
from __future__ import annotations

import collections
import copy
import errno
import functools
import itertools
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pyfuse3
import trio

from .procfs import PROC_ROOT, reader
from ..kernel.task import ptrace_may_access
from .sysfs import BUS_NODE, NODE_ROOT, kernfs_write
from .cpu import CPU_ROOT, CPUINFO, MEMORY_ROOT
from .pagecache import PageCache
from .hostview import HOSTVIEW
from .procview import make_procview
from .sysmount import SystemMount
from .upstream import MEMORY_TIERING, PROC_SYS, SYS_KERNEL_MM, only_upstream
from .proc_flush import ProcFlush, fuse_fds, session_fd
from ..ctl.protocol import mountpoint_path, unescape_mount_field
from .seq_file import SeqFile, Split
from .tree import (Ctx, Dir, Entry, File, InodeTable, Link, Special, decimal, file_mode, list_children,
                   per_process, resolve, subdir_count)

if TYPE_CHECKING:
    from ..ctl.clock import VirtualClock
    from ..ctl.server import ControlServer
    from ..kernel.kernel import Kernel

log = logging.getLogger("fakeproc.fs")
REQUESTS: collections.Counter[str] = collections.Counter()  # FUSE requests served, by handler
SERVING: list["FakeprocFS"] = []  # the file system serve() is serving (fs_inodes reads it)
FSNAME = "fakeproc"
PROC_TIMEOUT = 0.0    # PIDs come and go: never let the kernel cache /proc entries
SYS_TIMEOUT = 60.0    # the node tree's shape is fixed for the mount's life (and /, /proc)

SYS = Dir("sys", (
    Dir("devices", (Dir("system", (NODE_ROOT, CPU_ROOT, MEMORY_ROOT)),),
        lister=only_upstream(Dir("virtual", (MEMORY_TIERING,)))),
    Dir("bus", (BUS_NODE,)),
), lister=only_upstream(SYS_KERNEL_MM), mode=0o555)  # kernfs_create_root(): the root is 0555
PROC = Dir("proc", PROC_ROOT.children + (CPUINFO,),
           lister=(*PROC_ROOT.listers, only_upstream(PROC_SYS)), mode=0o555)


def make_root(realproc: Path | None) -> Dir:
    """The mount's root: proc/, sys/ and, for `fakeproc run`, procview/ (the merged
    /proc whose other names link into the real procfs at realproc) and hostview/ (the
    emulated cpuset, laid over the program's real status and cgroup files)."""
    return Dir("", (PROC, SYS) + ((make_procview(realproc), HOSTVIEW) if realproc else ()))


def realproc_dir(mountpoint: str | os.PathLike[str]) -> Path:
    """Where `fakeproc run` binds the real procfs for the mount's procview/ links:
    next to the control socket's directory, traversable by every user."""
    from ..ctl.protocol import runtime_dir
    rt = runtime_dir(mountpoint)
    return rt.parent / f"{rt.name}.proc"


def _caller(ctx: Any, ectx: Ctx) -> Ctx:
    """Bind the FUSE caller: its thread id and thread-group id (for /proc/self), its
    fsuid and fsgid (``caller_ids``) and its effective capabilities (``caller_cap_eff``,
    a mask: pagemap shows PFNs only to CAP_SYS_ADMIN). A caller whose status cannot be
    read counts as capable when root."""
    tid = getattr(ctx, "pid", 0)
    ids = (getattr(ctx, "uid", 0), getattr(ctx, "gid", 0))
    all_caps = -1 if ids[0] == 0 else 0
    ectx = ectx.bind("caller_ids", ids)
    if not tid:
        return ectx.bind("caller_cap_eff", all_caps)
    fields: dict[str, str] = {}
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("Tgid", "CapEff"):
                    fields[key] = value.strip()
    except OSError:
        pass
    try:
        tgid = int(fields["Tgid"])
    except (KeyError, ValueError):
        tgid = tid
    try:
        cap_eff = int(fields["CapEff"], 16)
    except (KeyError, ValueError):
        cap_eff = all_caps
    return ectx.bind("caller_tid", tid).bind("caller_tgid", tgid).bind("caller_cap_eff", cap_eff)


@dataclass
class TextHandle:
    """An open text file with seq_file's semantics: rendered by its first read, and
    again by a read at offset 0 or at any offset other than where the last read ended
    (seq_read()'s reset and traverse()), so a descriptor kept open and read again from
    0 sees new values; the reads of one read(2) go on in one rendering. ``render``
    None: nothing to show (a read fails with ``read_errno``). ``gone``: true once the
    process the file belongs to has been reaped (a read is then ESRCH, as
    get_proc_task() fails; so is a write). A write goes to the file's store()
    (``store``: the bytes to the count written) or fails with ``write_errno``."""

    render: Callable[[], bytes] | None
    write_errno: int
    read_errno: int = errno.EIO
    direct_io: bool = True
    store: Any = None
    gone: Callable[[], bool] | None = None
    split: Split | None = None  # a file of many records: how seq_read() cuts its reads
    data: bytes | None = None
    next_off: int = 0  # where the last reply ended
    seq: SeqFile = field(default_factory=SeqFile)

    def read(self, off: int, size: int) -> bytes:
        if self.render is None:
            raise OSError(self.read_errno, os.strerror(self.read_errno))
        if self.data is None or off == 0 or off != self.next_off:
            try:
                if self.gone is not None and self.gone():
                    raise LookupError("reaped")
                self.data = self.render()
            except LookupError:  # the process went away (before or while rendering)
                self.data = None  # seq_read() resets on the error: no read goes on from it
                raise OSError(errno.ESRCH, os.strerror(errno.ESRCH)) from None
            if self.split is not None:
                self.seq.reset(self.data, self.split(self.data), off)
        reply = self.seq.read(off, size) if self.split is not None else self.data[off:off + size]
        self.next_off = off + len(reply)
        return reply

    def write(self, off: int, data: bytes) -> int:
        if self.store is None:
            raise OSError(self.write_errno, os.strerror(self.write_errno))
        try:
            return self.store(data)
        except LookupError:  # the process went away (get_proc_task() fails)
            raise OSError(errno.ESRCH, os.strerror(errno.ESRCH)) from None


class FakeprocFS(pyfuse3.Operations):
    """Serves one Kernel. Inode numbers name paths (fs/tree.InodeTable)."""

    def __init__(self, kernel: "Kernel", realproc: Path | None = None,
                 clock: "VirtualClock | None" = None) -> None:
        super().__init__()
        self.kernel = kernel
        self.clock = clock  # brought up to the wall clock before every request (_guarded)
        self.root = make_root(realproc)
        self.ctx = Ctx(kernel)
        self.inodes = InodeTable()
        self.handles: dict[int, Any] = {}
        self.fh_paths: dict[int, tuple[str, ...]] = {}  # an open file's path (fsync)
        # an open directory: its path and its listing, taken at each read from 0
        # per open directory: its inode, path and the listing a getdents from 0 took
        self.dir_handles: dict[int, tuple[int, tuple[str, ...], list[tuple[str, Entry, Ctx, tuple[str, ...]]]]] = {}
        self._fh = itertools.count(1)
        self.boot_ns = time.time_ns()
        self.page_cache = PageCache()
        self.proc_flush: ProcFlush | None = None  # serve() sets it: prunes released processes' entries
        # what chmod, chown and utimes left on an entry, kept for the mount's life (the
        # kernfs node's iattr, a proc_dir_entry's mode and owner): EntryAttributes
        # fields by path (_kept_key), st_mode holding the permission bits only
        self.kept: dict[tuple[str, ...], dict[str, int]] = {}
        # set once /sys/devices/system has its own mount (or will not get one): opens
        # wait for it, so a reader never sees the tree change connection under it
        self.ready: trio.Event | None = None

    async def _settled(self) -> None:
        """Wait until /sys/devices/system is settled (never waits once it is: its own
        connection drives these handlers without an event loop, fs/sysmount._drive)."""
        if self.ready is not None and not self.ready.is_set():
            await self.ready.wait()

    def enter(self, name: str) -> None:
        """Count a request (REQUESTS) and bring the virtual clock up to now: a request
        is an observation at one wall instant (see _guarded)."""
        REQUESTS[name] += 1
        if self.clock is not None:
            self.clock.request_tick()

    # ---- resolution ----------------------------------------------------------
    def _resolve(self, path: tuple[str, ...]) -> tuple[Entry, Ctx]:
        try:
            found = resolve(self.root, self.ctx, path)
        except LookupError:
            found = None
        if found is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return found

    def _path(self, inode: int) -> tuple[str, ...]:
        """The inode's path; ENOENT when the inode is gone, or was a process's whose
        pid now names another one."""
        path = self.inodes.path(inode)
        if path is None or not self.inodes.owned_by(inode, self._owner_of(path)):
            raise pyfuse3.FUSEError(errno.ENOENT)
        return path

    def _owner_of(self, path: tuple[str, ...]) -> Any:
        """The emulated task a per-process path belongs to now (None elsewhere, and
        for the runner's real processes)."""
        if per_process(path) and path[0] in ("proc", "procview"):
            return self.ctx.kernel.thread(int(path[1]))
        return None

    def _attrs(self, path: tuple[str, ...], entry: Entry, ctx: Ctx) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_uid, a.st_gid = _owner_ids(entry, ctx)  # ENOENT for a gone process: number nothing
        a.st_ino = self.inodes.inode(path, self._owner_of(path))
        a.st_mode = file_mode(entry)
        a.st_nlink = _nlink(path, entry, ctx)
        a.st_size = entry.size if isinstance(entry, (File, Special)) else 0
        if isinstance(entry, File) and entry.fixed:  # served from the page cache: exact size
            a.st_size = len(self.page_cache.bytes(a.st_ino, entry, ctx))
        a.st_blksize = 4096 if path[:1] == ("sys",) else 1024  # kernfs's s_blocksize; procfs's
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self.boot_ns
        for field, value in self.kept.get(_kept_key(path, entry), {}).items():
            if field == "st_mode" and isinstance(entry, Link):
                continue  # a symlink's mode is always 0777
            setattr(a, field, a.st_mode & ~0o7777 | value if field == "st_mode" else value)
        # the root and /proc itself never change; every path walk checks their
        # permissions, so a 0 timeout there cost a GETATTR of each on every open
        timeout = SYS_TIMEOUT if len(path) < 2 or path[0] == "sys" else PROC_TIMEOUT  # procview: 0 too
        a.entry_timeout = a.attr_timeout = timeout
        if per_process(path):
            self.inodes.last[a.st_ino] = a
        return a

    # ---- metadata ------------------------------------------------------------
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        path = self._path(parent_inode) + (os.fsdecode(name),)
        if name in (b".", b".."):
            raise pyfuse3.FUSEError(errno.ENOENT)
        entry, ectx = self._resolve(path)
        a = self._attrs(path, entry, ectx)
        self.inodes.looked_up(a.st_ino)
        return a

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        path = self.inodes.path(inode)
        if path is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        try:
            entry, ectx = self._resolve(self._path(inode))
        except pyfuse3.FUSEError:
            return self._gone_attrs(inode, path)
        return self._attrs(path, entry, ectx)

    def _gone_attrs(self, inode: int, path: tuple[str, ...]) -> pyfuse3.EntryAttributes:
        """getattr of a process's inode the host holds (an open descriptor) after the
        process was reaped: generic_fillattr() of the in-core inode, its last
        attributes; pid_getattr() (/proc/PID, /proc/PID/task/TID) then shows root as
        the owner, having no task to take one from."""
        last = self.inodes.last.get(inode)
        if last is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        a = copy.copy(last)
        if len(path) == 2 or (len(path) == 4 and path[2] == "task"):
            a.st_uid = a.st_gid = 0
        return a

    async def readlink(self, inode: int, ctx: Any) -> bytes:
        entry, ectx = self._resolve(self._path(inode))
        if not isinstance(entry, Link):
            raise pyfuse3.FUSEError(errno.EINVAL)
        ectx = _caller(ctx, ectx)
        return os.fsencode(entry.target(ectx))

    async def opendir(self, inode: int, ctx: Any) -> int:
        await self._settled()
        path = self._path(inode)
        entry, _ = self._resolve(path)
        if not isinstance(entry, Dir):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = next(self._fh)
        self.dir_handles[fh] = (inode, path, [])
        return fh

    def dir_entries(self, fh: int, start: int) -> list[tuple[str, Entry, Ctx, tuple[str, ...]]]:
        """The directory's entries, for a getdents at position start: a listing from the
        start is taken anew (procfs walks the pid table at every getdents from position
        0, so a rewinddir() sees new processes); later positions continue it."""
        inode, path, children = self.dir_handles[fh]
        if start == 0:
            self._path(inode)  # a process directory whose process is gone (or replaced)
            try:
                entry, ectx = self._resolve(path)
                children[:] = [(n, e, c, path + (n,)) for n, e, c in list_children(entry, ectx)]
            except LookupError:
                raise pyfuse3.FUSEError(errno.ENOENT) from None
            if path == ("procview",):
                self._prune_unlisted(path, {name for name, *_ in children})
        return children

    def _prune_unlisted(self, top: tuple[str, ...], listed: set[str]) -> None:
        """The runner's procview/ lists the real processes too, whose exits the kernel
        model never sees: a listing that no longer shows one is its release."""
        gone = [d for d in self.inodes.held if d[:1] == top and d[1] not in listed]
        if gone and self.proc_flush is not None:
            self.proc_flush.gone(gone)

    def dir_dots(self, fh: int) -> list[tuple[str, pyfuse3.EntryAttributes]]:
        """'.' and '..' (dir_emit_dots(): procfs and kernfs list them first): the
        directory's attributes and its parent's (the root's own at the top)."""
        _, path, _ = self.dir_handles[fh]
        dots = []
        for name, p in ((".", path), ("..", path[:-1])):
            entry, ectx = self._resolve(p)
            dots.append((name, self._attrs(p, entry, ectx)))
        return dots

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        """Positions 0 and 1 are '.' and '..' (a readdirplus reply counts no lookup
        for them), the children follow from 2."""
        children = self.dir_entries(fh, start_id)
        for i, (name, attrs) in enumerate(self.dir_dots(fh)[start_id:] if start_id < 2 else [], start_id):
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attrs, i + 1):
                return
        start_id = max(start_id, 2)
        counted: list[int] = []  # readdirplus: each entry sent is a lookup
        try:
            for i, (name, entry, ectx, path) in enumerate(children[start_id - 2:], start_id):
                try:
                    attrs = self._attrs(path, entry, ectx)
                except pyfuse3.FUSEError:
                    continue  # gone since opendir
                if not pyfuse3.readdir_reply(token, os.fsencode(name), attrs, i + 1):
                    self.inodes.unused(attrs.st_ino)  # not sent: the host holds no reference
                    break
                self.inodes.looked_up(attrs.st_ino)
                counted.append(attrs.st_ino)
        except BaseException:  # the reply becomes an error: the host links none of them
            for ino in counted:
                self.inodes.forget(ino, 1)
            raise

    async def releasedir(self, fh: int) -> None:
        self.dir_handles.pop(fh, None)

    async def fsync(self, fh: int, datasync: bool) -> None:
        """kernfs files have noop_fsync(); procfs's (and sysctl's) file operations have
        no ->fsync: vfs_fsync_range() answers EINVAL."""
        if self.fh_paths.get(fh, ("sys",))[:1] != ("sys",):
            raise pyfuse3.FUSEError(errno.EINVAL)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        """Neither procfs's nor kernfs's directory operations have ->fsync: EINVAL."""
        raise pyfuse3.FUSEError(errno.EINVAL)

    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        """None set: kernfs's simple_xattr_list() and procfs's security hook list none."""
        self._resolve(self._path(inode))
        return []

    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        """kernfs (4.20) handles security.* and trusted.*: none set (ENODATA); other
        names, and every name on procfs, have no handler (EOPNOTSUPP)."""
        path = self._path(inode)
        self._resolve(path)
        if path[:1] == ("sys",) and name.startswith((b"security.", b"trusted.")):
            raise pyfuse3.FUSEError(errno.ENODATA)
        raise pyfuse3.FUSEError(errno.EOPNOTSUPP)

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s

    # ---- files -----------------------------------------------------------------
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        await self._settled()
        path = self._path(inode)
        entry, ectx = self._resolve(path)
        if path[:1] == ("sys",):
            if isinstance(entry, (File, Special)):
                _kernfs_open_check(self._mode(path, entry), flags)
        else:
            ectx = _caller(ctx, ectx)  # /proc/self and the procview need it; it reads /proc
            if getattr(entry, "ptrace_read", False):
                _ptrace_read_check(entry, ectx)
        if flags & os.O_DIRECT:  # do_dentry_open(), after ->open(): no ->direct_IO here
            raise pyfuse3.FUSEError(errno.EINVAL)
        handle: Any
        keep_cache = False
        try:
            if isinstance(entry, File) and entry.fixed:  # the host's page cache answers reads
                handle = TextHandle(functools.partial(self.page_cache.bytes, inode, entry, ectx),
                                    entry.write_errno, direct_io=False)
                keep_cache = True
            elif isinstance(entry, File):
                store = functools.partial(kernfs_write, entry.store, ectx) if entry.store else None
                render = functools.partial(_render_bytes, entry.render, ectx) if entry.render else None
                handle = TextHandle(render, entry.write_errno, entry.read_errno, store=store,
                                    gone=_reaped(ectx), split=entry.split)
            elif isinstance(entry, Special):
                handle = entry.opener(ectx.bind("inode", inode), flags)
            else:
                raise pyfuse3.FUSEError(errno.EISDIR if isinstance(entry, Dir) else errno.ELOOP)
        except LookupError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        fh = next(self._fh)
        self.handles[fh] = handle
        self.fh_paths[fh] = path
        return pyfuse3.FileInfo(fh=fh, direct_io=handle.direct_io, keep_cache=keep_cache)

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        handle = self.handles[fh]
        try:
            if hasattr(handle, "read_async"):  # a long read that lets others in between
                return await handle.read_async(off, size)
            return handle.read(off, size)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        try:
            return self.handles[fh].write(off, buf)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None

    async def release(self, fh: int) -> None:
        self.fh_paths.pop(fh, None)
        close = getattr(self.handles.pop(fh, None), "close", None)
        if close is not None:
            close()

    async def forget(self, inode_list: Any) -> None:
        """The host evicted these inodes: a per-process path the host no longer holds
        is freed (fs/tree.InodeTable), so exited processes cost nothing."""
        try:
            for ino, nlookup in inode_list:
                if self.inodes.forget(ino, nlookup):
                    self.page_cache.drop(ino)
        except Exception:  # noqa: BLE001 - forget must not raise (no reply to carry it)
            log.exception("forget failed")

    # ---- setattr: chmod, chown, utimes, truncate -----------------------------------
    def _mode(self, path: tuple[str, ...], entry: Entry) -> int:
        """The permission bits: the entry's own, or what a chmod set."""
        return self.kept.get(_kept_key(path, entry), {}).get("st_mode", getattr(entry, "mode", 0o777))

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: Any, fh: int | None,
                      ctx: Any) -> pyfuse3.EntryAttributes:
        """As the inode's ->setattr() in 4.20 (FUSE's default_permissions has already
        run setattr_prepare(): only the owner or root gets here). A size change is
        accepted and ignored everywhere: sysfs attributes and proc files keep their
        size (kernfs_iop_setattr: "this ignores size changes")."""
        path = self._path(inode)
        entry, ectx = self._resolve(path)
        refused, kept = _setattr_rule(path)
        asked = {"st_mode": fields.update_mode, "st_uid": fields.update_uid,
                 "st_gid": fields.update_gid}
        if any(asked[f] for f in refused):
            raise pyfuse3.FUSEError(errno.EPERM)
        if kept:
            asked.update(st_atime_ns=fields.update_atime, st_mtime_ns=fields.update_mtime)
            new = {f: getattr(attr, f) for f, on in asked.items() if on}
            if "st_mode" in new:
                new["st_mode"] &= 0o7777
            # notify_change() stamps ctime on every change
            new["st_ctime_ns"] = attr.st_ctime_ns if fields.update_ctime else time.time_ns()
            self.kept.setdefault(_kept_key(path, entry), {}).update(new)
        return self._attrs(path, entry, ectx)

    # ---- the namespace: fixed, as sysfs's and procfs's are --------------------------
    def _parent(self, inode: int) -> tuple[str, ...]:
        """A directory's path, ENOENT when it is gone (an exited process's)."""
        path = self._path(inode)
        self._resolve(path)
        return path

    def _new_name(self, parent_inode: int) -> tuple[str, ...]:
        """The directory a name is to be made in. procfs's ->lookup() answers a name it
        does not have with -ENOENT (proc_pident_lookup, proc_lookup_de, proc_sys_lookup),
        not a negative dentry, so making any new name there fails with ENOENT before
        the operation is tried; kernfs gives a negative dentry (the caller goes on)."""
        path = self._parent(parent_inode)
        if _kept_key(path)[:1] == ("proc",):
            raise pyfuse3.FUSEError(errno.ENOENT)
        return path

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        """open(O_CREAT) of a new name: lookup_open() finds no ->create() on a kernfs
        directory and answers EACCES."""
        self._new_name(parent_inode)
        raise pyfuse3.FUSEError(errno.EACCES)

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:
        """mknod(S_IFREG) is vfs_create() (no ->create(): EACCES); a FIFO, socket or
        device node is vfs_mknod() (no ->mknod(): EPERM)."""
        self._new_name(parent_inode)
        raise pyfuse3.FUSEError(errno.EACCES if stat.S_ISREG(mode) else errno.EPERM)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        """kernfs_iop_mkdir() without syscall_ops (sysfs has none): EPERM."""
        self._new_name(parent_inode)
        raise pyfuse3.FUSEError(errno.EPERM)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        """No ->rmdir() on procfs, kernfs_iop_rmdir() without syscall_ops: EPERM."""
        self._parent(parent_inode)
        raise pyfuse3.FUSEError(errno.EPERM)

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        """No ->unlink() on either: vfs_unlink() says EPERM."""
        self._parent(parent_inode)
        raise pyfuse3.FUSEError(errno.EPERM)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: Any) -> pyfuse3.EntryAttributes:
        """No ->symlink() on kernfs: vfs_symlink() says EPERM."""
        self._new_name(parent_inode)
        raise pyfuse3.FUSEError(errno.EPERM)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: Any) -> pyfuse3.EntryAttributes:
        """do_linkat() looks the new name up first (procfs: ENOENT), then refuses a
        link across /sys and /proc (EXDEV, two mounts there); else no ->link():
        vfs_link() says EPERM."""
        self._new_name(new_parent_inode)
        _same_mount(self._path(inode), self._parent(new_parent_inode))
        raise pyfuse3.FUSEError(errno.EPERM)

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any) -> None:
        """renameat2() across /sys and /proc is EXDEV; kernfs_iop_rename() refuses any
        flag (EINVAL), then has no syscall_ops (EPERM); procfs has no ->rename() (EPERM),
        but a new target name fails its lookup first (ENOENT)."""
        old, new = self._parent(parent_inode_old), self._parent(parent_inode_new)
        _same_mount(old, new)
        if _kept_key(new)[:1] == ("proc",):
            try:
                self._resolve(new + (os.fsdecode(name_new),))
            except pyfuse3.FUSEError:
                raise pyfuse3.FUSEError(errno.ENOENT) from None
        raise pyfuse3.FUSEError(errno.EINVAL if flags and old[:1] == ("sys",) else errno.EPERM)


def _guarded(handler: Any) -> Any:
    """A bug in a renderer answers EIO and is logged; it never ends the mount.
    Every request first brings the virtual clock up to now: a request is an
    observation at one wall instant, and between the clock's periodic ticks (every
    PERIOD) the workloads would otherwise stand still, so two reads less than a tick
    apart would see no access between them. REQUESTS counts it (the `fs_requests`
    control command shows how much FUSE traffic a program causes)."""
    name = handler.__name__

    @functools.wraps(handler)
    async def wrapper(self: "FakeprocFS", *args: Any, **kwargs: Any) -> Any:
        try:
            self.enter(name)
            return await handler(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception:  # noqa: BLE001 - the whole point: keep serving
            log.exception("%s failed; answering EIO", name)
            raise pyfuse3.FUSEError(errno.EIO) from None
    return wrapper


for _name in ("lookup", "getattr", "readlink", "opendir", "readdir", "releasedir", "statfs",
              "open", "read", "write", "release", "setattr", "create", "mknod", "mkdir", "rmdir",
              "unlink", "symlink", "link", "rename", "listxattr", "getxattr"):
    setattr(FakeprocFS, _name, _guarded(getattr(FakeprocFS, _name)))


def _kept_key(path: tuple[str, ...], entry: Entry | None = None) -> tuple[str, ...]:
    """Where an entry's setattr results are kept: procview/ shows /proc's entries,
    but its links into the real procfs are its own."""
    if path[:1] == ("procview",) and not isinstance(entry, Link):
        return ("proc",) + path[1:]
    return path


def _setattr_rule(path: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    """The 4.20 ->setattr() of the entry at path: the fields it refuses with EPERM, and
    whether what it accepts is kept.
    /proc/PID/... is proc_setattr(): no mode change; an owner it takes is reset by
    pid_revalidate() at the next lookup. /proc/sys/... is proc_sys_setattr(): no
    mode or owner change. The rest is kept: kernfs_iop_setattr() on /sys,
    proc_notify_change() on /proc's own files (meminfo, vmstat, cpuinfo...), and
    simple_setattr() on /proc and the mount's root."""
    if path[:1] in (("proc",), ("procview",)) and len(path) > 1:
        if decimal(path[1]) is not None:
            return ("st_mode",), False
        if _kept_key(path)[:2] == ("proc", "sys"):
            return ("st_mode", "st_uid", "st_gid"), False
    return (), True


def _same_mount(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    """/sys and /proc are two mounts on a real machine: a link or rename between them
    is EXDEV (procview/ stands for /proc)."""
    def mount(p: tuple[str, ...]) -> tuple[str, ...]:
        return _kept_key(p)[:1]
    if mount(a) != mount(b):
        raise pyfuse3.FUSEError(errno.EXDEV)


def _nlink(path: tuple[str, ...], entry: Entry, ctx: Ctx) -> int:
    """A directory's links: 2 and one per subdirectory, as kernfs (kernfs_refresh_inode())
    and procfs count them (pid_entry_nlink(); /proc adds nr_processes(), task/ the
    threads: its subdirectories here too); a sysctl directory stays at 1 (new_inode()).
    A file or link: 1."""
    if not isinstance(entry, Dir):
        return 1
    if _kept_key(path)[:2] == ("proc", "sys"):
        return 1
    try:
        return 2 + subdir_count(entry, ctx)
    except LookupError:  # a process that went away while counted
        return 2


def _render_bytes(render: Callable[[Ctx], str], ectx: Ctx) -> bytes:
    return render(ectx).encode("utf-8", "surrogateescape")  # raw bytes of real files too


def _reaped(ectx: Ctx) -> Callable[[], bool] | None:
    """For a process's (or thread's) file: whether the task it was opened for is gone
    (reaped; a reused pid names another task)."""
    tid = ectx.get_or("tid", ectx.get_or("pid"))
    if tid is None:
        return None
    kernel, task = ectx.kernel, ectx.kernel.thread(tid)
    return lambda: kernel.thread(tid) is not task


def _kernfs_open_check(mode: int, flags: int) -> None:
    """kernfs_fop_open() on sysfs (KERNFS_ROOT_EXTRA_OPEN_PERM_CHECK): opening for a
    direction the file's mode lacks is EACCES, even for root."""
    acc = flags & os.O_ACCMODE
    if (acc in (os.O_WRONLY, os.O_RDWR) and not mode & 0o222) or \
            (acc in (os.O_RDONLY, os.O_RDWR) and not mode & 0o444):
        raise pyfuse3.FUSEError(errno.EACCES)


def _ptrace_read_check(entry: Any, ectx: Ctx) -> None:
    """proc_mem_open()'s mm_access(PTRACE_MODE_READ_FSCREDS): ptrace_may_access() for
    the opener (CAP_SYS_PTRACE, or its fsuid and fsgid are the process's), else EACCES;
    mm_access() checks only a task that still has an mm (a zombie opens for anyone)."""
    pid = ectx.get_or("pid")
    task = ectx.kernel.thread(pid) if pid is not None else None
    if task is None:
        _owner_ids(entry, ectx)  # ENOENT: the process is gone
    elif task.mm_id is not None and not ptrace_may_access(reader(ectx), task):
        raise pyfuse3.FUSEError(errno.EACCES)


def _owner_ids(entry: Entry, ectx: Ctx) -> tuple[int, int]:
    """(uid, gid) the entry stats with: its owner's, else root's; ENOENT once the
    process it belongs to is gone."""
    owner = getattr(entry, "owner", None)
    try:
        return owner(ectx) if owner else (0, 0)
    except LookupError:
        raise pyfuse3.FUSEError(errno.ENOENT) from None


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _stop_noted(stopping: list[int]) -> Callable[[int, Any], None]:
    """The stop signals' handler outside _watch_signals' receiver, from serve()'s start
    on (until Python's own finalization, when all is cleaned up): a stop signal is
    noted, never fatal. One may come before trio runs (the mount may be made by then:
    _watch_signals acts on it), and more than one may come: `fakeproc run` sets
    PR_SET_PDEATHSIG, which the kernel sends once for each thread of the runner that
    exits while the server is its child (the thread that forked it, then the one it is
    reparented to: the seccomp supervisor's), so a runner killed by SIGKILL sends two
    SIGTERMs. With the default action the second one, redelivered by trio when the
    receiver closes or arriving after, killed the server halfway through its stop,
    leaving the mount behind."""
    return lambda signum, _frame: stopping.append(signum)


async def _watch_signals(system: SystemMount, stopping: list[int]) -> None:
    with trio.open_signal_receiver(*STOP_SIGNALS) as sigs:
        if not stopping:  # none came while mounting
            async for _ in sigs:
                break
        # a mount(2) of the inner mount under way walks the main mount's path: the
        # main connection must answer until it is done, then the inner one goes
        # first, while the main one still answers its path
        await system.fs._settled()
        await trio.to_thread.run_sync(system.detach)
        pyfuse3.terminate()


async def _serve_system(system: SystemMount) -> None:
    """Mount /sys/devices/system (from a worker: the mount(2) walks this mount's own
    path, which this thread answers) and serve it until it is unmounted. Without it
    (a user fusermount3 will not let mount inside the tree, or it was unmounted
    alone) the main connection serves that tree, slower but the same."""
    try:
        await trio.to_thread.run_sync(system.mount)
    except OSError as e:
        log.warning("%s: the main connection serves it", e)
        return
    finally:
        assert system.fs.ready is not None
        system.fs.ready.set()
    await system.serve()


async def _serve(clock: "VirtualClock", ctl: "ControlServer", system: SystemMount,
                 stopping: list[int]) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, system, stopping)
        nursery.start_soon(clock.run)
        nursery.start_soon(ctl.serve)
        nursery.start_soon(_serve_system, system)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def mount_options(allow_other: bool) -> set[str]:
    opts = set(pyfuse3.default_options) | {f"fsname={FSNAME}", "subtype=fakeproc"}
    if allow_other:
        opts.add("allow_other")
    return opts


def serve(kernel: "Kernel", mountpoint: str, *, rate: float = 1.0, paused: bool = False,
          allow_other: bool = False) -> None:
    """Mount, serve (with the virtual clock and the control socket) until unmounted or
    signalled, unmount. Blocks."""
    from ..ctl.clock import VirtualClock
    from ..ctl.server import ControlServer
    stopping: list[int] = []  # the stop signals received (_stop_noted)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop_noted(stopping))
    kernel.record()  # ground truth for `fakeproc report` and `fakeproc run --report`
    clock = VirtualClock(kernel, rate=rate, paused=paused)
    ctl = ControlServer(mountpoint, kernel, clock).bind()  # before the mount can answer
    try:
        realproc = realproc_dir(mountpoint)
        realproc.mkdir(mode=0o755, parents=True, exist_ok=True)
        ops = FakeprocFS(kernel, realproc, clock)
        system = SystemMount(ops, mountpoint, allow_other)
        ops.ready = trio.Event()
        before = fuse_fds()
        pyfuse3.init(ops, mountpoint, mount_options(allow_other))
        ops.proc_flush = ProcFlush(ops.inodes, session_fd(before))
        kernel.release_hooks.append(ops.proc_flush)
        SERVING[:] = [ops]
        try:
            trio.run(_serve, clock, ctl, system, stopping)
        finally:
            system.close()  # no path walk: nothing answers the main mount any more
            SERVING.clear()
            kernel.release_hooks.remove(ops.proc_flush)
            pyfuse3.close(unmount=True)
            try:
                realproc.rmdir()  # empty outside runner namespaces
            except OSError:
                pass
    finally:
        ctl.close()


def inode_counts() -> dict[str, int]:
    """The serving mount's inode table: every path numbered, and the per-process ones
    the host holds references to (each freed at its FORGET)."""
    if not SERVING:
        return {}
    table = SERVING[0].inodes
    return {"inodes": len(table.paths), "per_process": len(table.lookups),
            "page_cache": len(SERVING[0].page_cache.pages)}


PROBE_SECONDS = 5.0  # how long a live server may take to answer a directory read


def probe(mountpoint: str) -> str:
    """"stale" when the mount's daemon died (every access is ENOTCONN), "hung" when it
    does not answer within PROBE_SECONDS (stopped, or stuck), else "live". The look
    is taken in a child process, so that this one never waits on the mount: a request
    the server has not taken yet waits killably, one it has taken does not, and then
    the child is left to end when it can."""
    pid = os.fork()
    if pid == 0:  # the child: its exit status is the answer
        try:
            os.stat(mountpoint)
            os.listdir(mountpoint)  # attributes may be cached; a directory read is not
        except OSError as e:
            os._exit(1 if e.errno == errno.ENOTCONN else 0)
        os._exit(0)
    deadline = time.monotonic() + PROBE_SECONDS
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "stale" if os.waitstatus_to_exitcode(status) == 1 else "live"
        time.sleep(0.005)
    # a request the server has already taken waits unkillably: do not wait for the
    # child then (it is reaped by init once this process exits)
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if os.waitpid(pid, os.WNOHANG)[0]:
            break
        time.sleep(0.01)
    return "hung"


def is_stale(mountpoint: str) -> bool:
    """A mount whose daemon died answers every access with ENOTCONN."""
    return probe(mountpoint) == "stale"


def is_mounted(mountpoint: str) -> bool:
    target = mountpoint_path(mountpoint)
    with open("/proc/self/mounts", errors="surrogateescape") as f:
        return any(unescape_mount_field(line.split()[1]) == target for line in f)


def mounts_below(mountpoint: str | os.PathLike[str]) -> list[str]:
    """This package's mounts at or below mountpoint, innermost first (the order they
    must be unmounted in: /sys/devices/system sits inside the main mount)."""
    top = mountpoint_path(mountpoint)
    found = []
    with open("/proc/self/mounts", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            target = unescape_mount_field(fields[1])
            if fields[0] == FSNAME and (target == top or target.startswith(top.rstrip("/") + "/")):
                found.append(target)
    return sorted(found, key=lambda t: t.count("/"), reverse=True)


def unmount(mountpoint: str | os.PathLike[str]) -> int:
    """fusermount3 -u every mount of ours at or below mountpoint, innermost first;
    the first failing exit code, else 0. When a process holds something under any of
    them, nothing is unmounted (the inner mount would go and the outer stay)."""
    targets = mounts_below(mountpoint)
    holders = _holders(targets)
    if holders:
        return _in_use(str(mountpoint), f" (pid {', '.join(map(str, holders[:5]))})")
    devices = _devices(targets)
    for target in targets:
        r = subprocess.run(["fusermount3", "-u", target], check=False)
        if r.returncode:
            return _in_use(target, "", r.returncode)
    copies = _copies_elsewhere(devices)
    if copies:  # unmounted here; the server goes on serving them, and says why not gone
        print(f"fakeproc: {mountpoint} is unmounted here, but {len(copies)} other mount "
              f"namespace(s) hold a copy of it (pid {', '.join(map(str, copies[:5]))}: e.g. a "
              "`fakeproc run` or `unshare -m` started while it was mounted); its server "
              "serves them until they end", file=sys.stderr)
    return 0


def _devices(targets: list[str]) -> set[str]:
    """The "major:minor" of each mount (a FUSE connection's device, the same in every
    mount namespace that holds a copy)."""
    with open("/proc/self/mountinfo", errors="surrogateescape") as f:
        return {fields[2] for fields in map(str.split, f) if unescape_mount_field(fields[4]) in targets}


def _copies_elsewhere(devices: set[str]) -> list[int]:
    """One pid for each other mount namespace that still holds one of the devices."""
    own, seen, found = os.readlink("/proc/self/ns/mnt"), set(), []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
            if ns == own or ns in seen:
                continue
            seen.add(ns)
            with open(f"/proc/{pid}/mountinfo", errors="surrogateescape") as f:
                if any(line.split()[2] in devices for line in f):
                    found.append(int(pid))
        except OSError:
            continue  # gone, or a kernel thread
    return found


def _in_use(target: str, who: str, code: int = 1) -> int:
    print(f"fakeproc: {target} is in use: a process has a file or its working directory "
          f"under it{who}, see fuser -vm {target}; SIGTERM the server to end it anyway",
          file=sys.stderr)
    return code


def _holders(targets: list[str]) -> list[int]:
    """The processes with an open file, a working or root directory under one of the
    mounts (a scan of /proc as fuser does, by mount id and path; processes in other
    mount namespaces see other paths and are not told apart: fusermount3 still
    refuses then)."""
    ids = set()
    with open("/proc/self/mountinfo", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if unescape_mount_field(fields[4]) in targets:
                ids.add(fields[0].encode())
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        if int(pid) != os.getpid() and _holds(pid, ids, targets):
            found.append(int(pid))
    return found


def _holds(pid: str, ids: set[bytes], targets: list[str]) -> bool:
    for link in ("cwd", "root"):  # by path: a stat would ask a server that may hang
        try:
            where = os.readlink(f"/proc/{pid}/{link}")
        except OSError:
            continue
        if any(where == t or where.startswith(t.rstrip("/") + "/") for t in targets):
            return True
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return False
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as f:
                info = f.read(256)
        except OSError:
            continue
        for row in info.splitlines():
            if row.startswith(b"mnt_id:") and row.split()[1] in ids:
                return True
    return False


READY_FILE = "proc/meminfo"  # direct_io on the main connection: only a live server answers it


def is_serving(mountpoint: str | os.PathLike) -> bool:
    """Mounted and answered by a live daemon whose /sys/devices/system is settled (an
    open waits for that). A path walk, a stat or a /sys/devices/system read can be
    answered from the kernel's caches of a dead daemon's mount (/, /sys and /proc
    entries are cached for SYS_TIMEOUT); READY_FILE cannot."""
    if not is_mounted(str(mountpoint)):
        return False
    try:
        with open(os.path.join(mountpoint, READY_FILE), "rb") as f:
            return bool(f.read())
    except OSError:
        return False


__all__ = ["FakeprocFS", "serve", "is_stale", "is_mounted", "is_serving", "mounts_below", "unmount",
           "READY_FILE", "FSNAME", "stat"]
