"""Read and validate everything a vif event depends on.

``parse_*`` functions are pure; ``read_*`` functions ask XenStore and QubesDB
and hand the raw values to the parsers. The result is a frozen
:class:`VifInputs`: once it exists, every value in it has been validated.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING

from qubesnet.constants import (
    QDB_GATEWAY,
    QDB_GATEWAY6,
    QDB_MAPPED_PREFIX,
    QDB_OWN_IP,
    QDB_OWN_IP6,
    QDB_PRIMARY_DNS,
    QDB_SECONDARY_DNS,
    QDB_SERVICE_PREFIX,
    SERVICE_FLOWTABLE,
    SERVICE_HARDEN,
    SERVICE_HIDE_NETVM,
)
from qubesnet.errors import ConfigError
from qubesnet.qubesdb import QubesDB
from qubesnet.records import Record
from qubesnet.validate import (
    VIF_RE,
    AddressList,
    VifName,
    decode_text,
    parse_address_list,
    parse_ifname,
    parse_ipv4,
    parse_ipv6,
    parse_mac,
    parse_service_flag,
    parse_vif_name,
    parse_word,
    parse_xenbus_path,
    shown,
)
from qubesnet.xenstore import XenStore

from .mapped_names import HIDDEN_RANGE

if TYPE_CHECKING:
    from .mapped import MappedAddress


class VifEnv(Record):
    """What libxl (or udev) hands us in the environment."""

    vif: VifName
    xenbus_path: str


class VifInputs(Record):
    vif: VifName
    xenbus_path: str
    ifname: str  # the name the interface has once online (vifname, or vif)
    addresses: AddressList
    ip_missing: bool  # no `ip` key at all (not merely empty)
    mac: str | None
    vif_type: str
    gateway: IPv4Address | None
    gateway6: IPv6Address | None
    harden: bool
    flowtable: bool
    mapping: MappedAddress | None = None  # a disposable VM's hidden address
    # IPv6 is on for this netvm (QubesDB /qubes-ip6 or /qubes-netvm-gateway6):
    # only then are clients' IPv6 addresses routed. Offline, and without
    # QubesDB, it is taken as on, so that their routes are removed.
    netvm_ipv6: bool = True

    @property
    def renamed(self) -> bool:
        vif: str = self.vif.name
        return self.ifname != vif


def parse_xenbus_env(environ: Mapping[str, str]) -> str:
    xenbus_path = environ.get("XENBUS_PATH")
    if not xenbus_path:
        raise ConfigError("XENBUS_PATH", "environment variable is missing; libxl sets it to the backend path")
    return parse_xenbus_path("XENBUS_PATH", xenbus_path)


def parse_env(environ: Mapping[str, str]) -> VifEnv:
    xenbus_path = parse_xenbus_env(environ)
    vif = environ.get("vif")
    if not vif:
        raise ConfigError("vif", "environment variable is missing; libxl sets it to the interface name")
    return VifEnv(parse_vif_name("vif", vif), xenbus_path)


def _xs_text(xs: XenStore, key: str) -> str | None:
    raw = xs.read(key)
    return None if raw is None else decode_text(key, raw)


def _qdb_text(qdb: QubesDB, key: str) -> str | None:
    raw = qdb.read(key)
    return None if raw is None else decode_text(key, raw, limit=3072)


def read_service_flag(qdb: QubesDB, name: str, default: bool = False) -> bool:
    key = QDB_SERVICE_PREFIX + name
    return parse_service_flag(key, qdb.read(key), default)


def read_gateways(qdb: QubesDB) -> tuple[IPv4Address | None, IPv6Address | None]:
    """This netvm's addresses as its clients see them (put on every vif)."""
    gw_text = _qdb_text(qdb, QDB_GATEWAY)
    gateway = parse_ipv4(QDB_GATEWAY, gw_text) if gw_text is not None else None
    gw6_text = _qdb_text(qdb, QDB_GATEWAY6)
    gateway6 = parse_ipv6(QDB_GATEWAY6, gw6_text, allow_link_local=True) if gw6_text else None
    return gateway, gateway6


def read_inputs(env: VifEnv, xs: XenStore, qdb: QubesDB | None, *, online: bool,
                mapped_wait: float = 0.0) -> VifInputs:
    """Everything the event needs, validated; raises ConfigError naming the bad key.

    ``qdb`` may be None for ``offline`` (QubesDB unreachable): then nothing
    that depends on it (gateways, service flags, a mapping) is described,
    and what online made of it goes with the interface.
    """
    base = env.xenbus_path
    ip_key, mac_key, type_key, vifname_key = (f"{base}/{k}" for k in ("ip", "mac", "type", "vifname"))

    ip_text = _xs_text(xs, ip_key)
    addresses = parse_address_list(ip_key, ip_text or "")

    vifname = _xs_text(xs, vifname_key)
    ifname = parse_ifname(vifname_key, vifname) if vifname else env.vif.name
    if ifname != env.vif.name and VIF_RE.fullmatch(ifname):
        raise ConfigError(vifname_key, f"{shown(ifname)} looks like another VM's interface name")

    vif_type = _xs_text(xs, type_key)
    vif_type = parse_word(type_key, vif_type) if vif_type else "vif"

    mac: str | None = None
    mac_text = _xs_text(xs, mac_key)
    if mac_text is not None:
        mac = parse_mac(mac_key, mac_text)
    elif online and addresses.used:
        raise ConfigError(mac_key, "missing; the client's MAC is needed for its neighbour entries")

    inp = VifInputs(
        vif=env.vif, xenbus_path=base, ifname=ifname, addresses=addresses, ip_missing=ip_text is None,
        mac=mac, vif_type=vif_type, gateway=None, gateway6=None, harden=False, flowtable=False,
    )
    if qdb is None:
        return inp
    return read_netvm(inp, qdb, online=online, mapped_wait=mapped_wait)


def read_netvm(inp: VifInputs, qdb: QubesDB, *, online: bool, mapped_wait: float = 0.0) -> VifInputs:
    """The QubesDB part of the inputs: gateways, service flags, a mapping."""
    gateway, gateway6 = read_gateways(qdb)
    if online and gateway is None and inp.addresses.ipv4 is not None:
        raise ConfigError(QDB_GATEWAY, "missing; this VM does not seem to provide network")
    mapping = None
    real = inp.addresses.ipv4
    if real is not None and (
        (online and real in HIDDEN_RANGE) or qdb.read(f"{QDB_MAPPED_PREFIX}{real}/visible-ip") is not None
    ):
        mapping = read_mapping(qdb, real, gateway, mapped_wait if online else 0.0)
    return inp._replace(
        netvm_ipv6=not online or gateway6 is not None or qdb.read(QDB_OWN_IP6) is not None,
        gateway=gateway,
        gateway6=gateway6,
        harden=read_service_flag(qdb, SERVICE_HARDEN),
        flowtable=read_service_flag(qdb, SERVICE_FLOWTABLE),
        mapping=mapping,
    )


def _read_ipv4(qdb: QubesDB, key: str) -> IPv4Address | None:
    raw = qdb.read(key)
    return None if raw is None else parse_ipv4(key, decode_text(key, raw, limit=64))


def _read_pair(qdb: QubesDB, real: IPv4Address) -> tuple[IPv4Address | None, IPv4Address | None]:
    base = f"{QDB_MAPPED_PREFIX}{real}"
    return _read_ipv4(qdb, f"{base}/visible-ip"), _read_ipv4(qdb, f"{base}/visible-gateway")


def read_mapping(qdb: QubesDB, real: IPv4Address, gateway: IPv4Address | None, wait: float) -> MappedAddress | None:
    """The client's mapping, or None when it has none (or not within ``wait``).

    For an address in HIDDEN_RANGE the mapping may be written by dom0 just
    after the hotplug started: wait for it, watching QubesDB, at most
    ``wait`` seconds. Other clients never wait.
    """
    from .mapped import MappedAddress  # mapped vifs are rare: loaded for them only

    visible, visible_gw = _read_pair(qdb, real)
    if (visible is None or visible_gw is None) and wait > 0 and real in HIDDEN_RANGE:
        prefix = f"{QDB_MAPPED_PREFIX}{real}/"
        qdb.watch(prefix)
        deadline = time.monotonic() + wait
        visible, visible_gw = _read_pair(qdb, real)  # it may have come meanwhile
        while (visible is None or visible_gw is None) and time.monotonic() < deadline:
            if qdb.wait_event(deadline - time.monotonic()) is None:
                break
            visible, visible_gw = _read_pair(qdb, real)
        qdb.unwatch(prefix)
    if visible is None or visible_gw is None or visible == real:
        return None
    if gateway is None:
        raise ConfigError(QDB_GATEWAY, "missing; needed to translate a mapped address")
    hide: tuple[IPv4Address, ...] = ()
    dns = _read_ipv4(qdb, QDB_PRIMARY_DNS)
    if read_service_flag(qdb, SERVICE_HIDE_NETVM):
        found = [_read_ipv4(qdb, QDB_OWN_IP), gateway, real, dns, _read_ipv4(qdb, QDB_SECONDARY_DNS)]
        hide = tuple(dict.fromkeys(a for a in found if a is not None and a != visible_gw))
    return MappedAddress(real, visible, visible_gw, gateway, hide, dns)
