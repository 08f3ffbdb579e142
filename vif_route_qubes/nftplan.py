"""Pure builders of the nftables commands for one vif.

Anti-spoofing state of a vif is two kinds of set elements per family:
``allowed`` holds (vif, address) pairs that may send, ``downstream`` holds
the addresses, so that they are dropped when they arrive on any non-vif
interface.
"""

from __future__ import annotations

from collections.abc import Iterable

from qubesnet import nftjson as j
from qubesnet.constants import (
    FLOW_CHAIN,
    FLOW_TABLE,
    FLOWTABLE,
    QUBES_TABLE,
    SET_ALLOWED,
    SET_DOWNSTREAM,
)
from qubesnet.validate import IPAddress

FLOW_FAMILY = "inet"
FLOW_PRIO = 10  # after the filter chains: only flows every chain accepted


def family_of(addr: IPAddress) -> str:
    return "ip" if addr.version == 4 else "ip6"


def allowed_element(family: str, ifname: str, addr: IPAddress) -> j.Json:
    return j.elements(family, QUBES_TABLE, SET_ALLOWED, [j.concat(ifname, str(addr))])


def downstream_element(family: str, addr: IPAddress) -> j.Json:
    return j.elements(family, QUBES_TABLE, SET_DOWNSTREAM, [str(addr)])


def build_add_elements(ifname: str, addrs: Iterable[IPAddress]) -> list[j.Json]:
    """``add`` is a no-op for an element already present: idempotent."""
    commands = []
    for addr in addrs:
        family = family_of(addr)
        commands.append(j.add(allowed_element(family, ifname, addr)))
        commands.append(j.add(downstream_element(family, addr)))
    return commands


def build_remove_elements(
    ifname: str, allowed: Iterable[IPAddress], downstream: Iterable[IPAddress]
) -> list[j.Json]:
    """Delete elements whether or not they are present.

    ``delete`` of a missing element fails the whole transaction, so each is
    first added (a no-op if present) and then deleted, in the same batch.
    """
    commands = []
    for addr in allowed:
        element = allowed_element(family_of(addr), ifname, addr)
        commands += [j.add(element), j.delete(element)]
    for addr in downstream:
        element = downstream_element(family_of(addr), addr)
        commands += [j.add(element), j.delete(element)]
    return commands


def build_flowtable_add(ifname: str, table_exists: bool) -> list[j.Json]:
    """Put the vif into the acceleration flowtable, creating it if needed.

    Adding a flowtable that exists with extra devices appends them (Linux
    5.8+): the cost does not depend on how many vifs are already in it.
    """
    commands: list[j.Json] = []
    if not table_exists:
        commands += [
            j.add(j.table(FLOW_FAMILY, FLOW_TABLE)),
            j.add(j.flowtable(FLOW_FAMILY, FLOW_TABLE, FLOWTABLE, [ifname])),
            j.add(
                j.chain(FLOW_FAMILY, FLOW_TABLE, FLOW_CHAIN, type_="filter", hook="forward", prio=FLOW_PRIO, policy="accept")
            ),
            j.add(
                j.rule(
                    FLOW_FAMILY,
                    FLOW_TABLE,
                    FLOW_CHAIN,
                    j.match(j.meta("l4proto"), j.anon_set("tcp", "udp")),
                    j.flow_add(FLOWTABLE),
                )
            ),
        ]
    else:
        commands.append(j.add(j.flowtable(FLOW_FAMILY, FLOW_TABLE, FLOWTABLE, [ifname])))
    return commands


def build_flowtable_remove(ifname: str) -> list[j.Json]:
    """Take the vif out of the flowtable (added first: a missing device would fail)."""
    flowtable = j.flowtable(FLOW_FAMILY, FLOW_TABLE, FLOWTABLE, [ifname])
    return [j.add(flowtable), j.delete(flowtable)]
