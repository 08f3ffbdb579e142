"""Reporting to libxl through XenStore, which it waits on.

Success of ``online``: ``hotplug-status=connected`` (and no stale
``hotplug-error``). Failure: ``hotplug-error`` first, then
``hotplug-status=error``, since libxl reads the message when it sees the status.
"""

from __future__ import annotations

from qubesnet.xenstore import XenStore

MAX_MESSAGE = 1024


class HotplugStatus:
    def __init__(self, xs: XenStore, xenbus_path: str) -> None:
        self.xs = xs
        self.base = xenbus_path

    def connected(self) -> None:
        self.xs.rm(f"{self.base}/hotplug-error")
        self.xs.write(f"{self.base}/hotplug-status", "connected")

    def error(self, message: str) -> None:
        one_line = " ".join(message.split())[:MAX_MESSAGE]
        self.xs.write(f"{self.base}/hotplug-error", one_line)
        self.xs.write(f"{self.base}/hotplug-status", "error")
