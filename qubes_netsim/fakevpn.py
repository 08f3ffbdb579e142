"""A stand-in VPN plugin for the real NetworkManager of qubes_netsim.nm.

NetworkManager drives a VPN through a plugin: a D-Bus service named in a
``.name`` file of ``/etc/NetworkManager/VPN`` (or ``/usr/lib/...``),
activated by the system bus, which implements
``org.freedesktop.NetworkManager.VPN.Plugin`` on
``/org/freedesktop/NetworkManager/VPN/Plugin``: NetworkManager asks
``NeedSecrets``, then ``ConnectInteractive`` (or ``Connect``); the plugin
answers with the signals ``Config`` (the VPN gateway, which families),
``Ip4Config`` (address, prefix, DNS servers) and ``StateChanged``; on
``Disconnect`` it stops. This one tunnels nothing: it hands NetworkManager a
fixed configuration (no tunnel device: the addresses go on the uplink, as
for an IPsec plugin), which is all the dispatcher cares about: a VPN
connection with its own DNS servers going up and down, without a server.

``install(manager, dns)`` puts the plugin, its bus activation file and a
``vpn`` connection profile into a SimNetworkManager before it starts;
``nmcli connection up vpn`` then brings it up. Run as a program (by the
bus), this module is the plugin; it logs the calls it gets to the file
named by its first argument.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import sys
import uuid
from typing import Any

SERVICE = "org.qubesos.test.FakeVpn"
PATH = "/org/freedesktop/NetworkManager/VPN/Plugin"
INTERFACE = "org.freedesktop.NetworkManager.VPN.Plugin"
CONNECTION = "vpn"
# NMVpnServiceState
STARTING, STARTED, STOPPED = 3, 4, 6
ADDRESS, PREFIX = "10.200.0.2", 24


def _u32(address: str) -> int:
    """An IPv4 address as NetworkManager reads a ``u``: in_addr_t, network order in memory."""
    return int(struct.unpack("=I", ipaddress.IPv4Address(address).packed)[0])


def install(manager: Any, *, gateway: str, dns: list[str]) -> None:
    """Plugin, activation and profile into ``manager`` (a SimNetworkManager, not started)."""
    from . import nm

    plugin = os.path.abspath(__file__)
    log = os.path.join(manager.dir, "fakevpn.log")
    program = os.path.join(manager.dir, "fakevpn-service")
    manager._write("fakevpn-service", (
        "#!/bin/sh\n"
        f"exec {nm._quote(sys.executable)} {nm._quote(plugin)} {nm._quote(log)} "
        f"{nm._quote(gateway)} {nm._quote(','.join(dns))}\n"
    ), 0o755)
    manager._write(os.path.join("etc-nm", "VPN", "fakevpn.name"), (
        "[VPN Connection]\n"
        "name=fakevpn\n"
        f"service={SERVICE}\n"
        f"program={program}\n"
        "supports-multiple-connections=false\n"
    ))
    manager._write(os.path.join("services", f"{SERVICE}.service"), (
        f"[D-BUS Service]\nName={SERVICE}\nExec={program}\nUser=root\n"
    ))
    manager._write(os.path.join("etc-nm", "system-connections", f"{CONNECTION}.nmconnection"), "\n".join([
        "[connection]", f"id={CONNECTION}", f"uuid={uuid.uuid4()}", "type=vpn", "autoconnect=false", "",
        "[vpn]", f"service-type={SERVICE}", "", "[ipv4]", "method=auto", "", "[ipv6]", "method=disabled", "",
    ]), 0o600)


def serve(log_path: str, gateway: str, dns: list[str]) -> None:  # pragma: no cover - runs under the bus
    from jeepney import DBusAddress, HeaderFields, MessageType, new_error, new_method_return, new_signal
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import open_dbus_connection

    here = DBusAddress(PATH, interface=INTERFACE)

    def log(text: str) -> None:
        with open(log_path, "a") as handle:
            handle.write(text + "\n")

    def signal(conn: Any, name: str, signature: str, *body: Any) -> None:
        conn.send(new_signal(here, name, signature, body))

    with open_dbus_connection(bus="SYSTEM") as conn:
        conn.send_and_get_reply(message_bus.RequestName(SERVICE))
        log("serving")
        while True:
            msg = conn.receive()
            if msg.header.message_type != MessageType.method_call:
                continue
            member = msg.header.fields.get(HeaderFields.member)
            log(f"call {member}")
            if member == "NeedSecrets":
                conn.send(new_method_return(msg, "s", ("",)))
            elif member in ("Connect", "ConnectInteractive"):
                conn.send(new_method_return(msg))
                signal(conn, "StateChanged", "u", STARTING)
                signal(conn, "Config", "a{sv}", {
                    "gateway": ("u", _u32(gateway)), "has-ip4": ("b", True), "has-ip6": ("b", False),
                })
                signal(conn, "Ip4Config", "a{sv}", {
                    "address": ("u", _u32(ADDRESS)), "prefix": ("u", PREFIX),
                    "dns": ("au", [_u32(server) for server in dns]), "never-default": ("b", True),
                })
                signal(conn, "StateChanged", "u", STARTED)
            elif member == "Disconnect":
                conn.send(new_method_return(msg))
                signal(conn, "StateChanged", "u", STOPPED)
                log("stopped")
                return
            elif member in ("SetConfig", "SetIp4Config", "SetIp6Config", "SetFailure", "NewSecrets"):
                conn.send(new_method_return(msg))
            else:
                conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (f"no {member}",)))


if __name__ == "__main__":  # pragma: no cover
    serve(sys.argv[1], sys.argv[2], [s for s in sys.argv[3].split(",") if s])
