"""The handlers of a mapped vif's namespace steps (nssteps.py).

Loaded by the registry in handlers.py at the first namespace step it is
asked for: the ordinary online and offline never import them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qubesnet.errors import ApplyError

from .nssteps import (
    ConfigureNamespace,
    CreateNamespace,
    CreateVeth,
    DeleteNamespace,
    DeleteVeth,
    MoveBack,
    MoveIntoNamespace,
    RemoveNamespace,
)

if TYPE_CHECKING:
    from .gateways import Gateways
    from .handlers import Handler


def _move_in(gw: Gateways, s: MoveIntoNamespace) -> object:
    link = gw.rtnl.get_link(s.old_name)
    if link is None:
        raise ApplyError(f"interface {s.old_name} does not exist; is the VM's backend still there?")
    gw.namespaces.move_in(gw.rtnl, link.ifindex, s.ns, s.ifname if s.ifname != s.old_name else None)
    return None


NAMESPACE_HANDLERS: dict[type, Handler] = {
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
