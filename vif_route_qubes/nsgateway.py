"""The namespace gateway: a mapped vif's private namespace, made and unmade.

Imported only when a vif is mapped or a namespace of one exists, so that the
ordinary hotplug pays nothing for it.

Work inside a namespace is done with sockets opened while the thread is
inside it (netlink and libnftables sockets stay bound to the namespace they
were created in); the namespace is left before anything else happens.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from qubesnet import netns
from qubesnet.constants import NAT_TABLE, VIF_MAC
from qubesnet.errors import ApplyError
from qubesnet.netlink.nlsock import NetlinkError
from qubesnet.netlink.rtnl import Rtnl
from qubesnet.nft import Nft
from qubesnet.sysctl import Sysctl

if TYPE_CHECKING:
    from qubesnet.nftjson import Json

    from .mapped import MappedAddress

log = logging.getLogger(__name__)


def _rtnl_in(ns: str) -> Rtnl:
    with netns.entered(ns):
        return Rtnl()


def _delete_named(rtnl: Rtnl, name: str) -> None:
    link = rtnl.get_link(name)
    if link is not None:
        rtnl.delete_link(link.ifindex)


class Namespaces:
    """Named network namespaces (iproute2's) and the devices moved between them."""

    # --- reads ---

    def exists(self, ns: str) -> bool:
        return netns.exists(ns)

    def links_inside(self, ns: str, names: tuple[str, ...]) -> dict[str, bool]:
        rt = _rtnl_in(ns)
        try:
            return {name: rt.get_link(name) is not None for name in names}
        finally:
            rt.close()

    def table_inside(self, ns: str) -> tuple[dict[str, Any], ...] | None:
        """The namespace's netdev table as listed (None: there is none)."""
        with netns.entered(ns):
            listing = Nft().query({"list": {"table": {"family": "netdev", "name": NAT_TABLE}}})
        return tuple(listing) if listing is not None else None

    # --- writes ---

    def create(self, ns: str) -> None:
        try:
            netns.create(ns)
        except OSError as exc:
            raise ApplyError(f"cannot create namespace {ns}: {exc.strerror}") from exc

    def delete(self, ns: str) -> None:
        netns.delete(ns)

    def move_in(self, rtnl: Rtnl, index: int, ns: str, name: str | None) -> None:
        fd = netns.open_fd(ns)
        try:
            rtnl.set_link(index, netns_fd=fd, name=name)
        finally:
            os.close(fd)

    def create_veth(self, rtnl: Rtnl, ifname: str, peer: str, peer_mac: str, ns: str) -> None:
        fd = netns.open_fd(ns)
        try:
            rtnl.create_veth(ifname, VIF_MAC, peer, peer_mac, fd)
        finally:
            os.close(fd)

    def delete_link_named(self, rtnl: Rtnl, name: str) -> None:
        _delete_named(rtnl, name)

    def move_back(self, ns: str, ifname: str, restore_name: str) -> None:
        """The real vif (if alive) back into this namespace, down, as ``restore_name``."""
        if not netns.exists(ns):
            return
        home = netns.own_fd()
        try:
            rt = _rtnl_in(ns)
            try:
                link = rt.get_link(ifname)
                if link is not None:
                    name = restore_name if restore_name != ifname else None
                    rt.set_link(link.ifindex, up=False, netns_fd=home, name=name)
            finally:
                rt.close()
        finally:
            os.close(home)

    def configure(self, ns: str, ifname: str, peer: str, m: MappedAddress, client_mac: str,
                  rules: tuple[Json, ...]) -> None:
        """Inside: IPv6 off, the two addresses and neighbours, links up, the netdev table."""
        try:
            with netns.entered(ns):
                rt, sysctl, nft = Rtnl(), Sysctl(), Nft()
                try:
                    if sysctl.exists("net/ipv6"):
                        for scope in ("all", "default"):
                            sysctl.write(f"net/ipv6/conf/{scope}/disable_ipv6", "1")
                    sysctl.write(f"net/ipv4/conf/{ifname}/arp_ignore", "1")
                    real, veth = rt.get_link(ifname), rt.get_link(peer)
                    if real is None or veth is None:
                        raise ApplyError(f"namespace {ns} lacks {ifname} or {peer}")
                    rt.set_link(real.ifindex, up=True)
                    rt.set_link(veth.ifindex, up=True)
                    rt.add_address(real.ifindex, m.visible_gateway, 32)
                    rt.add_address(veth.ifindex, m.real, 32)
                    rt.add_neighbour(real.ifindex, m.visible, client_mac)
                    rt.add_neighbour(veth.ifindex, m.gateway, VIF_MAC)
                    nft.run(list(rules), f"{ns} {NAT_TABLE}")
                finally:
                    rt.close()
        except (OSError, NetlinkError) as exc:
            raise ApplyError(f"cannot configure namespace {ns}: {exc.strerror or exc}") from exc

    def remove(self, ns: str, ifname: str, peer: str, restore_name: str) -> None:
        """Undo a mapped vif: veth gone, the real vif (if alive) back, namespace gone.

        Deleting the veth end inside the namespace deletes its netvm end too and
        frees the name, so the real vif can come back under its own. Deleting a
        namespace would destroy a virtual interface left in it; a Xen vif would
        return to the initial namespace by itself, but not where it belongs.
        """
        if not netns.exists(ns):
            return
        try:
            rt = _rtnl_in(ns)
            try:
                _delete_named(rt, peer)
            finally:
                rt.close()
            self.move_back(ns, ifname, restore_name)
            netns.delete(ns)
        except (OSError, NetlinkError) as exc:
            raise ApplyError(f"cannot remove namespace {ns}: {exc.strerror or exc}") from exc
        log.info("removed namespace %s", ns)
