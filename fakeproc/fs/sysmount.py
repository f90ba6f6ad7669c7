"""/sys/devices/system on a FUSE connection of its own, answered without OPEN.

Why: on this kind of VM one FUSE round trip costs 40-100 µs (most of it waking the
other CPU), while the real /sys answers open+read+close of an attribute in about
6 µs. The main connection (pyfuse3) needs OPEN for /proc (per-open state,
direct_io). This connection answers the first OPEN with ENOSYS, after which the host
kernel opens and closes every file on it without asking (no OPEN, FLUSH or RELEASE)
and reads from its page cache; a miss reaches us as a READ, by inode. pyfuse3 can
serve neither a second session nor a READ by inode, so this is a libfuse low-level
session (fakeproc.fs.native) pumped from the trio thread.

It covers /sys/devices/system (the node, CPU and memory-block trees: what numactl,
hwloc, lscpu and tiering daemons read). /sys/bus/node and the upstream /sys/kernel
files stay on the main connection: a page cache cannot serve page_idle/bitmap (a
size-0 binary attribute read at any offset).

One rendering per open, without OPEN. kernfs renders an attribute once per open
(seq_file), and a reader that reads to EOF in several read() calls must never see
the head of one rendering and the tail of the next. Here every rendering of a
changing attribute is its own inode, whose bytes never change:

* Fixed attributes (the topology, File.fixed), directories and links have one inode
  for the mount's life, cached by the host for SYS_TIMEOUT: open+read+close asks
  nothing at all.
* A changing attribute is looked up at every open (entry timeout 0). The LOOKUP
  renders it; the same bytes as the inode the host has keep that inode (nothing more
  is asked: the page cache holds its bytes), other bytes get a new inode (a READ
  follows). An open file keeps the inode it was opened with, so all its reads come
  from one rendering, as kernfs's do, with the exact size (no short page, no NULs).
  Old renderings are freed when the host forgets their inode (FORGET). stat() shows
  one st_ino per path, as sysfs does; the inode the host holds is the FUSE nodeid.

A write or chmod retires the path's latest rendering (the host's page may hold the
written bytes; the next open must read under the new mode), and a write moves the
written inode's mtime, so the host drops that page before its next read of it.

What changes for callers (docs/interfaces.md, deviation s): kernfs's EACCES for an
access mode an attribute lacks comes from read()/write() instead of open() (only root
can open such a file: the kernel checks modes with default_permissions), and a fixed
attribute already cached stays readable by root after a chmod; st_size is the
rendering's length, not 4096; the tree is a mount of its own (st_dev, EXDEV).
"""
from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import queue
import select
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Coroutine

import pyfuse3
import trio

from .native import ffi, lib
from .sysfs import kernfs_write
from .tree import Dir, File

if TYPE_CHECKING:
    from .server import FakeprocFS

log = logging.getLogger("fakeproc.fs.sysmount")
SUBTREE = ("sys", "devices", "system")
ROOT_INO = 1  # FUSE_ROOT_ID
VERSION_BASE = 1 << 48  # nodeids of renderings; below it, the main table's inode numbers
CHANGING_ATTR_TIMEOUT = 1.0  # an open file's attributes: a dead server shows within 1 s
PUMP_BATCH = 64  # requests answered before the other tasks (/proc, the clock) get a turn
NS = 1_000_000_000


@dataclass(frozen=True)
class Caller:
    """The request's caller, as the FakeprocFS handlers read it (pyfuse3's fields)."""

    uid: int
    gid: int
    pid: int
    umask: int = 0o022


@dataclass
class Rendering:
    """One rendering of a changing attribute: an inode of its own."""

    ino: int        # the path's inode in the main table (what stat() shows)
    data: bytes
    lookups: int = 0  # the host's references (LOOKUP replies minus FORGETs)
    written: int = 0  # when a write went through it (ns; its mtime from then on)


class SystemMount:
    """One mounted /sys/devices/system connection over a FakeprocFS's tree."""

    def __init__(self, fs: "FakeprocFS", mountpoint: str | os.PathLike[str],
                 allow_other: bool = False) -> None:
        self.fs = fs
        self.path = Path(mountpoint) / Path(*SUBTREE)
        self.allow_other = allow_other
        self.sub_ino = fs.inodes.inode(SUBTREE)
        self.renderings: dict[int, Rendering] = {}  # nodeid -> rendering
        self.latest: dict[int, int] = {}            # main-table inode -> its latest nodeid
        self._nodeids = itertools.count(VERSION_BASE)
        self._session: Any = None
        self._inval: queue.SimpleQueue[int | None] | None = None  # nodeids to drop (_dropper)
        self._closing = False  # no more drops once serve() ends

    # ---- lifetime -------------------------------------------------------------------
    def mount(self) -> None:
        global _active
        opts = "fsname=fakeproc,subtype=fakeproc,default_permissions"
        if self.allow_other:
            opts += ",allow_other"
        session = lib.fp_fuse_mount(os.fsencode(self.path), opts.encode())
        if session == ffi.NULL:
            raise OSError(errno.EIO, f"cannot mount the /sys/devices/system connection on {self.path}")
        self._session = session
        _active = self

    async def serve(self) -> None:
        """Answer requests until the connection ends (its mount is gone, or was
        detached and is idle), at most PUMP_BATCH between two looks at the other
        tasks; then free the session, here, on the thread that pumps it."""
        fd = lib.fp_fuse_fd(self._session)
        try:
            while True:
                await trio.lowlevel.wait_readable(fd)
                n = lib.fp_fuse_pump(self._session, PUMP_BATCH)
                if n < 0:
                    if n != -errno.ENODEV:
                        log.error("/sys/devices/system: reading its device: %s; ending it",
                                  os.strerror(-n))
                    return
        finally:
            self._finish_drops()
            self.close()

    def _finish_drops(self, seconds: float = 5.0) -> None:
        """Let the dropper finish before the session goes: an invalidation it has sent
        may wait for the host to write a dirty page back, and that WRITE needs this
        thread to answer it (a writer that keeps a shared mapping dirty). So pump,
        without waiting on trio, until it is done; no new drops are queued meanwhile."""
        if self._inval is None:
            return
        self._closing = True
        self._inval.put(None)
        ready = select.poll()  # not select(): the device's descriptor may be above 1023
        ready.register(lib.fp_fuse_fd(self._session), select.POLLIN)
        deadline = time.monotonic() + seconds
        while self._dropper.is_alive() and time.monotonic() < deadline:
            if ready.poll(50) and lib.fp_fuse_pump(self._session, 1) < 0:
                break

    def detach(self) -> None:
        """Take the mount out of the tree (MNT_DETACH). Any thread: it touches neither
        the session nor its descriptor, so serve() goes on until the connection ends."""
        if self._session is None:
            return
        path = os.fsencode(self.path)
        if os.geteuid() == 0:
            ret = lib.fp_fuse_detach(path)
            if ret < 0 and ret != -errno.EINVAL:  # EINVAL: not mounted there any more
                log.warning("detaching %s: %s", self.path, os.strerror(-ret))
        else:
            subprocess.run(["fusermount3", "-uz", path], check=False, capture_output=True)

    def close(self) -> None:
        """Free the session and close its device (ending the connection if it still
        runs; the main mount's lazy unmount then takes the dead mount with it). Only
        where nothing pumps it: serve()'s end, or after trio.run."""
        global _active
        if self._inval is not None:
            self._inval.put(None)  # the dropper ends before the session goes
            self._dropper.join(5)
            self._inval = None
            if self._dropper.is_alive():  # still inside the host: the session stays (leaked)
                log.warning("/sys/devices/system: an invalidation did not finish; "
                            "the session is left open")
                self._session = None
        if self._session is not None:
            try:
                trio.lowlevel.notify_closing(lib.fp_fuse_fd(self._session))
            except RuntimeError:
                pass  # outside trio.run: nobody waits on it
            lib.fp_fuse_destroy(self._session)
            self._session = None
        if _active is self:
            _active = None

    # ---- renderings -------------------------------------------------------------------
    def render(self, ino: int, entry: File, ectx: Any) -> int:
        """The nodeid of the attribute's current rendering (a new one when its bytes
        differ from the latest)."""
        data = entry.render(ectx).encode("utf-8", "surrogateescape")
        nodeid = self.latest.get(ino)
        if nodeid is None or self.renderings[nodeid].data != data:
            self.retire(ino)
            nodeid = next(self._nodeids)
            self.renderings[nodeid] = Rendering(ino, data)
            self.latest[ino] = nodeid
        return nodeid

    def retire(self, ino: int) -> None:
        """The next open of the path gets a new inode even for the same bytes (the host's
        copy of the latest one may hold what a write put there, or a mode it may no
        longer read with)."""
        nodeid = self.latest.pop(ino, None)
        if nodeid is not None and not self.renderings[nodeid].lookups:
            del self.renderings[nodeid]

    def forget(self, nodeid: int, nlookup: int) -> None:
        r = self.renderings.get(nodeid)
        if r is None:
            return
        r.lookups -= nlookup
        if r.lookups <= 0 and self.latest.get(r.ino) != nodeid:
            del self.renderings[nodeid]

    # ---- inode numbers: the connection's root is the main table's SUBTREE ----------
    def to_main(self, nodeid: int) -> int:
        if nodeid >= VERSION_BASE:
            r = self.renderings.get(nodeid)
            if r is None:
                raise pyfuse3.FUSEError(errno.ESTALE)
            return r.ino
        return self.sub_ino if nodeid == ROOT_INO else nodeid

    def to_fuse(self, ino: int) -> int:
        return ROOT_INO if ino == self.sub_ino else ino

    def attr(self, a: pyfuse3.EntryAttributes, nodeid: int | None = None) -> Any:
        """a as the C reply helpers take it; nodeid: a rendering's (else the path's)."""
        out = ffi.new("struct fp_attr *")
        out.ino = a.st_ino  # the main table's number, as the main connection shows it
        out.nodeid = self.to_fuse(a.st_ino) if nodeid is None else nodeid
        out.mode, out.nlink, out.uid, out.gid = a.st_mode, a.st_nlink, a.st_uid, a.st_gid
        out.size = a.st_size
        out.atime_sec, out.atime_nsec = divmod(a.st_atime_ns, NS)
        out.mtime_sec, out.mtime_nsec = divmod(a.st_mtime_ns, NS)
        out.ctime_sec, out.ctime_nsec = divmod(a.st_ctime_ns, NS)
        out.attr_timeout, out.entry_timeout = a.attr_timeout, a.entry_timeout
        if nodeid is not None:
            r = self.renderings[nodeid]
            out.size = len(r.data)
            if r.written:
                out.mtime_sec, out.mtime_nsec = divmod(r.written, NS)
            out.attr_timeout, out.entry_timeout = CHANGING_ATTR_TIMEOUT, 0.0
        return out

    def _changing(self, entry: Any) -> bool:
        return isinstance(entry, File) and not entry.fixed and entry.render is not None

    def lookup(self, parent: int, name: bytes) -> tuple[Any, int | None]:
        """The entry to reply, and the rendering's nodeid (count a reference to it once
        the reply is through)."""
        fs = self.fs
        fs.enter("lookup")
        if name in (b".", b".."):
            raise pyfuse3.FUSEError(errno.ENOENT)
        path = fs._path(self.to_main(parent)) + (os.fsdecode(name),)
        entry, ectx = fs._resolve(path)
        a = fs._attrs(path, entry, ectx)
        nodeid = self.render(a.st_ino, entry, ectx) if self._changing(entry) else None
        return self.attr(a, nodeid), nodeid

    def replied(self, nodeid: int | None, ret: int) -> None:
        """A LOOKUP reply went through (ret 0): the host holds one more reference."""
        if nodeid is not None and ret == 0:
            self.renderings[nodeid].lookups += 1

    def getattr(self, nodeid: int) -> Any:
        fs = self.fs
        fs.enter("getattr")
        ino = self.to_main(nodeid)
        path = fs._path(ino)
        entry, ectx = fs._resolve(path)
        return self.attr(fs._attrs(path, entry, ectx), nodeid if nodeid >= VERSION_BASE else None)

    # ---- reads and writes by inode ------------------------------------------------------
    def _file(self, nodeid: int, request: str, bits: int) -> tuple[int, File, Any]:
        """A READ's or WRITE's file: its main-table inode, entry and context, after
        kernfs_fop_open()'s check (EACCES for a direction the mode lacks), done here at
        the first read() or write() because no open reaches this connection."""
        fs = self.fs
        fs.enter(request)
        ino = self.to_main(nodeid)
        path = fs._path(ino)
        entry, ectx = fs._resolve(path)
        if isinstance(entry, Dir):
            raise pyfuse3.FUSEError(errno.EISDIR)
        if not isinstance(entry, File):
            raise pyfuse3.FUSEError(errno.EINVAL)
        if not fs._mode(path, entry) & bits:
            raise pyfuse3.FUSEError(errno.EACCES)
        return ino, entry, ectx

    def read(self, nodeid: int, off: int, size: int) -> bytes:
        ino, entry, ectx = self._file(nodeid, "read", 0o444)
        if entry.render is None:
            raise pyfuse3.FUSEError(errno.EIO)  # readable by chmod, no show(): dev_attr_show
        if nodeid >= VERSION_BASE:
            data = self.renderings[nodeid].data
        elif entry.fixed:
            data = self.fs.page_cache.bytes(ino, entry, ectx)
        else:  # the main table's inode of a changing attribute: never handed out here
            raise pyfuse3.FUSEError(errno.ESTALE)
        return data[off:off + size]

    def write(self, nodeid: int, off: int, data: bytes) -> int:
        """A store. The host also copied the bytes into its page of this inode, where
        kernfs has no such copy: the inode's mtime moves, so the GETATTR the host asks
        before its next read of it makes it drop the page (auto_inval_data), and reads
        through this descriptor go on showing its open's rendering; the next open gets
        a new inode. A refused write leaves the host's page holding bytes the
        attribute never had (root's shared writable mmap of it, deviation z5): the
        host is told to drop that page."""
        try:
            return self._store(nodeid, data)
        except pyfuse3.FUSEError:
            self._drop_later(nodeid)
            raise

    def _drop_later(self, nodeid: int) -> None:
        """Have the host drop its pages of nodeid, from a thread of its own (see
        fp_fuse_inval_inode); the refusal's reply goes first, from this one."""
        if self._closing:
            return
        if self._inval is None:
            self._inval = queue.SimpleQueue()
            self._dropper = threading.Thread(target=self._drop, args=(self._session, self._inval),
                                             name="sysmount-inval", daemon=True)
            self._dropper.start()
        self._inval.put(nodeid)

    @staticmethod
    def _drop(session: Any, todo: "queue.SimpleQueue[int | None]") -> None:
        while (nodeid := todo.get()) is not None:
            lib.fp_fuse_inval_inode(session, nodeid)  # ENOENT: the host has no such inode

    def _store(self, nodeid: int, data: bytes) -> int:
        ino, entry, ectx = self._file(nodeid, "write", 0o222)
        if entry.store is None:
            raise pyfuse3.FUSEError(entry.write_errno)  # writable by chmod, no store()
        try:
            return kernfs_write(entry.store, ectx, data)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        finally:
            r = self.renderings.get(nodeid)
            if r is not None:
                r.written = time.time_ns()
            self.retire(ino)


_active: SystemMount | None = None


def _drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a FakeprocFS handler to completion here: those of /sys never wait."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("a /sys handler tried to wait")


def _caller(req: Any) -> Caller:
    uid, gid, pid = ffi.new("uint32_t *"), ffi.new("uint32_t *"), ffi.new("int32_t *")
    lib.fp_req_ctx(req, uid, gid, pid)
    return Caller(uid[0], gid[0], pid[0])


def _answer(fn: Callable[..., None]) -> Callable[..., None]:
    """A callback's errors become its reply: FUSEError's errno, else EIO (logged).
    A callback that raised without replying would leave its caller hanging."""
    @functools.wraps(fn)
    def wrapper(req: Any, *args: Any) -> None:
        m = _active
        try:
            if m is None:
                raise pyfuse3.FUSEError(errno.ENOTCONN)
            fn(m, req, *args)
        except pyfuse3.FUSEError as e:
            lib.fp_reply_err(req, e.errno)
        except Exception:  # noqa: BLE001 - keep serving
            log.exception("/sys/devices/system %s failed; answering EIO", fn.__name__)
            lib.fp_reply_err(req, errno.EIO)
    return wrapper


@ffi.def_extern()
@_answer
def fp_op_lookup(m: SystemMount, req: Any, parent: int, name: Any) -> None:
    out, nodeid = m.lookup(parent, ffi.string(name))
    m.replied(nodeid, lib.fp_reply_entry(req, out))


@ffi.def_extern()
def fp_op_forget(nodeid: int, nlookup: int) -> None:
    if _active is not None:
        _active.forget(nodeid, nlookup)


@ffi.def_extern()
@_answer
def fp_op_getattr(m: SystemMount, req: Any, ino: int) -> None:
    lib.fp_reply_attr(req, m.getattr(ino))


@ffi.def_extern()
@_answer
def fp_op_setattr(m: SystemMount, req: Any, ino: int, new: Any, to_set: int) -> None:
    attr = pyfuse3.EntryAttributes()
    now = time.time_ns()
    attr.st_mode, attr.st_uid, attr.st_gid = new.mode, new.uid, new.gid
    attr.st_atime_ns = now if to_set & lib.FP_SET_ATIME_NOW else new.atime_sec * NS + new.atime_nsec
    attr.st_mtime_ns = now if to_set & lib.FP_SET_MTIME_NOW else new.mtime_sec * NS + new.mtime_nsec
    attr.st_ctime_ns = new.ctime_sec * NS + new.ctime_nsec
    fields = _SetattrFields(
        update_mode=bool(to_set & lib.FP_SET_MODE), update_uid=bool(to_set & lib.FP_SET_UID),
        update_gid=bool(to_set & lib.FP_SET_GID), update_size=bool(to_set & lib.FP_SET_SIZE),
        update_atime=bool(to_set & (lib.FP_SET_ATIME | lib.FP_SET_ATIME_NOW)),
        update_mtime=bool(to_set & (lib.FP_SET_MTIME | lib.FP_SET_MTIME_NOW)),
        update_ctime=bool(to_set & lib.FP_SET_CTIME))
    a = _drive(m.fs.setattr(m.to_main(ino), attr, fields, None, _caller(req)))
    if fields.update_mode:
        m.retire(a.st_ino)  # the next open reads under the new mode (a fresh inode)
    lib.fp_reply_attr(req, m.attr(a, ino if ino >= VERSION_BASE else None))


@dataclass(frozen=True)
class _SetattrFields:
    update_mode: bool
    update_uid: bool
    update_gid: bool
    update_size: bool
    update_atime: bool
    update_mtime: bool
    update_ctime: bool


@ffi.def_extern()
@_answer
def fp_op_readlink(m: SystemMount, req: Any, ino: int) -> None:
    target = _drive(m.fs.readlink(m.to_main(ino), _caller(req)))
    lib.fp_reply_readlink(req, target)


@ffi.def_extern()
@_answer
def fp_op_namespace(m: SystemMount, req: Any, op: int, parent: int, name: Any, mode: int,
                    other: int, name2: Any, flags: int) -> None:
    fs, ctx, parent = m.fs, _caller(req), m.to_main(parent)
    name_b = ffi.string(name)
    if op == lib.FP_NS_MKNOD:
        _drive(fs.mknod(parent, name_b, mode, 0, ctx))
    elif op == lib.FP_NS_MKDIR:
        _drive(fs.mkdir(parent, name_b, mode, ctx))
    elif op == lib.FP_NS_UNLINK:
        _drive(fs.unlink(parent, name_b, ctx))
    elif op == lib.FP_NS_RMDIR:
        _drive(fs.rmdir(parent, name_b, ctx))
    elif op == lib.FP_NS_SYMLINK:
        _drive(fs.symlink(parent, name_b, ffi.string(name2), ctx))
    elif op == lib.FP_NS_RENAME:
        _drive(fs.rename(parent, name_b, m.to_main(other), ffi.string(name2), flags, ctx))
    elif op == lib.FP_NS_LINK:
        _drive(fs.link(m.to_main(other), parent, name_b, ctx))
    elif op == lib.FP_NS_CREATE:
        _drive(fs.create(parent, name_b, mode, flags, ctx))
    raise pyfuse3.FUSEError(errno.EIO)  # every one of them refuses (server.py)


@ffi.def_extern()
@_answer
def fp_op_opendir(m: SystemMount, req: Any, ino: int) -> None:
    lib.fp_reply_open(req, _drive(m.fs.opendir(m.to_main(ino), _caller(req))))


@ffi.def_extern()
@_answer
def fp_op_readdir(m: SystemMount, req: Any, ino: int, size: int, off: int, fh: int) -> None:
    fs = m.fs
    fs.enter("readdir")
    buf = ffi.new("char[]", size)
    used = 0
    children = fs.dir_entries(fh, off)
    # '.' and '..' first, as on the main connection, then the children
    slots = [(name, functools.partial(lambda a: a, a)) for name, a in fs.dir_dots(fh)] if off < 2 \
        else [("", lambda: None)] * 2  # not sent again: only their positions count
    slots += [(name, functools.partial(fs._attrs, path, entry, ectx)) for name, entry, ectx, path in children]
    for i, (name, attrs) in enumerate(slots[off:], off):
        try:
            a = attrs()
        except pyfuse3.FUSEError:
            continue  # gone since opendir
        need = lib.fp_add_direntry(req, buf + used, size - used, os.fsencode(name), m.attr(a), i + 1)
        if need > size - used:
            break
        used += need
    lib.fp_reply_buf(req, buf, used)


@ffi.def_extern()
@_answer
def fp_op_releasedir(m: SystemMount, req: Any, fh: int) -> None:
    _drive(m.fs.releasedir(fh))
    lib.fp_reply_err(req, 0)


@ffi.def_extern()
@_answer
def fp_op_read(m: SystemMount, req: Any, ino: int, size: int, off: int) -> None:
    data = m.read(ino, off, size)
    lib.fp_reply_buf(req, data, len(data))


@ffi.def_extern()
@_answer
def fp_op_write(m: SystemMount, req: Any, ino: int, buf: Any, size: int, off: int) -> None:
    lib.fp_reply_write(req, m.write(ino, off, bytes(ffi.buffer(buf, size))))


@ffi.def_extern()
@_answer
def fp_op_statfs(m: SystemMount, req: Any, ino: int) -> None:
    s = _drive(m.fs.statfs(_caller(req)))
    lib.fp_reply_statfs(req, s.f_bsize, s.f_namemax)


__all__ = ["SystemMount", "SUBTREE"]
