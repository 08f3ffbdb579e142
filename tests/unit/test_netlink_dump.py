"""Dumps the kernel flags as interrupted (NLM_F_DUMP_INTR) are asked for again.

When the objects being dumped change during the dump (another VM's vif
comes or goes), the kernel marks the answer's messages NLM_F_DUMP_INTR: the
dump may have skipped or repeated objects. qubesnet.netlink.nlsock must never
take such a dump as complete. These tests feed the real NetlinkSocket (and
Rtnl on top of it) with scripted answers in place of the kernel's socket.
"""

from __future__ import annotations

import errno
import socket
import struct
from ipaddress import IPv4Address, ip_address

import pytest

from qubesnet.netlink.messages import ifaddrmsg
from qubesnet.netlink.nlsock import (
    DUMP_ATTEMPTS,
    NLM_F_DUMP_INTR,
    NLM_F_MULTI,
    NLMSG_DONE,
    NLMSG_HDR,
    NetlinkError,
    NetlinkSocket,
)
from qubesnet.netlink.rtnl import RTM_GETADDR, RTM_NEWADDR, Rtnl

INDEX = 7


def address_message(addr: str, seq: int, flags: int) -> bytes:
    msg = ifaddrmsg()
    msg["family"] = socket.AF_INET
    msg["prefixlen"] = 32
    msg["index"] = INDEX
    msg["attrs"] = [("IFA_LOCAL", addr), ("IFA_ADDRESS", addr)]
    msg["header"]["type"] = RTM_NEWADDR
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def done_message(seq: int, flags: int) -> bytes:
    return NLMSG_HDR.pack(NLMSG_HDR.size + 4, NLMSG_DONE, flags, seq, 0) + struct.pack("=i", 0)


class ScriptedSocket:
    """Answers the n-th request with the n-th dump of ``dumps``: (addresses, interrupted,
    where the flag is: "each" message or only "done")."""

    def __init__(self, dumps: list[tuple[list[str], bool, str]]) -> None:
        self.dumps = dumps
        self.sent: list[bytes] = []
        self._pending: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        _length, kind, _flags, seq, _pid = NLMSG_HDR.unpack_from(data)
        assert kind == RTM_GETADDR
        addrs, interrupted, where = self.dumps[min(len(self.sent), len(self.dumps)) - 1]
        flag = NLM_F_DUMP_INTR if interrupted else 0
        each = flag if where == "each" else 0
        answer = b"".join(address_message(a, seq, NLM_F_MULTI | each) for a in addrs)
        # a stale answer to an earlier request, which must be ignored
        answer = address_message("192.0.2.99", seq - 1, NLM_F_MULTI) + answer
        self._pending = [answer, done_message(seq, NLM_F_MULTI | flag)]
        return len(data)

    def recv(self, size: int) -> bytes:
        return self._pending.pop(0)

    def close(self) -> None:
        pass


def rtnl_over(sock: ScriptedSocket) -> Rtnl:
    nl = NetlinkSocket.__new__(NetlinkSocket)
    nl._sock = sock  # type: ignore[assignment]
    nl._seq = 0
    rtnl = Rtnl.__new__(Rtnl)
    rtnl._nl = nl
    return rtnl


@pytest.mark.parametrize("where", ["each", "done"])
def test_an_interrupted_dump_is_asked_for_again_and_only_the_clean_one_counts(where: str) -> None:
    """The first dump (flagged) still shows an address that was being removed; the second
    (clean) is the answer, not the first nor a mix of both."""
    sock = ScriptedSocket([(["10.137.0.12", "10.137.0.13"], True, where), (["10.137.0.12", "10.137.0.14"], False, "")])
    found = rtnl_over(sock).list_addresses(INDEX)
    assert found == [(ip_address("10.137.0.12"), 32), (ip_address("10.137.0.14"), 32)]
    assert len(sock.sent) == 2
    first, second = (NLMSG_HDR.unpack_from(s) for s in sock.sent)
    assert second[3] == first[3] + 1  # a new sequence number...
    assert sock.sent[0][:8] + sock.sent[0][12:] == sock.sent[1][:8] + sock.sent[1][12:]  # ... the same request


def test_a_clean_dump_is_asked_for_once() -> None:
    sock = ScriptedSocket([(["10.137.0.12"], False, "")])
    assert rtnl_over(sock).list_addresses(INDEX) == [(IPv4Address("10.137.0.12"), 32)]
    assert len(sock.sent) == 1


def test_a_dump_interrupted_every_time_is_an_error_not_an_answer() -> None:
    sock = ScriptedSocket([(["10.137.0.12"], True, "each")])
    with pytest.raises(NetlinkError) as caught:
        rtnl_over(sock).list_addresses(INDEX)
    assert caught.value.code == errno.EINTR
    assert len(sock.sent) == DUMP_ATTEMPTS
    assert "\n" not in str(caught.value) and "try again" in str(caught.value)
