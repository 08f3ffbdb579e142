"""Purge connection-tracking entries of client addresses, over ctnetlink.

What ``conntrack -D -s ADDR`` and ``conntrack -D -d ADDR`` do, for all of a
client's addresses at once: one dump of the table (the kernel walks its
whole hash table for every dump, which dominates the cost, so one walk
instead of one per address and side), a byte-level pre-filter so that only
entries mentioning an address are decoded, an exact check of the decoded
tuples (source or destination, original or reply direction), then a delete
of each match by its original tuple and id.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address

# _pyroute2 must come first: it makes the pyroute2 imports below light.
from . import _pyroute2  # noqa: F401
from .nlsock import NLM_F_DUMP, NetlinkError, NetlinkSocket
from pyroute2.netlink import NLA_F_NESTED, nla
from pyroute2.netlink.nfnetlink import nfgen_msg

IPAddress = IPv4Address | IPv6Address

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
TUPLE_FIELDS = ("CTA_IP_V4_SRC", "CTA_IP_V4_DST", "CTA_IP_V6_SRC", "CTA_IP_V6_DST")


class ct_msg(nfgen_msg):  # noqa: N801 (pyroute2 naming convention)
    """The ctnetlink attributes a purge reads or sends; others stay undecoded."""

    prefix = "CTA_"
    nla_map = (
        (0, "CTA_UNSPEC", "none"),
        (1, "CTA_TUPLE_ORIG", "cta_tuple"),
        (2, "CTA_TUPLE_REPLY", "cta_tuple"),
        (12, "CTA_ID", "be32"),
        (18, "CTA_ZONE", "be16"),
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


def _addresses_of(entry: ct_msg) -> set[IPAddress]:
    """Every address in an entry's two tuples."""
    found = set()
    for direction in ("CTA_TUPLE_ORIG", "CTA_TUPLE_REPLY"):
        tuple_ = entry.get_attr(direction)
        ip = tuple_.get_attr("CTA_TUPLE_IP") if tuple_ is not None else None
        if ip is None:
            continue
        for field in TUPLE_FIELDS:
            value = ip.get_attr(field)
            if value is not None:
                found.add(ip_address(value))
    return found


class Conntrack:
    """The ctnetlink gateway; one socket, closed with ``close()``."""

    def __init__(self) -> None:
        self._nl = NetlinkSocket(NETLINK_NETFILTER)

    def close(self) -> None:
        self._nl.close()

    def _dump(self, needles: list[bytes]) -> list[ct_msg]:
        """Entries whose raw message contains one of ``needles``, decoded."""

        def keep(raw: bytes) -> ct_msg | None:
            if not any(needle in raw for needle in needles):
                return None
            msg = ct_msg(raw)
            msg.decode()
            return msg

        request = ct_msg()
        request["nfgen_family"] = socket.AF_UNSPEC  # both families, one walk
        msg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
        answers = self._nl.request(request, msg_type, NLM_F_DUMP, "dump conntrack table", keep)
        return [entry for entry in answers if entry is not None]

    def _delete(self, entry: ct_msg) -> bool:
        msg = ct_msg()
        msg["nfgen_family"] = entry["nfgen_family"]
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

    def purge(self, addrs: Iterable[IPAddress]) -> int:
        """Delete every entry with one of ``addrs`` as source or destination.

        Returns how many entries were deleted.
        """
        wanted = set(addrs)
        if not wanted:
            return 0
        deleted = 0
        for entry in self._dump([addr.packed for addr in wanted]):
            if _addresses_of(entry) & wanted and self._delete(entry):
                deleted += 1
        return deleted

