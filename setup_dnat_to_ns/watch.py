"""Watch mode: re-derive and re-apply when the uplink's DNS changes.

Triggers: any change of resolv.conf however it happens (``inotify``: the
file replaced, written, its symlink re-pointed, its directory or its
target's removed and recreated; a lost inotify queue counts as a change) and
systemd-resolved's PropertiesChanged or a restart of resolved
(NameOwnerChanged), reconnecting to the system bus when it comes back.
Bursts are coalesced (``debounce``): the chain is re-derived once things
have been quiet for a moment, and at the latest 0.6 s after the first
event. This covers VPN clients that change DNS without telling
NetworkManager.
"""

from __future__ import annotations

import selectors
import time
from typing import Any

from qubesnet.errors import QubesNetError
from qubesnet.log import get_logger
from qubesnet.nft import Nft

from . import resolved, systemd
from .debounce import Debounce
from .inotify import Inotify
from .run import APPLIED, run_once

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .args import Args

log = get_logger("qubes-setup-dnat-to-ns")

BUS_RETRY_FIRST, BUS_RETRY_MAX = 1.0, 30.0


class ResolvedSignals:
    """A system-bus connection subscribed to resolved's changes, if possible."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.conn: Any = None
        self.next_try = 0.0
        self.backoff = BUS_RETRY_FIRST

    def _later(self, now: float) -> None:
        """No bus for now: try again after the back-off (never in a busy loop)."""
        self.next_try = now + self.backoff
        self.backoff = min(self.backoff * 2, BUS_RETRY_MAX)

    def connect(self) -> bool:
        if self.conn is not None:
            return True
        now = time.monotonic()
        if now < self.next_try:
            return False
        if not resolved.bus_present():
            self._later(now)
            return False
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
        except Exception as exc:
            log.info("not watching systemd-resolved for now: %s", exc)
            self._later(now)
            return False
        self.conn = conn
        self.backoff = BUS_RETRY_FIRST
        return True

    def retry_in(self, now: float) -> float | None:
        """Seconds until the next connection attempt; None when connected."""
        return None if self.conn is not None else max(0.0, self.next_try - now)

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
            self.next_try = time.monotonic() + BUS_RETRY_FIRST
            return True  # resolved may be gone: recompute (falls back to resolv.conf)

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
            self.conn = None


def _apply(args: Args, nft: Nft) -> bool:
    """One pass; whether it worked (a failure is retried by the debounce)."""
    try:
        if run_once(args, nft) == APPLIED:
            systemd.request("try-restart", "qubes-updates-proxy.service")
    except QubesNetError as exc:
        log.error("%s", exc)
        return False
    return True


def _earliest(*timeouts: float | None) -> float | None:
    known = [t for t in timeouts if t is not None]
    return min(known) if known else None


def watch(args: Args) -> int:
    inotify = Inotify(args.resolv_conf)
    signals = ResolvedSignals(args.timeout)
    selector = selectors.DefaultSelector()
    selector.register(inotify.fd, selectors.EVENT_READ, "inotify")
    log.info("watching %s and systemd-resolved", args.resolv_conf)
    nft = Nft.shared()  # one libnftables context for the life of the watch
    state = Debounce().done(time.monotonic(), _apply(args, nft))
    bus: Any = None
    try:
        while True:
            if signals.connect() and bus is not signals.conn:
                bus = signals.conn
                selector.register(bus.sock, selectors.EVENT_READ, "dbus")
                # resolved may have changed while we were not listening.
                state = state.event(time.monotonic())
            now = time.monotonic()
            for key, _ in selector.select(_earliest(state.timeout(now), signals.retry_in(now))):
                if key.data == "inotify":
                    hit = inotify.read()
                else:
                    hit = signals.drain()
                    if signals.conn is None:
                        selector.unregister(key.fileobj)
                        bus = None
                if hit:
                    state = state.event(time.monotonic())
            now = time.monotonic()
            if state.due(now):
                state = state.done(time.monotonic(), _apply(args, nft))
    except KeyboardInterrupt:
        return 0
    finally:
        signals.close()
        inotify.close()
        selector.close()
