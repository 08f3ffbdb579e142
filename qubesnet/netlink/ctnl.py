"""Purge connection-tracking entries of client addresses, over ctnetlink.

What ``conntrack -D -s ADDR`` and ``conntrack -D -d ADDR`` do, for all of a
client's addresses at once: one dump of the table (the kernel walks its
whole hash table for every dump, which dominates the cost, so one walk
instead of one per address and side), a byte-level pre-filter so that only
entries mentioning an address are decoded, an exact check of the decoded
tuples (source or destination, original or reply direction), then a delete
of each match by its original tuple and id.

An event can start the purge early (:meth:`Conntrack.start_purge`, once it
holds its locks): the kernel walks its table in ``recvmsg``, without the
GIL, while the event reads and plans; the plan's purge step then takes that
result, or its failure, as if it had purged itself.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterable
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


class _Background:
    """One purge running in a thread of its own; :meth:`result` waits for it."""

    def __init__(self, addrs: frozenset[IPAddress], purge: Callable[[frozenset[IPAddress]], int]) -> None:
        import threading  # already loaded by logging: costs nothing

        self.addrs = addrs
        self._count = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(purge,), name="conntrack-purge", daemon=True)
        self._thread.start()

    def _run(self, purge: Callable[[frozenset[IPAddress]], int]) -> None:
        try:
            self._count = purge(self.addrs)
        except BaseException as exc:  # handed to whoever waits, as its own failure
            self._error = exc

    def result(self) -> int:
        """How many entries the purge deleted; its exception if it failed."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._count


class Conntrack:
    """The ctnetlink gateway; one socket, closed with ``close()``."""

    def __init__(self) -> None:
        self._nl = NetlinkSocket(NETLINK_NETFILTER)
        self._pending: _Background | None = None

    def close(self) -> None:
        self.settle()
        self._nl.close()

    def start_purge(self, addrs: Iterable[IPAddress]) -> None:
        """Start :meth:`purge` of ``addrs`` in a background thread; the next
        :meth:`purge` of the same addresses waits for it and returns its
        count or raises its error. The socket is the thread's until then:
        call nothing else but :meth:`purge` and :meth:`settle` meanwhile."""
        self.settle()
        wanted = frozenset(addrs)
        if wanted:
            self._pending = _Background(wanted, self._purge_now)

    def settle(self) -> None:
        """Wait for a purge started and not taken by :meth:`purge`; its
        outcome is nobody's any more (the event failed before its purge step)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending.result()
            except Exception:  # no step asked for this purge: its outcome is moot
                pass

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

        Returns how many entries were deleted. A purge started by
        :meth:`start_purge` for these addresses (or more: online starts it
        for every client address, the plan leaves out IPv6 ones where the
        kernel has no IPv6, hence no such entries) is waited for, not run again.
        """
        wanted = frozenset(addrs)
        pending = self._pending
        if pending is not None and wanted <= pending.addrs:
            self._pending = None
            return pending.result()
        self.settle()
        return self._purge_now(wanted)

    def _purge_now(self, wanted: frozenset[IPAddress]) -> int:
        if not wanted:
            return 0
        deleted = 0
        for entry in self._dump([addr.packed for addr in wanted]):
            if _addresses_of(entry) & wanted and self._delete(entry):
                deleted += 1
        return deleted

