"""systemd-resolved over D-Bus (jeepney: pure Python, imported only when used).

A missing bus, a missing resolved, a time-out or an odd reply is never an
error here: the caller falls back to /etc/resolv.conf.

Importing jeepney and opening the bus cost about 10 ms, paid on every
dispatcher event, so :func:`may_answer` first looks for what a running
resolved leaves behind without a message: the system bus's socket and
resolved's runtime directory (``RuntimeDirectory=systemd/resolve`` in its
unit: systemd creates it before resolved starts and removes it when it
stops). A bus named in ``DBUS_SYSTEM_BUS_ADDRESS`` is asked whatever the
directory says: whoever set it said where to ask.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RESOLVE1_NAME = "org.freedesktop.resolve1"
RESOLVE1_PATH = "/org/freedesktop/resolve1"
RESOLVE1_MANAGER = "org.freedesktop.resolve1.Manager"
DEFAULT_SYSTEM_BUS = "unix:path=/var/run/dbus/system_bus_socket"
RESOLVED_RUNTIME_DIR = "/run/systemd/resolve"


def system_bus_address() -> str:
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS


def bus_present() -> bool:
    """Cheap check before importing anything: is there a socket to talk to?"""
    address = system_bus_address()
    for part in address.split(";"):
        kind, _, params = part.partition(":")
        values = dict(p.split("=", 1) for p in params.split(",") if "=" in p)
        if kind == "unix" and "path" in values:
            if os.path.exists(values["path"]):
                return True
        elif kind:
            return True  # abstract sockets, tcp: let jeepney try
    return False


def may_answer() -> tuple[bool, str]:
    """Whether org.freedesktop.resolve1 can answer, by cheap checks only;
    when not, why not."""
    if not bus_present():
        return False, "no system bus"
    if not os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") and not os.path.isdir(RESOLVED_RUNTIME_DIR):
        return False, f"systemd-resolved is not running (no {RESOLVED_RUNTIME_DIR})"
    return True, ""


def open_system_bus(timeout: float) -> Any:
    from jeepney.io.blocking import open_dbus_connection

    return open_dbus_connection(bus="SYSTEM", auth_timeout=timeout)


def query_dns(timeout: float) -> tuple[object | None, str]:
    """(value of resolved's DNS property, or None; why None)."""
    ask, why = may_answer()
    if not ask:
        return None, why
    try:
        from jeepney import DBusAddress, MessageType, Properties

        with open_system_bus(timeout) as conn:
            address = DBusAddress(RESOLVE1_PATH, bus_name=RESOLVE1_NAME, interface=RESOLVE1_MANAGER)
            reply = conn.send_and_get_reply(Properties(address).get("DNS"), timeout=timeout)
    except (OSError, TimeoutError, ValueError, KeyError) as exc:
        return None, f"system bus unreachable ({type(exc).__name__}: {exc})"
    except Exception as exc:
        return None, f"system bus unusable ({type(exc).__name__}: {exc})"
    if reply.header.message_type != MessageType.method_return:
        detail = reply.body[0] if reply.body else ""
        return None, f"systemd-resolved not available ({detail})"
    try:
        signature, value = reply.body[0]
    except (IndexError, TypeError, ValueError):
        return None, "systemd-resolved sent an odd reply"
    if signature != "a(iiay)":
        return None, f"systemd-resolved's DNS property has type {signature[:32]!r}"
    return value, ""
