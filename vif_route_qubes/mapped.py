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

from ipaddress import IPv4Address
from typing import Any, NamedTuple

from qubesnet import nftjson as j
from qubesnet.constants import NAT_TABLE

ICMP_ERRORS_REVEALING = ["destination-unreachable", "source-quench", "redirect", "time-exceeded", "parameter-problem"]


class MappedAddress(NamedTuple):
    real: IPv4Address
    visible: IPv4Address
    visible_gateway: IPv4Address
    gateway: IPv4Address  # the netvm's gateway address for its clients
    hide: tuple[IPv4Address, ...] = ()  # destinations refused when hiding is on
    dns: IPv4Address | None = None  # primary virtual DNS, reached via visible-gw:53 when hiding


# --- the namespace's nftables table, built purely -------------------------


def _ip(field: str) -> j.Json:
    return j.payload("ip", field)


def build_nat_table(m: MappedAddress, ifname: str, peer: str) -> list[j.Json]:
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

    V, VG, R, RG = str(m.visible), str(m.visible_gateway), str(m.real), str(m.gateway)  # noqa: N806 (short, as in the diagram)
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


# --- comparing with what the namespace holds ---------------------------


# ICMP codes our rules name, by number: nft 1.1 (Debian 13) lists a matched
# `icmp code` as its number where nft 1.0 (Debian 12) gives the name back.
_ICMP_CODES = {"frag-needed": 4}


def _normal(value: Any) -> Any:
    """Counters, element order and how nft happens to spell a value do not
    make two tables different: a one-element set is listed as the element,
    an ICMP code (nft 1.1) as its number."""
    if isinstance(value, dict):
        if "counter" in value:
            return {"counter": None}
        if set(value) == {"set"} and isinstance(value["set"], list):
            elements = sorted(map(str, value["set"]))
            return elements[0] if len(elements) == 1 else {"set": elements}
        match = value.get("match")
        if isinstance(match, dict) and match.get("left") == {"payload": {"protocol": "icmp", "field": "code"}}:
            right = match.get("right")
            return {"match": {**match, "right": _ICMP_CODES.get(right, right) if isinstance(right, str) else right}}
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
    want_rules = [(c["add"]["rule"]["chain"], _normal(c["add"]["rule"]["expr"]))
                  for c in commands if "rule" in c.get("add", {})]
    have_chains = {i["chain"]["name"] for i in listing if "chain" in i}
    have_rules = [(i["rule"]["chain"], _normal(i["rule"]["expr"])) for i in listing if "rule" in i]
    return want_chains == have_chains and want_rules == have_rules
