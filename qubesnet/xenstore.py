"""A small XenStore client speaking the xenstored wire protocol.

Every message is a header of four little-endian uint32 (type, request id,
transaction id, payload length) and a payload of at most 4096 bytes. The
daemon is reached at ``$XENSTORED_PATH`` if set (as libxenstore does), else at
``/var/run/xenstored/socket``, else through ``/dev/xen/xenbus`` (same framing,
one write per request).

A missing key is a result (``None``), not an exception; anything else going
wrong is a :class:`XenStoreError` or a :class:`~qubesnet.errors.StoreError`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from enum import IntEnum

from .constants import XENBUS_DEVICE, XENSTORE_MAX_PAYLOAD, XENSTORED_SOCKETS
from .errors import StoreError
from .wire import Stream, connect_unix

HEADER = struct.Struct("<IIII")


class Op(IntEnum):
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    RESET_WATCHES = 21
    DIRECTORY_PART = 22


class XenStoreError(StoreError):
    """xenstored answered with an error (``errno`` is its name, e.g. EACCES)."""

    def __init__(self, errno_name: str, op: Op, path: str) -> None:
        super().__init__(f"XenStore {op.name} {path!r} failed: {errno_name}")
        self.errno = errno_name


def default_address(environ: Mapping[str, str]) -> str:
    """Where to reach xenstored, in the order libxenstore uses."""
    override = environ.get("XENSTORED_PATH")
    if override:
        return override
    for candidate in XENSTORED_SOCKETS:
        if os.path.exists(candidate):
            return candidate
    return XENBUS_DEVICE


class XenStore:
    """One connection to xenstored; requests are answered in order."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._req_id = 0
        self._broken = False

    @property
    def usable(self) -> bool:
        """False once a reply went wrong (timeout, oversized, out of order):
        the stream may hold the rest of it, so no later reply can be trusted."""
        return not self._broken

    @classmethod
    def open(cls, address: str, timeout: float = 5.0) -> XenStore:
        if address.startswith("/dev/"):
            try:
                fd = os.open(address, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError as exc:
                raise StoreError(
                    f"cannot open XenStore device {address}: {exc.strerror}; "
                    "set XENSTORED_PATH to the xenstored socket"
                ) from exc
            return cls(Stream(fd, f"XenStore ({address})", timeout))
        return cls(connect_unix(address, "XenStore", timeout))

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> XenStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- protocol ---

    def _request(self, op: Op, payload: bytes, path: str) -> tuple[Op | int, bytes]:
        if len(payload) > XENSTORE_MAX_PAYLOAD:
            raise StoreError(f"XenStore {op.name} {path!r}: request larger than 4096 bytes")
        if self._broken:
            raise StoreError("XenStore connection unusable after an earlier protocol error")
        try:
            return self._exchange(op, payload, path)
        except XenStoreError:
            raise
        except StoreError:
            self._broken = True
            raise

    def _exchange(self, op: Op, payload: bytes, path: str) -> tuple[Op | int, bytes]:
        self._req_id = (self._req_id + 1) & 0xFFFFFFFF
        deadline = self._stream.deadline()
        # One write per request: the xenbus device requires it.
        self._stream.write(HEADER.pack(op, self._req_id, 0, len(payload)) + payload, deadline)
        while True:
            kind, req_id, _tx, length = HEADER.unpack(self._stream.read_exact(HEADER.size, deadline))
            if length > XENSTORE_MAX_PAYLOAD:
                raise StoreError(f"{path}: XenStore sent an oversized reply ({length} bytes, at most 4096)")
            body = self._stream.read_exact(length, deadline)
            if kind == Op.WATCH_EVENT:
                continue  # we register no watches; skip strays defensively
            if req_id != self._req_id:
                raise StoreError(f"XenStore reply id {req_id} does not match request {self._req_id}")
            if kind == Op.ERROR:
                raise XenStoreError(body.rstrip(b"\0").decode("ascii", "replace"), op, path)
            if kind != op:
                raise StoreError(f"XenStore answered {op.name} with message type {kind}")
            return kind, body

    @staticmethod
    def _path(path: str) -> bytes:
        raw = path.encode("ascii")
        if b"\0" in raw or not raw:
            raise StoreError(f"invalid XenStore path {path!r}")
        return raw + b"\0"

    # --- operations ---

    def read(self, path: str) -> bytes | None:
        """The value at ``path``, or ``None`` when there is no such key."""
        try:
            return self._request(Op.READ, self._path(path), path)[1]
        except XenStoreError as exc:
            if exc.errno == "ENOENT":
                return None
            raise

    def write(self, path: str, value: bytes | str) -> None:
        data = value.encode() if isinstance(value, str) else value
        self._request(Op.WRITE, self._path(path) + data, path)

    def mkdir(self, path: str) -> None:
        self._request(Op.MKDIR, self._path(path), path)

    def directory(self, path: str) -> list[str] | None:
        """Names of the children of ``path``, or ``None`` when it does not exist."""
        try:
            body = self._request(Op.DIRECTORY, self._path(path), path)[1]
        except XenStoreError as exc:
            if exc.errno == "ENOENT":
                return None
            raise
        return [name.decode("ascii", "replace") for name in body.split(b"\0") if name]

    def rm(self, path: str) -> None:
        """Remove ``path`` and its children; a missing path is not an error."""
        try:
            self._request(Op.RM, self._path(path), path)
        except XenStoreError as exc:
            if exc.errno != "ENOENT":
                raise
