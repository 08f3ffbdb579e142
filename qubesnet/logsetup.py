"""Logging as Xen hotplug scripts do it: syslog (facility daemon) and stderr.

When ``/var/log/xen`` exists (a real driver domain), messages are appended to
``xen-hotplug.log`` too, where the Xen hotplug scripts send their stderr.

Syslog is written by :class:`SyslogHandler`, a few lines over a datagram
socket to ``/dev/log``, rather than by ``logging.handlers.SysLogHandler``:
that module imports pickle and queue for handlers we never use, which cost
milliseconds on every VM start (``python3 -X importtime``). The ``logging``
package itself stays: pyroute2's netlink module, which the hotplug needs,
imports it anyway.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from .constants import HOTPLUG_LOG

SYSLOG_SOCKET = "/dev/log"
LOG_DAEMON = 3  # syslog facility (RFC 5424)
# logging level -> syslog severity (RFC 5424): crit, err, warning, info, debug
_SEVERITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def severity(levelno: int) -> int:
    for level, value in _SEVERITY:
        if levelno >= level:
            return value
    return 7


class SyslogHandler(logging.Handler):
    """``<PRI>message`` datagrams to the local syslog socket (journald or a
    syslog daemon), NUL-terminated as BSD syslog(3) clients send them."""

    def __init__(self, address: str = SYSLOG_SOCKET, facility: int = LOG_DAEMON) -> None:
        super().__init__()
        self.address = address
        self.facility = facility
        self.sock = self._connect()  # OSError: nobody listens

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

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = f"<{self.facility << 3 | severity(record.levelno)}>{self.format(record)}\0".encode()
            try:
                self.sock.send(data)
            except OSError:  # the daemon restarted: once more on a new socket
                self.sock.close()
                self.sock = self._connect()
                self.sock.send(data)
        except OSError:
            pass  # syslog gone: stderr still has everything

    def close(self) -> None:
        self.sock.close()
        super().close()


def setup_logging(ident: str, verbose: bool, hotplug_log: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)

    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(f"{ident}: %(message)s"))
    root.addHandler(stderr)

    if os.path.exists(SYSLOG_SOCKET):
        try:
            syslog = SyslogHandler()
        except OSError:
            pass  # no syslog daemon listening: stderr still has everything
        else:
            syslog.setFormatter(logging.Formatter(f"{ident}[{os.getpid()}]: %(message)s"))
            root.addHandler(syslog)

    if hotplug_log and os.path.isdir(os.path.dirname(HOTPLUG_LOG)):
        try:
            logfile = logging.FileHandler(HOTPLUG_LOG, encoding="utf-8")
        except OSError:
            pass
        else:
            logfile.setFormatter(logging.Formatter(f"%(asctime)s {ident}: %(message)s"))
            root.addHandler(logfile)
