"""The objects one vif consists of, as plain values.

A :class:`VifState` is the whole description of a vif as this program makes
it: computed purely from the validated inputs (``describe.py``), observed in
the kernel object by object (``observe.py``, as :class:`Observed`), and
compared by the pure planner (``diff.py``). ``online`` makes what is
described and missing; ``offline`` removes what is described and present;
so what offline removes is, by construction, what online made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qubesnet.records import Record
from qubesnet.validate import IPAddress

if TYPE_CHECKING:
    from qubesnet.nftjson import Json

    from .mapped import MappedAddress


class Sysctl(Record):
    key: str  # under /proc/sys, e.g. net/ipv4/conf/vif12.0/proxy_arp
    value: str


class Route(Record):
    dst: IPAddress  # a host route (/32, /128) through the vif
    metric: int


class Neighbour(Record):
    addr: IPAddress  # a permanent entry
    mac: str | None  # None: unknown (offline without the mac key), any entry for addr is ours


class Address(Record):
    addr: IPAddress  # a gateway address on the vif
    prefixlen: int


class Element(Record):
    """One element of an anti-spoofing set: ``allowed`` (with the interface) or ``downstream``."""

    kind: str  # the set's name
    addr: IPAddress
    ifname: str | None = None  # only for ``allowed``


class NamespaceSpec(Record):
    """A mapped vif's private namespace: the real vif inside, a veth to the netvm."""

    name: str
    ifname: str  # the veth's netvm end (and the real vif's name inside)
    peer: str  # the veth's namespace end
    vif: str  # the real vif's name in the netvm, restored on the way out
    client_mac: str
    mapping: MappedAddress
    rules: tuple[Json, ...]  # the namespace's whole netdev table


class VifState(Record):
    vif: str  # the name libxl gave the interface
    ifname: str  # its name once online (``vifname``, or the same)
    vif_type: str
    group: int
    sysctls: tuple[Sysctl, ...]
    elements: tuple[Element, ...]
    routes: tuple[Route, ...]
    neighbours: tuple[Neighbour, ...]
    addresses: tuple[Address, ...]
    flowtable: bool  # the vif belongs to the acceleration flowtable
    namespace: NamespaceSpec | None
    purge: tuple[IPAddress, ...]  # stale conntrack entries of these addresses go, both directions
    hook_addresses: tuple[IPAddress, ...]  # the administrator's hooks run once per address
    notes: tuple[str, ...] = ()  # what was left out and why, logged as warnings

    @property
    def client_addresses(self) -> tuple[IPAddress, ...]:
        return tuple(dict.fromkeys(e.addr for e in self.elements))


class Link(Record):
    ifindex: int
    name: str
    up: bool
    group: int


class Environment(Record):
    """What the description needs to know of the kernel before it is computed."""

    link: Link | None  # the interface (the veth's netvm end for a mapped vif)
    ipv6_kernel: bool  # /proc/sys/net/ipv6 exists
    ipv6_on_vif: bool  # IPv6 is enabled on the interface (disable_ipv6 = 0)


class BaseObjects(Record):
    """Which anti-spoofing objects of one family exist (table, sets, chains)."""

    table: bool
    sets: frozenset[str]
    chains: frozenset[str]


class FlowFacts(Record):
    supported: bool  # the kernel can hold a flowtable (capability probe)
    table: bool  # our acceleration table exists
    member: bool  # the interface is one of the flowtable's devices


class NamespaceFacts(Record):
    exists: bool
    real_inside: bool  # a device named ifname inside the namespace
    peer_inside: bool
    table_present: bool  # it has a netdev table of ours
    table_matches: bool  # ... and it is the one the description builds
    netvm_link: Link | None  # the real vif (or its stand-in) in the netvm, before it moves


class Observed(Record):
    """The kernel's state of exactly the objects a :class:`VifState` names."""

    link: Link | None
    sysctls: dict[str, str | None]  # current value of each described key
    defaults: dict[str, str | None]  # what a new interface gets for each key (conf/default)
    elements: frozenset[Element]
    routes: frozenset[Route]
    neighbours: frozenset[Neighbour]
    addresses: frozenset[Address]
    routed_elsewhere: frozenset[IPAddress]  # client addresses another interface has a host route to
    base: dict[str, BaseObjects]  # family -> anti-spoofing objects present
    flow: FlowFacts
    namespace: NamespaceFacts | None = None
