"""Pure planning: validated inputs and kernel facts in, ordered steps out.

``online`` and ``offline`` are planned from the same description of what a
connected vif consists of, so teardown cannot drift from set-up. The order
of the online steps is the security argument of the whole script:

1. rename and sysctls while the link is still down;
2. stale conntrack entries of the client's addresses purged;
3. anti-spoofing set elements committed (one nftables transaction);
4. only then the link up, in interface group 2 (whose traffic must pass the
   antispoof chain), followed by routes, neighbours and gateway addresses.
   IPv4 routes need the link up, and the kernel flushes neighbour entries
   of a link that goes down, so these come after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from qubesnet.constants import FAMILIES, VIF_GROUP
from qubesnet.errors import ApplyError
from qubesnet.layout import build_layout_removal, build_missing_layout
from qubesnet.nftjson import Json
from qubesnet.validate import IPAddress

from .inputs import VifInputs
from .nftplan import build_flowtable_add, build_flowtable_remove


# --- steps ---


class Rename(NamedTuple):
    old: str
    new: str


class SetSysctl(NamedTuple):
    key: str
    value: str


class PurgeConntrack(NamedTuple):
    addrs: tuple[IPAddress, ...]


class AntispoofElements(NamedTuple):
    """The vif's set elements, plus any missing base layout and flowtable."""

    present: bool
    addresses: tuple[IPAddress, ...]
    layout: tuple[Json, ...] = ()
    layout_undo: tuple[Json, ...] = ()
    flowtable: tuple[Json, ...] = ()


class LinkState(NamedTuple):
    up: bool
    group: int


class HostRoute(NamedTuple):
    present: bool
    dst: IPAddress
    metric: int


class Neighbour(NamedTuple):
    present: bool
    addr: IPAddress
    mac: str | None


class GatewayAddress(NamedTuple):
    present: bool
    addr: IPAddress
    prefixlen: int


class RunHooks(NamedTuple):
    command: str
    addr: IPAddress | None


class ReportConnected(NamedTuple):
    """hotplug-status=connected: last, so that a failure to report undoes all."""


Step = (
    Rename
    | SetSysctl
    | PurgeConntrack
    | AntispoofElements
    | LinkState
    | HostRoute
    | Neighbour
    | GatewayAddress
    | RunHooks
    | ReportConnected
)


class Facts(NamedTuple):
    """Read-only observations of the kernel, gathered before planning."""

    link_name: str | None  # the name the interface has now, None if absent
    link_index: int | None  # its index: netlink works on this, never on names
    ipv6_kernel: bool  # IPv6 exists in this kernel (/proc/sys/net/ipv6)
    ipv6_on_vif: bool  # IPv6 enabled on the interface (disable_ipv6 = 0)
    chains: Mapping[str, frozenset[str]] = MappingProxyType({})  # family -> chains of table qubes
    qubes_tables: frozenset[str] = frozenset()  # families having table qubes
    mapped: bool = False  # the interface is the veth of a mapped vif (IPv6 off)
    link_addresses: tuple[tuple[IPAddress, int], ...] = ()  # on the interface (offline's view)
    flow_table_exists: bool = False


class Plan(NamedTuple):
    command: str
    ifname: str  # the interface's name once the plan has run
    link_index: int | None  # the interface (None: already gone, offline only)
    addresses: tuple[IPAddress, ...]  # the client addresses concerned
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = ()  # what was skipped and why, logged as warnings


HARDEN_IPV4 = {"accept_redirects": "0", "send_redirects": "0", "accept_source_route": "0"}
HARDEN_IPV6 = {"accept_redirects": "0", "accept_source_route": "0", "accept_ra": "0", "accept_dad": "0", "dad_transmits": "0"}


def ipv4_conf(ifname: str, name: str) -> str:
    return f"net/ipv4/conf/{ifname}/{name}"


def ipv6_conf(ifname: str, name: str) -> str:
    return f"net/ipv6/conf/{ifname}/{name}"


def _families(facts: Facts) -> tuple[str, ...]:
    return FAMILIES if facts.ipv6_kernel else ("ip",)


def plan_online(inp: VifInputs, facts: Facts) -> Plan:
    ifname = inp.ifname
    notes: list[str] = []
    steps: list[Step] = []

    if facts.link_name is None or facts.link_index is None:
        raise ApplyError(f"interface {inp.vif.name} does not exist; is the VM's backend still there?")
    if inp.renamed and facts.link_name == inp.vif.name:
        steps.append(Rename(inp.vif.name, ifname))

    # Addresses we configure; IPv6 ones only where IPv6 works. An IPv6
    # problem never costs the client its IPv4 connectivity.
    addrs = list(inp.addresses.used)
    routed = [a for a in addrs if a.version == 4 or facts.ipv6_on_vif]
    for addr in addrs:
        if addr not in routed:
            where = "in the kernel" if not facts.ipv6_kernel else f"on {ifname}"
            if facts.mapped:
                where = f"on {ifname}, a mapped vif"
            notes.append(f"IPv6 is disabled {where}: no route to {addr}")
    for addr in inp.addresses.ignored:
        notes.append(f"ignoring extra address {addr} (one per family is used)")
    filtered = [a for a in addrs if a.version == 4 or facts.ipv6_kernel]

    steps.append(SetSysctl(ipv4_conf(ifname, "proxy_arp"), "1"))
    if facts.mapped and facts.ipv6_kernel:
        steps.append(SetSysctl(ipv6_conf(ifname, "disable_ipv6"), "1"))
    gateway6 = inp.gateway6
    if gateway6 is not None and (gateway6.is_link_local or facts.mapped):
        gateway6 = None  # a link-local gateway is reached directly; a mapped vif has no IPv6
    elif gateway6 is not None and not facts.ipv6_on_vif:
        notes.append(f"IPv6 is disabled on {ifname}: gateway {gateway6} not configured")
        gateway6 = None
    if gateway6 is not None:
        steps.append(SetSysctl(ipv6_conf(ifname, "proxy_ndp"), "1"))
    if inp.harden:
        steps += [SetSysctl(ipv4_conf(ifname, k), v) for k, v in HARDEN_IPV4.items()]
        if facts.ipv6_on_vif:
            steps += [SetSysctl(ipv6_conf(ifname, k), v) for k, v in HARDEN_IPV6.items()]

    if filtered:
        steps.append(PurgeConntrack(tuple(filtered)))

    layout: list[Json] = []
    layout_undo: list[Json] = []
    for family in _families(facts):
        chains = facts.chains.get(family, frozenset())
        layout += build_missing_layout(family, chains)
        layout_undo += build_layout_removal(family, chains, family in facts.qubes_tables)
    flowtable = tuple(build_flowtable_add(ifname, facts.flow_table_exists)) if inp.flowtable else ()
    steps.append(AntispoofElements(True, tuple(filtered), tuple(layout), tuple(layout_undo), flowtable))

    steps.append(LinkState(up=True, group=VIF_GROUP))
    steps += [HostRoute(True, addr, inp.vif.metric) for addr in routed]
    steps += [Neighbour(True, addr, inp.mac) for addr in routed]
    if inp.gateway is not None:
        steps.append(GatewayAddress(True, inp.gateway, 32))
    if gateway6 is not None:
        steps.append(GatewayAddress(True, gateway6, 128))

    steps += [RunHooks("online", addr) for addr in addrs] or [RunHooks("online", None)]
    steps.append(ReportConnected())
    return Plan("online", ifname, facts.link_index, tuple(addrs), tuple(steps), tuple(notes))


def plan_offline(inp: VifInputs, facts: Facts) -> Plan:
    """Remove what online added; an interface already gone is fine."""
    ifname = facts.link_name or inp.ifname
    addrs = list(inp.addresses.used)
    filtered = [a for a in addrs if a.version == 4 or facts.ipv6_kernel]
    steps: list[Step] = []
    link = facts.link_name is not None

    if link:
        # Stop traffic first; the link's routes go with their deletion below.
        steps.append(LinkState(up=False, group=0))
        # Clean IPv6 up even if IPv6 is disabled on the vif by now.
        steps += [HostRoute(False, addr, inp.vif.metric) for addr in filtered]
    flowtable = tuple(build_flowtable_remove(ifname)) if link and facts.flow_table_exists else ()
    steps.append(AntispoofElements(False, tuple(filtered), flowtable=flowtable))
    if link:
        steps += [Neighbour(False, addr, None) for addr in filtered]
        # The gateway addresses online put there: what is on the interface
        # now, not what QubesDB says today (it may have changed meanwhile).
        steps += [GatewayAddress(False, addr, prefixlen) for addr, prefixlen in facts.link_addresses
                  if prefixlen == addr.max_prefixlen and not addr.is_link_local]
    if filtered:
        steps.append(PurgeConntrack(tuple(filtered)))
    steps += [RunHooks("offline", addr) for addr in addrs] or [RunHooks("offline", None)]
    return Plan("offline", ifname, facts.link_index, tuple(addrs), tuple(steps))
