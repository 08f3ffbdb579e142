"""A byte stream with deadlines, shared by the XenStore and QubesDB clients.

Both daemons are reached through a file descriptor (a unix socket, or the
``/dev/xen/xenbus`` character device) and both must never hang a hotplug
script: every read and write here is bounded by a deadline.
"""

from __future__ import annotations

import os
import select
import time

from .errors import StoreError


class Stream:
    """Blocking-free reads and writes on one descriptor, each under a deadline."""

    def __init__(self, fd: int, name: str, timeout: float) -> None:
        self.fd = fd
        self.name = name
        self.timeout = timeout
        self._buffer = bytearray()

    def deadline(self) -> float:
        return time.monotonic() + self.timeout

    def _wait(self, deadline: float, for_write: bool) -> None:
        remaining = deadline - time.monotonic()
        if remaining > 0:
            rlist, wlist = ([], [self.fd]) if for_write else ([self.fd], [])
            ready = select.select(rlist, wlist, [], remaining)
            if ready[0] or ready[1]:
                return
        raise StoreError(
            f"{self.name} did not answer within {self.timeout:g} s; "
            "check that the daemon is running"
        )

    def readable(self, deadline: float) -> bool:
        """Whether data arrives before ``deadline`` (buffered data counts)."""
        if self._buffer:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        return bool(select.select([self.fd], [], [], remaining)[0])

    def write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            self._wait(deadline, for_write=True)
            try:
                written = os.write(self.fd, view)
            except OSError as exc:
                raise StoreError(f"{self.name}: write failed: {exc.strerror}") from exc
            view = view[written:]

    def read_exact(self, size: int, deadline: float) -> bytes:
        while len(self._buffer) < size:
            self._wait(deadline, for_write=False)
            try:
                chunk = os.read(self.fd, 65536)
            except OSError as exc:
                raise StoreError(f"{self.name}: read failed: {exc.strerror}") from exc
            if not chunk:
                raise StoreError(f"{self.name} closed the connection")
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def connect_unix(path: str, name: str, timeout: float) -> Stream:
    """Connect to a unix stream socket, bounded by ``timeout``."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise StoreError(f"cannot connect to {name} at {path}: {reason}") from exc
    sock.setblocking(False)
    return Stream(sock.detach(), name, timeout)
