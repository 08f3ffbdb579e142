"""The base nftables layout of a Qubes network VM, as pure JSON builders.

Normally the netvm's firewall set-up loads this layout at boot. When a
hotplug finds pieces missing (a netvm booted without it, or an administrator
flushed the ruleset), it adds exactly the missing chains, each with its
rules, in the same transaction as its own changes: never an antispoof chain
without its rules, never a set element without its set.

The ``dnat-dns`` chain is not part of it: qubes-setup-dnat-to-ns owns it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from . import nftjson as j
from .constants import (
    CHAIN_ANTISPOOF,
    CHAIN_CUSTOM_FORWARD,
    CHAIN_CUSTOM_INPUT,
    CHAIN_FORWARD,
    CHAIN_ICMPV6,
    CHAIN_INPUT,
    CHAIN_POSTROUTING,
    CHAIN_PREROUTING,
    QUBES_TABLE,
    SET_ALLOWED,
    SET_DOWNSTREAM,
    VIF_GROUP,
)

T = QUBES_TABLE
ADDR_TYPE = {"ip": "ipv4_addr", "ip6": "ipv6_addr"}
SADDR = {"ip": j.payload("ip", "saddr"), "ip6": j.payload("ip6", "saddr")}
PRIO_RAW, PRIO_FILTER, PRIO_SRCNAT = -300, 0, 100

FROM_VIF = j.match(j.meta("iifgroup"), VIF_GROUP)
NOT_FROM_VIF = j.match(j.meta("iifgroup"), VIF_GROUP, op="!=")
TO_VIF = j.match(j.meta("oifgroup"), VIF_GROUP)
CT_INVALID = j.match(j.ct("state"), "invalid", op="in")
CT_ESTABLISHED = j.match(j.ct("state"), ["established", "related"], op="in")


def _rules_prerouting(family: str) -> list[list[j.Json]]:
    # Every packet from a vif must pass antispoof; a client address arriving
    # on any other interface is forged (it can only live behind its vif).
    return [
        [FROM_VIF, j.goto(CHAIN_ANTISPOOF)],
        [j.match(SADDR[family], f"@{SET_DOWNSTREAM}"), j.COUNTER, j.DROP],
    ]


def _rules_antispoof(family: str) -> list[list[j.Json]]:
    return [
        [j.match(j.concat(j.meta("iifname"), SADDR[family]), f"@{SET_ALLOWED}"), j.ACCEPT],
        [j.COUNTER, j.DROP],
    ]


def _rules_postrouting(family: str) -> list[list[j.Json]]:
    return [
        [TO_VIF, j.ACCEPT],
        [j.match(j.meta("oif"), "lo"), j.ACCEPT],
        [j.MASQUERADE],
    ]


def _rules_input(family: str) -> list[list[j.Json]]:
    if family == "ip":
        return [
            [j.jump(CHAIN_CUSTOM_INPUT)],
            [CT_INVALID, j.COUNTER, j.DROP],
            [FROM_VIF, j.match(j.payload("udp", "dport"), 68), j.COUNTER, j.DROP],
            [CT_ESTABLISHED, j.ACCEPT],
            [FROM_VIF, j.match(j.meta("l4proto"), "icmp"), j.ACCEPT],
            [j.match(j.meta("iif"), "lo"), j.ACCEPT],
            [FROM_VIF, j.COUNTER, j.reject("icmp", "host-prohibited")],
            [j.COUNTER],
        ]
    link_local = j.prefix("fe80::", 64)
    return [
        [j.jump(CHAIN_CUSTOM_INPUT)],
        [CT_INVALID, j.COUNTER, j.DROP],
        [CT_ESTABLISHED, j.ACCEPT],
        [FROM_VIF, j.goto(CHAIN_ICMPV6)],
        [j.match(j.meta("iif"), "lo"), j.ACCEPT],
        [
            j.match(j.payload("ip6", "saddr"), link_local),
            j.match(j.payload("ip6", "daddr"), link_local),
            j.match(j.payload("udp", "dport"), 546),
            j.ACCEPT,
        ],
        [j.match(j.meta("l4proto"), "ipv6-icmp"), j.ACCEPT],
        [j.COUNTER],
    ]


def _rules_icmpv6(family: str) -> list[list[j.Json]]:
    return [
        [j.match(j.meta("l4proto"), "ipv6-icmp", op="!="), j.COUNTER, j.reject("icmpv6", "admin-prohibited")],
        [
            j.match(j.payload("icmpv6", "type"), j.anon_set("nd-router-advert", "nd-redirect")),
            j.COUNTER,
            j.DROP,
        ],
        [j.ACCEPT],
    ]


def _rules_forward(family: str) -> list[list[j.Json]]:
    # New connections only from vifs, never towards another vif.
    return [
        [j.jump(CHAIN_CUSTOM_FORWARD)],
        [CT_INVALID, j.COUNTER, j.DROP],
        [CT_ESTABLISHED, j.ACCEPT],
        [NOT_FROM_VIF, j.COUNTER, j.DROP],
        [TO_VIF, j.COUNTER, j.DROP],
    ]


def _no_rules(family: str) -> list[list[j.Json]]:
    return []


Hook = tuple[str, str, int, str]  # type, hook, priority, policy
ChainSpec = tuple[str, Hook | None, Callable[[str], list[list[j.Json]]]]

# In creation order: jump and goto targets come before the chains using them.
CHAINS: dict[str, tuple[ChainSpec, ...]] = {
    "ip": (
        (CHAIN_ANTISPOOF, None, _rules_antispoof),
        (CHAIN_PREROUTING, ("filter", "prerouting", PRIO_RAW, "accept"), _rules_prerouting),
        (CHAIN_CUSTOM_INPUT, None, _no_rules),
        (CHAIN_CUSTOM_FORWARD, None, _no_rules),
        (CHAIN_INPUT, ("filter", "input", PRIO_FILTER, "drop"), _rules_input),
        (CHAIN_FORWARD, ("filter", "forward", PRIO_FILTER, "accept"), _rules_forward),
        (CHAIN_POSTROUTING, ("nat", "postrouting", PRIO_SRCNAT, "accept"), _rules_postrouting),
    ),
    "ip6": (
        (CHAIN_ANTISPOOF, None, _rules_antispoof),
        (CHAIN_PREROUTING, ("filter", "prerouting", PRIO_RAW, "accept"), _rules_prerouting),
        (CHAIN_CUSTOM_INPUT, None, _no_rules),
        (CHAIN_CUSTOM_FORWARD, None, _no_rules),
        (CHAIN_ICMPV6, None, _rules_icmpv6),
        (CHAIN_INPUT, ("filter", "input", PRIO_FILTER, "drop"), _rules_input),
        (CHAIN_FORWARD, ("filter", "forward", PRIO_FILTER, "accept"), _rules_forward),
        (CHAIN_POSTROUTING, ("nat", "postrouting", PRIO_SRCNAT, "accept"), _rules_postrouting),
    ),
}


def required_chains(family: str) -> frozenset[str]:
    return frozenset(name for name, _, _ in CHAINS[family])


def build_missing_layout(family: str, existing_chains: Collection[str]) -> list[j.Json]:
    """Commands adding what is missing of the family's layout ([] if complete)."""
    missing = [spec for spec in CHAINS[family] if spec[0] not in existing_chains]
    if not missing:
        return []
    commands = [
        j.add(j.table(family, T)),
        # `add` of an existing set or chain is a no-op: safe to repeat.
        j.add(j.set_(family, T, SET_DOWNSTREAM, ADDR_TYPE[family])),
        j.add(j.set_(family, T, SET_ALLOWED, ["ifname", ADDR_TYPE[family]])),
    ]
    for name, hook, _ in missing:
        if hook is None:
            commands.append(j.add(j.chain(family, T, name)))
        else:
            type_, hook_name, prio, policy = hook
            commands.append(j.add(j.chain(family, T, name, type_=type_, hook=hook_name, prio=prio, policy=policy)))
    for name, _, rules in missing:
        commands.extend(j.add(j.rule(family, T, name, *expr)) for expr in rules(family))
    return commands


def build_layout_removal(family: str, existing_chains: Collection[str], table_existed: bool) -> list[j.Json]:
    """Commands undoing ``build_missing_layout`` with the same arguments."""
    missing = [spec[0] for spec in CHAINS[family] if spec[0] not in existing_chains]
    if not missing:
        return []
    if not table_existed:
        return [j.delete(j.table(family, T))]
    # Users of a chain first: a chain still jumped to cannot be deleted.
    return [j.delete(j.chain(family, T, name)) for name in reversed(missing)]
