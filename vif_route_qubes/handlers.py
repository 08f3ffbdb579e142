"""One handler per step type, in one registry: each turns a step into gateway calls.

Handlers decide nothing: the plan did. They touch the system only through
the gateways they are given (recording ones under ``--dry-run``), address
interfaces by index (a rename, or a name another interface took, cannot
redirect them), and leave errors to the applier.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from qubesnet.errors import ApplyError

from .gateways import Gateways
from .steps import (
    AddressChange,
    ConfigureNamespace,
    CreateNamespace,
    CreateVeth,
    DeleteNamespace,
    DeleteVeth,
    MoveBack,
    MoveIntoNamespace,
    NeighbourChange,
    NftChange,
    PurgeConntrack,
    RemoveNamespace,
    Rename,
    ReportConnected,
    RouteChange,
    RunHooks,
    SetLink,
    SetSysctl,
)

Handler = Callable[[Gateways, Any], object]

log = logging.getLogger(__name__)


def _route(gw: Gateways, s: RouteChange) -> object:
    change = gw.rtnl.add_route if s.present else gw.rtnl.del_route
    return change(s.ifindex, s.dst, s.metric)


def _neighbour(gw: Gateways, s: NeighbourChange) -> object:
    if s.present:
        return gw.rtnl.add_neighbour(s.ifindex, s.addr, s.mac)
    return gw.rtnl.del_neighbour(s.ifindex, s.addr)


def _address(gw: Gateways, s: AddressChange) -> object:
    if s.present:
        # The same gateway address sits on every vif: duplicate address
        # detection would only delay it, so it is skipped.
        return gw.rtnl.add_address(s.ifindex, s.addr, s.prefixlen, nodad=s.addr.version == 6)
    return gw.rtnl.del_address(s.ifindex, s.addr, s.prefixlen)


def _purge(gw: Gateways, s: PurgeConntrack) -> object:
    count = gw.conntrack.purge(s.addrs)
    if count:
        log.info("purged %d stale conntrack entries", count)
    return count


def _move_in(gw: Gateways, s: MoveIntoNamespace) -> object:
    link = gw.rtnl.get_link(s.old_name)
    if link is None:
        raise ApplyError(f"interface {s.old_name} does not exist; is the VM's backend still there?")
    gw.namespaces.move_in(gw.rtnl, link.ifindex, s.ns, s.ifname if s.ifname != s.old_name else None)
    return None


HANDLERS: dict[type, Handler] = {
    Rename: lambda gw, s: gw.rtnl.set_link(s.ifindex, name=s.new),
    SetLink: lambda gw, s: gw.rtnl.set_link(s.ifindex, up=s.up, group=s.group),
    SetSysctl: lambda gw, s: gw.sysctl.write(s.key, s.value),
    PurgeConntrack: _purge,
    NftChange: lambda gw, s: gw.nft.run(list(s.commands), s.what),
    RouteChange: _route,
    NeighbourChange: _neighbour,
    AddressChange: _address,
    RunHooks: lambda gw, s: gw.hooks.run(list(s.argv)),
    ReportConnected: lambda gw, s: gw.status.connected(),
    CreateNamespace: lambda gw, s: gw.namespaces.create(s.ns),
    DeleteNamespace: lambda gw, s: gw.namespaces.delete(s.ns),
    MoveIntoNamespace: _move_in,
    MoveBack: lambda gw, s: gw.namespaces.move_back(s.ns, s.ifname, s.restore_name),
    CreateVeth: lambda gw, s: gw.namespaces.create_veth(gw.rtnl, s.ifname, s.peer, s.peer_mac, s.ns),
    DeleteVeth: lambda gw, s: gw.namespaces.delete_link_named(gw.rtnl, s.ifname),
    ConfigureNamespace: lambda gw, s: gw.namespaces.configure(s.ns, s.ifname, s.peer, s.mapping, s.client_mac,
                                                              s.rules),
    RemoveNamespace: lambda gw, s: gw.namespaces.remove(s.ns, s.ifname, s.peer, s.restore_name),
}
