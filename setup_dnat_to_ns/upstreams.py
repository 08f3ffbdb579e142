"""Upstream DNS servers: where they come from and which are usable (pure).

Sources, in order: systemd-resolved's ``DNS`` property (only its global
entries when it has any), else the ``nameserver`` lines of /etc/resolv.conf.
A server is usable for the virtual addresses of its own family when client
VMs can reach it through a DNAT: not loopback (the 127.0.0.53 stub lives in
the netvm only), not link-local (a DNAT cannot name the interface such an
address belongs to), and a unicast host address by the rules client
addresses follow (``qubesnet.validate.why_not_host``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address

from qubesnet.records import Record
from qubesnet.validate import why_not_host

MAX_SERVERS = 16
AF_INET, AF_INET6 = 2, 10


class Upstream(Record):
    """A DNS server; ``origin`` for --status and logs ("/etc/resolv.conf line 3",
    "systemd-resolved, global")."""

    addr: IPv4Address | IPv6Address
    origin: str


def parse_resolv_conf(text: str, origin: str = "/etc/resolv.conf") -> tuple[list[Upstream], list[str]]:
    """``nameserver`` entries in file order, and one note per line ignored."""
    servers: list[Upstream] = []
    notes: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0] != "nameserver":
            continue
        if len(words) < 2:
            notes.append(f"{origin} line {number}: nameserver without an address")
            continue
        value = words[1]
        try:
            addr = ipaddress.ip_address(value.split("%", 1)[0])
        except ValueError:
            notes.append(f"{origin} line {number}: not an address: {value[:64]!r}")
            continue
        if len(servers) >= MAX_SERVERS:
            notes.append(f"{origin} line {number}: more than {MAX_SERVERS} servers, ignored")
            continue
        servers.append(Upstream(addr, f"{origin} line {number}"))
    return servers, notes


def parse_resolved_dns(value: object) -> tuple[list[Upstream], list[str]]:
    """systemd-resolved's ``DNS`` property, a(iiay): the global entries
    (interface index 0) alone when there is any, else the per-link ones.

    Per-link servers beside global ones are left out entirely, for both
    address families: a VPN that sets a global resolver (Tailscale's
    100.100.100.100) relies on every query going there; a per-link server
    used for some of them would bypass it (contract: setup-dnat-to-ns).
    """
    servers: list[tuple[bool, Upstream]] = []
    notes: list[str] = []
    if not isinstance(value, (list, tuple)):
        return [], [f"systemd-resolved: unexpected DNS property {type(value).__name__}"]
    for entry in value[: MAX_SERVERS * 4]:
        try:
            ifindex, family, raw = entry
            packed = bytes(raw)
            if family == AF_INET and len(packed) == 4:
                addr: IPv4Address | IPv6Address = IPv4Address(packed)
            elif family == AF_INET6 and len(packed) == 16:
                addr = IPv6Address(packed)
            else:
                raise ValueError(f"family {family} with {len(packed)} address bytes")
            if not isinstance(ifindex, int) or ifindex < 0:
                raise ValueError(f"interface index {ifindex!r}")
        except (TypeError, ValueError) as exc:
            notes.append(f"systemd-resolved: ignored a malformed DNS entry ({exc})")
            continue
        where = "global" if ifindex == 0 else f"link {ifindex}"
        servers.append((ifindex != 0, Upstream(addr, f"systemd-resolved, {where}")))
    if any(not per_link for per_link, _ in servers):
        ignored = [upstream for per_link, upstream in servers if per_link]
        if ignored:
            notes.append(f"systemd-resolved: {len(ignored)} per-link server(s) ignored: global servers take precedence")
        servers = [item for item in servers if not item[0]]
    return [upstream for _, upstream in servers][:MAX_SERVERS], notes


def why_unusable(addr: IPv4Address | IPv6Address) -> str | None:
    if addr.is_loopback:
        return "a loopback address (a local stub, unreachable from client VMs)"
    if addr.is_link_local:
        return "a link-local address (a DNAT cannot name the interface it belongs to)"
    return why_not_host(addr)


def usable(servers: Iterable[Upstream], version: int = 4) -> tuple[list[Upstream], list[str]]:
    """The servers of one IP version a DNAT can point at, in order, without
    duplicates; notes about the skipped ones (of that version only)."""
    kept: list[Upstream] = []
    notes: list[str] = []
    seen = set()
    for server in servers:
        if server.addr.version != version:
            continue
        reason = why_unusable(server.addr)
        if reason:
            notes.append(f"skipping {server.addr} from {server.origin}: {reason}")
        elif server.addr not in seen:
            seen.add(server.addr)
            kept.append(server)
    return kept, notes
