"""The calling task's memory policy over the emulated nodes, for programs under
`fakeproc run`: set_mempolicy(2) and get_mempolicy(2) as mm/mempolicy.c of 4.20
answers them.

`numactl --membind=3 CMD` and libnuma's numa_set_membind() name emulated nodes,
which the host kernel would refuse (EINVAL). The runner validates the call as 4.20
does and keeps the policy per task (fakeproc.run.tasks); get_mempolicy reads it
back. The program's real memory is the host's and is not placed by it. Calls about
an address (MPOL_F_ADDR: the policy of a mapping, the node of a page) concern that
real memory: after 4.20's argument checks they go to the host, which answers with
its own mappings and nodes.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Callable

from . import seccomp
from .tasks import MachineFacts, TaskStates

MPOL_DEFAULT, MPOL_PREFERRED, MPOL_BIND, MPOL_INTERLEAVE, MPOL_LOCAL, MPOL_MAX = range(6)
MPOL_F_STATIC_NODES, MPOL_F_RELATIVE_NODES = 1 << 15, 1 << 14
MPOL_MODE_FLAGS = MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES
MPOL_F_NODE, MPOL_F_ADDR, MPOL_F_MEMS_ALLOWED = 1, 2, 4
MAX_NUMNODES = 1024

Facts = Callable[[], "MachineFacts | None"]


@dataclass(frozen=True)
class Policy:
    """struct mempolicy: mode (MPOL_LOCAL is stored as a local MPOL_PREFERRED), the
    mode flags, the nodes it uses (v.nodes, or the preferred node; none: local) and
    the nodes the caller asked for (w.user_nodemask, kept with a mode flag)."""

    mode: int
    flags: int
    nodes: frozenset[int]
    user_nodes: frozenset[int]

    def nodemask(self) -> frozenset[int]:
        """What get_mempolicy() copies out: the user's nodes with a mode flag
        (mpol_store_user_nodemask), else get_policy_nodemask()."""
        return self.user_nodes if self.flags & MPOL_MODE_FLAGS else self.nodes


def relative_nodes(nodes: list[int], allowed: frozenset[int]) -> frozenset[int]:
    """mpol_relative_nodemask(): node i means the (i mod weight)-th allowed node."""
    rel = sorted(allowed)
    return frozenset(rel[n % len(rel)] for n in nodes) if rel else frozenset()


def new_policy(mode: int, flags: int, nodes: list[int], allowed: frozenset[int]) -> Policy | None:
    """mpol_new() + mpol_set_nodemask(): the policy, None for MPOL_DEFAULT, or
    OSError(EINVAL). ``allowed``: the cpuset's mems with memory (N_MEMORY)."""
    static_or_relative = flags & MPOL_MODE_FLAGS
    if mode == MPOL_DEFAULT:
        if nodes:
            raise OSError(errno.EINVAL, "MPOL_DEFAULT takes no nodes")
        return None
    if mode == MPOL_PREFERRED:
        if not nodes and static_or_relative:
            raise OSError(errno.EINVAL, "a local preference takes no mode flags")
    elif mode == MPOL_LOCAL:
        if nodes or static_or_relative:
            raise OSError(errno.EINVAL, "MPOL_LOCAL takes no nodes and no flags")
        mode = MPOL_PREFERRED
    elif not nodes:
        raise OSError(errno.EINVAL, "no nodes")
    if mode == MPOL_PREFERRED and not nodes:
        return Policy(mode, flags, frozenset(), frozenset())  # explicit local allocation
    used = relative_nodes(nodes, allowed) if flags & MPOL_F_RELATIVE_NODES \
        else frozenset(nodes) & allowed
    if not used:
        raise OSError(errno.EINVAL, "no allowed node with memory")
    if mode == MPOL_PREFERRED:
        used = frozenset([min(used)])
    return Policy(mode, flags, used, frozenset(nodes))


def set_mempolicy_handler(facts: Facts, policies: TaskStates[Policy | None]) -> seccomp.Handler:
    """set_mempolicy(mode, nmask, maxnode) of the caller: EINVAL for a mode past
    MPOL_LOCAL, both mode flags, or a policy mpol_new() refuses; get_nodes()'s
    EINVAL/EFAULT; else 0 and the policy is the caller's."""
    def handler(notif: seccomp.Notification) -> seccomp.Response:
        f = facts()
        if f is None:
            return seccomp.Continue()
        mode = seccomp._s32(notif.args[0])
        flags, mode = mode & MPOL_MODE_FLAGS, mode & ~MPOL_MODE_FLAGS
        if not 0 <= mode < MPOL_MAX or flags == MPOL_MODE_FLAGS:
            return seccomp.Return(-errno.EINVAL)
        try:
            nodes = seccomp.get_nodes(notif, notif.args[1], notif.args[2], MAX_NUMNODES)
            pol = new_policy(mode, flags, nodes, f.mem_nodes)
        except OSError as e:
            return seccomp.Return(-(e.errno or errno.EINVAL))
        notif.check()  # the caller may be gone and its id reused: keep nothing then
        policies.set(notif.pid, pol)
        return seccomp.Return(0)
    return handler


def get_mempolicy_handler(facts: Facts, policies: TaskStates[Policy | None]) -> seccomp.Handler:
    """get_mempolicy(mode, nmask, maxnode, addr, flags) as kernel_get_mempolicy():
    EINVAL when nmask is given and maxnode < MAX_NUMNODES, for unknown flags,
    MPOL_F_MEMS_ALLOWED with another flag, an addr without MPOL_F_ADDR, or MPOL_F_NODE
    without an interleave policy; then the mode (with its mode flags; the interleave
    node for MPOL_F_NODE: the first, as nothing here allocates under it) and the
    nodes, or the cpuset's nodes for MPOL_F_MEMS_ALLOWED. MPOL_F_ADDR goes to the host
    once the arguments pass."""
    def handler(notif: seccomp.Notification) -> seccomp.Response:
        f = facts()
        if f is None:
            return seccomp.Continue()
        mode_p, nmask_p, maxnode, addr, flags = notif.args[:5]
        if nmask_p and maxnode < MAX_NUMNODES:
            return seccomp.Return(-errno.EINVAL)
        if flags & ~(MPOL_F_NODE | MPOL_F_ADDR | MPOL_F_MEMS_ALLOWED):
            return seccomp.Return(-errno.EINVAL)
        if flags & MPOL_F_MEMS_ALLOWED:
            if flags & (MPOL_F_NODE | MPOL_F_ADDR):
                return seccomp.Return(-errno.EINVAL)
            mode, nodes = 0, f.mem_nodes
        elif flags & MPOL_F_ADDR:
            return seccomp.Continue()  # the real mapping's policy or page's node
        elif addr:
            return seccomp.Return(-errno.EINVAL)
        else:
            pol = policies.get(notif.pid, None)
            if flags & MPOL_F_NODE:
                if pol is None or pol.mode != MPOL_INTERLEAVE:
                    return seccomp.Return(-errno.EINVAL)
                mode = min(pol.nodes)  # next_node_in(il_prev = MAX_NUMNODES - 1, nodes)
            else:
                mode = MPOL_DEFAULT if pol is None else pol.mode | pol.flags
            nodes = frozenset() if pol is None else pol.nodemask()
        notif.check()  # the caller may be gone and its pid reused: write nothing then
        if mode_p and seccomp.put_int(notif, mode_p, mode):
            return seccomp.Return(-errno.EFAULT)
        return seccomp.Return(seccomp.copy_nodes_to_user(notif, nmask_p, maxnode, nodes, MAX_NUMNODES)
                              if nmask_p else 0)
    return handler
