"""A threaded unix-socket server base for the protocol doubles.

Each double runs in a background thread of the process that owns it (a test
or the demo) or as a process of its own (``qubes-netsim xenstored``). The
fault knobs shared by both doubles live here: ``freeze`` (stop answering,
to test time-outs) and a log of every request received.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any


class Connection:
    """One client connection: reading exact sizes, writing under a lock."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.send_lock = threading.Lock()
        self.state: dict[str, Any] = {}

    def read_exact(self, size: int) -> bytes | None:
        data = bytearray()
        while len(data) < size:
            try:
                chunk = self.sock.recv(size - len(data))
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def send(self, data: bytes) -> None:
        with self.send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                pass  # client gone; its thread notices on the next read


class UnixServer:
    name = "double"

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.RLock()  # guards the data of the double
        self.requests: list[tuple[Any, ...]] = []
        self._frozen = threading.Event()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[Connection] = set()

    # --- lifecycle ---

    def start(self) -> UnixServer:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        os.chmod(self.path, 0o600)
        listener.listen(128)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._frozen.clear()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        for conn in list(self._connections):
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Run in the foreground (for the command-line use of a double)."""
        self.start()
        try:
            self._stopping.wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # --- fault knobs ---

    def freeze(self) -> None:
        """Keep connections open but stop answering (a hung daemon)."""
        self._frozen.set()

    def thaw(self) -> None:
        self._frozen.clear()

    @property
    def frozen(self) -> bool:
        return self._frozen.is_set()

    def wait_if_frozen(self) -> None:
        while self._frozen.is_set() and not self._stopping.is_set():
            self._stopping.wait(0.05)

    # --- internals ---

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            conn = Connection(sock)
            self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name=f"{self.name}-conn", daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        try:
            self.handle(conn)
        finally:
            self._connections.discard(conn)
            conn.sock.close()

    def handle(self, conn: Connection) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
