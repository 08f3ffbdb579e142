"""The DNS chains of one address family as pure JSON, and their atomic replacement.

Per family (``ip``, and ``ip6`` when QubesDB has IPv6 virtual DNS addresses),
in table ``qubes``:

- ``dnat-dns`` (nat, prerouting, priority dstnat): UDP and TCP port 53 to a
  virtual address with an upstream are translated to that upstream; to a
  virtual address *without* one, redirected to the netvm itself;
- ``dnat-dns-refuse`` (filter, input, priority filter - 1): what was so
  redirected (matched by its original destination) is refused at once, UDP
  with an ICMP(v6) port unreachable, TCP with a reset. A client's resolver
  then tries its next server (the other family) immediately instead of
  waiting for a time-out, and the query never leaves the netvm.

Why this detour: ``reject`` is allowed neither in a nat chain nor in the
prerouting hook, and a filter chain at the forward hook is not enough: with
the uplink down the netvm has no route for the virtual addresses, and the
kernel's own "network unreachable" is a soft error that UDP sockets do not
report (the resolver would wait for its time-out). Redirected, the packet is
delivered locally whatever the routes, and conntrack translates the refusal
back so that it comes from the virtual address.

Both chains of every family are replaced in one transaction: each is added
(a no-op if present), deleted and added with its rules.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from qubesnet import nftjson as j
from qubesnet.constants import CHAIN_DNAT_DNS, CHAIN_DNS_REFUSE, QUBES_TABLE
from qubesnet.records import Record

from .upstreams import Upstream

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds on the path that changes nothing
    from typing import Any

FAMILY = "ip"
VERSION_FAMILY = {4: "ip", 6: "ip6"}
HOOK: dict[str, Any] = {"type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}  # dstnat
REFUSE_HOOK: dict[str, Any] = {"type": "filter", "hook": "input", "prio": -1, "policy": "accept"}  # filter - 1
HOOKS = {CHAIN_DNAT_DNS: HOOK, CHAIN_DNS_REFUSE: REFUSE_HOOK}
UNREACHABLE = {"ip": j.reject("icmp", "port-unreachable"), "ip6": j.reject("icmpv6", "port-unreachable")}
RENDERED_HOOK = {CHAIN_DNAT_DNS: "type nat hook prerouting priority dstnat; policy accept;",
                 CHAIN_DNS_REFUSE: "type filter hook input priority filter - 1; policy accept;"}
REDIRECT: j.Json = {"redirect": None}

VirtualAddress = IPv4Address | IPv6Address
Rules = list[list[j.Json]]


class Translation(Record):
    """A virtual DNS address and its upstream (None: DNS to it is refused)."""

    virtual: IPv4Address | IPv6Address
    upstream: Upstream | None


def plan_mapping(virtual: list[Any], upstreams: list[Upstream]) -> list[Translation]:
    """Pair virtual addresses with upstreams in order, cycling the upstreams.

    With one upstream, both virtual addresses go to it (never one left
    untranslated, which would leak queries to the virtual address upstream).
    """
    if not upstreams:
        return [Translation(v, None) for v in virtual]
    return [Translation(v, upstreams[i % len(upstreams)]) for i, v in enumerate(virtual)]


def family_of(mapping: list[Translation], default: str = FAMILY) -> str:
    return VERSION_FAMILY[mapping[0].virtual.version] if mapping else default


def _dns_to(family: str, virtual: VirtualAddress, proto: str) -> list[j.Json]:
    return [j.match(j.payload(family, "daddr"), str(virtual)), j.match(j.payload(proto, "dport"), 53)]


def build_rules(mapping: list[Translation], family: str | None = None) -> Rules:
    """The ``dnat-dns`` rules: DNAT to the upstream, or, without one, a
    redirect to the netvm itself where ``dnat-dns-refuse`` refuses it."""
    family = family or family_of(mapping)
    return [
        [*_dns_to(family, item.virtual, proto), j.dnat(str(item.upstream.addr)) if item.upstream else REDIRECT]
        for item in mapping
        for proto in ("udp", "tcp")
    ]


def build_refusals(mapping: list[Translation], family: str | None = None) -> Rules:
    """The ``dnat-dns-refuse`` rules: what was sent to a virtual address
    without an upstream (and redirected here) is refused."""
    family = family or family_of(mapping)
    return [
        [j.match({"ct": {"key": "daddr", "dir": "original"}}, str(item.virtual)),  # the table gives the family
         j.match(j.payload(proto, "dport"), 53),
         j.reject_tcp_reset() if proto == "tcp" else UNREACHABLE[family]]
        for item in mapping if item.upstream is None
        for proto in ("udp", "tcp")
    ]


def _base(family: str, name: str) -> j.Json:
    hook = HOOKS[name]
    return j.chain(family, QUBES_TABLE, name, type_=hook["type"], hook=hook["hook"], prio=hook["prio"],
                   policy=hook["policy"])


def build_replace(rules: Rules, refusals: Rules | None = None, family: str = FAMILY) -> list[j.Json]:
    """Old chains out, new chains in: never none, never both.

    Each chain is added first so that the delete cannot fail on a missing one;
    that add names no hook: the kernel refuses an add that would change the
    hook or priority of an existing base chain (EOPNOTSUPP), so a chain whose
    priority was edited by hand could otherwise never be replaced.
    """
    commands = [j.add(j.table(family, QUBES_TABLE))]
    for name, chain_rules in ((CHAIN_DNAT_DNS, rules), (CHAIN_DNS_REFUSE, refusals or [])):
        commands += [
            j.add(j.chain(family, QUBES_TABLE, name)),
            j.delete(j.chain(family, QUBES_TABLE, name)),
            j.add(_base(family, name)),
            *(j.add(j.rule(family, QUBES_TABLE, name, *expr)) for expr in chain_rules),
        ]
    return commands


def build_removal(family: str) -> list[j.Json]:
    """Both chains out (a family no longer served); the table must exist.
    The add names no hook (see build_replace)."""
    commands = []
    for name in (CHAIN_DNAT_DNS, CHAIN_DNS_REFUSE):
        commands += [j.add(j.chain(family, QUBES_TABLE, name)), j.delete(j.chain(family, QUBES_TABLE, name))]
    return commands


def parse_listing(listing: list[dict[str, Any]] | None) -> tuple[dict[str, Any], list[list[Any]]] | None:
    """(hook properties, rule expressions) of a listed chain; None if absent."""
    if listing is None:
        return None
    hook: dict[str, Any] = {}
    rules: list[list[Any]] = []
    for item in listing:
        if "chain" in item:
            hook = {k: item["chain"].get(k) for k in HOOK}
        elif "rule" in item:
            rules.append(item["rule"].get("expr", []))
    return hook, rules


def is_current(listing: list[dict[str, Any]] | None, rules: Rules, name: str = CHAIN_DNAT_DNS) -> bool:
    """Whether the kernel's chain is exactly the one we would install."""
    parsed = parse_listing(listing)
    return parsed is not None and parsed == (HOOKS[name], rules)


def render(mapping: list[Translation], family: str | None = None) -> str:
    """The chains as ``nft list table`` would show them."""
    family = family or family_of(mapping)
    lines = [f"table {family} {QUBES_TABLE} {{", f"\tchain {CHAIN_DNAT_DNS} {{", f"\t\t{RENDERED_HOOK[CHAIN_DNAT_DNS]}"]
    for item in mapping:
        verdict = f"dnat to {item.upstream.addr}" if item.upstream else "redirect"
        lines += [f"\t\t{family} daddr {item.virtual} {proto} dport 53 {verdict}" for proto in ("udp", "tcp")]
    lines += ["\t}", f"\tchain {CHAIN_DNS_REFUSE} {{", f"\t\t{RENDERED_HOOK[CHAIN_DNS_REFUSE]}"]
    for item in mapping:
        if item.upstream is None:
            lines += [f"\t\tct original {family} daddr {item.virtual} udp dport 53 reject",
                      f"\t\tct original {family} daddr {item.virtual} tcp dport 53 reject with tcp reset"]
    return "\n".join(lines + ["\t}", "}"])
