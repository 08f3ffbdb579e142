"""The one description of a vif: validated inputs in, a :class:`VifState` out (pure).

Both directions start here: ``online`` makes what this describes and is
missing, ``offline`` removes what this describes and is present. The
decisions that depend on the kernel (is there IPv6 at all, is it enabled on
the interface) come in as an :class:`Environment` observed beforehand.
"""

from __future__ import annotations

from qubesnet.constants import HARDEN_IPV4, HARDEN_IPV6, SET_ALLOWED, SET_DOWNSTREAM, VIF_GROUP

from .inputs import VifInputs
from .mapped_names import namespace_name, peer_name
from .state import Address, Element, Environment, NamespaceSpec, Neighbour, Route, Sysctl, VifState


def ipv4_conf(ifname: str, name: str) -> str:
    return f"net/ipv4/conf/{ifname}/{name}"


def ipv6_conf(ifname: str, name: str) -> str:
    return f"net/ipv6/conf/{ifname}/{name}"


def describe(inp: VifInputs, env: Environment) -> VifState:
    ifname = inp.ifname
    mapped = inp.mapping is not None and inp.mac is not None
    ipv6_on_vif = env.ipv6_on_vif and not mapped  # a mapped vif's path has no IPv6
    notes: list[str] = []

    addrs = inp.addresses.used
    # Protected (set elements, conntrack) wherever the kernel has the family;
    # routed only where IPv6 works on the interface. An IPv6 problem never
    # costs the client its IPv4 connectivity.
    protected = tuple(a for a in addrs if a.version == 4 or env.ipv6_kernel)
    routed = tuple(a for a in addrs if a.version == 4 or (ipv6_on_vif and inp.netvm_ipv6))
    for addr in addrs:
        if addr not in routed:
            where = f"on {ifname}, a mapped vif" if mapped else f"on {ifname}" if env.ipv6_kernel else "in the kernel"
            if env.ipv6_kernel and not mapped and ipv6_on_vif:
                where = "for this netvm (no /qubes-netvm-gateway6 nor /qubes-ip6 in QubesDB)"
            notes.append(f"IPv6 is disabled {where}: no route to {addr}")
    for addr in inp.addresses.ignored:
        notes.append(f"ignoring extra address {addr} (one per family is used)")

    sysctls = [Sysctl(ipv4_conf(ifname, "proxy_arp"), "1")]
    if mapped and env.ipv6_kernel:
        sysctls.append(Sysctl(ipv6_conf(ifname, "disable_ipv6"), "1"))
    gateway6 = inp.gateway6
    if gateway6 is not None and (gateway6.is_link_local or mapped):
        gateway6 = None  # a link-local gateway is reached directly; a mapped vif has no IPv6
    elif gateway6 is not None and not ipv6_on_vif:
        notes.append(f"IPv6 is disabled on {ifname}: gateway {gateway6} not configured")
        gateway6 = None
    if gateway6 is not None:
        sysctls.append(Sysctl(ipv6_conf(ifname, "proxy_ndp"), "1"))
    if inp.harden:
        sysctls += [Sysctl(ipv4_conf(ifname, k), v) for k, v in HARDEN_IPV4]
        if ipv6_on_vif:
            sysctls += [Sysctl(ipv6_conf(ifname, k), v) for k, v in HARDEN_IPV6]

    elements = [Element(SET_ALLOWED, a, ifname) for a in protected] + [Element(SET_DOWNSTREAM, a) for a in protected]
    neighbours = [Neighbour(a, inp.mac) for a in routed]
    addresses = [Address(g, g.max_prefixlen) for g in (inp.gateway, gateway6) if g is not None]

    namespace = None
    if inp.mapping is not None and inp.mac is not None:
        from .mapped import build_nat_table  # mapped vifs are rare: loaded for them only

        peer = peer_name(ifname)
        rules = tuple(build_nat_table(inp.mapping, ifname, peer))
        namespace = NamespaceSpec(namespace_name(ifname), ifname, peer, inp.vif.name, inp.mac, inp.mapping, rules)

    return VifState(
        vif=inp.vif.name,
        ifname=ifname,
        vif_type=inp.vif_type,
        group=VIF_GROUP,
        sysctls=tuple(sysctls),
        elements=tuple(elements),
        routes=tuple(Route(a, inp.vif.metric) for a in routed),
        neighbours=tuple(neighbours),
        addresses=tuple(addresses),
        flowtable=inp.flowtable,
        namespace=namespace,
        purge=protected,
        hook_addresses=addrs,
        notes=tuple(notes),
    )


def subtract(old: VifState, new: VifState) -> VifState:
    """The objects ``old`` describes and ``new`` no longer does (what a change
    of QubesDB, say a gateway that went away, leaves behind)."""
    keys = {s.key for s in new.sysctls}
    return old._replace(
        sysctls=tuple(s for s in old.sysctls if s.key not in keys),
        elements=tuple(e for e in old.elements if e not in new.elements),
        routes=tuple(r for r in old.routes if r not in new.routes),
        neighbours=tuple(n for n in old.neighbours if n.addr not in {m.addr for m in new.neighbours}),
        addresses=tuple(a for a in old.addresses if a not in new.addresses),
        flowtable=False,
        namespace=None,
        purge=(),
        hook_addresses=(),
        notes=(),
    )


def restricted_to_downstream(state: VifState) -> VifState:
    """Only ``state``'s ``downstream`` elements: what is left to remove of an
    orphan's address that no interface may send from any more."""
    return state._replace(
        elements=tuple(e for e in state.elements if e.kind == SET_DOWNSTREAM),
        sysctls=(),
        routes=(),
        neighbours=(),
        addresses=(),
        flowtable=False,
        namespace=None,
        purge=(),
        hook_addresses=(),
        notes=(),
    )
