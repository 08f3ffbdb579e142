"""A minimal synchronous netlink socket: send a request, collect the answer.

Messages are pyroute2 ``nlmsg`` objects (encoded and decoded by pyroute2);
this module only frames requests, matches sequence numbers, and turns
``NLMSG_ERROR`` into :class:`NetlinkError` carrying the errno, so that callers
decide by ``exc.code`` (never by message text).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from . import _pyroute2  # noqa: F401  (must precede every pyroute2 import)

NLMSG_HDR = struct.Struct("=IHHII")
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
NLMSGERR_ATTR_MSG = 1
NLM_F_ACK_TLVS = 0x200
# A dump the kernel flags as interrupted (its object list changed while it
# was being dumped) is asked for again, at most this many times in all.
DUMP_ATTEMPTS = 8


class NetlinkError(OSError):
    """The kernel answered a request with an error (``code`` is the errno)."""

    def __init__(self, code: int, what: str, extack: str = "") -> None:
        detail = f" ({extack})" if extack else ""
        super().__init__(code, f"{what}: {os.strerror(code)}{detail}")
        self.code = code


def _extack_message(payload: bytes, flags: int) -> str:
    """The kernel's extended-ack text, if it sent one (NETLINK_EXT_ACK)."""
    if not flags & NLM_F_ACK_TLVS or len(payload) < 20:
        return ""
    # nlmsgerr = int error + the request's header (payload capped by the kernel)
    offset = 4 + NLMSG_HDR.size
    if flags & 0x100 == 0:  # NLM_F_CAPPED unset: the whole request is echoed
        offset = 4 + NLMSG_HDR.unpack_from(payload, 4)[0]
    while offset + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, offset)
        if length < 4:
            break
        if kind & 0x3FFF == NLMSGERR_ATTR_MSG:
            return payload[offset + 4 : offset + length].split(b"\0", 1)[0].decode("utf-8", "replace")
        offset += (length + 3) & ~3
    return ""


class NetlinkSocket:
    """One netlink socket of a given protocol, used for request/response."""

    def __init__(self, protocol: int) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        self._sock.bind((0, 0))
        for option in (NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
            try:
                self._sock.setsockopt(SOL_NETLINK, option, 1)
            except OSError:
                pass  # older kernels: plain errors, unfiltered dumps
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def request(
        self,
        msg: Any,
        msg_type: int,
        flags: int,
        what: str,
        decode: Callable[[bytes], Any] | None = None,
    ) -> list[Any]:
        """Send ``msg`` and wait for its ACK or, for a dump, for NLMSG_DONE.

        Returns the decoded answer messages (``decode`` builds them from raw
        bytes); raises NetlinkError if the kernel reports an error. A dump
        flagged NLM_F_DUMP_INTR (it may have missed or repeated objects that
        changed meanwhile) is never taken as complete: it is asked for again.
        """
        self._seq += 1
        header = msg["header"]
        header["type"] = msg_type
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        # A dump ends with NLMSG_DONE; anything else is acknowledged.
        header["flags"] = flags | NLM_F_REQUEST | (0 if dump else NLM_F_ACK)
        header["sequence_number"] = self._seq
        header["pid"] = 0
        msg.encode()
        data = bytes(msg.data)
        for attempt in range(DUMP_ATTEMPTS if dump else 1):
            if attempt:  # the same request under a new sequence number
                self._seq += 1
                data = data[:8] + struct.pack("=I", self._seq) + data[12:]
            self._sock.send(data)
            answers, interrupted = self._answers(dump, what, decode)
            if not interrupted:
                return answers
        raise NetlinkError(errno.EINTR, what, f"the dump was interrupted by concurrent changes {DUMP_ATTEMPTS} "
                           "times; try again")

    def _answers(self, dump: bool, what: str, decode: Callable[[bytes], Any] | None) -> tuple[list[Any], bool]:
        """The answers to the request just sent, and whether the kernel
        flagged the dump as interrupted."""
        answers: list[Any] = []
        interrupted = False
        while True:
            data = self._sock.recv(1 << 20)
            offset = 0
            while offset + NLMSG_HDR.size <= len(data):
                length, kind, mflags, seq, _pid = NLMSG_HDR.unpack_from(data, offset)
                if length < NLMSG_HDR.size:
                    raise NetlinkError(errno.EPROTO, what, "malformed netlink message")
                chunk = data[offset : offset + length]
                offset += (length + 3) & ~3
                if seq != self._seq:
                    continue  # stale answer to an earlier request
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", chunk, NLMSG_HDR.size)[0]
                    if code:
                        raise NetlinkError(code, what, _extack_message(chunk[NLMSG_HDR.size :], mflags))
                    if not dump:
                        return answers, False
                    continue
                interrupted = interrupted or (dump and bool(mflags & NLM_F_DUMP_INTR))
                if kind == NLMSG_DONE:
                    return answers, interrupted
                if decode is not None:
                    answers.append(decode(chunk))
