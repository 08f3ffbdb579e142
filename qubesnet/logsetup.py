"""Logging as Xen hotplug scripts do it: syslog (facility daemon) and stderr.

When ``/var/log/xen`` exists (a real driver domain), messages are appended to
``xen-hotplug.log`` too, where the Xen hotplug scripts send their stderr.
"""

from __future__ import annotations

import logging
import os
import sys

from .constants import HOTPLUG_LOG


def setup_logging(ident: str, verbose: bool, hotplug_log: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)

    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(f"{ident}: %(message)s"))
    root.addHandler(stderr)

    if os.path.exists("/dev/log"):
        from logging.handlers import SysLogHandler

        try:
            syslog = SysLogHandler("/dev/log", facility=SysLogHandler.LOG_DAEMON)
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

