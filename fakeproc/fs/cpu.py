"""/sys/devices/system/cpu, /sys/devices/system/memory and /proc/cpuinfo.

Just enough of the CPU and memory-block trees for libnuma, lscpu --sysroot and
hwloc (HWLOC_FSROOT) to see the emulated topology: one socket per node that has
CPUs, one core per CPU, no SMT. Linux: drivers/base/cpu.c, topology.c,
memory.c, arch/x86/kernel/cpu/proc.c.
"""
from __future__ import annotations

import errno

from . import formats as fmt
from .sysfs import fail, kstrtobool, memory_block_size, node_blocks, parse_prefixed, sysfs_streq
from .tree import Ctx, Dir, File, Link, Lister

MODEL_NAME = "Intel(R) Xeon(R) Gold 6252 CPU @ 2.10GHz"  # a Cascade Lake: the Optane PMEM platform
CPU_FLAGS = ("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts "
             "acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc "
             "art arch_perfmon pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf pni "
             "pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid "
             "dca sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand "
             "lahf_lm abm 3dnowprefetch cpuid_fault epb cat_l3 cdp_l3 invpcid_single intel_ppin "
             "ssbd mba ibrs ibpb stibp ibrs_enhanced tpr_shadow vnmi flexpriority ept vpid "
             "ept_ad fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm cqm mpx rdt_a "
             "avx512f avx512dq rdseed adx smap clflushopt clwb intel_pt avx512cd avx512bw "
             "avx512vl xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total "
             "cqm_mbm_local dtherm ida arat pln pts pku ospke avx512_vnni md_clear flush_l1d "
             "arch_capabilities")


def _socket_of(ctx: Ctx, cpu: int) -> int:
    """Sockets are numbered by the nodes that have CPUs, in id order."""
    with_cpus = [n.id for n in ctx.kernel.nodes if n.cpus]
    return with_cpus.index(ctx.kernel.cpu_node(cpu)) if with_cpus else 0


def _package_cpus(ctx: Ctx, cpu: int) -> tuple[int, ...]:
    return ctx.kernel.node(ctx.kernel.cpu_node(cpu)).cpus


def _cpuinfo(ctx: Ctx) -> str:
    out = []
    for cpu in ctx.kernel.online_cpus:
        pkg = _package_cpus(ctx, cpu)
        out.append(
            f"processor\t: {cpu}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\n"
            f"model name\t: {MODEL_NAME}\nstepping\t: 7\nmicrocode\t: 0x5003302\n"
            f"cpu MHz\t\t: 2100.000\ncache size\t: 36608 KB\nphysical id\t: {_socket_of(ctx, cpu)}\n"
            f"siblings\t: {len(pkg)}\ncore id\t\t: {pkg.index(cpu)}\ncpu cores\t: {len(pkg)}\n"
            f"apicid\t\t: {cpu * 2}\ninitial apicid\t: {cpu * 2}\nfpu\t\t: yes\n"
            f"fpu_exception\t: yes\ncpuid level\t: 22\nwp\t\t: yes\nflags\t\t: {CPU_FLAGS}\n"
            "bugs\t\t: spectre_v1 spectre_v2 spec_store_bypass swapgs taa\n"
            "bogomips\t: 4200.00\nclflush size\t: 64\ncache_alignment\t: 64\n"
            "address sizes\t: 46 bits physical, 48 bits virtual\npower management:\n\n")
    return "".join(out)


CPUINFO = File("cpuinfo", _cpuinfo, mode=0o444, size=0, write_errno=22)


def _cpus(ctx: Ctx) -> list[int]:
    return ctx.kernel.online_cpus


def _topology() -> Dir:
    def cpu(c: Ctx) -> int:
        return c.get("cpu")

    def pkg(c: Ctx) -> tuple[int, ...]:
        return _package_cpus(c, cpu(c))

    return Dir("topology", (
        File("physical_package_id", lambda c: f"{_socket_of(c, cpu(c))}\n", fixed=True),
        File("core_id", lambda c: f"{pkg(c).index(cpu(c))}\n", fixed=True),
        File("core_siblings", lambda c: fmt.cpumap(pkg(c), c.kernel.nr_cpu_ids), fixed=True),
        File("core_siblings_list", lambda c: fmt.node_list(pkg(c)), fixed=True),
        File("thread_siblings", lambda c: fmt.cpumap([cpu(c)], c.kernel.nr_cpu_ids), fixed=True),
        File("thread_siblings_list", lambda c: fmt.node_list([cpu(c)]), fixed=True),
    ))


def _cpu_entries(ctx: Ctx) -> list[str]:
    """cpuN's dynamic names: its node link, and `online` for every CPU but cpu0
    (x86 cpu0 is not hot-pluggable by default)."""
    cpu = ctx.get("cpu")
    return [f"node{ctx.kernel.cpu_node(cpu)}"] + (["online"] if cpu else [])


def _cpu_entry(ctx: Ctx) -> "File | Link":
    return ONLINE if _cpu_entries(ctx)[ctx.get("entry")] == "online" else NODE_LINK


def _online_store(ctx: Ctx, data: bytes) -> None:
    """online_store() of a hotpluggable device (a CPU, a memory block): kstrtobool,
    then device_online(), which for a device already online (every one here) does
    nothing and the write returns its count, or device_offline(). fakeproc cannot
    take a CPU or a memory block offline: EBUSY, what offlining a memory block whose
    pages cannot be isolated gives in 4.20 (and cpu_down() while CPU hotplug is
    disabled)."""
    if not kstrtobool(data):
        raise fail(errno.EBUSY)


def _state_store(ctx: Ctx, data: bytes) -> None:
    """store_mem_state(): `offline` is device_offline() (EBUSY, as above); `online`,
    `online_kernel` and `online_movable` call device_online(), which returns 1 for a
    block that is online already, and the store turns that into EINVAL; any other
    word is EINVAL too."""
    raise fail(errno.EBUSY if sysfs_streq(data, b"offline") else errno.EINVAL)


ONLINE = File("online", lambda c: "1\n", mode=0o644, store=_online_store)
NODE_LINK = Link("", lambda c: f"../../node/node{c.kernel.cpu_node(c.get('cpu'))}")
CPU_DIR = Dir("cpuN", (_topology(),), lister=Lister(
    "entry", _cpu_entries,
    lambda c, n: _cpu_entries(c).index(n) if n in _cpu_entries(c) else None, _cpu_entry))

CPU_ROOT = Dir("cpu", (
    File("possible", lambda c: fmt.node_list(range(c.kernel.nr_cpu_ids)), fixed=True),
    File("present", lambda c: fmt.node_list(c.kernel.online_cpus), fixed=True),
    File("online", lambda c: fmt.node_list(c.kernel.online_cpus), fixed=True),  # _CPU_ATTR: 0444
    File("offline", lambda c: fmt.node_list(sorted(set(range(c.kernel.nr_cpu_ids))
                                                   - set(c.kernel.online_cpus))), fixed=True),
    File("kernel_max", lambda c: "8191\n", fixed=True),
), lister=Lister("cpu", lambda c: [f"cpu{n}" for n in _cpus(c)], parse_prefixed("cpu", _cpus), CPU_DIR))


def _blocks(ctx: Ctx) -> list[int]:
    total = sum(n.size_bytes for n in ctx.kernel.nodes)
    return list(range(-(-total // memory_block_size(ctx))))


def _block_node_links(ctx: Ctx) -> list[str]:
    """nodeN for every node with a page in the block, in node order."""
    return [f"node{n.id}" for n in ctx.kernel.nodes if ctx.get("block") in node_blocks(ctx, n.id)]


def _valid_zones(ctx: Ctx) -> str:
    """show_valid_zones() of an online block: the name of the one zone its pages lie
    in (every node is one ZONE_NORMAL here), `none` when they span two."""
    return "Normal\n" if len(_block_node_links(ctx)) == 1 else "none\n"


MEMORY_BLOCK = Dir("memoryN", (
    ONLINE,
    File("state", lambda c: "online\n", mode=0o644, store=_state_store),
    File("phys_index", lambda c: f"{c.get('block'):08x}\n", fixed=True),
    File("phys_device", lambda c: "0\n", fixed=True),  # arch_get_memory_phys_device(): 0
    File("removable", lambda c: "0\n", fixed=True),
    File("valid_zones", _valid_zones, fixed=True),
), lister=Lister("nodelink", _block_node_links,
                 lambda c, n: _block_node_links(c).index(n) if n in _block_node_links(c) else None,
                 Link("", lambda c: f"../../node/{_block_node_links(c)[c.get('nodelink')]}")))

MEMORY_ROOT = Dir("memory", (
    File("block_size_bytes", lambda c: f"{memory_block_size(c):x}\n", fixed=True),
), lister=Lister("block", lambda c: [f"memory{b}" for b in _blocks(c)], parse_prefixed("memory", _blocks),
                 MEMORY_BLOCK))
