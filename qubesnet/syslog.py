"""The local syslog socket, as syslog(3) writes to it: ``<PRI>message`` and a
NUL, in one datagram to ``/dev/log`` (journald or a syslog daemon).

Used by both kinds of logging (qubesnet.logsetup for the ``logging``
package, qubesnet.log for the import-free loggers); it imports neither.
"""

from __future__ import annotations

import socket

SYSLOG_SOCKET = "/dev/log"
LOG_DAEMON = 3  # syslog facility (RFC 5424)
# logging's levels (numbers) -> syslog severity (RFC 5424): crit, err, warning, info; debug below
_SEVERITY = ((50, 2), (40, 3), (30, 4), (20, 6))


def severity(levelno: int) -> int:
    for level, value in _SEVERITY:
        if levelno >= level:
            return value
    return 7


class SyslogSocket:
    """A connection to the syslog socket; OSError when nobody listens."""

    def __init__(self, address: str = SYSLOG_SOCKET, facility: int = LOG_DAEMON) -> None:
        self.address = address
        self.facility = facility
        self.sock = self._connect()

    def _connect(self) -> socket.socket:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
            try:
                sock.connect(self.address)
            except OSError:
                sock.close()
                if kind == socket.SOCK_STREAM:
                    raise
            else:
                return sock
        raise AssertionError("unreachable")

    def send(self, levelno: int, text: str) -> None:
        """One message; a syslog that went away loses it (stderr has it)."""
        data = f"<{self.facility << 3 | severity(levelno)}>{text}\0".encode()
        try:
            try:
                self.sock.send(data)
            except OSError:  # the daemon restarted: once more on a new socket
                self.sock.close()
                self.sock = self._connect()
                self.sock.send(data)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
