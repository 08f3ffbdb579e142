"""The anti-spoofing objects of the netvm's nftables layout, as pure JSON builders.

The netvm's base ruleset (Qubes' ``qubes-antispoof.nft``, loaded at boot)
holds, per family, table ``qubes`` with sets ``downstream`` and ``allowed``
and chains ``prerouting`` and ``antispoof``. These are what the hotplug's
set elements live in, so an event that finds some of them missing (a netvm
booted without its base ruleset, an administrator's ``nft flush ruleset``)
creates exactly the missing ones, in the same transaction as its elements:
never an element without its set, never an antispoof chain without its
rules. The filter and nat chains (``input``, ``forward``, ``postrouting``,
``custom-*``) belong to the netvm's firewall service: no hotplug event
creates or removes them.

One builder gives both directions: ``present=False`` with the same
arguments removes exactly what ``present=True`` creates.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from . import nftjson as j
from .constants import (
    ADDR_TYPE,
    CHAIN_ANTISPOOF,
    CHAIN_PREROUTING,
    PRIO_RAW,
    QUBES_TABLE,
    SET_ALLOWED,
    SET_DOWNSTREAM,
    VIF_GROUP,
)

SETS = (SET_DOWNSTREAM, SET_ALLOWED)
CHAINS = (CHAIN_ANTISPOOF, CHAIN_PREROUTING)  # creation order: a goto target before its user


def _saddr(family: str) -> j.Json:
    return j.payload(family, "saddr")


def _rules_prerouting(family: str) -> list[list[j.Json]]:
    # Every packet from a vif must pass antispoof; a client address arriving
    # on any other interface is forged (it can only live behind its vif).
    return [
        [j.match(j.meta("iifgroup"), VIF_GROUP), j.goto(CHAIN_ANTISPOOF)],
        [j.match(_saddr(family), f"@{SET_DOWNSTREAM}"), j.COUNTER, j.DROP],
    ]


def _rules_antispoof(family: str) -> list[list[j.Json]]:
    return [
        [j.match(j.concat(j.meta("iifname"), _saddr(family)), f"@{SET_ALLOWED}"), j.ACCEPT],
        [j.COUNTER, j.DROP],
    ]


def _set(family: str, name: str) -> j.Json:
    type_: str | list[str] = ADDR_TYPE[family] if name == SET_DOWNSTREAM else ["ifname", ADDR_TYPE[family]]
    return j.set_(family, QUBES_TABLE, name, type_)


def _chain(family: str, name: str) -> j.Json:
    if name == CHAIN_PREROUTING:
        return j.chain(family, QUBES_TABLE, name, type_="filter", hook="prerouting", prio=PRIO_RAW, policy="accept")
    return j.chain(family, QUBES_TABLE, name)


RULES: dict[str, Callable[[str], list[list[j.Json]]]] = {
    CHAIN_PREROUTING: _rules_prerouting,
    CHAIN_ANTISPOOF: _rules_antispoof,
}


def build_antispoof(
    family: str, *, table: bool, sets: Collection[str], chains: Collection[str], present: bool = True
) -> list[j.Json]:
    """Create (``present``) or remove the anti-spoofing objects *missing* before.

    ``table``, ``sets`` and ``chains`` say what existed: only the rest is
    created, and only the rest is removed again.
    """
    missing_sets = [name for name in SETS if name not in sets]
    missing_chains = [name for name in CHAINS if name not in chains]
    if table and not missing_sets and not missing_chains:
        return []
    if not present:
        if not table:
            return [j.delete(j.table(family, QUBES_TABLE))]
        # Users first: a chain still jumped to, or a set still matched, cannot go.
        return [j.delete(_chain(family, name)) for name in reversed(missing_chains)] + [
            j.delete(_set(family, name)) for name in reversed(missing_sets)
        ]
    commands: list[j.Json] = []
    if not table:
        commands.append(j.add(j.table(family, QUBES_TABLE)))
    commands += [j.add(_set(family, name)) for name in missing_sets]
    commands += [j.add(_chain(family, name)) for name in missing_chains]
    for name in missing_chains:
        commands += [j.add(j.rule(family, QUBES_TABLE, name, *expr)) for expr in RULES[name](family)]
    return commands
