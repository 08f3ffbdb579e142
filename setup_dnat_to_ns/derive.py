"""Read the inputs and derive the mappings (virtual address -> upstream), per family."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from qubesnet.constants import (
    QDB_PRIMARY_DNS,
    QDB_PRIMARY_DNS6,
    QDB_SECONDARY_DNS,
    QDB_SECONDARY_DNS6,
)
from qubesnet.log import get_logger
from qubesnet.qubesdb import QubesDB
from qubesnet.records import Record
from qubesnet.validate import decode_text, parse_ipv4, parse_ipv6

from . import resolved
from .chain import Translation, plan_mapping
from .upstreams import Upstream, parse_resolv_conf, parse_resolved_dns, usable

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds on the path that changes nothing
    from collections.abc import Callable
    from typing import TypeVar

    A = TypeVar("A", IPv4Address, IPv6Address)

log = get_logger(__name__)

RESOLV_CONF_LIMIT = 64 * 1024


class Derived(Record):
    """The translations of the IPv4 virtual addresses; what was skipped and
    why; those of the IPv6 ones, None when QubesDB has none (the ip6 chains
    are then not ours to keep)."""

    mapping: list[Translation]
    notes: tuple[str, ...] = ()
    mapping6: list[Translation] | None = None


def _read_virtual(qdb: QubesDB, keys: tuple[str, str], parse: Callable[[str, str], A]) -> list[A]:
    found: list[A] = []
    for key in keys:
        raw = qdb.read(key)
        if raw is None:
            continue
        addr = parse(key, decode_text(key, raw, limit=64))
        if addr not in found:
            found.append(addr)
    return found


def read_virtual_dns(qdb: QubesDB) -> list[IPv4Address]:
    """The IPv4 virtual DNS addresses given to clients, validated, in order."""
    return _read_virtual(qdb, (QDB_PRIMARY_DNS, QDB_SECONDARY_DNS), parse_ipv4)


def read_virtual_dns6(qdb: QubesDB) -> list[IPv6Address]:
    """The IPv6 virtual DNS addresses (fd09:24ef:4179::a8b:1 and ::a8b:2 in
    Qubes), validated, in order; [] on netvms without IPv6 DNS."""
    return _read_virtual(qdb, (QDB_PRIMARY_DNS6, QDB_SECONDARY_DNS6), parse_ipv6)


def read_resolv_conf(path: str) -> tuple[list[Upstream], list[str]]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(RESOLV_CONF_LIMIT + 1)
    except OSError as exc:
        return [], [f"cannot read {path}: {exc.strerror}"]
    notes = []
    if len(raw) > RESOLV_CONF_LIMIT:
        notes.append(f"{path} is larger than {RESOLV_CONF_LIMIT} bytes; reading its beginning only")
        raw = raw[:RESOLV_CONF_LIMIT]
    servers, more = parse_resolv_conf(raw.decode("utf-8", "replace"), path)
    return servers, notes + more


def read_upstreams(resolv_conf: str, timeout: float) -> tuple[list[Upstream], list[str]]:
    """The servers of the source in use, both families, usable or not:
    systemd-resolved's when it has any usable one, else resolv.conf's."""
    value, why = resolved.query_dns(timeout)
    notes: list[str] = []
    if value is not None:
        servers, notes = parse_resolved_dns(value)
        if any(usable(servers, version)[0] for version in (4, 6)):
            return servers, notes
        for version in (4, 6):
            notes += usable(servers, version)[1]
        notes.append("systemd-resolved has no usable server; using " + resolv_conf)
    else:
        log.debug("not asking systemd-resolved: %s", why)
    servers, more = read_resolv_conf(resolv_conf)
    return servers, notes + more


NOTES_MAX = 10


def capped(notes: list[str], limit: int = NOTES_MAX) -> list[str]:
    """At most ``limit`` notes and a count of the rest: a hostile file of
    3000 bad lines must not become 3000 log lines."""
    if len(notes) <= limit:
        return notes
    return notes[:limit] + [f"{len(notes) - limit} more lines skipped likewise"]


def derive(qdb: QubesDB, resolv_conf: str, timeout: float) -> Derived:
    virtual = read_virtual_dns(qdb)
    virtual6 = read_virtual_dns6(qdb)
    servers, notes = read_upstreams(resolv_conf, timeout)
    kept, skipped = usable(servers, 4)
    kept6, skipped6 = usable(servers, 6)
    notes += skipped
    if virtual6:
        notes += skipped6
    elif kept6:
        notes.append(f"not using {len(kept6)} IPv6 server(s): no IPv6 virtual DNS address in QubesDB")
    notes = capped(notes)
    for family, addresses, upstreams in (("IPv4", virtual, kept), ("IPv6", virtual6, kept6)):
        if addresses and not upstreams:
            notes.append(f"no usable {family} upstream DNS server: DNS to the {family} virtual addresses is refused")
    return Derived(plan_mapping(virtual, kept), tuple(notes), plan_mapping(virtual6, kept6) if virtual6 else None)
