"""Read the inputs and derive the mapping (virtual address -> upstream)."""

from __future__ import annotations

import logging
from collections import namedtuple
from ipaddress import IPv4Address

from qubesnet.constants import QDB_PRIMARY_DNS, QDB_SECONDARY_DNS
from qubesnet.qubesdb import QubesDB
from qubesnet.validate import decode_text, parse_ipv4

from . import resolved
from .chain import plan_mapping
from .upstreams import Upstream, parse_resolv_conf, parse_resolved_dns, usable

log = logging.getLogger(__name__)

RESOLV_CONF_LIMIT = 64 * 1024


class Derived(namedtuple("Derived", ("mapping", "notes"), defaults=((),))):
    """mapping: list[Mapping]; notes: what was skipped and why (tuple of str)."""

    __slots__ = ()


def read_virtual_dns(qdb: QubesDB) -> list[IPv4Address]:
    """The virtual DNS addresses given to clients, validated, in order."""
    found: list[IPv4Address] = []
    for key in (QDB_PRIMARY_DNS, QDB_SECONDARY_DNS):
        raw = qdb.read(key)
        if raw is None:
            continue
        addr = parse_ipv4(key, decode_text(key, raw, limit=64))
        if addr not in found:
            found.append(addr)
    return found


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
    """Usable upstreams: systemd-resolved's when it has any, else resolv.conf's."""
    value, why = resolved.query_dns(timeout)
    notes: list[str] = []
    if value is not None:
        servers, notes = parse_resolved_dns(value)
        kept, skipped = usable(servers)
        notes += skipped
        if kept:
            return kept, notes
        notes.append("systemd-resolved has no usable server; using " + resolv_conf)
    else:
        log.debug("not asking systemd-resolved: %s", why)
    servers, more = read_resolv_conf(resolv_conf)
    kept, skipped = usable(servers)
    return kept, notes + more + skipped


NOTES_MAX = 10


def capped(notes: list[str], limit: int = NOTES_MAX) -> list[str]:
    """At most ``limit`` notes and a count of the rest: a hostile file of
    3000 bad lines must not become 3000 log lines."""
    if len(notes) <= limit:
        return notes
    return notes[:limit] + [f"{len(notes) - limit} more lines skipped likewise"]


def derive(qdb: QubesDB, resolv_conf: str, timeout: float) -> Derived:
    virtual = read_virtual_dns(qdb)
    upstreams, notes = read_upstreams(resolv_conf, timeout)
    notes = capped(notes)
    if virtual and not upstreams:
        notes.append("no usable upstream DNS server: DNS to the virtual addresses is dropped")
    return Derived(plan_mapping(virtual, upstreams), tuple(notes))
