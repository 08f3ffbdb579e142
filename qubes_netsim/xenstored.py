"""A XenStore daemon double speaking the real wire protocol on a unix socket.

Faithful enough for Debian's xenstore-read, xenstore-write, xenstore-ls,
xenstore-list, xenstore-rm and xenstore-exists (``XENSTORED_PATH=<socket>``):
READ, WRITE, MKDIR, RM, DIRECTORY, DIRECTORY_PART, GET_PERMS, SET_PERMS,
WATCH (with the initial event), UNWATCH, TRANSACTION_START/END,
GET_DOMAIN_PATH and RESET_WATCHES. Paths are checked as xenstored does
(characters, length); relative paths resolve against the connection's
domain home ``/local/domain/<domid>``. Transactions are accepted but not
isolated: every request applies at once, which no client here relies on.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from .server import Connection, UnixServer

HEADER = struct.Struct("<IIII")
MAX_PAYLOAD = 4096
PATH_RE = re.compile(r"/|(/[A-Za-z0-9_@-]+)+")
REL_PATH_RE = re.compile(r"[A-Za-z0-9_@-]+(/[A-Za-z0-9_@-]+)*")

DIRECTORY, READ, GET_PERMS, WATCH, UNWATCH = 1, 2, 3, 4, 5
TRANSACTION_START, TRANSACTION_END = 6, 7
GET_DOMAIN_PATH, WRITE, MKDIR, RM, SET_PERMS = 10, 11, 12, 13, 14
WATCH_EVENT, ERROR, RESET_WATCHES, DIRECTORY_PART = 15, 16, 21, 22


class XsError(Exception):
    def __init__(self, errno_name: str) -> None:
        super().__init__(errno_name)
        self.errno_name = errno_name


@dataclass
class Node:
    value: bytes = b""
    children: dict[str, Node] = field(default_factory=dict)
    perms: bytes = b"n0\0"


class XenStoreDouble(UnixServer):
    name = "xenstored"

    def __init__(self, path: str, domid: int = 0) -> None:
        super().__init__(path)
        self.domid = domid
        self.root = Node()
        self._generation = 0
        self._next_tx = 1
        self.error_for: dict[tuple[int, str], str] = {}  # (op, abs path) -> errno to answer
        self.freeze_on: tuple[int, str] | None = None  # (op, abs path): stop answering from there on

    # --- direct access for tests and the simulated environment ---

    def home(self) -> str:
        return f"/local/domain/{self.domid}"

    def absolute(self, path: str) -> str:
        if path.startswith("/"):
            if not PATH_RE.fullmatch(path) or len(path) > 3072:
                raise XsError("EINVAL")
            return path
        if not REL_PATH_RE.fullmatch(path) or len(path) > 2048:
            raise XsError("EINVAL")
        return f"{self.home()}/{path}"

    def _walk(self, abs_path: str, create: bool = False) -> Node | None:
        node = self.root
        for part in [p for p in abs_path.split("/") if p]:
            child = node.children.get(part)
            if child is None:
                if not create:
                    return None
                child = node.children[part] = Node()
            node = child
        return node

    def read(self, path: str) -> bytes | None:
        with self.lock:
            node = self._walk(self.absolute(path))
            return None if node is None else node.value

    def write(self, path: str, value: bytes | str) -> None:
        data = value.encode() if isinstance(value, str) else value
        with self.lock:
            abs_path = self.absolute(path)
            node = self._walk(abs_path, create=True)
            assert node is not None
            node.value = data
            self._changed(abs_path)

    def rm(self, path: str) -> None:
        with self.lock:
            abs_path = self.absolute(path)
            parent_path, _, name = abs_path.rstrip("/").rpartition("/")
            parent = self._walk(parent_path or "/")
            if parent is None:
                raise XsError("ENOENT")
            if parent.children.pop(name, None) is not None:
                self._changed(abs_path)

    def directory(self, path: str) -> list[str] | None:
        with self.lock:
            node = self._walk(self.absolute(path))
            return None if node is None else list(node.children)

    def dump(self, path: str = "/") -> dict[str, bytes]:
        """Every node under ``path`` as {absolute path: value}."""
        out: dict[str, bytes] = {}
        with self.lock:
            start = self.absolute(path)
            node = self._walk(start)

            def visit(prefix: str, n: Node) -> None:
                out[prefix or "/"] = n.value
                for name, child in n.children.items():
                    visit(f"{prefix}/{name}" if prefix != "/" else f"/{name}", child)

            if node is not None:
                visit(start.rstrip("/") if start != "/" else "/", node)
        return out

    # --- watches ---

    def _changed(self, abs_path: str) -> None:
        self._generation += 1
        for conn in list(self._connections):
            for watch_path, token in conn.state.get("watches", []):
                if abs_path == watch_path or abs_path.startswith(watch_path.rstrip("/") + "/"):
                    self._send(conn, WATCH_EVENT, 0, 0, f"{abs_path}\0{token}\0".encode())
                elif watch_path.startswith(abs_path.rstrip("/") + "/"):
                    self._send(conn, WATCH_EVENT, 0, 0, f"{watch_path}\0{token}\0".encode())

    # --- protocol ---

    @staticmethod
    def _send(conn: Connection, kind: int, req_id: int, tx_id: int, payload: bytes) -> None:
        conn.send(HEADER.pack(kind, req_id, tx_id, len(payload)) + payload)

    def handle(self, conn: Connection) -> None:
        conn.state["watches"] = []
        while True:
            header = conn.read_exact(HEADER.size)
            if header is None:
                return
            kind, req_id, tx_id, length = HEADER.unpack(header)
            if length > MAX_PAYLOAD:
                return  # xenstored drops a client sending oversized messages
            payload = conn.read_exact(length) if length else b""
            if payload is None:
                return
            with self.lock:
                self.requests.append((kind, payload))
                if self.freeze_on is not None and self.freeze_on[0] == kind:
                    target = payload.split(b"\0", 1)[0].decode("ascii", "replace")
                    try:
                        if self.absolute(target) == self.freeze_on[1]:
                            self.freeze()  # a daemon hanging in the middle of a run
                    except XsError:
                        pass
            self.wait_if_frozen()
            try:
                with self.lock:
                    reply_kind, reply = self._dispatch(conn, kind, payload)
            except XsError as exc:
                reply_kind, reply = ERROR, exc.errno_name.encode() + b"\0"
            except (UnicodeDecodeError, ValueError):
                reply_kind, reply = ERROR, b"EINVAL\0"
            self._send(conn, reply_kind, req_id, tx_id, reply)
            if kind == WATCH and reply_kind == WATCH:
                watch_path, token = conn.state["watches"][-1]
                self._send(conn, WATCH_EVENT, 0, 0, f"{watch_path}\0{token}\0".encode())

    def _dispatch(self, conn: Connection, kind: int, payload: bytes) -> tuple[int, bytes]:
        args = payload.split(b"\0")
        first = args[0].decode("ascii") if kind not in (WRITE,) else payload.split(b"\0", 1)[0].decode("ascii")
        if kind in (READ, WRITE, MKDIR, RM, DIRECTORY, DIRECTORY_PART, GET_PERMS, SET_PERMS, WATCH, UNWATCH):
            if not first:
                raise XsError("EINVAL")
            injected = self.error_for.get((kind, self.absolute(first) if not first.startswith("@") else first))
            if injected:
                raise XsError(injected)
        if kind == READ:
            value = self.read(first)
            if value is None:
                raise XsError("ENOENT")
            return READ, value
        if kind == WRITE:
            raw_path, _, value = payload.partition(b"\0")
            self.write(raw_path.decode("ascii"), value)
            return WRITE, b"OK\0"
        if kind == MKDIR:
            with self.lock:
                abs_path = self.absolute(first)
                if self._walk(abs_path) is None:
                    self._walk(abs_path, create=True)
                    self._changed(abs_path)
            return MKDIR, b"OK\0"
        if kind == RM:
            self.rm(first)
            return RM, b"OK\0"
        if kind == DIRECTORY:
            names = self.directory(first)
            if names is None:
                raise XsError("ENOENT")
            return DIRECTORY, b"".join(n.encode() + b"\0" for n in names)
        if kind == DIRECTORY_PART:
            names = self.directory(first)
            if names is None:
                raise XsError("ENOENT")
            offset = int(args[1]) if len(args) > 1 and args[1] else 0
            blob = b"".join(n.encode() + b"\0" for n in names)
            return DIRECTORY_PART, f"{self._generation}\0".encode() + blob[offset:] + b"\0"
        if kind == GET_PERMS:
            node = self._walk(self.absolute(first))
            if node is None:
                raise XsError("ENOENT")
            return GET_PERMS, node.perms
        if kind == SET_PERMS:
            node = self._walk(self.absolute(first))
            if node is None:
                raise XsError("ENOENT")
            node.perms = b"\0".join(args[1:-1]) + b"\0" if len(args) > 2 else node.perms
            return SET_PERMS, b"OK\0"
        if kind == WATCH:
            token = args[1].decode("ascii") if len(args) > 1 else ""
            path = first if first.startswith("@") else self.absolute(first)
            conn.state["watches"].append((path, token))
            return WATCH, b"OK\0"
        if kind == UNWATCH:
            token = args[1].decode("ascii") if len(args) > 1 else ""
            path = first if first.startswith("@") else self.absolute(first)
            watches = conn.state["watches"]
            if (path, token) not in watches:
                raise XsError("ENOENT")
            watches.remove((path, token))
            return UNWATCH, b"OK\0"
        if kind == TRANSACTION_START:
            tx = self._next_tx
            self._next_tx += 1
            return TRANSACTION_START, f"{tx}\0".encode()
        if kind == TRANSACTION_END:
            return TRANSACTION_END, b"OK\0"
        if kind == GET_DOMAIN_PATH:
            return GET_DOMAIN_PATH, f"/local/domain/{int(first)}\0".encode()
        if kind == RESET_WATCHES:
            conn.state["watches"].clear()
            return RESET_WATCHES, b"OK\0"
        raise XsError("ENOSYS")
