"""Logging as Xen hotplug scripts do it: syslog (facility daemon) and stderr.

When ``/var/log/xen`` exists (a real driver domain), messages are appended to
``xen-hotplug.log`` too, where the Xen hotplug scripts send their stderr.

Syslog is written by :class:`SyslogHandler` (qubesnet.syslog: a datagram
to ``/dev/log``) rather than by ``logging.handlers.SysLogHandler``: that
module imports pickle and queue for handlers we never use, which cost
milliseconds on every VM start (``python3 -X importtime``). The ``logging``
package itself stays here: pyroute2's netlink module, which the hotplug
needs, imports it anyway. qubes-setup-dnat-to-ns, which has no such need,
logs without it (qubesnet.log.setup_direct_logging).
"""

from __future__ import annotations

import logging
import os
import sys

from .constants import HOTPLUG_LOG
from .syslog import LOG_DAEMON, SYSLOG_SOCKET, SyslogSocket


class SyslogHandler(logging.Handler):
    """``logging`` records to the local syslog socket (qubesnet.syslog)."""

    def __init__(self, address: str = SYSLOG_SOCKET, facility: int = LOG_DAEMON) -> None:
        super().__init__()
        self.syslog = SyslogSocket(address, facility)  # OSError: nobody listens

    def emit(self, record: logging.LogRecord) -> None:
        self.syslog.send(record.levelno, self.format(record))

    def close(self) -> None:
        self.syslog.close()
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
