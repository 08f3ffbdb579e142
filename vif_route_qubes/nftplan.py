"""Pure builders of the nftables commands of one vif.

Anti-spoofing state of a vif is two kinds of set elements per family:
``allowed`` holds (vif, address) pairs that may send, ``downstream`` holds
the addresses, so that they are dropped when they arrive on any non-vif
interface. Each builder gives both directions from the same arguments.
"""

from __future__ import annotations

from collections.abc import Iterable

from qubesnet import nftjson as j
from qubesnet.constants import (
    FLOW_CHAIN,
    FLOW_FAMILY,
    FLOW_PRIO,
    FLOW_TABLE,
    FLOWTABLE,
    QUBES_TABLE,
    SET_ALLOWED,
)
from qubesnet.validate import IPAddress

from .state import Element


def family_of(addr: IPAddress) -> str:
    return "ip" if addr.version == 4 else "ip6"


def element_json(element: Element) -> j.Json:
    value: object = str(element.addr)
    if element.kind == SET_ALLOWED:
        value = j.concat(element.ifname, str(element.addr))
    return j.elements(family_of(element.addr), QUBES_TABLE, element.kind, [value])


def build_elements(elements: Iterable[Element], *, present: bool) -> list[j.Json]:
    """Add the elements, or remove them whether or not they are all there.

    ``add`` of an element already present is a no-op. ``delete`` of a missing
    element fails the whole transaction, so each is first added (a no-op if
    present) and then deleted, in the same batch.
    """
    commands = []
    for element in elements:
        obj = element_json(element)
        commands += [j.add(obj)] if present else [j.add(obj), j.delete(obj)]
    return commands


def _flowtable(devices: list[str]) -> j.Json:
    return j.flowtable(FLOW_FAMILY, FLOW_TABLE, FLOWTABLE, devices)


def build_flowtable(ifname: str, *, table: bool, present: bool) -> list[j.Json]:
    """The vif in the acceleration flowtable (``present``), or out of it.

    ``table`` says whether the acceleration table existed: if not, adding
    creates it, and removing (the undo) deletes it again. Adding a device to
    an existing flowtable appends it (Linux 5.8+): the cost does not depend
    on how many vifs are already in it.
    """
    if not present:
        if not table:
            return [j.delete(j.table(FLOW_FAMILY, FLOW_TABLE))]
        return [j.add(_flowtable([ifname])), j.delete(_flowtable([ifname]))]
    if table:
        return [j.add(_flowtable([ifname]))]
    chain = j.chain(FLOW_FAMILY, FLOW_TABLE, FLOW_CHAIN, type_="filter", hook="forward", prio=FLOW_PRIO,
                    policy="accept")
    return [
        j.add(j.table(FLOW_FAMILY, FLOW_TABLE)),
        j.add(_flowtable([ifname])),
        j.add(chain),
        j.add(j.rule(FLOW_FAMILY, FLOW_TABLE, FLOW_CHAIN, j.match(j.meta("l4proto"), j.anon_set("tcp", "udp")),
                     j.flow_add(FLOWTABLE))),
    ]


def build_flowtable_probe() -> list[j.Json]:
    """What a kernel without flowtable support refuses (checked, never committed)."""
    probe = "qubes-flowtable-probe"
    return [j.add(j.table(FLOW_FAMILY, probe)),
            j.add(j.flowtable(FLOW_FAMILY, probe, FLOWTABLE, ["lo"]))]
