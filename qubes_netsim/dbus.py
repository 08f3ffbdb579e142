"""A private D-Bus bus (a real dbus-daemon) and a fake systemd-resolved on it.

The fake owns ``org.freedesktop.resolve1`` and serves the Manager's ``DNS``
property as a(iiay). Tests change it through a control method
(``SetDNS``), which also emits PropertiesChanged as resolved does. Modes
for odd behaviour: a wrong property type, an error reply, or silence.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from ipaddress import ip_address
from typing import Any

RESOLVE1 = "org.freedesktop.resolve1"
PATH = "/org/freedesktop/resolve1"
MANAGER = "org.freedesktop.resolve1.Manager"
CONTROL = "test.qubes.FakeResolved"


class PrivateBus:
    """dbus-daemon on a socket of its own; ``address`` goes in DBUS_SYSTEM_BUS_ADDRESS."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="qnsim-bus-")
        self.address = f"unix:path={os.path.join(self.dir, 'bus')}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> PrivateBus:
        daemon = shutil.which("dbus-daemon")
        if daemon is None:
            raise RuntimeError("dbus-daemon not found (Debian: dbus-daemon)")
        self.proc = subprocess.Popen(
            [daemon, "--session", "--nofork", "--nopidfile", f"--address={self.address}", "--print-address=1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        if not ready or not self.proc.stdout.readline().strip():
            self.stop()
            raise RuntimeError("dbus-daemon did not start")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self) -> Any:
        from jeepney.io.blocking import open_dbus_connection

        return open_dbus_connection(self.address)


def dns_value(entries: Sequence[tuple[int, str]]) -> list[tuple[int, int, bytes]]:
    """[(ifindex, "192.0.2.1"), ...] as resolved's a(iiay)."""
    out = []
    for ifindex, text in entries:
        addr = ip_address(text)
        out.append((ifindex, 2 if addr.version == 4 else 10, addr.packed))
    return out


class FakeResolved:
    """Serve resolve1 on ``bus`` from a background thread."""

    def __init__(self, bus: PrivateBus, entries: Sequence[tuple[int, str]] = ()) -> None:
        self.bus = bus
        self.value: list[tuple[int, int, bytes]] = dns_value(entries)
        self.mode = "normal"  # "wrong-type", "error", "silent"
        self.requests = 0
        self._conn: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> FakeResolved:
        from jeepney.bus_messages import message_bus

        self._conn = self.bus.connect()
        reply = self._conn.send_and_get_reply(message_bus.RequestName(RESOLVE1), timeout=5)
        if reply.body != (1,):
            raise RuntimeError(f"could not own {RESOLVE1}: {reply.body}")
        self._thread = threading.Thread(target=self._serve, name="fake-resolved", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._conn is not None:
            self._conn.close()

    def _serve(self) -> None:
        from jeepney import new_error, new_method_return

        while not self._stop.is_set():
            try:
                msg = self._conn.receive(timeout=0.1)
            except TimeoutError:
                continue
            except (OSError, EOFError):
                return
            if msg.header.message_type.name != "method_call":
                continue
            fields = msg.header.fields
            interface, member = fields.get(2), fields.get(3)  # HeaderFields.interface, member
            if interface == CONTROL and member == "SetDNS":
                self.value = [(int(i), int(f), bytes(a)) for i, f, a in msg.body[0]]
                self._conn.send(new_method_return(msg))
                self._changed()
                continue
            if interface == "org.freedesktop.DBus.Properties" and member in ("Get", "GetAll"):
                self.requests += 1
                if self.mode == "silent":
                    continue
                if self.mode == "error":
                    self._conn.send(new_error(msg, "org.freedesktop.DBus.Error.Failed", "s", ("broken on purpose",)))
                    continue
                variant = ("s", "not a list") if self.mode == "wrong-type" else ("a(iiay)", self.value)
                if member == "Get":
                    self._conn.send(new_method_return(msg, "v", (variant,)))
                else:
                    self._conn.send(new_method_return(msg, "a{sv}", ({"DNS": variant},)))
                continue
            self._conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod"))

    def _changed(self) -> None:
        from jeepney import DBusAddress, new_signal

        emitter = DBusAddress(PATH, interface="org.freedesktop.DBus.Properties")
        signal = new_signal(emitter, "PropertiesChanged", "sa{sv}as", (MANAGER, {"DNS": ("a(iiay)", self.value)}, []))
        self._conn.send(signal)


def set_dns(bus: PrivateBus, entries: Sequence[tuple[int, str]]) -> None:
    """Change the fake's DNS servers from outside, as a network change would."""
    from jeepney import DBusAddress, new_method_call

    with bus.connect() as conn:
        target = DBusAddress(PATH, bus_name=RESOLVE1, interface=CONTROL)
        msg = new_method_call(target, "SetDNS", "a(iiay)", (dns_value(entries),))
        conn.send_and_get_reply(msg, timeout=5)
