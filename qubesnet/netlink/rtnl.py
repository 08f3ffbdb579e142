"""rtnetlink operations the hotplug needs: links, addresses, routes, neighbours.

Adds report whether they created something (``EEXIST`` counts as success,
nothing created) and deletes whether something was there (a missing object
counts as success, nothing removed), decided by errno. That is what makes
``online`` idempotent and lets its undo log record only real changes.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any
from qubesnet.records import Record

from ..constants import RT_TABLE_MAIN, RTPROT_BOOT
from . import _pyroute2  # noqa: F401
from .messages import ifaddrmsg, ifinfmsg, ndmsg, rtmsg
from .nlsock import (
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NetlinkError,
    NetlinkSocket,
)

IPAddress = IPv4Address | IPv6Address

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
IFF_UP = 0x1
NUD_PERMANENT = 0x80
IFA_F_NODAD = 0x02
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_NOWHERE = 0, 253, 255
RTN_UNICAST = 1
RTM_F_FIB_MATCH = 0x2000
# What an errno means for a change: already there (add) or already gone (delete).
EXISTS = (errno.EEXIST,)
GONE_LINK = (errno.ENODEV, errno.ENOENT)
GONE_ADDRESS = (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT)
GONE_ROUTE = (errno.ESRCH, errno.ENOENT, errno.ENODEV)
GONE_NEIGHBOUR = (errno.ENOENT, errno.ENODEV, errno.ESRCH)


def _family(addr: IPAddress) -> int:
    return socket.AF_INET if addr.version == 4 else socket.AF_INET6


class Link(Record):
    ifindex: int
    name: str
    up: bool
    group: int


class RouteLookup(Record):
    oif: int | None
    dst_len: int


class HostRoute(Record):
    oif: int | None
    metric: int


class Rtnl:
    """The rtnetlink gateway; one socket, closed with ``close()``."""

    def __init__(self) -> None:
        self._nl = NetlinkSocket(socket.NETLINK_ROUTE)

    def close(self) -> None:
        self._nl.close()

    def _change(self, msg: object, msg_type: int, flags: int, what: str, no_op: tuple[int, ...]) -> bool:
        """Send a change; False when the kernel says it was a no-op (``no_op``
        errnos: the object already there, or already gone)."""
        try:
            self._nl.request(msg, msg_type, flags, what)
        except NetlinkError as exc:
            if exc.code in no_op:
                return False
            raise
        return True

    # --- links ---

    def get_link(self, name: str) -> Link | None:
        """The interface called ``name``, or None if there is none."""
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name)]
        try:
            (answer,) = self._nl.request(msg, RTM_GETLINK, 0, f"get link {name}", _decode(ifinfmsg))
        except NetlinkError as exc:
            if exc.code in GONE_LINK:
                return None
            raise
        return Link(
            ifindex=answer["index"],
            name=answer.get_attr("IFLA_IFNAME"),
            up=bool(answer["flags"] & IFF_UP),
            group=answer.get_attr("IFLA_GROUP") or 0,
        )

    def list_links(self) -> list[Link]:
        """Every interface of this namespace."""
        answers = self._nl.request(ifinfmsg(), RTM_GETLINK, NLM_F_DUMP, "list links", _decode(ifinfmsg))
        return [
            Link(ifindex=a["index"], name=a.get_attr("IFLA_IFNAME"), up=bool(a["flags"] & IFF_UP),
                 group=a.get_attr("IFLA_GROUP") or 0)
            for a in answers
        ]

    def set_link(
        self,
        index: int,
        *,
        up: bool | None = None,
        group: int | None = None,
        name: str | None = None,
        netns_fd: int | None = None,
    ) -> None:
        """Change a link; ``netns_fd`` moves it to that network namespace."""
        msg = ifinfmsg()
        msg["index"] = index
        attrs: list[tuple[str, object]] = []
        if up is not None:
            msg["flags"] = IFF_UP if up else 0
            msg["change"] = IFF_UP
        if group is not None:
            attrs.append(("IFLA_GROUP", group))
        if name is not None:
            attrs.append(("IFLA_IFNAME", name))
        if netns_fd is not None:
            attrs.append(("IFLA_NET_NS_FD", netns_fd))
        msg["attrs"] = attrs
        self._nl.request(msg, RTM_NEWLINK, 0, f"set link {index}")

    def create_veth(self, name: str, mac: str, peer: str, peer_mac: str, peer_netns_fd: int) -> None:
        """A veth pair: ``name`` here, ``peer`` born in another namespace."""
        # Link kinds need pyroute2's full ifinfmsg (IFLA_LINKINFO and its
        # plugins): loaded here only, on the rare mapped-address path.
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg as full_ifinfmsg

        peer_info = {"attrs": [("IFLA_IFNAME", peer), ("IFLA_ADDRESS", peer_mac), ("IFLA_NET_NS_FD", peer_netns_fd)]}
        msg = full_ifinfmsg()
        msg["attrs"] = [
            ("IFLA_IFNAME", name),
            ("IFLA_ADDRESS", mac),
            ("IFLA_LINKINFO", {"attrs": [
                ("IFLA_INFO_KIND", "veth"),
                ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer_info)]}),
            ]}),
        ]
        self._nl.request(msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, f"create veth {name}")

    def delete_link(self, index: int) -> bool:
        msg = ifinfmsg()
        msg["index"] = index
        return self._change(msg, RTM_DELLINK, 0, f"delete link {index}", GONE_LINK)

    # --- addresses ---

    def _address_msg(self, index: int, addr: IPAddress, prefixlen: int, nodad: bool) -> ifaddrmsg:
        msg = ifaddrmsg()
        msg["family"] = _family(addr)
        msg["prefixlen"] = prefixlen
        msg["index"] = index
        msg["scope"] = RT_SCOPE_UNIVERSE
        msg["flags"] = IFA_F_NODAD if nodad else 0
        msg["attrs"] = [("IFA_LOCAL", str(addr)), ("IFA_ADDRESS", str(addr))]
        return msg

    def add_address(self, index: int, addr: IPAddress, prefixlen: int, *, nodad: bool = False) -> bool:
        msg = self._address_msg(index, addr, prefixlen, nodad)
        return self._change(msg, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, f"add address {addr}/{prefixlen}", EXISTS)

    def list_addresses(self, index: int) -> list[tuple[IPAddress, int]]:
        """The addresses on one interface, as (address, prefix length)."""
        msg = ifaddrmsg()
        msg["index"] = index  # a filter, with NETLINK_GET_STRICT_CHK
        answers = self._nl.request(msg, RTM_GETADDR, NLM_F_DUMP, f"list addresses of {index}", _decode(ifaddrmsg))
        found = []
        for answer in answers:
            value = answer.get_attr("IFA_LOCAL") or answer.get_attr("IFA_ADDRESS")
            if answer["index"] == index and value:  # older kernels ignore the filter
                found.append((ip_address(value), answer["prefixlen"]))
        return found

    def del_address(self, index: int, addr: IPAddress, prefixlen: int) -> bool:
        msg = self._address_msg(index, addr, prefixlen, False)
        return self._change(msg, RTM_DELADDR, 0, f"delete address {addr}/{prefixlen}", GONE_ADDRESS)

    # --- routes ---

    def _route_msg(self, index: int, dst: IPAddress, metric: int) -> rtmsg:
        msg = rtmsg()
        msg["family"] = _family(dst)
        msg["dst_len"] = dst.max_prefixlen
        msg["table"] = RT_TABLE_MAIN
        msg["proto"] = RTPROT_BOOT
        # A host route through a device without a gateway is link-scoped,
        # exactly what `ip route add ADDR dev VIF` creates.
        msg["scope"] = RT_SCOPE_LINK if dst.version == 4 else RT_SCOPE_UNIVERSE
        msg["type"] = RTN_UNICAST
        msg["attrs"] = [("RTA_DST", str(dst)), ("RTA_OIF", index), ("RTA_PRIORITY", metric)]
        return msg

    def add_route(self, index: int, dst: IPAddress, metric: int) -> bool:
        msg = self._route_msg(index, dst, metric)
        return self._change(msg, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, f"add route {dst} metric {metric}", EXISTS)

    def del_route(self, index: int, dst: IPAddress, metric: int) -> bool:
        msg = self._route_msg(index, dst, metric)
        # As `ip route del` does: any scope, any protocol, but this very
        # device and metric, so another vif's route to the address survives.
        msg["scope"] = RT_SCOPE_NOWHERE
        msg["proto"] = 0
        return self._change(msg, RTM_DELROUTE, 0, f"delete route {dst} metric {metric}", GONE_ROUTE)

    def lookup_route(self, dst: IPAddress) -> RouteLookup | None:
        """The route the kernel would use to reach ``dst`` (``ip route get fibmatch``)."""
        msg = rtmsg()
        msg["family"] = _family(dst)
        msg["dst_len"] = dst.max_prefixlen
        # Without FIB_MATCH the answer's dst_len is the query's, not the route's.
        msg["flags"] = RTM_F_FIB_MATCH
        msg["attrs"] = [("RTA_DST", str(dst))]
        try:
            answers = self._nl.request(msg, RTM_GETROUTE, 0, f"look up route to {dst}", _decode(rtmsg))
        except NetlinkError as exc:
            if exc.code in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENOENT):
                return None
            raise
        if not answers:
            return None
        return RouteLookup(oif=answers[0].get_attr("RTA_OIF"), dst_len=answers[0]["dst_len"])

    def host_routes_to(self, dst: IPAddress) -> list[HostRoute]:
        """Every host route (/32, /128) to ``dst`` in the main table, whatever its device.

        One dump of the family's main table; only the messages that carry
        the address's bytes are decoded, so hundreds of other vifs' routes
        cost a byte search each.
        """
        msg = rtmsg()
        msg["family"] = _family(dst)
        msg["table"] = RT_TABLE_MAIN  # a filter, with NETLINK_GET_STRICT_CHK
        needle = dst.packed

        def decode(raw: bytes) -> rtmsg | None:
            if needle not in raw:
                return None
            answer = rtmsg(raw)
            answer.decode()
            return answer

        found = []
        for answer in self._nl.request(msg, RTM_GETROUTE, NLM_F_DUMP, f"list routes to {dst}", decode):
            if answer is None or answer["dst_len"] != dst.max_prefixlen:
                continue
            table = answer.get_attr("RTA_TABLE") or answer["table"]
            if answer.get_attr("RTA_DST") != str(dst) or table != RT_TABLE_MAIN:
                continue
            found.append(HostRoute(answer.get_attr("RTA_OIF"), answer.get_attr("RTA_PRIORITY") or 0))
        return found

    def host_routes_on(self, index: int) -> list[tuple[IPAddress, int]]:
        """The host routes (/32, /128) of the main table through one interface, as (destination, metric).

        The kernel filters the dump by device (NETLINK_GET_STRICT_CHK): the
        cost follows the interface's routes, not the table's size.
        """
        found = []
        for family in (socket.AF_INET, socket.AF_INET6):
            msg = rtmsg()
            msg["family"] = family
            msg["table"] = RT_TABLE_MAIN
            msg["attrs"] = [("RTA_OIF", index)]
            answers = self._nl.request(msg, RTM_GETROUTE, NLM_F_DUMP, f"list routes of {index}", _decode(rtmsg))
            for answer in answers:
                dst = answer.get_attr("RTA_DST")
                table = answer.get_attr("RTA_TABLE") or answer["table"]
                if (dst and answer.get_attr("RTA_OIF") == index and table == RT_TABLE_MAIN
                        and answer["dst_len"] == (32 if family == socket.AF_INET else 128)):
                    found.append((ip_address(dst), answer.get_attr("RTA_PRIORITY") or 0))
        return found

    # --- neighbours ---

    def list_permanent_neighbours(self, index: int) -> list[tuple[IPAddress, str | None]]:
        """The permanent neighbour entries of one interface, as (address, MAC)."""
        found = []
        msg = ndmsg()
        msg["family"] = socket.AF_UNSPEC  # both families, one dump
        # A filter, with NETLINK_GET_STRICT_CHK (the header's ifindex must stay 0).
        msg["attrs"] = [("NDA_IFINDEX", index)]
        answers = self._nl.request(msg, RTM_GETNEIGH, NLM_F_DUMP, f"list neighbours of {index}", _decode(ndmsg))
        for answer in answers:
            dst = answer.get_attr("NDA_DST")
            if answer["ifindex"] == index and answer["state"] & NUD_PERMANENT and dst:
                found.append((ip_address(dst), answer.get_attr("NDA_LLADDR")))
        return found

    def _neigh_msg(self, index: int, addr: IPAddress, mac: str | None) -> ndmsg:
        msg = ndmsg()
        msg["family"] = _family(addr)
        msg["ifindex"] = index
        msg["state"] = NUD_PERMANENT
        attrs: list[tuple[str, str]] = [("NDA_DST", str(addr))]
        if mac is not None:
            attrs.append(("NDA_LLADDR", mac))
        msg["attrs"] = attrs
        return msg

    def add_neighbour(self, index: int, addr: IPAddress, mac: str) -> bool:
        """A permanent entry; an existing one is replaced (returns False)."""
        msg = self._neigh_msg(index, addr, mac)
        if self._change(msg, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_EXCL, f"add neighbour {addr}", EXISTS):
            return True
        msg = self._neigh_msg(index, addr, mac)
        self._nl.request(msg, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, f"replace neighbour {addr}")
        return False

    def del_neighbour(self, index: int, addr: IPAddress) -> bool:
        msg = self._neigh_msg(index, addr, None)
        return self._change(msg, RTM_DELNEIGH, 0, f"delete neighbour {addr}", GONE_NEIGHBOUR)


def _decode(cls: type) -> Callable[[bytes], Any]:
    def decode(raw: bytes) -> Any:
        msg = cls(raw)
        msg.decode()
        return msg

    return decode
