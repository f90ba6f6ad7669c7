"""/sys: the node tree (INTERFACES.md 2), the CPU tree and /sys/bus/node.

Linux: drivers/base/node.c (node_dev attributes, the RFC's type/peer_node),
drivers/base/cpu.c and topology.c, drivers/base/memory.c. Renderers only
format what kernel/vmstat.py and the node table give them.
"""
from __future__ import annotations

import errno
import os
from typing import Callable

from . import formats as fmt
from .tree import Ctx, Dir, File, Link, Lister, decimal
from ..kernel import vmstat

# ------------------------------------------------- store(): the write side of sysfs

PAGE_SIZE = 4096
ULONG_MAX = (1 << 64) - 1
Store = Callable[[Ctx, bytes], "int | None"]


def kernfs_write(store: Store, ctx: Ctx, data: bytes) -> int:
    """One write(2) to a sysfs attribute (kernfs_fop_write, sysfs_kf_write): store()
    gets at most a page, whatever the offset; an empty write stores nothing. Every
    sysfs store() returns its count on success, so the write returns what it stored;
    a proc file's .write may return less (its own count)."""
    data = data[:PAGE_SIZE]
    if data:
        count = store(ctx, data)
        return len(data) if count is None else count
    return 0


def fail(err: int) -> OSError:
    return OSError(err, os.strerror(err))


def _c_string(data: bytes) -> bytes:
    """What a store() that parses a C string sees: kernfs NUL-terminates the buffer,
    and an embedded NUL ends the string sooner."""
    return data.split(b"\0", 1)[0]


def sysfs_streq(data: bytes, word: bytes) -> bool:
    """sysfs_streq(): the same string but for one trailing newline."""
    return _c_string(data) in (word, word + b"\n")


_DIGITS = {8: b"01234567", 10: b"0123456789", 16: b"0123456789abcdefABCDEF"}


def _kstrtoull(s: bytes, base: int = 10) -> int:
    """_kstrtoull(s, base): _parse_integer_fixup_radix() (base 0: "0x" and a hex digit
    is hex, a leading 0 octal, else decimal; base 16 skips "0x"), the digits and at
    most one newline; ERANGE above ULLONG_MAX (found before trailing junk), EINVAL for
    the rest."""
    if base == 0:
        base = 16 if s[:2].lower() == b"0x" and s[2:3] and s[2:3] in _DIGITS[16] else \
            8 if s[:1] == b"0" else 10
    if base == 16 and s[:2].lower() == b"0x":
        s = s[2:]
    digits = s[:len(s) - len(s.lstrip(_DIGITS[base]))]
    if not digits:
        raise fail(errno.EINVAL)
    if int(digits, base) > ULONG_MAX:
        raise fail(errno.ERANGE)
    if s[len(digits):] not in (b"", b"\n"):
        raise fail(errno.EINVAL)
    return int(digits, base)


def kstrtoul(data: bytes) -> int:
    """kstrtoul(buf, 10): an optional '+', then _kstrtoull()."""
    s = _c_string(data)
    return _kstrtoull(s[1:] if s.startswith(b"+") else s)


def kstrtoint(data: bytes, base: int = 10) -> int:
    """kstrtoint(buf, base): kstrtoll()'s sign ('-', or '+' before the digits only),
    _kstrtoull(), then ERANGE outside an int."""
    s = _c_string(data)
    value = -_kstrtoull(s[1:], base) if s.startswith(b"-") else \
        _kstrtoull(s[1:] if s.startswith(b"+") else s, base)
    if not -(1 << 31) <= value < 1 << 31:
        raise fail(errno.ERANGE)
    return value


def kstrtobool(data: bytes) -> bool:
    """kstrtobool(): y/Y/1 or on, n/N/0 or off (only the first one or two characters
    count), else EINVAL."""
    s = _c_string(data)
    if s[:1] in (b"y", b"Y", b"1") or s[:2].lower() == b"on":
        return True
    if s[:1] in (b"n", b"N", b"0") or s[:2].lower() == b"of":
        return False
    raise fail(errno.EINVAL)


def accept(ctx: Ctx, data: bytes) -> None:
    """A store() that succeeds whatever it is given and changes nothing fakeproc
    shows: `uevent` (4.20's uevent_store() and bus_uevent_store() log a
    kobject_synth_uevent() failure and return the count anyway) and `compact`
    (sysfs_compact_node() compacts an online node and returns the count; fakeproc has
    no compaction)."""


def _nr_hugepages_store(ctx: Ctx, data: bytes) -> None:
    """nr_hugepages_store_common(): the count must parse (kstrtoul); the kernel then
    allocates what it can. fakeproc has no hugetlb pool, so none is allocated and
    nr_hugepages reads back 0, as on a kernel that finds no free huge page."""
    kstrtoul(data)


def _autoprobe_store(ctx: Ctx, data: bytes) -> None:
    """drivers_autoprobe_store(): off when the first byte is '0', else on."""
    ctx.kernel.drivers_autoprobe = data[:1] != b"0"


def _probe_store(ctx: Ctx, data: bytes) -> None:
    """drivers_probe_store(): bus_find_device_by_name() (sysfs_streq), ENODEV when no
    device has the name; a node has no driver to attach, so bus_rescan_devices_helper()
    returns 0 and the write its count."""
    if not any(sysfs_streq(data, f"node{n}".encode()) for n in _node_ids(ctx)):
        raise fail(errno.ENODEV)


# --------------------------------------------------------------- node attributes


def _node_ids(ctx: Ctx) -> list[int]:
    return ctx.kernel.node_ids


def _nodes_with_cpus(ctx: Ctx) -> list[int]:
    return [n.id for n in ctx.kernel.nodes if n.cpus]


def _node(ctx: Ctx):  # noqa: ANN202 - a kernel Node
    return ctx.kernel.node(ctx.get("nid"))


def _meminfo(ctx: Ctx) -> str:
    nid = ctx.get("nid")
    return fmt.node_meminfo(nid, vmstat.node_meminfo(ctx.kernel, nid), 0, 0, 0)


def _numastat(ctx: Ctx) -> str:
    c = vmstat.node_counters(ctx.kernel, ctx.get("nid"))
    return fmt.node_numastat(c["numa_hit"], c["numa_miss"], c["numa_foreign"],
                             c["numa_interleave"], c["numa_local"], c["numa_other"])


def _distance(ctx: Ctx) -> str:
    k, nid = ctx.kernel, ctx.get("nid")
    return fmt.node_distance([(m, k.distance(nid, m)) for m in k.node_ids])


def _hugepages_dir(size_kb: int) -> Dir:
    zero = File("nr_hugepages", lambda c: "0\n", mode=0o644, store=_nr_hugepages_store)
    return Dir(f"hugepages-{size_kb}kB", (
        zero, File("free_hugepages", lambda c: "0\n", fixed=True),
        File("surplus_hugepages", lambda c: "0\n", fixed=True)))


MEMORY_BLOCK_SMALL = 128 << 20


def memory_block_size(ctx: Ctx) -> int:
    """x86_64 probe_memory_block_size(): 128 MiB, 2 GiB on machines of 64 GiB and more."""
    total = sum(n.size_bytes for n in ctx.kernel.nodes)
    return MEMORY_BLOCK_SMALL if total < (64 << 30) else 2 << 30


def node_blocks(ctx: Ctx, nid: int) -> range:
    """The memory blocks holding a page of the node: register_mem_sect_under_node()
    links a block to every node one of its pages lies on (a block can have two)."""
    bs = memory_block_size(ctx)
    start = ctx.kernel.node_start_pfn(nid) * 4096
    end = start + ctx.kernel.node(nid).size_bytes
    return range(start // bs, -(-end // bs))


def _node_link_names(ctx: Ctx) -> list[str]:
    nid = ctx.get("nid")
    return ([f"cpu{c}" for c in ctx.kernel.node(nid).cpus]
            + [f"memory{b}" for b in node_blocks(ctx, nid)])


def _node_link_target(ctx: Ctx) -> str:
    # the Lister binds the link's index; recover the name from the listing
    name = _node_link_names(ctx)[ctx.get("link")]
    return f"../../{'cpu' if name.startswith('cpu') else 'memory'}/{name}"


NODE_DIR = Dir("nodeN", (
    File("type", lambda c: f"{_node(c).type}\n", fixed=True),
    File("peer_node", lambda c: f"{_node(c).peer}\n", fixed=True),
    File("cpumap", lambda c: fmt.cpumap(_node(c).cpus, c.kernel.nr_cpu_ids), fixed=True),
    File("cpulist", lambda c: fmt.node_list(_node(c).cpus), fixed=True),
    File("distance", _distance, fixed=True),
    File("numastat", _numastat),
    File("meminfo", _meminfo),
    File("vmstat", lambda c: fmt.node_vmstat(vmstat.node_counters(c.kernel, c.get("nid")))),
    File("compact", None, mode=0o200, store=accept),
    File("uevent", lambda c: "", mode=0o644, store=accept),
    Dir("hugepages", (_hugepages_dir(2048), _hugepages_dir(1048576))),
    Dir("power", ()),
    Link("subsystem", lambda c: "../../../../bus/node"),
), lister=Lister(
    "link",
    _node_link_names,
    lambda c, name: _node_link_names(c).index(name) if name in _node_link_names(c) else None,
    Link("", _node_link_target),
))


def parse_prefixed(prefix: str, valid) -> "callable":  # noqa: ANN001
    """A Lister parse for names like nodeN, cpuN, memoryN: N when canonical and valid."""
    def parse(ctx: Ctx, name: str) -> int | None:
        v = decimal(name[len(prefix):]) if name.startswith(prefix) else None
        return v if v is not None and v in valid(ctx) else None
    return parse


def _list_file(name: str, ids) -> File:  # noqa: ANN001
    return File(name, lambda c: fmt.node_list(ids(c)), fixed=True)


NODE_ROOT = Dir("node", (
    _list_file("possible", _node_ids),
    _list_file("online", _node_ids),
    _list_file("has_normal_memory", _node_ids),
    _list_file("has_memory", _node_ids),
    _list_file("has_cpu", _nodes_with_cpus),
    File("uevent", lambda c: "", mode=0o644, store=accept),
    Dir("power", ()),
), lister=Lister("nid", lambda c: [f"node{n}" for n in _node_ids(c)],
                 parse_prefixed("node", _node_ids), NODE_DIR))

# --------------------------------------------------------------------- /sys/bus/node

BUS_NODE = Dir("node", (
    Dir("devices", (), lister=Lister(
        "nid", lambda c: [f"node{n}" for n in _node_ids(c)], parse_prefixed("node", _node_ids),
        Link("", lambda c: f"../../../devices/system/node/node{c.get('nid')}"))),
    Dir("drivers", ()),
    File("drivers_autoprobe", lambda c: f"{int(c.kernel.drivers_autoprobe)}\n", mode=0o644,
         store=_autoprobe_store),
    File("drivers_probe", None, mode=0o200, store=_probe_store),
    File("uevent", None, mode=0o200, store=accept),
))
