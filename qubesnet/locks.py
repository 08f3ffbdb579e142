"""Serialise work on shared objects across concurrent hotplug processes.

Many VMs start at once, so many hotplug processes run together. Work on
different vifs and addresses proceeds in parallel; only processes touching
the same vif or the same client address wait for each other. Each key maps
to one byte of a single lock file, locked with fcntl (POSIX record locks):
released by the kernel when the process exits, even on SIGKILL, and nothing
accumulates on disk. Keys are taken in a fixed order, so two processes
never wait for each other in a cycle.
"""

from __future__ import annotations

import fcntl
import os
import signal
import zlib
from collections.abc import Iterable
from types import FrameType

from .errors import ApplyError

SLOTS = 1 << 20


class _LockTimeoutError(Exception):
    pass


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _LockTimeoutError


def slot(key: str) -> int:
    return zlib.crc32(key.encode()) % SLOTS


class KeyLocks:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1

    def acquire(self, keys: Iterable[str], timeout: float) -> None:
        """Take an exclusive lock on every key, waiting at most ``timeout`` s."""
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            for offset in sorted({slot(key) for key in keys}):
                fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, offset)
        except _LockTimeoutError:
            self.release()
            raise ApplyError(
                f"waited {timeout:g} s for another hotplug process holding {self.path}; "
                "check for a hung vif-route-qubes process"
            ) from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # drops every lock this process holds on the file
            self._fd = -1
