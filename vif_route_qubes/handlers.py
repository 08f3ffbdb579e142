"""One handler per step type, in one registry: each turns a step into gateway calls.

The registry holds the handlers of the ordinary steps and loads those of a
mapped vif's namespace steps (nshandlers.py) the first time it is asked for
one, so that an ordinary online or offline does not import them.

Handlers decide nothing: the plan did. They touch the system only through
the gateways they are given (recording ones under ``--dry-run``), address
interfaces by index (a rename, or a name another interface took, cannot
redirect them), and leave errors to the applier.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .gateways import Gateways
from .steps import (
    AddressChange,
    NeighbourChange,
    NftChange,
    PurgeConntrack,
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


class Registry(dict[type, Handler]):
    """Handlers by step type; a namespace step's are loaded at its first lookup."""

    def __missing__(self, kind: type) -> Handler:
        from .nshandlers import NAMESPACE_HANDLERS

        if kind not in NAMESPACE_HANDLERS:
            raise KeyError(kind)
        self.update(NAMESPACE_HANDLERS)
        return NAMESPACE_HANDLERS[kind]


HANDLERS = Registry({
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
})
