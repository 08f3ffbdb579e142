"""Mapped ("hidden") addresses: a per-vif NAT namespace, planned purely.

A client whose QubesDB entry ``/mapped-ip/<real>/visible-ip`` differs from
its real address believes it is ``visible-ip`` behind ``visible-gateway``.
Its vif moves into a private namespace ``<vif>-nat``; a veth pair joins that
namespace to the netvm, the netvm end taking the vif's name, so that the
netvm configures it exactly like any other vif (under the real address).
Inside, two netdev ingress chains translate statelessly and forward frames
between the two interfaces, no routing involved:

    client --vif--> [from-client: ARP only visible-ip asking for visible-gw;
                     source must be visible-ip; visible-gw -> real gateway;
                     source := real] --peer--> netvm
    netvm --peer--> [from-netvm: only to the real address; ICMP errors that
                     would reveal it dropped; real gateway -> visible-gw;
                     destination := visible] --vif--> client

IPv6 is disabled on this path. ICMP "fragmentation needed" is forwarded so
that path MTU discovery keeps working; its embedded header (which nftables
cannot rewrite) still shows the real address, as the other ICMP errors
would, which is why those are dropped.
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address
from typing import Any, NamedTuple

from qubesnet import nftjson as j
from qubesnet.constants import (
    QDB_GATEWAY,
    QDB_MAPPED_PREFIX,
    QDB_OWN_IP,
    QDB_PRIMARY_DNS,
    QDB_SECONDARY_DNS,
    SERVICE_HIDE_NETVM,
)
from qubesnet.errors import ConfigError
from qubesnet.qubesdb import QubesDB
from qubesnet.validate import decode_text, parse_ipv4

from .inputs import read_service_flag
from .mapped_names import HIDDEN_RANGE, namespace_name, peer_name

NAT_TABLE = "qubes-nat"
VIF_MAC = "fe:ff:ff:ff:ff:ff"  # the netvm side of every vif, as Xen's netback has it
ICMP_ERRORS_REVEALING = ["destination-unreachable", "source-quench", "redirect", "time-exceeded", "parameter-problem"]


class Mapping(NamedTuple):
    real: IPv4Address
    visible: IPv4Address
    visible_gateway: IPv4Address
    gateway: IPv4Address  # the netvm's gateway address for its clients
    hide: tuple[IPv4Address, ...] = ()  # destinations refused when hiding is on
    dns: IPv4Address | None = None  # primary virtual DNS, reached via visible-gw:53 when hiding


def _read_ipv4(qdb: QubesDB, key: str) -> IPv4Address | None:
    raw = qdb.read(key)
    return None if raw is None else parse_ipv4(key, decode_text(key, raw, limit=64))


def _read_pair(qdb: QubesDB, real: IPv4Address) -> tuple[IPv4Address | None, IPv4Address | None]:
    base = f"{QDB_MAPPED_PREFIX}{real}"
    return _read_ipv4(qdb, f"{base}/visible-ip"), _read_ipv4(qdb, f"{base}/visible-gateway")


def read_mapping(qdb: QubesDB, real: IPv4Address, gateway: IPv4Address | None, wait: float) -> Mapping | None:
    """The client's mapping, or None when it has none (or not within ``wait``).

    For an address in HIDDEN_RANGE the mapping may be written by dom0 just
    after the hotplug started: wait for it, watching QubesDB, at most
    ``wait`` seconds. Other clients never wait.
    """
    visible, visible_gw = _read_pair(qdb, real)
    if (visible is None or visible_gw is None) and wait > 0 and real in HIDDEN_RANGE:
        prefix = f"{QDB_MAPPED_PREFIX}{real}/"
        qdb.watch(prefix)
        deadline = time.monotonic() + wait
        visible, visible_gw = _read_pair(qdb, real)  # it may have come meanwhile
        while (visible is None or visible_gw is None) and time.monotonic() < deadline:
            if qdb.wait_event(deadline - time.monotonic()) is None:
                break
            visible, visible_gw = _read_pair(qdb, real)
        qdb.unwatch(prefix)
    if visible is None or visible_gw is None or visible == real:
        return None
    if gateway is None:
        raise ConfigError(QDB_GATEWAY, "missing; needed to translate a mapped address")
    hide: tuple[IPv4Address, ...] = ()
    dns = _read_ipv4(qdb, QDB_PRIMARY_DNS)
    if read_service_flag(qdb, SERVICE_HIDE_NETVM):
        found = [_read_ipv4(qdb, QDB_OWN_IP), gateway, real, dns, _read_ipv4(qdb, QDB_SECONDARY_DNS)]
        hide = tuple(dict.fromkeys(a for a in found if a is not None and a != visible_gw))
    return Mapping(real, visible, visible_gw, gateway, hide, dns)


# --- the namespace's nftables table, built purely -------------------------


def _ip(field: str) -> j.Json:
    return j.payload("ip", field)


def build_nat_table(m: Mapping, ifname: str, peer: str) -> list[j.Json]:
    """The whole netdev table, replaced atomically (added, deleted, added)."""
    table = j.table("netdev", NAT_TABLE)
    chains = {
        "from-client": ifname,
        "from-netvm": peer,
    }
    commands = [j.add(table), j.delete(table), j.add(table)]
    for name, device in chains.items():
        chain = j.chain("netdev", NAT_TABLE, name, type_="filter", hook="ingress", prio=0, policy="drop")
        chain["chain"]["dev"] = device
        commands.append(j.add(chain))

    V, VG, R, RG = str(m.visible), str(m.visible_gateway), str(m.real), str(m.gateway)
    out: list[list[j.Json]] = [
        # ARP: the client, as itself, asking for its gateway; nothing else.
        [j.match(j.payload("arp", "saddr ip"), V), j.match(j.payload("arp", "daddr ip"), VG), j.ACCEPT],
        [j.match(j.payload("ether", "type"), "arp"), j.COUNTER, j.DROP],
        [j.match(_ip("saddr"), V, op="!="), j.COUNTER, j.DROP],
    ]
    if m.hide:
        out.append([j.match(_ip("daddr"), j.anon_set(*map(str, m.hide))), j.COUNTER, j.DROP])
        if m.dns is not None:
            out += [[j.match(_ip("daddr"), VG), j.match(j.payload(p, "dport"), 53),
                     j.mangle(_ip("daddr"), str(m.dns))] for p in ("udp", "tcp")]
    if VG != RG:
        out.append([j.match(_ip("daddr"), VG), j.mangle(_ip("daddr"), RG)])
    out.append([j.mangle(_ip("saddr"), R), j.fwd(peer)])

    back: list[list[j.Json]] = [
        [j.match(j.payload("arp", "daddr ip"), R), j.ACCEPT],
        [j.match(j.payload("ether", "type"), "arp"), j.DROP],
        [j.match(_ip("daddr"), R, op="!="), j.COUNTER, j.DROP],
        [j.match(j.payload("icmp", "type"), "destination-unreachable"),
         j.match(j.payload("icmp", "code"), "frag-needed", op="!="), j.COUNTER, j.DROP],
        [j.match(j.payload("icmp", "type"), j.anon_set(*ICMP_ERRORS_REVEALING[1:])), j.COUNTER, j.DROP],
    ]
    if m.hide and m.dns is not None:
        back += [[j.match(_ip("saddr"), str(m.dns)), j.match(j.payload(p, "sport"), 53),
                  j.mangle(_ip("saddr"), VG)] for p in ("udp", "tcp")]
    if VG != RG:
        back.append([j.match(_ip("saddr"), RG), j.mangle(_ip("saddr"), VG)])
    back.append([j.mangle(_ip("daddr"), V), j.fwd(ifname)])

    commands += [j.add(j.rule("netdev", NAT_TABLE, "from-client", *expr)) for expr in out]
    commands += [j.add(j.rule("netdev", NAT_TABLE, "from-netvm", *expr)) for expr in back]
    return commands


# --- steps ------------------------------------------------------------------


class CreateNamespace(NamedTuple):
    ns: str


class MoveIntoNamespace(NamedTuple):
    """The real vif into the namespace, renamed to ``ifname`` on the way."""

    ns: str
    index: int
    old_name: str
    ifname: str


class CreateVethPair(NamedTuple):
    ns: str
    ifname: str  # the netvm end: takes the vif's place
    peer: str
    peer_mac: str  # the client's MAC: the netvm's neighbour entry points at it


class ConfigureNamespace(NamedTuple):
    ns: str
    ifname: str
    peer: str
    mapping: Mapping
    client_mac: str
    rules: tuple[j.Json, ...]


class RemoveNamespace(NamedTuple):
    """Tear down: veth gone, the real vif back in the netvm as ``restore_name``."""

    ns: str
    ifname: str
    peer: str
    restore_name: str


MappedStep = CreateNamespace | MoveIntoNamespace | CreateVethPair | ConfigureNamespace | RemoveNamespace


class NsFacts(NamedTuple):
    ns_exists: bool
    real_in_ns: bool  # a device named ifname inside the namespace
    peer_in_ns: bool
    netvm_index: int | None  # a device named ifname (or the vif's name) in the netvm
    netvm_name: str | None
    listing: tuple[dict[str, Any], ...] | None = None  # the namespace's NAT table as listed


def _normal(value: Any) -> Any:
    """Counters and element order do not make two tables different."""
    if isinstance(value, dict):
        if "counter" in value:
            return {"counter": None}
        if set(value) == {"set"} and isinstance(value["set"], list):
            return {"set": sorted(map(str, value["set"]))}
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def table_matches(listing: tuple[dict[str, Any], ...] | None, commands: list[j.Json]) -> bool:
    """Whether the listed NAT table is the one ``commands`` would install."""
    if listing is None:
        return False
    # (nft 1.0 does not list a netdev chain's device: names and rules it is)
    want_chains = {c["add"]["chain"]["name"] for c in commands if "chain" in c.get("add", {})}
    want_rules = [(c["add"]["rule"]["chain"], _normal(c["add"]["rule"]["expr"])) for c in commands if "rule" in c.get("add", {})]
    have_chains = {i["chain"]["name"] for i in listing if "chain" in i}
    have_rules = [(i["rule"]["chain"], _normal(i["rule"]["expr"])) for i in listing if "rule" in i]
    return want_chains == have_chains and want_rules == have_rules


def plan_mapped(ifname: str, vif_name: str, mapping: Mapping | None, client_mac: str | None,
                facts: NsFacts) -> list[MappedStep]:
    """Converge towards the namespace (mapping) or its absence (None)."""
    ns, peer = namespace_name(ifname), peer_name(ifname)
    if mapping is None or client_mac is None:
        return [RemoveNamespace(ns, ifname, peer, vif_name)] if facts.ns_exists else []
    rules = build_nat_table(mapping, ifname, peer)
    ours = facts.ns_exists and facts.peer_in_ns  # the netvm's device is our veth
    if ours and facts.real_in_ns and table_matches(facts.listing, rules):
        return []  # already in place: a rerun changes nothing here
    if facts.ns_exists and facts.listing is not None and not table_matches(facts.listing, rules):
        # Another mapping than the wanted one: take it down, then plan again.
        return [RemoveNamespace(ns, ifname, peer, vif_name)]
    steps: list[MappedStep] = []
    if not facts.ns_exists:
        steps.append(CreateNamespace(ns))
    if not facts.real_in_ns:
        if facts.netvm_index is None or ours:
            raise ConfigError("vif", f"interface {vif_name} does not exist; is the VM's backend still there?")
        steps.append(MoveIntoNamespace(ns, facts.netvm_index, facts.netvm_name or vif_name, ifname))
    if not ours:
        steps.append(CreateVethPair(ns, ifname, peer, client_mac))
    steps.append(ConfigureNamespace(ns, ifname, peer, mapping, client_mac, tuple(rules)))
    return steps
