"""The ``ip qubes dnat-dns`` chain as pure JSON, and its atomic replacement."""

from __future__ import annotations

from collections import namedtuple
from ipaddress import IPv4Address

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from qubesnet import nftjson as j
from qubesnet.constants import CHAIN_DNAT_DNS, QUBES_TABLE

from .upstreams import Upstream

FAMILY = "ip"
HOOK = {"type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}  # priority dstnat


class Mapping(namedtuple("Mapping", ("virtual", "upstream"))):
    """virtual: IPv4Address; upstream: Upstream, or None when DNS to this
    virtual address is dropped."""

    __slots__ = ()


def plan_mapping(virtual: list[IPv4Address], upstreams: list[Upstream]) -> list[Mapping]:
    """Pair virtual addresses with upstreams in order, cycling the upstreams.

    With one upstream, both virtual addresses go to it (never one left
    untranslated, which would leak queries to the virtual address upstream).
    """
    if not upstreams:
        return [Mapping(v, None) for v in virtual]
    return [Mapping(v, upstreams[i % len(upstreams)]) for i, v in enumerate(virtual)]


def build_rules(mapping: list[Mapping]) -> list[list[j.Json]]:
    rules = []
    for item in mapping:
        verdict = j.dnat(str(item.upstream.addr)) if item.upstream else j.DROP
        for proto in ("udp", "tcp"):
            rules.append([
                j.match(j.payload("ip", "daddr"), str(item.virtual)),
                j.match(j.payload(proto, "dport"), 53),
                verdict,
            ])
    return rules


def build_replace(rules: list[list[j.Json]]) -> list[j.Json]:
    """Old chain out, new chain in, one transaction: never none, never both.

    The chain is added first so that the delete cannot fail on a missing one.
    """
    base = j.chain(FAMILY, QUBES_TABLE, CHAIN_DNAT_DNS, type_=HOOK["type"], hook=HOOK["hook"], prio=HOOK["prio"],
                   policy=HOOK["policy"])
    return [
        j.add(j.table(FAMILY, QUBES_TABLE)),
        j.add(base),
        j.delete(j.chain(FAMILY, QUBES_TABLE, CHAIN_DNAT_DNS)),
        j.add(base),
        *(j.add(j.rule(FAMILY, QUBES_TABLE, CHAIN_DNAT_DNS, *expr)) for expr in rules),
    ]


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


def is_current(listing: list[dict[str, Any]] | None, rules: list[list[j.Json]]) -> bool:
    """Whether the kernel's chain is exactly the one we would install."""
    parsed = parse_listing(listing)
    return parsed is not None and parsed == (HOOK, rules)


def render(mapping: list[Mapping]) -> str:
    """The chain as ``nft list chain ip qubes dnat-dns`` would show it."""
    lines = [
        f"table {FAMILY} {QUBES_TABLE} {{",
        f"\tchain {CHAIN_DNAT_DNS} {{",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
    ]
    for item in mapping:
        verdict = f"dnat to {item.upstream.addr}" if item.upstream else "drop"
        lines += [f"\t\tip daddr {item.virtual} {proto} dport 53 {verdict}" for proto in ("udp", "tcp")]
    return "\n".join(lines + ["\t}", "}"])
