"""Applying the namespace steps of a mapped vif (see mapped.py).

Imported only when a vif is mapped or a namespace of one exists, so that the
ordinary hotplug pays nothing for it.

Work inside the namespace is done with sockets opened while the thread is
inside it (netlink and libnftables sockets stay bound to the namespace they
were created in); the namespace is left before anything else happens.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from qubesnet import netns
from qubesnet.errors import ApplyError
from qubesnet.netlink.nlsock import NetlinkError
from qubesnet.netlink.rtnl import Rtnl
from qubesnet.nft import Nft
from qubesnet.sysctl import Sysctl

from .mapped import (
    NAT_TABLE,
    VIF_MAC,
    ConfigureNamespace,
    CreateNamespace,
    CreateVethPair,
    MoveIntoNamespace,
    NsFacts,
    RemoveNamespace,
)
from .mapped_names import namespace_name, peer_name

if TYPE_CHECKING:
    from .apply import Applier, Gateways
    from .inputs import VifInputs

log = logging.getLogger(__name__)


def _rtnl_in(ns: str) -> Rtnl:
    with netns.entered(ns):
        return Rtnl()


def query_ns_facts(gw: Gateways, inp: VifInputs) -> NsFacts:
    ns, peer = namespace_name(inp.ifname), peer_name(inp.ifname)
    link = gw.rtnl.get_link(inp.ifname) or gw.rtnl.get_link(inp.vif.name)
    facts = NsFacts(ns_exists=netns.exists(ns), real_in_ns=False, peer_in_ns=False,
                    netvm_index=link.index if link else None, netvm_name=link.name if link else None)
    if not facts.ns_exists:
        return facts
    rt = _rtnl_in(ns)
    with netns.entered(ns):
        listing = Nft().query({"list": {"table": {"family": "netdev", "name": NAT_TABLE}}})
    try:
        return NsFacts(True, rt.get_link(inp.ifname) is not None, rt.get_link(peer) is not None,
                       facts.netvm_index, facts.netvm_name, tuple(listing) if listing is not None else None)
    finally:
        rt.close()


# --- step handlers, called by the Applier with itself as first argument ---


def _CreateNamespace(self: Applier, step: CreateNamespace) -> None:
    self.report(f"ip netns add {step.ns}")
    if self.dry_run:
        return
    try:
        netns.create(step.ns)
    except OSError as exc:
        raise ApplyError(f"cannot create namespace {step.ns}: {exc.strerror}") from exc
    self.undo.append((f"namespace {step.ns}", lambda: netns.delete(step.ns)))


def _MoveIntoNamespace(self: Applier, step: MoveIntoNamespace) -> None:
    rename = f" name {step.ifname}" if step.ifname != step.old_name else ""
    self.report(f"ip link set {step.old_name} netns {step.ns}{rename}")
    if self.dry_run:
        return
    fd = netns.open_fd(step.ns)
    try:
        new_name = step.ifname if step.ifname != step.old_name else None
        self._netlink("move into the namespace", lambda: self.gw.rtnl.set_link(step.index, netns_fd=fd, name=new_name))
    finally:
        os.close(fd)
    self.undo.append((f"{step.ifname} back from {step.ns}", lambda: _move_back(step.ns, step.ifname, step.old_name)))


def _CreateVethPair(self: Applier, step: CreateVethPair) -> None:
    self.report(f"ip link add {step.ifname} address {VIF_MAC} type veth peer name {step.peer} "
                f"address {step.peer_mac} netns {step.ns}")
    if self.dry_run:
        return
    fd = netns.open_fd(step.ns)
    try:
        self._netlink("veth creation",
                      lambda: self.gw.rtnl.create_veth(step.ifname, VIF_MAC, step.peer, step.peer_mac, fd))
    finally:
        os.close(fd)
    self.undo.append((f"veth {step.ifname}", lambda: _delete_named(self.gw.rtnl, step.ifname)))


def _ConfigureNamespace(self: Applier, step: ConfigureNamespace) -> None:
    m = step.mapping
    self.report(f"ip netns exec {step.ns}: IPv6 off; {m.visible_gateway}/32 on {step.ifname} (arp_ignore 1), "
                f"{m.real}/32 on {step.peer}; neighbours {m.visible} -> {step.client_mac}, {m.gateway} -> {VIF_MAC}; "
                f"links up; netdev table {NAT_TABLE} ({len(step.rules)} commands)")
    if self.dry_run:
        return
    try:
        _configure(step)
    except (OSError, NetlinkError) as exc:
        raise ApplyError(f"cannot configure namespace {step.ns}: {exc.strerror or exc}") from exc


def _RemoveNamespace(self: Applier, step: RemoveNamespace) -> None:
    self.report(f"ip -n {step.ns} link del {step.peer}; ip -n {step.ns} link set {step.ifname} netns <netvm> "
                f"name {step.restore_name}; ip netns del {step.ns}")
    if self.dry_run:
        return
    try:
        remove_namespace(step.ns, step.ifname, step.peer, step.restore_name)
    except (OSError, NetlinkError) as exc:
        raise ApplyError(f"cannot remove namespace {step.ns}: {exc.strerror or exc}") from exc


HANDLERS = {
    CreateNamespace: _CreateNamespace,
    MoveIntoNamespace: _MoveIntoNamespace,
    CreateVethPair: _CreateVethPair,
    ConfigureNamespace: _ConfigureNamespace,
    RemoveNamespace: _RemoveNamespace,
}


def _configure(step: ConfigureNamespace) -> None:
    m = step.mapping
    with netns.entered(step.ns):
        rt, sysctl, nft = Rtnl(), Sysctl(), Nft()
        try:
            if sysctl.exists("net/ipv6"):
                for scope in ("all", "default"):
                    sysctl.write(f"net/ipv6/conf/{scope}/disable_ipv6", "1")
            sysctl.write(f"net/ipv4/conf/{step.ifname}/arp_ignore", "1")
            real, peer = rt.get_link(step.ifname), rt.get_link(step.peer)
            if real is None or peer is None:
                raise ApplyError(f"namespace {step.ns} lacks {step.ifname} or {step.peer}")
            rt.set_link(real.index, up=True)
            rt.set_link(peer.index, up=True)
            rt.add_address(real.index, m.visible_gateway, 32)
            rt.add_address(peer.index, m.real, 32)
            rt.add_neighbour(real.index, m.visible, step.client_mac)
            rt.add_neighbour(peer.index, m.gateway, VIF_MAC)
            nft.run(list(step.rules), f"{step.ns} {NAT_TABLE}")
        finally:
            rt.close()


def _move_back(ns: str, ifname: str, restore_name: str) -> None:
    home = netns.own_fd()
    try:
        rt = _rtnl_in(ns)
        try:
            link = rt.get_link(ifname)
            if link is not None:
                name = restore_name if restore_name != ifname else None
                rt.set_link(link.index, up=False, netns_fd=home, name=name)
        finally:
            rt.close()
    finally:
        os.close(home)


def _delete_named(rtnl: Rtnl, name: str) -> None:
    link = rtnl.get_link(name)
    if link is not None:
        rtnl.delete_link(link.index)


def remove_namespace(ns: str, ifname: str, peer: str, restore_name: str) -> None:
    """Undo a mapped vif: veth gone, the real vif (if alive) back, namespace gone.

    Deleting the veth end inside the namespace deletes its netvm end too and
    frees the name, so the real vif can come back under its own. Deleting a
    namespace would destroy a virtual interface left in it; a Xen vif would
    return to the initial namespace by itself, but not where it belongs.
    """
    if not netns.exists(ns):
        return
    rt = _rtnl_in(ns)
    try:
        _delete_named(rt, peer)
    finally:
        rt.close()
    _move_back(ns, ifname, restore_name)
    netns.delete(ns)
    log.info("removed namespace %s", ns)
