"""Strict parsers for every value that crosses a trust boundary.

Values come from XenStore (written by the toolstack, partly influenced by the
client VM's configuration), QubesDB, the environment and files. Nothing that
fails here ever reaches netlink, nftables, a file name or a command line.
Each parser is pure and raises :class:`~qubesnet.errors.ConfigError` naming
the key it was given.
"""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Address, IPv6Address

from .constants import IFNAMSIZ, MAX_DOMID
from .errors import ConfigError
from .records import Record

IPAddress = IPv4Address | IPv6Address


class LazyPattern:
    """A regular expression compiled when first used: qubes-setup-dnat-to-ns
    uses none of these, and compiling them all costs it half a millisecond
    on every dispatcher event."""

    __slots__ = ("_compiled", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._compiled: re.Pattern[str] | None = None

    def fullmatch(self, value: str) -> re.Match[str] | None:
        if self._compiled is None:
            self._compiled = re.compile(self.source)
        return self._compiled.fullmatch(value)


VIF_RE = LazyPattern(r"vif(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
# A conservative interface name: what `ip link` accepts minus anything that
# could be taken for a path, an option, a glob or nftables syntax.
IFNAME_RE = LazyPattern(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
SYSCTL_SCOPES = ("all", "default")  # /proc/sys/net/ipv?/conf/ entries that are no interface
MAC_RE = LazyPattern(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# XenStore path syntax (xenstored accepts alphanumerics and "-/_@").
XS_PATH_RE = LazyPattern(r"/?[A-Za-z0-9_@-]+(/[A-Za-z0-9_@-]+)*")
XS_PATH_MAX = 3072
WORD_RE = LazyPattern(r"[A-Za-z0-9_-]{1,32}")
# An address list holds one IPv4 and one IPv6 address in practice; anything
# much longer is a broken or hostile value, refused before it costs anything.
MAX_ADDRESSES = 8
ADDRESS_CHARS_RE = LazyPattern(r"[0-9A-Fa-f.: ]*")
THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
IPV6_RESERVED = ipaddress.IPv6Network("::/8")


class VifName(Record):
    """A vif name taken apart."""

    name: str
    domid: int
    devid: int

    @property
    def metric(self) -> int:
        """Route metric: positive, and lower (preferred) for later VMs."""
        return MAX_DOMID - self.domid


SHOWN_MAX = 64


def shown(value: str | bytes) -> str:
    """A bad value for an error message: quoted, and cut when long (a
    hostile 4 KiB value must not become a 4 KiB log line)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "backslashreplace")
    if len(value) <= SHOWN_MAX:
        return repr(value)
    return f"{value[:SHOWN_MAX]!r}... ({len(value)} characters)"


def decode_text(key: str, raw: bytes | str, limit: int = 4096) -> str:
    """Bytes from a store as printable ASCII, or ConfigError."""
    if isinstance(raw, bytes):
        if len(raw) > limit:
            raise ConfigError(key, f"value is {len(raw)} bytes long (at most {limit})")
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ConfigError(key, "value is not ASCII text") from None
    else:
        text = raw
        if len(text) > limit:
            raise ConfigError(key, f"value is {len(text)} characters long (at most {limit})")
        if not text.isascii():
            raise ConfigError(key, "value is not ASCII text")
    if not text.isprintable():
        raise ConfigError(key, "value contains control characters")
    return text


def parse_vif_name(key: str, value: str) -> VifName:
    """``vif<domid>.<devid>`` as libxl names backend interfaces."""
    match = VIF_RE.fullmatch(value)
    if not match or len(value) >= IFNAMSIZ:
        raise ConfigError(key, f"bad interface name {shown(value)}: expected vif<domid>.<devid>")
    domid, devid = int(match[1]), int(match[2])
    if domid > MAX_DOMID:
        raise ConfigError(key, f"domid {domid} in {shown(value)} is larger than {MAX_DOMID}")
    return VifName(value, domid, devid)


def parse_ifname(key: str, value: str) -> str:
    """Any other interface name we create or rename to (e.g. ``vifname``)."""
    if not (IFNAME_RE.fullmatch(value) and len(value) < IFNAMSIZ) or value in (".", ".."):
        raise ConfigError(key, f"bad interface name {shown(value)}")
    if value in SYSCTL_SCOPES:
        # /proc/sys/net/ipv4/conf/<name>/ would then be every interface's settings.
        raise ConfigError(key, f"interface name {value!r} is reserved by the kernel's per-interface settings")
    return value


def parse_mac(key: str, value: str) -> str:
    """A unicast MAC in the lowercase form libxl writes."""
    if not MAC_RE.fullmatch(value):
        raise ConfigError(key, f"bad MAC address {shown(value)}: expected lowercase xx:xx:xx:xx:xx:xx")
    if int(value[:2], 16) & 1:
        raise ConfigError(key, f"MAC address {value} is a multicast address")
    if value == "00:00:00:00:00:00":
        raise ConfigError(key, "MAC address is all zeros")
    return value


def parse_xenbus_path(key: str, value: str) -> str:
    if len(value) > XS_PATH_MAX or not XS_PATH_RE.fullmatch(value):
        raise ConfigError(key, f"bad XenStore path {shown(value)}")
    return value


def parse_word(key: str, value: str) -> str:
    """A short identifier such as the vif ``type``."""
    if not WORD_RE.fullmatch(value):
        raise ConfigError(key, f"bad value {shown(value)}")
    return value


def why_not_host(addr: IPAddress) -> str | None:
    """Why ``addr`` cannot be a VM's, a gateway's or a server's unicast address, if it cannot."""
    if addr.is_unspecified:
        return "the unspecified address"
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_multicast:
        return "a multicast address"
    if addr.is_link_local:
        return "a link-local address"
    if isinstance(addr, IPv4Address):
        if addr.is_reserved:  # 240.0.0.0/4, including the limited broadcast
            return "a reserved or broadcast address"
        if addr in THIS_NETWORK:  # Linux drops such sources as martians
            return "in 0.0.0.0/8 (\"this network\")"
    elif addr.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address"
    elif addr.is_reserved and addr in IPV6_RESERVED:
        return "a reserved IPv6 address"
    return None


def parse_host_address(key: str, value: str, *, allow_link_local: bool = False) -> IPAddress:
    """One unicast host address (no prefix, no zone, no leading zeros)."""
    if not value or "/" in value or "%" in value:
        raise ConfigError(key, f"bad address {shown(value)}: expected a single host address")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(key, f"bad address {shown(value)}") from None
    reason = why_not_host(addr)
    if reason and not (allow_link_local and reason == "a link-local address"):
        raise ConfigError(key, f"{value} is {reason}")
    return addr


def parse_ipv4(key: str, value: str) -> IPv4Address:
    addr = parse_host_address(key, value)
    if not isinstance(addr, IPv4Address):
        raise ConfigError(key, f"{value} is not an IPv4 address")
    return addr


def parse_ipv6(key: str, value: str, *, allow_link_local: bool = False) -> IPv6Address:
    addr = parse_host_address(key, value, allow_link_local=allow_link_local)
    if not isinstance(addr, IPv6Address):
        raise ConfigError(key, f"{value} is not an IPv6 address")
    return addr


class AddressList(Record):
    """The client addresses of a vif: at most one of each family is used;
    ``ignored``: the further addresses of the list."""

    ipv4: IPv4Address | None
    ipv6: IPv6Address | None
    ignored: tuple[IPv4Address | IPv6Address, ...] = ()

    @property
    def used(self) -> tuple[IPAddress, ...]:
        return tuple(a for a in (self.ipv4, self.ipv6) if a is not None)


def parse_address_list(key: str, value: str) -> AddressList:
    """The space-separated ``ip`` key: IPv4 and IPv6 mixed, first of each used."""
    if not ADDRESS_CHARS_RE.fullmatch(value):
        raise ConfigError(key, "address list contains characters other than hex digits, '.', ':' and spaces")
    tokens = value.split()
    if len(tokens) > MAX_ADDRESSES:
        raise ConfigError(key, f"{len(tokens)} addresses given (at most {MAX_ADDRESSES})")
    ipv4: IPv4Address | None = None
    ipv6: IPv6Address | None = None
    ignored: list[IPAddress] = []
    for token in tokens:
        addr = parse_host_address(key, token)
        if isinstance(addr, IPv4Address) and ipv4 is None:
            ipv4 = addr
        elif isinstance(addr, IPv6Address) and ipv6 is None:
            ipv6 = addr
        elif addr not in (ipv4, ipv6):
            ignored.append(addr)
    return AddressList(ipv4, ipv6, tuple(ignored))


def parse_service_flag(key: str, value: bytes | None, default: bool) -> bool:
    """A ``/qubes-service/<name>`` flag: ``1`` on, ``0`` off, absent = default."""
    if value is None:
        return default
    if value == b"1":
        return True
    if value == b"0":
        return False
    raise ConfigError(key, f"service flag must be 0 or 1, not {shown(value)}")
