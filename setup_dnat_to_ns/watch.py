"""Watch mode: re-derive and re-apply when the uplink's DNS changes.

Triggers: any change of resolv.conf (the file is usually replaced by a
rename, so its directory is watched, and the directory of its symlink
target too) and systemd-resolved's PropertiesChanged or a restart of
resolved (NameOwnerChanged). Bursts are coalesced: the chain is recomputed
once things have been quiet for a moment, and at the latest one second
after the first event. This covers VPN clients that change DNS without
telling NetworkManager.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import selectors
import struct
import time
from typing import Any

from qubesnet.errors import QubesNetError
from qubesnet.nft import Nft

from . import resolved, systemd
from .run import APPLIED, run_once

log = logging.getLogger("qubes-setup-dnat-to-ns")

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
DIR_EVENTS = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
EVENT = struct.Struct("iIII")
QUIET, MAX_DELAY, BUS_RETRY = 0.15, 0.9, 30.0


class Inotify:
    """The directories holding resolv.conf and its symlink target, watched."""

    def __init__(self, path: str) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.path = path
        self.names: set[bytes] = set()
        self._watched: dict[int, str] = {}
        self.refresh()

    def refresh(self) -> None:
        """(Re)watch the directories of the path and of where it points now."""
        targets = {os.path.abspath(self.path), os.path.realpath(self.path)}
        self.names = {os.path.basename(t).encode() for t in targets}
        for directory in {os.path.dirname(t) for t in targets}:
            if directory in self._watched.values() or not os.path.isdir(directory):
                continue
            wd = self._libc.inotify_add_watch(self.fd, directory.encode(), DIR_EVENTS)
            if wd >= 0:
                self._watched[wd] = directory

    def relevant_events(self) -> bool:
        """Drain pending events; whether one concerned resolv.conf."""
        hit = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return hit
            offset = 0
            while offset + EVENT.size <= len(data):
                wd, _mask, _cookie, length = EVENT.unpack_from(data, offset)
                name = data[offset + EVENT.size : offset + EVENT.size + length].rstrip(b"\0")
                offset += EVENT.size + length
                if name in self.names:
                    hit = True

    def close(self) -> None:
        os.close(self.fd)


class ResolvedSignals:
    """A system-bus connection subscribed to resolved's changes, if possible."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.conn: Any = None
        self.next_try = 0.0

    def connect(self) -> bool:
        if self.conn is not None or time.monotonic() < self.next_try or not resolved.bus_present():
            return self.conn is not None
        try:
            from jeepney import MatchRule, message_bus

            conn = resolved.open_system_bus(self.timeout)
            rules = [
                MatchRule(type="signal", sender=resolved.RESOLVE1_NAME, interface="org.freedesktop.DBus.Properties",
                          member="PropertiesChanged", path=resolved.RESOLVE1_PATH),
                MatchRule(type="signal", sender="org.freedesktop.DBus", interface="org.freedesktop.DBus",
                          member="NameOwnerChanged", path="/org/freedesktop/DBus"),
            ]
            rules[1].add_arg_condition(0, resolved.RESOLVE1_NAME)
            for rule in rules:
                conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - any bus trouble: retry later, inotify goes on
            log.info("not watching systemd-resolved for now: %s", exc)
            self.next_try = time.monotonic() + BUS_RETRY
            return False
        self.conn = conn
        return True

    def drain(self) -> bool:
        """Read what arrived; whether a relevant signal did. Drops a dead bus."""
        hit = False
        try:
            while True:
                msg = self.conn.receive(timeout=0)
                if msg.header.fields and msg.header.message_type.name == "signal":
                    hit = True
        except TimeoutError:
            return hit
        except (OSError, EOFError, ConnectionError) as exc:
            log.info("system bus connection lost: %s", exc)
            self.close()
            self.next_try = time.monotonic() + 1.0
            return True  # resolved may be gone: recompute (falls back to resolv.conf)

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
            self.conn = None


def _apply(args: argparse.Namespace, nft: Nft) -> None:
    try:
        if run_once(args, nft) == APPLIED:
            systemd.request("try-restart", "qubes-updates-proxy.service")
    except QubesNetError as exc:
        log.error("%s", exc)


def watch(args: argparse.Namespace) -> int:
    inotify = Inotify(args.resolv_conf)
    signals = ResolvedSignals(args.timeout)
    selector = selectors.DefaultSelector()
    selector.register(inotify.fd, selectors.EVENT_READ, "inotify")
    log.info("watching %s and systemd-resolved", args.resolv_conf)
    nft = Nft.shared()  # one libnftables context for the life of the watch
    _apply(args, nft)
    pending_since: float | None = None
    last_event = 0.0
    try:
        while True:
            if signals.connect() and signals.conn.sock.fileno() not in selector.get_map():
                selector.register(signals.conn.sock, selectors.EVENT_READ, "dbus")
            if pending_since is None:
                timeout = BUS_RETRY if signals.conn is None else None
            else:
                now = time.monotonic()
                timeout = max(0.0, min(last_event + QUIET, pending_since + MAX_DELAY) - now)
            events = selector.select(timeout)
            for key, _ in events:
                if key.data == "inotify":
                    hit = inotify.relevant_events()
                    inotify.refresh()
                else:
                    hit = signals.drain()
                    if signals.conn is None:
                        selector.unregister(key.fileobj)
                if hit:
                    last_event = time.monotonic()
                    pending_since = pending_since or last_event
            now = time.monotonic()
            if pending_since is not None and (now >= last_event + QUIET or now >= pending_since + MAX_DELAY):
                pending_since = None
                _apply(args, nft)
    except KeyboardInterrupt:
        return 0
    finally:
        signals.close()
        inotify.close()
        selector.close()
