"""Read and validate everything a vif event depends on.

``parse_*`` functions are pure; ``read_*`` functions ask XenStore and QubesDB
and hand the raw values to the parsers. The result is a frozen
:class:`VifInputs`: once it exists, every value in it has been validated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple
from ipaddress import IPv4Address, IPv6Address

from qubesnet.constants import (
    QDB_GATEWAY,
    QDB_GATEWAY6,
    QDB_SERVICE_PREFIX,
    SERVICE_FLOWTABLE,
    SERVICE_HARDEN,
)
from qubesnet.errors import ConfigError
from qubesnet.qubesdb import QubesDB
from qubesnet.validate import (
    VIF_RE,
    AddressList,
    VifName,
    decode_text,
    shown,
    parse_address_list,
    parse_ifname,
    parse_ipv4,
    parse_ipv6,
    parse_mac,
    parse_service_flag,
    parse_vif_name,
    parse_word,
    parse_xenbus_path,
)
from qubesnet.xenstore import XenStore


class VifEnv(NamedTuple):
    """What libxl (or udev) hands us in the environment."""

    vif: VifName
    xenbus_path: str


class VifInputs(NamedTuple):
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

    @property
    def renamed(self) -> bool:
        return self.ifname != self.vif.name


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


def read_inputs(env: VifEnv, xs: XenStore, qdb: QubesDB | None, *, online: bool) -> VifInputs:
    """Everything the event needs, validated; raises ConfigError naming the bad key.

    ``qdb`` may be None for ``offline``, which needs nothing from QubesDB.
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

    gateway = gateway6 = None
    harden = flowtable = False
    if online:
        assert qdb is not None
        gateway, gateway6 = read_gateways(qdb)
        if gateway is None and addresses.ipv4 is not None:
            raise ConfigError(QDB_GATEWAY, "missing; this VM does not seem to provide network")
        harden = read_service_flag(qdb, SERVICE_HARDEN)
        flowtable = read_service_flag(qdb, SERVICE_FLOWTABLE)

    return VifInputs(
        vif=env.vif,
        xenbus_path=base,
        ifname=ifname,
        addresses=addresses,
        ip_missing=ip_text is None,
        mac=mac,
        vif_type=vif_type,
        gateway=gateway,
        gateway6=gateway6,
        harden=harden,
        flowtable=flowtable,
    )
