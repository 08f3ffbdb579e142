"""A small QubesDB client speaking the VM-local daemon's protocol.

Every message is a 72-byte header (uint8 type, char path[64] NUL-terminated,
3 padding bytes, uint32 data_len in native order) followed by ``data_len``
bytes. A WATCH event may arrive between any two messages and is skipped.
The socket is ``$QUBESDB_SOCKET`` when set, else ``/var/run/qubes/qubesdb.sock``.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping
from enum import IntEnum

from .constants import QUBESDB_MAX_DATA, QUBESDB_MAX_PATH, QUBESDB_SOCKET
from .errors import StoreError
from .wire import Stream, connect_unix

HEADER = struct.Struct("@B64sI")
assert HEADER.size == 72, "struct qdb_hdr is 72 bytes on every Linux ABI"


class Msg(IntEnum):
    CMD_READ = 0
    CMD_WRITE = 1
    CMD_MULTIREAD = 2
    CMD_LIST = 3
    CMD_RM = 4
    CMD_WATCH = 5
    CMD_UNWATCH = 6
    RESP_OK = 7
    RESP_ERROR_NOENT = 8
    RESP_ERROR = 9
    RESP_READ = 10
    RESP_MULTIREAD = 11
    RESP_LIST = 12
    RESP_WATCH = 13


def default_address(environ: Mapping[str, str]) -> str:
    return environ.get("QUBESDB_SOCKET") or QUBESDB_SOCKET


def encode_path(path: str) -> bytes:
    raw = path.encode("ascii", "strict") if path.isascii() else b""
    if not raw.startswith(b"/") or len(raw) >= QUBESDB_MAX_PATH or b"\0" in raw:
        raise StoreError(f"invalid QubesDB path {path!r}")
    return raw


class QubesDB:
    """One connection to the QubesDB daemon of this VM."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._events: list[str] = []  # watch events that arrived meanwhile

    @classmethod
    def open(cls, address: str, timeout: float = 5.0) -> QubesDB:
        return cls(connect_unix(address, "QubesDB", timeout))

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> QubesDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- protocol ---

    def _send(self, kind: Msg, path: str, deadline: float) -> None:
        self._stream.write(HEADER.pack(kind, encode_path(path), 0), deadline)

    def _receive(self, deadline: float) -> tuple[int, str, bytes]:
        while True:
            kind, raw_path, length = HEADER.unpack(self._stream.read_exact(HEADER.size, deadline))
            if length > QUBESDB_MAX_DATA:
                raise StoreError(f"QubesDB sent an oversized reply ({length} bytes)")
            data = self._stream.read_exact(length, deadline) if length else b""
            if kind == Msg.RESP_WATCH:
                # May come before any reply: keep it for wait_event, go on.
                self._events.append(raw_path.split(b"\0", 1)[0].decode("ascii", "replace"))
                continue
            path = raw_path.split(b"\0", 1)[0].decode("ascii", "replace")
            return kind, path, data

    def _expect(self, kind: int, wanted: Msg, path: str) -> None:
        if kind == Msg.RESP_ERROR:
            raise StoreError(f"QubesDB refused the request for {path!r}")
        if kind != wanted:
            raise StoreError(f"QubesDB answered {path!r} with unexpected message type {kind}")

    # --- operations ---

    def read(self, path: str) -> bytes | None:
        """The value at ``path``, or ``None`` when there is no such entry."""
        deadline = self._stream.deadline()
        self._send(Msg.CMD_READ, path, deadline)
        kind, _, data = self._receive(deadline)
        if kind == Msg.RESP_ERROR_NOENT:
            return None
        self._expect(kind, Msg.RESP_READ, path)
        return data

    def list(self, prefix: str) -> list[str]:
        """Full paths of the entries whose path starts with ``prefix``."""
        deadline = self._stream.deadline()
        self._send(Msg.CMD_LIST, prefix, deadline)
        paths: list[str] = []
        while True:
            kind, path, _ = self._receive(deadline)
            self._expect(kind, Msg.RESP_LIST, prefix)
            if not path:
                return paths
            paths.append(path)

    def multiread(self, prefix: str) -> dict[str, bytes]:
        """Paths and values of the entries whose path starts with ``prefix``."""
        deadline = self._stream.deadline()
        self._send(Msg.CMD_MULTIREAD, prefix, deadline)
        entries: dict[str, bytes] = {}
        while True:
            kind, path, data = self._receive(deadline)
            self._expect(kind, Msg.RESP_MULTIREAD, prefix)
            if not path:
                return entries
            entries[path] = data

    def watch(self, path: str) -> None:
        """Be told of changes under ``path`` (a prefix when it ends with /)."""
        deadline = self._stream.deadline()
        self._send(Msg.CMD_WATCH, path, deadline)
        kind, _, _ = self._receive(deadline)
        self._expect(kind, Msg.RESP_OK, path)

    def unwatch(self, path: str) -> None:
        deadline = self._stream.deadline()
        self._send(Msg.CMD_UNWATCH, path, deadline)
        self._receive(deadline)  # OK, or NOENT for a watch already gone

    def wait_event(self, timeout: float) -> str | None:
        """The path of the next watch event, or None after ``timeout`` seconds."""
        if self._events:
            return self._events.pop(0)
        deadline = time.monotonic() + timeout
        while self._stream.readable(deadline):
            kind, raw, _ = HEADER.unpack(self._stream.read_exact(HEADER.size, self._stream.deadline()))
            if kind != Msg.RESP_WATCH:
                raise StoreError(f"QubesDB sent an unexpected message type {kind} while we waited for a change")
            path: bytes = raw
            return path.split(b"\0", 1)[0].decode("ascii", "replace")
        return None
