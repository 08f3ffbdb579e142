"""inotify watches that keep following a file however it is replaced.

resolv.conf is rarely written in place: resolvers rename a new file over
it, it is often a symlink into /run whose target is itself replaced, and
whole directories come and go (/run/NetworkManager, a VPN client's
directory). Watching the file's inode would go blind at the first rename, so
directories are watched instead, for the one name on the path that matters
in each:

- the directory of every hop of the symlink chain (a re-pointed link, a
  replaced target, a target changed in place);
- where a directory of that chain does not exist, its nearest existing
  ancestor, for the creation of the next component.

After every batch of events the set of watches is derived again from the
file system as it is now. A watch the kernel drops (``IN_IGNORED``: its
directory was removed) and a lost queue (``IN_Q_OVERFLOW``) count as a
change and re-arm everything.
"""

from __future__ import annotations

import ctypes
import os
import struct
from typing import NamedTuple

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED = 0x4000, 0x8000
IN_ONLYDIR = 0x1000000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
DIR_EVENTS = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
              | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
SELF_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED
EVENT = struct.Struct("iIII")
MAX_HOPS = 40  # as the kernel's limit on symlinks followed in one lookup
REARM_ATTEMPTS = 40  # plans made again while the tree keeps changing under the watch


class Event(NamedTuple):
    wd: int
    mask: int
    name: bytes


def parse_events(data: bytes) -> list[Event]:
    """The inotify_event records of one read() (pure)."""
    events = []
    offset = 0
    while offset + EVENT.size <= len(data):
        wd, mask, _cookie, length = EVENT.unpack_from(data, offset)
        start = offset + EVENT.size
        events.append(Event(wd, mask, data[start : start + length].rstrip(b"\0")))
        offset = start + length
    return events


def symlink_chain(path: str) -> list[str]:
    """Absolute paths of every hop from ``path`` to the final target (pure
    apart from readlink): [path, target, target's target, ...]."""
    hops = [os.path.normpath(os.path.abspath(path))]
    while len(hops) <= MAX_HOPS:
        try:
            target = os.readlink(hops[-1])
        except OSError:  # not a link (or gone): the chain ends here
            break
        hops.append(os.path.normpath(os.path.join(os.path.dirname(hops[-1]), target)))
    return hops


def plan_watches(path: str) -> dict[str, set[bytes]]:
    """{directory to watch: names in it that matter} for ``path`` now."""
    wanted: dict[str, set[bytes]] = {}
    for hop in symlink_chain(path):
        child, directory = os.path.basename(hop), os.path.dirname(hop)
        while not os.path.isdir(directory) and directory != os.path.dirname(directory):
            child, directory = os.path.basename(directory), os.path.dirname(directory)
        wanted.setdefault(directory, set()).add(os.fsencode(child))
    return wanted


class Inotify:
    """Directory watches for one path, re-derived after every batch."""

    def __init__(self, path: str) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.path = path
        self.names: dict[int, set[bytes]] = {}  # wd -> names that matter there
        self.rearm()

    def _add(self, directory: str) -> int:
        return int(self._libc.inotify_add_watch(self.fd, os.fsencode(directory), DIR_EVENTS))

    def _remove(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)  # EINVAL if the kernel dropped it already: fine

    def rearm(self, *, from_scratch: bool = False) -> bool:
        """Make the watches those of ``plan_watches`` now; whether the file
        system changed while doing so (the path may have changed unseen).

        A directory planned, then removed or renamed before its watch was
        added (a whole tree swapped under us) fails the add: the plan is
        made again, else nothing would watch the path's new place and the
        watch would go blind for good.
        """
        if from_scratch:
            for wd in list(self.names):
                self._remove(wd)
            self.names.clear()
        raced = False
        for _ in range(REARM_ATTEMPTS):
            wanted: dict[int, set[bytes]] = {}
            complete = True
            for directory, names in plan_watches(self.path).items():
                wd = self._add(directory)
                if wd < 0:
                    complete = False
                    break
                wanted.setdefault(wd, set()).update(names)  # the same inode reached twice gives the same wd
            if complete:
                break
            raced = True
            for wd in set(wanted) - set(self.names):
                self._remove(wd)
        for wd in set(self.names) - set(wanted):
            self._remove(wd)
        self.names = wanted
        return raced

    def read(self) -> bool:
        """Drain pending events, re-arm; whether any may concern the path."""
        hit = rearm_all = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            for event in parse_events(data):
                changed, lost = self.classify(event)
                hit |= changed
                rearm_all |= lost
        raced = self.rearm(from_scratch=rearm_all)
        return hit or raced

    def classify(self, event: Event) -> tuple[bool, bool]:
        """(may concern the path, events were lost: re-arm from scratch)."""
        if event.mask & IN_Q_OVERFLOW:
            return True, True
        if event.mask & SELF_GONE:
            # A directory of ours removed or moved, or its watch dropped by
            # the kernel. IN_IGNORED after our own inotify_rm_watch concerns
            # a wd no longer in ``names``: no change, no feedback loop.
            ours = event.wd in self.names
            if event.mask & IN_IGNORED:
                self.names.pop(event.wd, None)
            return ours, False
        return event.name in self.names.get(event.wd, ()), False

    def close(self) -> None:
        os.close(self.fd)
