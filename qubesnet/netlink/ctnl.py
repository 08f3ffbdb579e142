"""Purge connection-tracking entries of one address, over ctnetlink.

``conntrack -D -s ADDR`` and ``-D -d ADDR`` without the process: for each
direction and side, dump the matching entries (filtered in the kernel with
CTA_FILTER where supported) and delete each by its original tuple and id.
Every dumped entry is checked here again before it is deleted, so a kernel
that ignores the filter can never make us delete unrelated flows.
"""

from __future__ import annotations

import errno
import socket
from ipaddress import IPv4Address, IPv6Address, ip_address

from . import _pyroute2  # noqa: F401
from .nlsock import NLM_F_DUMP, NetlinkError, NetlinkSocket
from pyroute2.netlink import NLA_F_NESTED, nla  # noqa: E402
from pyroute2.netlink.nfnetlink import nfgen_msg  # noqa: E402

IPAddress = IPv4Address | IPv6Address

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
CTA_FILTER_F_CTA_IP_SRC = 1 << 0
CTA_FILTER_F_CTA_IP_DST = 1 << 1


class ct_msg(nfgen_msg):  # noqa: N801 (pyroute2 naming convention)
    """The ctnetlink attributes a purge reads or sends; others stay undecoded."""

    prefix = "CTA_"
    nla_map = (
        (0, "CTA_UNSPEC", "none"),
        (1, "CTA_TUPLE_ORIG", "cta_tuple"),
        (2, "CTA_TUPLE_REPLY", "cta_tuple"),
        (12, "CTA_ID", "be32"),
        (18, "CTA_ZONE", "be16"),
        (25, "CTA_FILTER", "cta_filter"),
    )

    class cta_tuple(nla):  # noqa: N801
        nla_flags = NLA_F_NESTED
        prefix = "CTA_TUPLE_"
        nla_map = (
            (0, "CTA_TUPLE_UNSPEC", "none"),
            (1, "CTA_TUPLE_IP", "cta_ip"),
            # ports, ICMP ids...: opaque bytes, sent back exactly as received
            (2, "CTA_TUPLE_PROTO", "cdata"),
            (3, "CTA_TUPLE_ZONE", "be16"),
        )

        class cta_ip(nla):  # noqa: N801
            nla_flags = NLA_F_NESTED
            prefix = "CTA_IP_"
            nla_map = (
                (0, "CTA_IP_UNSPEC", "none"),
                (1, "CTA_IP_V4_SRC", "ip4addr"),
                (2, "CTA_IP_V4_DST", "ip4addr"),
                (3, "CTA_IP_V6_SRC", "ip6addr"),
                (4, "CTA_IP_V6_DST", "ip6addr"),
            )

    class cta_filter(nla):  # noqa: N801
        # the kernel parses CTA_FILTER strictly: the nested flag is required
        nla_flags = NLA_F_NESTED
        prefix = "CTA_FILTER_"
        nla_map = (
            (0, "CTA_FILTER_UNSPEC", "none"),
            (1, "CTA_FILTER_ORIG_FLAGS", "uint32"),
            (2, "CTA_FILTER_REPLY_FLAGS", "uint32"),
        )


def _ip_attr(addr: IPAddress, side: str) -> str:
    return f"CTA_IP_V{addr.version}_{side}"


def _decode(raw: bytes) -> ct_msg:
    msg = ct_msg(raw)
    msg.decode()
    return msg


class Conntrack:
    """The ctnetlink gateway; one socket, closed with ``close()``."""

    def __init__(self, dry_run: bool = False) -> None:
        self._nl = NetlinkSocket(NETLINK_NETFILTER)
        self._kernel_filter = True
        self.dry_run = dry_run

    def close(self) -> None:
        self._nl.close()

    def _dump(self, family: int, filter_: tuple[IPAddress, str, str] | None) -> list[ct_msg]:
        msg = ct_msg()
        msg["nfgen_family"] = family
        if filter_ is not None:
            addr, direction, side = filter_
            flag = CTA_FILTER_F_CTA_IP_SRC if side == "SRC" else CTA_FILTER_F_CTA_IP_DST
            ip = {"attrs": [(_ip_attr(addr, side), str(addr))]}
            msg["attrs"] = [
                (f"CTA_TUPLE_{direction}", {"attrs": [("CTA_TUPLE_IP", ip)]}),
                ("CTA_FILTER", {"attrs": [(f"CTA_FILTER_{direction}_FLAGS", flag)]}),
            ]
        msg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
        try:
            return self._nl.request(msg, msg_type, NLM_F_DUMP, "dump conntrack table", _decode)
        except NetlinkError as exc:
            if filter_ is not None and exc.code in (errno.EINVAL, errno.EOPNOTSUPP):
                self._kernel_filter = False  # kernel without CTA_FILTER: filter here
                return self._dump(family, None)
            raise

    def _candidates(self, addr: IPAddress) -> list[ct_msg]:
        if addr.version == 6 or not self._kernel_filter:
            # Kernels up to at least 6.18 compare IPv6 addresses of a CTA_FILTER
            # with the inverted sense (ctnetlink_filter_match_tuple), so IPv6
            # is always dumped whole and filtered here.
            family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
            return self._dump(family, None)
        entries: dict[object, ct_msg] = {}
        for direction in ("ORIG", "REPLY"):
            for side in ("SRC", "DST"):
                for entry in self._dump(socket.AF_INET, (addr, direction, side)):
                    entries.setdefault(entry.get_attr("CTA_ID"), entry)
                if not self._kernel_filter:
                    return list(entries.values())
        return list(entries.values())

    @staticmethod
    def _matches(entry: ct_msg, addr: IPAddress, direction: str, side: str) -> bool:
        tuple_ = entry.get_attr(f"CTA_TUPLE_{direction}")
        if tuple_ is None:
            return False
        ip = tuple_.get_attr("CTA_TUPLE_IP")
        value = ip.get_attr(_ip_attr(addr, side)) if ip is not None else None
        return value is not None and ip_address(value) == addr

    def _delete(self, entry: ct_msg, family: int) -> bool:
        msg = ct_msg()
        msg["nfgen_family"] = family
        attrs: list[tuple[str, object]] = [("CTA_TUPLE_ORIG", entry.get_attr("CTA_TUPLE_ORIG"))]
        for name in ("CTA_ZONE", "CTA_ID"):
            value = entry.get_attr(name)
            if value is not None:
                attrs.append((name, value))
        msg["attrs"] = attrs
        msg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
        try:
            self._nl.request(msg, msg_type, 0, "delete conntrack entry")
        except NetlinkError as exc:
            if exc.code == errno.ENOENT:  # gone meanwhile (timed out, or a twin purge)
                return False
            raise
        return True

    def purge(self, addr: IPAddress) -> int:
        """Delete every entry with ``addr`` as source or destination; returns how many."""
        if self.dry_run:
            return 0
        family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
        deleted = 0
        for entry in self._candidates(addr):
            if any(
                self._matches(entry, addr, direction, side)
                for direction in ("ORIG", "REPLY")
                for side in ("SRC", "DST")
            ) and self._delete(entry, family):
                deleted += 1
        return deleted
