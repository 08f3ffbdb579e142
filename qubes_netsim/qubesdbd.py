"""A QubesDB daemon double speaking the VM-local protocol on a unix socket.

It enforces the real daemon's limits: paths of at most 63 bytes made of
``[A-Za-z0-9_./:@-]``, values shorter than 3072 bytes and free of NUL bytes;
an invalid request gets QDB_RESP_ERROR. LIST and MULTIREAD answer with one
message per matching entry and an end marker (empty path). Watches fire
QDB_RESP_WATCH to the watching connections; ``spurious_watch_events`` makes
it send one before every reply, to prove clients skip them.
"""

from __future__ import annotations

import re
import struct
import threading

from .server import Connection, UnixServer

HEADER = struct.Struct("@B64sI")
MAX_DATA = 3072
MAX_PATH = 64
PATH_RE = re.compile(rb"[A-Za-z0-9_./:@-]*")

CMD_READ, CMD_WRITE, CMD_MULTIREAD, CMD_LIST, CMD_RM, CMD_WATCH, CMD_UNWATCH = range(7)
RESP_OK, RESP_ERROR_NOENT, RESP_ERROR, RESP_READ, RESP_MULTIREAD, RESP_LIST, RESP_WATCH = range(7, 14)


def _hdr(kind: int, path: bytes, length: int) -> bytes:
    return HEADER.pack(kind, path[: MAX_PATH - 1], length)


class QubesDBDouble(UnixServer):
    name = "qubesdb"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.entries: dict[str, bytes] = {}
        self.spurious_watch_events = False
        self._watch_lock = threading.Lock()

    # --- direct access ---

    @staticmethod
    def check(path: str, value: bytes | None = None) -> None:
        raw = path.encode()
        if not raw.startswith(b"/") or len(raw) >= MAX_PATH or not PATH_RE.fullmatch(raw):
            raise ValueError(f"invalid QubesDB path {path!r}")
        if value is not None and (len(value) >= MAX_DATA or b"\0" in value):
            raise ValueError(f"invalid QubesDB value for {path!r}")

    def write(self, path: str, value: bytes | str) -> None:
        data = value.encode() if isinstance(value, str) else value
        self.check(path, data)
        with self.lock:
            self.entries[path] = data
        self._fire(path)

    def rm(self, path: str) -> None:
        with self.lock:
            if path.endswith("/"):
                doomed = [p for p in self.entries if p.startswith(path)]
            else:
                doomed = [path] if path in self.entries else []
            for p in doomed:
                del self.entries[p]
        for p in doomed:
            self._fire(p)

    def read(self, path: str) -> bytes | None:
        with self.lock:
            return self.entries.get(path)

    # --- watches ---

    def watched_paths(self) -> set[str]:
        """What the connected clients watch now."""
        return {path for conn in list(self._connections) for path in conn.state.get("watches", [])}

    def _fire(self, path: str) -> None:
        for conn in list(self._connections):
            for watched in conn.state.get("watches", []):
                if path == watched or (watched.endswith("/") and path.startswith(watched)):
                    conn.send(_hdr(RESP_WATCH, path.encode(), 0))

    # --- protocol ---

    def handle(self, conn: Connection) -> None:
        conn.state["watches"] = []
        while True:
            raw = conn.read_exact(HEADER.size)
            if raw is None:
                return
            kind, raw_path, length = HEADER.unpack(raw)
            path = raw_path.split(b"\0", 1)[0]
            valid = kind <= CMD_UNWATCH and PATH_RE.fullmatch(path) is not None and length < MAX_DATA
            data = conn.read_exact(length) if length else b""
            if data is None:
                return
            with self.lock:
                self.requests.append((kind, path, data))
            self.wait_if_frozen()
            if self.spurious_watch_events:
                conn.send(_hdr(RESP_WATCH, b"/spurious", 0))
            if not valid:
                conn.send(_hdr(RESP_ERROR, path, 0))
                continue
            self._dispatch(conn, kind, path, data)

    def _dispatch(self, conn: Connection, kind: int, path: bytes, data: bytes) -> None:
        text = path.decode("ascii")
        if kind == CMD_READ:
            if data:
                return  # the real daemon drops a client sending data with READ
            value = self.read(text)
            if value is None:
                conn.send(_hdr(RESP_ERROR_NOENT, path, 0))
            else:
                conn.send(_hdr(RESP_READ, path, len(value)) + value)
        elif kind == CMD_WRITE:
            if b"\0" in data or not text.startswith("/"):
                conn.send(_hdr(RESP_ERROR, path, 0))
                return
            self.write(text, data)
            conn.send(_hdr(RESP_OK, path, 0))
        elif kind in (CMD_LIST, CMD_MULTIREAD):
            with self.lock:
                matching = sorted((p, v) for p, v in self.entries.items() if p.startswith(text))
            out = bytearray()
            for entry_path, value in matching:
                if kind == CMD_LIST:
                    out += _hdr(RESP_LIST, entry_path.encode(), 0)
                else:
                    out += _hdr(RESP_MULTIREAD, entry_path.encode(), len(value)) + value
            out += _hdr(RESP_LIST if kind == CMD_LIST else RESP_MULTIREAD, b"", 0)
            conn.send(bytes(out))
        elif kind == CMD_RM:
            with self.lock:
                present = text in self.entries or (text.endswith("/") and any(p.startswith(text) for p in self.entries))
            if not present:
                conn.send(_hdr(RESP_ERROR_NOENT, path, 0))
                return
            self.rm(text)
            conn.send(_hdr(RESP_OK, path, 0))
        elif kind == CMD_WATCH:
            conn.state["watches"].append(text)
            conn.send(_hdr(RESP_OK, path, 0))
        elif kind == CMD_UNWATCH:
            watches = conn.state["watches"]
            if text in watches:
                watches.remove(text)
                conn.send(_hdr(RESP_OK, path, 0))
            else:
                conn.send(_hdr(RESP_ERROR_NOENT, path, 0))
