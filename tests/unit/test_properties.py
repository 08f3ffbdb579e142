"""Property-based tests (hypothesis) of validation, planning and the nftables JSON.

Each test states one property in its docstring and checks it for generated
values: hostile text and bytes for the parsers, generated valid inputs and
kernel states for the planners (a small model of the kernel, read by the real
kernel reader, observe.py, through gateways that answer as netlink and
libnftables would), generated mappings and upstream lists for the
JSON builders and the DNS pairing. Everything is pure: no process, no
kernel, no socket, no file (the example database is off).
"""

from __future__ import annotations

import ipaddress
import json
import re
import string
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any, cast

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from qubesnet.constants import FAMILIES, MAX_DOMID, QUBES_TABLE, SET_ALLOWED, SET_DOWNSTREAM, VIF_GROUP
from qubesnet.errors import ApplyError, ConfigError
from qubesnet.layout import CHAINS as ANTISPOOF_CHAINS
from qubesnet.layout import SETS as ANTISPOOF_SETS
from qubesnet.layout import build_antispoof
from qubesnet.netlink.rtnl import HostRoute
from qubesnet.netlink.rtnl import Link as RtLink
from qubesnet.validate import (
    VIF_RE,
    AddressList,
    VifName,
    decode_text,
    parse_address_list,
    parse_host_address,
    parse_ifname,
    parse_mac,
    parse_service_flag,
    parse_vif_name,
    parse_xenbus_path,
)
from setup_dnat_to_ns.chain import build_refusals, build_replace, build_rules, plan_mapping
from setup_dnat_to_ns.upstreams import Upstream, parse_resolv_conf, parse_resolved_dns, usable
from vif_route_qubes.describe import describe
from vif_route_qubes.diff import plan_namespace, plan_offline, plan_online
from vif_route_qubes.gateways import Gateways
from vif_route_qubes.inputs import VifInputs
from vif_route_qubes.mapped import MappedAddress, build_nat_table
from vif_route_qubes.mapped_names import namespace_name, peer_name
from vif_route_qubes.nftplan import build_elements, build_flowtable, build_flowtable_probe
from vif_route_qubes.nssteps import ConfigureNamespace, CreateNamespace, CreateVeth, MoveIntoNamespace, RemoveNamespace
from vif_route_qubes.observe import (
    find_link,
    read_allowed_addresses,
    read_environment,
    read_namespace,
    read_observed,
)
from vif_route_qubes.state import (
    Element,
    Environment,
    Link,
    NamespaceFacts,
    Observed,
    VifState,
)
from vif_route_qubes.steps import (
    AddressChange,
    NeighbourChange,
    NftChange,
    Plan,
    PurgeConntrack,
    Rename,
    ReportConnected,
    RouteChange,
    RunHooks,
    SetLink,
    SetSysctl,
)

if TYPE_CHECKING:
    from vif_route_qubes.steps import Step

IPAddress = IPv4Address | IPv6Address

# Fast, hermetic, reproducible enough: no example database written to disk.
PROPS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
HEAVY = settings(PROPS, max_examples=150)  # composite scenarios: fewer, richer examples
FEW = settings(PROPS, max_examples=50)

# =============================================================================
# Oracles, written from the contract (independently of qubesnet.validate)
# =============================================================================

VIF_NAME_CONTRACT = re.compile(r"vif(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
MAC_CONTRACT = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
IFNAME_CHARS = frozenset(string.ascii_letters + string.digits + "_.-")
XS_SEGMENT = re.compile(r"[A-Za-z0-9_@-]+")

NOT_HOST_V4 = [IPv4Network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "169.254.0.0/16", "240.0.0.0/4")]
# ::/8 covers the unspecified and loopback addresses, IPv4-mapped and
# IPv4-compatible forms and the rest of what IANA reserves there.
NOT_HOST_V6 = [IPv6Network(n) for n in ("::/8", "ff00::/8", "fe80::/10")]
LINK_LOCAL6 = IPv6Network("fe80::/10")


def is_host(addr: IPAddress) -> bool:
    """Whether ``addr`` may be a VM's or a gateway's address (contract oracle)."""
    bad = NOT_HOST_V4 if addr.version == 4 else NOT_HOST_V6
    return not any(addr in net for net in bad)


def is_usable_upstream(addr: IPAddress) -> bool:
    """A DNS server a DNAT of an IPv4 virtual address can point at (IPv4 ones
    for the IPv4 pass that test_dns_mapping drives)."""
    return addr.version == 4 and is_host(addr)


def check_config_error(exc: ConfigError, key: str) -> None:
    """A refusal names its key first and is one line (it goes to hotplug-error)."""
    text = str(exc)
    assert exc.key == key
    assert text.startswith(f"{key}: "), text
    assert len(text.splitlines()) == 1 and "\n" not in text and "\r" not in text, text


def addresses_of(step: object) -> tuple[IPAddress, ...]:
    """Every client or gateway address a plan step names."""
    if isinstance(step, PurgeConntrack):
        return step.addrs
    if isinstance(step, NftChange):
        return tuple(ipaddress.ip_address(t) for t in string_leaves([*step.commands, *step.undo])
                     if looks_like_address(t))
    if isinstance(step, RouteChange):
        return (step.dst,)
    if isinstance(step, (NeighbourChange, AddressChange)):
        return (step.addr,)
    if isinstance(step, RunHooks):
        return tuple(ipaddress.ip_address(a) for a in step.argv[3:])
    return ()


def positions(steps: tuple[Step, ...], *kinds: type) -> list[int]:
    return [i for i, s in enumerate(steps) if isinstance(s, kinds)]



# =============================================================================
# Strategies
# =============================================================================

KEYS = st.sampled_from(["vif", "XENBUS_PATH", "backend/vif/12/0/ip", "backend/vif/12/0/mac",
                        "backend/vif/12/0/vifname", "/qubes-netvm-gateway6", "/qubes-service/x"])

CONTROL = "".join(map(chr, range(0x20))) + "\x7f\x85\xa0\u2028\u2029\ufeff"
NFT_SYNTAX = '{}";:@$/\\ .-_#*\'`|&<>!=()[],%'
ADDR_CHARS = "0123456789abcdefABCDEF.: "


def pick(*strategies: st.SearchStrategy) -> st.SearchStrategy:
    """One of ``strategies``, each drawn about as often.

    A plain one_of lets hypothesis favour its regex-built branches so much
    that the others (control characters, long strings) are rarely drawn.
    """
    return st.sampled_from(range(len(strategies))).flatmap(strategies.__getitem__)


def mutated(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A value with a character or two added around it."""
    return st.tuples(st.text(max_size=2), strategy, st.text(max_size=2)).map("".join)


def infixed(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A value with one whitespace, control or nftables-syntax character slipped inside."""
    return st.tuples(strategy, st.sampled_from(CONTROL + NFT_SYNTAX + "Aä"), st.integers(0, 20)).map(
        lambda t: t[0][:t[2]] + t[1] + t[0][t[2]:])


# Almost-valid values: the interesting edge of every parser.
near_valid = pick(
    st.from_regex(r"vif[0-9]{1,7}\.[0-9]{1,9}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_.-]{1,18}", fullmatch=True),
    st.from_regex(r"[0-9a-fA-F]{1,3}(:[0-9a-fA-F]{1,3}){4,6}", fullmatch=True),
    st.from_regex(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", fullmatch=True),
    st.from_regex(r"[0-9]{1,4}(\.[0-9]{1,3}){2,4}", fullmatch=True),
    st.from_regex(r"/?[A-Za-z0-9_@.-]{0,8}(/[A-Za-z0-9_@.-]{0,8}){0,4}/?", fullmatch=True),
)
HOSTILE_TEXTS = (
    st.text(),  # any code point but surrogates: control characters, unicode digits...
    st.text(alphabet=CONTROL + NFT_SYNTAX + "vif0123456789abcdefxyzä٣", max_size=40),
    st.text(alphabet=ADDR_CHARS + "%/\t\n", max_size=80),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=4), st.integers(100, 1500)),  # long
    near_valid,
    mutated(near_valid),
)
hostile_text = pick(*HOSTILE_TEXTS)
hostile_bytes = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=40).map(lambda s: s.encode("utf-8")),
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=4), st.integers(900, 1200)),  # near 4096
)

# --- valid values ---


def _v4_host(addr: IPv4Address) -> IPv4Address:
    """``addr`` if it is a host address, else one in 10/8 (mapping, unlike filtering, never discards)."""
    return addr if is_host(addr) else IPv4Address(0x0A000000 | (int(addr) & 0xFFFFFF))


def _v6_host(addr: IPv6Address) -> IPv6Address:
    """``addr`` if it is a host address, else one in 2001::/16."""
    return addr if is_host(addr) else IPv6Address((0x2001 << 112) | (int(addr) & ((1 << 112) - 1)))


ipv4_hosts = st.one_of(
    st.integers(1, 254).map(lambda n: IPv4Address(f"10.137.0.{n}")),
    st.integers(0, 2**32 - 1).map(IPv4Address).map(_v4_host),
)
ipv6_hosts = st.one_of(
    st.integers(1, 0xFFFF).map(lambda n: IPv6Address(f"fd09:24ef:4179::a89:{n:x}")),
    st.integers(0, 2**128 - 1).map(IPv6Address).map(_v6_host),
)
host_addresses = st.one_of(ipv4_hosts, ipv6_hosts)
link_local6 = st.integers(1, 2**64 - 1).map(lambda n: IPv6Address((0xFE80 << 112) | n))


def address_texts(addr: IPAddress) -> st.SearchStrategy[str]:
    """The textual forms a store may hold for ``addr``."""
    if addr.version == 4:
        return st.just(str(addr))
    return st.sampled_from([addr.compressed, addr.exploded, addr.compressed.upper(), addr.exploded.upper()])


domids = st.one_of(st.integers(0, MAX_DOMID), st.sampled_from([0, 1, MAX_DOMID - 1, MAX_DOMID]))
# devids by the room left under IFNAMSIZ: "vif<domid>." leaves 5 to 11 digits
DEVIDS = {room: st.one_of(st.integers(0, 3), st.integers(0, 10**room - 1)) for room in range(5, 12)}


@st.composite
def vif_names(draw: st.DrawFn) -> VifName:
    domid = draw(domids)
    devid = draw(DEVIDS[15 - len(f"vif{domid}.")])  # IFNAMSIZ - 1 characters at most
    return VifName(f"vif{domid}.{devid}", domid, devid)


ifnames = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}", fullmatch=True)
macs = st.binary(min_size=6, max_size=6).map(
    lambda b: ":".join(f"{x:02x}" for x in bytes([b[0] & 0xFE]) + b[1:5] + bytes([b[5] or 1])))  # unicast, non-zero
xenbus_paths = st.one_of(
    st.builds(lambda d, n: f"backend/vif/{d}/{n}", st.integers(0, MAX_DOMID), st.integers(0, 9)),
    st.from_regex(r"/?[A-Za-z0-9_@-]{1,12}(/[A-Za-z0-9_@-]{1,12}){0,6}", fullmatch=True),
)


# Shaped like the value each parser expects: valid, almost valid, or mutated.
vif_name_texts = vif_names().map(lambda v: v.name)
vif_shaped = pick(vif_name_texts, st.from_regex(r"vif[0-9]{1,7}\.[0-9]{1,9}", fullmatch=True),
                  mutated(vif_name_texts), infixed(vif_name_texts))
ifname_shaped = pick(ifnames, st.from_regex(r"[A-Za-z0-9_./ -]{1,18}", fullmatch=True), mutated(ifnames),
                     infixed(ifnames))
mac_shaped = pick(macs, st.from_regex(r"[0-9a-fA-F]{2}(:[0-9a-f]{1,2}){5}", fullmatch=True), mutated(macs),
                  infixed(macs))
xs_shaped = pick(xenbus_paths, st.from_regex(r"/?[A-Za-z0-9_@.-]{0,8}(/[A-Za-z0-9_@.-]{0,8}){0,4}/?", fullmatch=True),
                 mutated(xenbus_paths), infixed(xenbus_paths))


# Address-shaped text for the address parsers.
BAD_ADDRESSES = ["127.0.0.1", "::1", "ff02::1", "fe80::1", "::ffff:10.1.2.3", "::10.1.2.3", "0.0.0.0", "::",
                 "255.255.255.255", "240.0.0.1", "224.0.0.1", "169.254.0.1", "010.1.1.1", "10.137.0.5/32",
                 "fe80::1%eth0", "1.2.3", "1.2.3.4.5", "fd09::a89::1", "FD09:24EF:4179::A89:5"]
good_address_text = host_addresses.flatmap(address_texts)
address_tokens = st.one_of(
    good_address_text,
    link_local6.map(str),
    st.sampled_from(BAD_ADDRESSES),
    st.text(alphabet=ADDR_CHARS, max_size=12),
)
# Address-shaped lists, mostly of valid addresses (sometimes one too many).
address_list_text = st.one_of(
    st.lists(st.one_of(good_address_text, address_tokens), max_size=9).map(" ".join),
    st.lists(good_address_text, max_size=9).map(" ".join),
)


renamed_ifnames = ifnames.filter(lambda n: not VIF_RE.fullmatch(n))  # never another VM's interface name
maybe_ipv4_hosts = st.none() | ipv4_hosts
maybe_gateway6 = st.none() | link_local6 | ipv6_hosts
maybe_macs = st.none() | macs
address_lists = st.lists(host_addresses, max_size=3)


@st.composite
def vif_inputs(draw: st.DrawFn, *, mapped: bool | None = None) -> VifInputs:
    """What read_inputs could return for an ``online`` event (sometimes a mapped client's)."""
    vif = draw(vif_names())
    # (never "default" or "all": /proc/sys/net/ipv?/conf/ has those directories, see the model below)
    ifname = draw(renamed_ifnames.filter(lambda n: n not in ("default", "all"))) if draw(st.booleans()) else vif.name
    # 0-2 addresses of either family (sometimes a third, ignored one), as
    # the `ip` key lists them: the real parser builds the AddressList.
    listed = draw(address_lists)
    if mapped:  # a mapping needs the client's IPv4 address
        listed = [draw(ipv4_hosts), *listed]
    addresses = parse_address_list("ip", " ".join(str(a) for a in listed))
    used = set(addresses.used)
    # read_inputs insists on a gateway when there is an IPv4 address
    gateway = draw(ipv4_hosts if addresses.ipv4 is not None else maybe_ipv4_hosts)
    gateway6 = draw(maybe_gateway6)
    assume(gateway not in used and gateway6 not in used)  # the netvm's address is no client's
    mac = draw(macs if used else maybe_macs)
    mapping = None
    real = addresses.ipv4
    if real is not None and gateway is not None and mac is not None and (
            draw(st.integers(0, 4)) == 0 if mapped is None else mapped):
        visible, visible_gateway = draw(ipv4_hosts), draw(ipv4_hosts)
        assume(len({real, visible, visible_gateway}) == 3 and gateway != visible)
        mapping = MappedAddress(real, visible, visible_gateway, gateway, (), draw(maybe_ipv4_hosts))
    return VifInputs(
        vif=vif, xenbus_path=f"backend/vif/{vif.domid}/{vif.devid}", ifname=ifname, addresses=addresses,
        ip_missing=not listed and draw(st.booleans()), mac=mac, vif_type="vif", gateway=gateway,
        gateway6=gateway6, harden=draw(st.booleans()), flowtable=draw(st.booleans()), mapping=mapping,
    )


link_indexes = st.integers(2, 2**31 - 1)


hidden_addresses = st.integers(1, 0xFFFE).map(lambda n: IPv4Address(0x0A8A0000 + n))  # 10.138.0.0/16


@st.composite
def mappings(draw: st.DrawFn) -> MappedAddress:
    real = draw(hidden_addresses | ipv4_hosts)
    visible = draw(ipv4_hosts)
    visible_gateway = draw(ipv4_hosts)
    gateway = draw(st.just(visible_gateway) | ipv4_hosts)
    assume(len({real, visible, visible_gateway}) == 3 and gateway not in (real, visible))
    dns = draw(maybe_ipv4_hosts)
    hide = tuple(dict.fromkeys(draw(st.lists(ipv4_hosts, max_size=4))))
    return MappedAddress(real, visible, visible_gateway, gateway, hide, dns)


def mapping_addresses(m: MappedAddress) -> set[str]:
    found = [m.real, m.visible, m.visible_gateway, m.gateway, *m.hide, m.dns]
    return {str(a) for a in found if a is not None}


usable_upstream_addrs = ipv4_hosts
unusable_upstream_addrs = st.one_of(
    st.integers(0, 2**24 - 1).map(lambda n: IPv4Address(0x7F000000 + n)),  # loopback (the stub)
    st.integers(0, 2**28 - 1).map(lambda n: IPv4Address(0xE0000000 + n)),  # multicast
    st.integers(0, 2**28 - 1).map(lambda n: IPv4Address(0xF0000000 + n)),  # reserved, broadcast
    st.integers(0, 2**16 - 1).map(lambda n: IPv4Address(0xA9FE0000 + n)),  # link-local
    st.integers(0, 2**24 - 1).map(IPv4Address),  # 0.0.0.0/8, "this network"
    ipv6_hosts,  # IPv6 servers, however good
    st.integers(0, 2**128 - 1).map(IPv6Address),
)
upstreams = st.builds(
    Upstream,
    st.one_of(usable_upstream_addrs, unusable_upstream_addrs),
    st.sampled_from(["/etc/resolv.conf line 1", "systemd-resolved, global", "systemd-resolved, link 3"]),
)
virtual_dns = st.lists(
    st.one_of(st.sampled_from([IPv4Address("10.139.1.1"), IPv4Address("10.139.1.2")]), ipv4_hosts),
    min_size=1, max_size=2, unique=True,
)

resolv_conf_texts = pick(hostile_text, st.lists(st.one_of(
    st.tuples(st.just("nameserver"),
              st.one_of(hostile_text, host_addresses.map(str), unusable_upstream_addrs.map(str))),
    st.tuples(st.sampled_from(["search", "options", "#", ""]), hostile_text)),
    max_size=25).map(lambda lines: "\n".join(" ".join(words) for words in lines)))
# systemd-resolved's DNS property, a(iiay), and whatever else a broken bus could hand over
resolved_dns_values = st.one_of(
    st.lists(st.tuples(st.one_of(st.integers(-5, 2**31), st.text(max_size=3), st.none()),
                       st.sampled_from([2, 10, 0, -1, 99]),
                       st.one_of(st.binary(max_size=20), st.lists(st.integers(-1, 300), max_size=20)))
             | st.tuples(st.integers()) | st.text(max_size=3), max_size=40),
    st.none(), st.integers(), st.text(max_size=5))

# What offline may find on the interface: gateways, the kernel's link-local, foreign prefixes.
link_addresses = st.lists(st.tuples(st.one_of(host_addresses, link_local6), st.sampled_from([None, 8, 24, 64])).map(
    lambda t: (t[0], t[0].max_prefixlen if t[1] is None else min(t[1], t[0].max_prefixlen - 1))), max_size=4)

V4_EXAMPLE, V6_EXAMPLE = IPv4Address("10.137.0.12"), IPv6Address("fd09:24ef:4179::a89:12")
MAPPING_EXAMPLE = MappedAddress(IPv4Address("10.138.7.9"), IPv4Address("192.168.1.128"), IPv4Address("192.168.1.1"),
                          IPv4Address("10.137.0.1"), (IPv4Address("10.137.0.1"),), IPv4Address("10.139.1.1"))
# Interface names no validation would let through, for the JSON builders.
hostile_names = pick(hostile_text, infixed(ifnames), st.sampled_from(
    ['x" } } ; flush ruleset ; {', "vif1.0\n", "vif1.0,eth0", "qubes", "ip", "@allowed", '"', "\\", "\x00", "",
     "a" * 5000]))


# =============================================================================
# nftables JSON: what a transaction may contain
# =============================================================================

VERBS = {"add", "delete"}
KINDS = {"table", "set", "chain", "rule", "element", "flowtable"}
NFT_FAMILIES = {"ip", "ip6", "inet", "netdev"}
TABLES = {"qubes", "qubes-nat", "qubes-flowtable"}
SETS = {"allowed", "downstream"}
CHAINS = set(ANTISPOOF_CHAINS) | {"forward", "dnat-dns", "dnat-dns-refuse", "from-client", "from-netvm"}
LAYOUT_ADDRESSES: set[str] = set()  # the anti-spoofing objects name no address


def string_leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from string_leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from string_leaves(item)


def looks_like_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_commands(commands: list[Any], names: set[str], addresses: set[str]) -> None:
    """Only add/delete of allowed object kinds, in our tables, naming only our values."""
    assert json.loads(json.dumps(commands)) == commands
    assert json.loads(json.dumps({"nftables": commands})) == {"nftables": commands}
    for command in commands:
        assert isinstance(command, dict) and len(command) == 1, command
        ((verb, obj),) = command.items()
        assert verb in VERBS, command
        assert isinstance(obj, dict) and len(obj) == 1, command
        ((kind, body),) = obj.items()
        assert kind in KINDS, command
        assert body["family"] in NFT_FAMILIES, command
        assert (body["name"] if kind == "table" else body["table"]) in TABLES, command
        if kind == "element":
            assert body["table"] == "qubes" and body["name"] in SETS, command
            for elem in body["elem"]:
                if body["name"] == "allowed":
                    ifname, addr = elem["concat"]
                    assert ifname in names and addr in addresses, command
                else:
                    assert elem in addresses, command
                addr = elem["concat"][1] if body["name"] == "allowed" else elem
                assert ipaddress.ip_address(addr).version == {"ip": 4, "ip6": 6}[body["family"]], command
                assert all(s in names or s in addresses for s in string_leaves(elem)), command
        if kind in ("chain", "rule"):
            assert body["chain" if kind == "rule" else "name"] in CHAINS, command
        if kind == "set":
            assert body["name"] in SETS, command
        if kind == "flowtable":
            assert set(body["dev"]) <= names, command
        if kind == "chain" and "dev" in body:
            assert body["dev"] in names, command
        for text in string_leaves(body):
            if looks_like_address(text):
                assert text in addresses or text in LAYOUT_ADDRESSES, (text, command)


def same_shape(benign: Any, hostile: Any, subst: dict[str, str]) -> None:
    """``hostile`` is ``benign`` with each placeholder leaf replaced by its name, nothing else."""
    if isinstance(benign, dict):
        assert isinstance(hostile, dict) and list(benign) == list(hostile)
        for key in benign:
            same_shape(benign[key], hostile[key], subst)
    elif isinstance(benign, list):
        assert isinstance(hostile, list) and len(benign) == len(hostile)
        for a, b in zip(benign, hostile, strict=True):
            same_shape(a, b, subst)
    elif isinstance(benign, str) and benign in subst:
        assert hostile == subst[benign]
    else:
        assert not (isinstance(benign, str) and any(p in benign for p in subst)), "a name pasted into a string"
        assert type(hostile) is type(benign) and hostile == benign


# =============================================================================
# 1. Validation
# =============================================================================


def check_vif_name(key: str, text: str) -> None:
    try:
        vif = parse_vif_name(key, text)
    except ConfigError as exc:
        check_config_error(exc, key)
        return
    match = VIF_NAME_CONTRACT.fullmatch(text)
    assert match and text.isascii() and len(text) < 16
    assert vif.name == text and (vif.domid, vif.devid) == (int(match[1]), int(match[2]))
    assert 0 <= vif.domid <= 32752
    assert vif.metric == 32752 - vif.domid >= 0


@PROPS
@given(KEYS, hostile_text, vif_shaped)
def test_vif_name_refused_or_valid(key: str, hostile: str, shaped: str) -> None:
    """parse_vif_name refuses (one-line error naming the key) or returns a contract-valid vif name."""
    check_vif_name(key, hostile)
    check_vif_name(key, shaped)


@PROPS
@given(vif_names())
def test_valid_vif_names_round_trip(vif: VifName) -> None:
    """Every name vif<domid>.<devid> with domid <= 32752 and under 16 characters is accepted as is."""
    assert parse_vif_name("vif", vif.name) == vif
    assert vif.metric == 32752 - vif.domid


@PROPS
@given(domids, st.integers(0, 3))
def test_vif_names_of_16_characters_or_more_are_refused(domid: int, extra: int) -> None:
    """A vif name that does not fit IFNAMSIZ (16 characters or more) is refused, even if well-formed."""
    room = 15 - len(f"vif{domid}.")
    name = f"vif{domid}.{10**room + extra}"
    assert len(name) == 16
    with pytest.raises(ConfigError) as info:
        parse_vif_name("vif", name)
    check_config_error(info.value, "vif")


@PROPS
@given(st.integers(MAX_DOMID + 1, 10**8), st.integers(0, 99))
def test_too_large_domids_are_refused(domid: int, devid: int) -> None:
    """A domid above 32752 is refused whatever the devid."""
    with pytest.raises(ConfigError) as info:
        parse_vif_name("vif", f"vif{domid}.{devid}")
    check_config_error(info.value, "vif")


def check_ifname(key: str, text: str) -> None:
    try:
        name = parse_ifname(key, text)
    except ConfigError as exc:
        check_config_error(exc, key)
        return
    assert name == text and 0 < len(name) < 16
    assert set(name) <= IFNAME_CHARS  # hence no '/', whitespace, quotes, braces, ';', '%'
    assert not any(c.isspace() or c in "/'\"`{}[]();%*?$\\" for c in name)
    assert name not in (".", "..") and not name.startswith(("-", "."))


@PROPS
@given(KEYS, hostile_text, ifname_shaped)
def test_ifname_refused_or_safe(key: str, hostile: str, shaped: str) -> None:
    """parse_ifname refuses or returns a name < 16 chars without '/', whitespace, quotes, braces or syntax."""
    check_ifname(key, hostile)
    check_ifname(key, shaped)


@PROPS
@given(ifnames, st.characters(exclude_characters="".join(sorted(IFNAME_CHARS))) | st.sampled_from(NFT_SYNTAX),
       st.integers(0, 16))
def test_ifname_with_any_other_character_is_refused(name: str, char: str, at: int) -> None:
    """A valid name with any character outside [A-Za-z0-9_.-] slipped in is refused."""
    assume(char not in IFNAME_CHARS)
    with pytest.raises(ConfigError) as info:
        parse_ifname("vifname", name[:at] + char + name[at:])
    check_config_error(info.value, "vifname")


@PROPS
@given(ifnames)
def test_valid_ifnames_round_trip(name: str) -> None:
    """Every conservative interface name is accepted unchanged."""
    assert parse_ifname("vifname", name) == name


def check_mac(key: str, text: str) -> None:
    try:
        mac = parse_mac(key, text)
    except ConfigError as exc:
        check_config_error(exc, key)
        return
    assert mac == text and MAC_CONTRACT.fullmatch(mac)
    octets = bytes(int(x, 16) for x in mac.split(":"))
    assert not octets[0] & 1 and any(octets)


@PROPS
@given(KEYS, hostile_text, mac_shaped)
def test_mac_refused_or_unicast(key: str, hostile: str, shaped: str) -> None:
    """parse_mac refuses or returns a lowercase unicast MAC that is not all zeros."""
    check_mac(key, hostile)
    check_mac(key, shaped)


@PROPS
@given(st.binary(min_size=6, max_size=6))
def test_macs_accepted_exactly_when_unicast_and_not_zero(octets: bytes) -> None:
    """A lowercase MAC is accepted iff unicast and non-zero; its uppercase form never is."""
    text = ":".join(f"{x:02x}" for x in octets)
    good = not octets[0] & 1 and any(octets)
    if good:
        assert parse_mac("mac", text) == text
    else:
        with pytest.raises(ConfigError):
            parse_mac("mac", text)
    if text != text.upper():
        with pytest.raises(ConfigError):
            parse_mac("mac", text.upper())


def check_xenbus_path(key: str, text: str) -> None:
    try:
        path = parse_xenbus_path(key, text)
    except ConfigError as exc:
        check_config_error(exc, key)
        return
    assert path == text and 0 < len(path) <= 3072 and path.isascii()
    segments = path[1:].split("/") if path.startswith("/") else path.split("/")
    assert all(XS_SEGMENT.fullmatch(s) for s in segments)


@PROPS
@given(KEYS, hostile_text, xs_shaped)
def test_xenbus_path_refused_or_clean(key: str, hostile: str, shaped: str) -> None:
    """parse_xenbus_path refuses or returns an ASCII path of safe segments, no '.', '..' or empty segment."""
    check_xenbus_path(key, hostile)
    check_xenbus_path(key, shaped)


@PROPS
@given(xenbus_paths)
def test_valid_xenbus_paths_round_trip(path: str) -> None:
    """Well-formed XenStore paths are accepted unchanged."""
    assert parse_xenbus_path("XENBUS_PATH", path) == path


def check_host(addr: object, *, link_local_ok: bool = False) -> None:
    assert isinstance(addr, (IPv4Address, IPv6Address))
    assert not (addr.is_unspecified or addr.is_loopback or addr.is_multicast)
    assert link_local_ok or not addr.is_link_local
    if isinstance(addr, IPv4Address):
        assert not addr.is_reserved
    else:
        assert addr.ipv4_mapped is None and addr not in IPv6Network("::/8")
        assert link_local_ok or addr not in LINK_LOCAL6


def check_address_list(key: str, text: str) -> None:
    try:
        parsed = parse_address_list(key, text)
    except ConfigError as exc:
        check_config_error(exc, key)
        return
    assert isinstance(parsed, AddressList)
    assert parsed.ipv4 is None or isinstance(parsed.ipv4, IPv4Address)
    assert parsed.ipv6 is None or isinstance(parsed.ipv6, IPv6Address)
    assert len(parsed.used) <= 2 and len({a.version for a in parsed.used}) == len(parsed.used)
    for addr in (*parsed.used, *parsed.ignored):
        check_host(addr)
    assert len(text.split()) <= 8
    assert not (set(parsed.ignored) & set(parsed.used))


# Each example checks one hostile text and one address-shaped text: mixing
# both in a one_of lets hypothesis starve the address-shaped branch.
@PROPS
@given(KEYS, hostile_text, address_list_text)
def test_address_list_refused_or_valid(key: str, hostile: str, shaped: str) -> None:
    """parse_address_list refuses, or yields unicast host addresses, at most one of each family used."""
    check_address_list(key, hostile)
    check_address_list(key, shaped)


@FEW
@given(st.lists(host_addresses.map(str), min_size=9, max_size=12))
def test_more_than_eight_addresses_are_refused(texts: list[str]) -> None:
    """An address list of more than 8 entries is refused, however valid each entry."""
    with pytest.raises(ConfigError) as info:
        parse_address_list("ip", " ".join(texts))
    check_config_error(info.value, "ip")


@HEAVY
@given(st.lists(host_addresses, max_size=8).flatmap(
    lambda addrs: st.tuples(st.just(addrs), st.tuples(*(address_texts(a) for a in addrs)),
                            st.lists(st.sampled_from([" ", "  "]), min_size=len(addrs) + 1, max_size=len(addrs) + 1))))
def test_valid_address_lists_round_trip(case: tuple[list[IPAddress], tuple[str, ...], list[str]]) -> None:
    """A list of up to 8 valid addresses in any textual form parses to first-IPv4, first-IPv6, the rest ignored."""
    addrs, texts, spaces = case
    text = spaces[0] + "".join(t + s for t, s in zip(texts, spaces[1:], strict=True))
    parsed = parse_address_list("ip", text)
    v4 = [a for a in addrs if a.version == 4]
    v6 = [a for a in addrs if a.version == 6]
    assert parsed.ipv4 == (v4[0] if v4 else None)
    assert parsed.ipv6 == (v6[0] if v6 else None)
    assert parsed.ignored == tuple(a for a in addrs if a not in parsed.used)


@PROPS
@given(st.one_of(st.integers(0, 2**32 - 1).map(IPv4Address), st.integers(0, 2**128 - 1).map(IPv6Address),
                 st.integers(0, 2**16 - 1).map(lambda n: IPv6Address(f"::ffff:{n >> 8}.{n & 255}.0.1"))))
def test_host_addresses_accepted_exactly_when_the_contract_allows(addr: IPAddress) -> None:
    """parse_host_address(str(a)) accepts a iff it is a unicast host address (contract oracle), round-tripping."""
    if is_host(addr):
        assert parse_host_address("gw", str(addr)) == addr
    else:
        with pytest.raises(ConfigError) as info:
            parse_host_address("gw", str(addr))
        check_config_error(info.value, "gw")
    if addr in LINK_LOCAL6:
        assert parse_host_address("gw6", str(addr), allow_link_local=True) == addr


def check_host_address(key: str, text: str, link_local_ok: bool) -> None:
    try:
        addr = parse_host_address(key, text, allow_link_local=link_local_ok)
    except ConfigError as exc:
        check_config_error(exc, key)
        return
    check_host(addr, link_local_ok=link_local_ok)
    assert "/" not in text and "%" not in text


@PROPS
@given(KEYS, hostile_text, address_tokens, st.booleans())
def test_host_address_refused_or_valid(key: str, hostile: str, shaped: str, link_local_ok: bool) -> None:
    """parse_host_address refuses arbitrary text or returns a valid host address (link-local only if allowed)."""
    check_host_address(key, hostile, link_local_ok)
    check_host_address(key, shaped, link_local_ok)


@PROPS
@given(KEYS, st.one_of(st.none(), hostile_bytes, st.sampled_from([b"1", b"0", b" 1", b"1\n", b"01", b"true", b""])),
       st.booleans())
def test_service_flag(key: str, raw: bytes | None, default: bool) -> None:
    """A service flag is the default when absent, b'1' on, b'0' off, and anything else refused."""
    try:
        value = parse_service_flag(key, raw, default)
    except ConfigError as exc:
        check_config_error(exc, key)
        assert raw not in (None, b"0", b"1")
        return
    assert value is {None: default, b"1": True, b"0": False}[raw]


@PROPS
@given(KEYS, st.one_of(hostile_bytes, hostile_text), st.one_of(st.just(4096), st.integers(0, 5000)))
def test_decode_text_refused_or_printable(key: str, raw: bytes | str, limit: int) -> None:
    """decode_text refuses or returns printable text within the limit (ASCII when given bytes)."""
    try:
        text = decode_text(key, raw, limit=limit)
    except ConfigError as exc:
        check_config_error(exc, key)
        return
    assert text.isprintable() and len(text) <= limit
    assert not any(c in text for c in "\n\r\x00\x1b")
    if isinstance(raw, bytes):
        assert text.isascii() and text.encode("ascii") == raw
    else:
        assert text == raw


@PROPS
@given(st.text(alphabet=string.printable[:-6] + " ", max_size=200))  # printable ASCII, space, no other whitespace
def test_decode_text_accepts_printable_ascii(text: str) -> None:
    """Printable ASCII within the limit always decodes to itself."""
    assert decode_text("k", text.encode("ascii")) == text


# =============================================================================
# 2. Describing and planning
# =============================================================================

# --- a small model of the kernel objects a vif's plans touch -----------------
#
# Strict where the kernel is: adding an element needs its set, a rule its
# chain; deleting what is absent fails, as does deleting a chain another
# rule jumps to or a set a rule matches; a step that says what the object
# was before (SetLink, SetSysctl) fails when the model disagrees. Tables,
# sets, chains and rules are modelled too, so that an undo can be checked
# to take back exactly the objects its transaction created.

NftObject = tuple[Any, ...]
OTHER_VIF = "vif32751.9"  # another client's interface (a VM reusing an address)


def _json_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _elem_value(set_name: str, elem: Any) -> tuple[str, IPAddress] | IPAddress:
    if set_name == SET_ALLOWED:
        ifname, addr = elem["concat"]
        return ifname, ipaddress.ip_address(addr)
    return ipaddress.ip_address(elem)


def element_object(e: Element) -> NftObject:
    family = "ip" if e.addr.version == 4 else "ip6"
    value: Any = (e.ifname, e.addr) if e.kind == SET_ALLOWED else e.addr
    return ("elem", family, QUBES_TABLE, e.kind, value)


def _references(rule: NftObject) -> tuple[set[str], set[str]]:
    """The chains a modelled rule jumps to and the sets it matches."""
    leaves = set(string_leaves(json.loads(rule[4])))
    expr = json.loads(rule[4])
    targets = {e[k]["target"] for e in expr for k in ("goto", "jump") if isinstance(e, dict) and k in e}
    return targets, {s[1:] for s in leaves if s.startswith("@")}


class Kernel:
    def __init__(self) -> None:
        self.nft: set[NftObject] = set()
        self.links: dict[int, tuple[str, bool, int]] = {}  # index -> (name, up, group)
        self.sysctls: dict[str, str] = {}  # full keys, conf/default/... included
        self.routes: set[tuple[IPAddress, int, int]] = set()  # (dst, metric, oif)
        self.neighbours: dict[tuple[int, IPAddress], str] = {}  # (index, addr) -> mac
        self.addresses: set[tuple[int, IPAddress, int]] = set()
        self.reported: list[str] = []
        self.purged: list[tuple[IPAddress, ...]] = []
        self.ipv6 = False  # /proc/sys/net/ipv6 exists
        # a mapped vif's namespaces: name -> the links inside, and its netdev table as listed
        self.namespaces: dict[str, tuple[set[str], tuple[dict[str, Any], ...] | None]] = {}
        self.flow_supported = False  # the kernel has flowtables (CONFIG_NF_FLOW_TABLE)

    def state(self) -> tuple[Any, ...]:
        return (frozenset(self.nft), dict(self.links), dict(self.sysctls), frozenset(self.routes),
                dict(self.neighbours), frozenset(self.addresses))

    # --- nftables: one transaction, all or nothing (a failure fails the test) ---
    def nft_run(self, commands: tuple[Any, ...] | list[Any]) -> None:
        for command in commands:
            ((verb, obj),) = command.items()
            ((kind, body),) = obj.items()
            family = body["family"]
            table = body["name"] if kind == "table" else body["table"]
            in_table = {o for o in self.nft if o[1:3] == (family, table)}
            if verb == "add":
                assert kind == "table" or ("table", family, table) in self.nft, f"no table for {command}"
                if kind == "table":
                    self.nft.add(("table", family, table))
                elif kind in ("set", "chain"):
                    self.nft.add((kind, family, table, body["name"]))
                elif kind == "rule":
                    assert ("chain", family, table, body["chain"]) in self.nft, f"no chain for {command}"
                    rule = ("rule", family, table, body["chain"], _json_key(body["expr"]))
                    assert rule not in self.nft, f"rule added twice: {command}"
                    self.nft.add(rule)
                elif kind == "element":
                    assert ("set", family, table, body["name"]) in self.nft, f"an element without its set: {command}"
                    self.nft |= {("elem", family, table, body["name"], _elem_value(body["name"], e))
                                 for e in body["elem"]}
                elif kind == "flowtable":
                    self.nft.add(("flowtable", family, table, body["name"]))
                    self.nft |= {("flowdev", family, table, body["name"], dev) for dev in body.get("dev") or []}
                else:
                    raise AssertionError(command)
                continue
            if kind == "table":
                assert ("table", family, table) in self.nft, f"deleting an absent table: {command}"
                self.nft -= in_table
            elif kind == "chain":
                name = body["name"]
                assert ("chain", family, table, name) in self.nft, f"deleting an absent chain: {command}"
                others = [o for o in in_table if o[0] == "rule" and o[3] != name]
                assert not any(name in _references(o)[0] for o in others), f"deleting a chain in use: {command}"
                self.nft -= {o for o in in_table if o[0] in ("chain", "rule") and o[3] == name}
            elif kind == "set":
                name = body["name"]
                assert ("set", family, table, name) in self.nft, f"deleting an absent set: {command}"
                rules = [o for o in in_table if o[0] == "rule"]
                assert not any(name in _references(o)[1] for o in rules), f"deleting a set in use: {command}"
                self.nft -= {o for o in in_table if o[0] in ("set", "elem") and o[3] == name}
            elif kind == "element":
                for e in body["elem"]:
                    obj_ = ("elem", family, table, body["name"], _elem_value(body["name"], e))
                    assert obj_ in self.nft, f"deleting an absent element: {command}"
                    self.nft.discard(obj_)
            elif kind == "flowtable":
                for dev in body["dev"]:
                    obj_ = ("flowdev", family, table, body["name"], dev)
                    assert obj_ in self.nft, f"deleting an absent flowtable device: {command}"
                    self.nft.discard(obj_)
            else:
                raise AssertionError(command)

    # --- one step ---
    def apply(self, step: Step, guard: tuple[Element, ...] | None = None) -> None:
        """What the step's handler does to the modelled objects; ``guard``: the elements that
        must be in place before the link comes up in the vif group."""
        if isinstance(step, Rename):
            name, up, group = self.links[step.ifindex]
            assert name == step.old, step
            assert all(n != step.new for n, _, _ in self.links.values()), step
            self.links[step.ifindex] = (step.new, up, group)
            self.sysctls = {conf_key(key, step.old, step.new): v for key, v in self.sysctls.items()}
            # a flowtable holds the device, listed under its current name
            self.nft = {(*o[:4], step.new) if o[0] == "flowdev" and o[4] == step.old else o for o in self.nft}
        elif isinstance(step, SetLink):
            name, up, group = self.links[step.ifindex]
            assert (name, up, group) == (step.ifname, step.was_up, step.was_group), (step, self.links[step.ifindex])
            if guard is not None and step.up and step.group == VIF_GROUP:
                # The security argument: nothing passes before its antispoof elements are in.
                for e in guard:
                    assert element_object(e) in self.nft, f"link up before {e}"
                    family = element_object(e)[1]
                    assert {("chain", family, QUBES_TABLE, c) for c in ANTISPOOF_CHAINS} <= self.nft
            self.links[step.ifindex] = (name, step.up, step.group)
        elif isinstance(step, SetSysctl):
            assert self.sysctls.get(step.key) == step.previous, (step, self.sysctls.get(step.key))
            self.sysctls[step.key] = step.value
        elif isinstance(step, NftChange):
            before = set(self.nft)
            try:
                self.nft_run(step.commands)
            except AssertionError:
                self.nft = before
                raise
        elif isinstance(step, RouteChange):
            route = (step.dst, step.metric, step.ifindex)
            assert self.links[step.ifindex][0] == step.ifname, step
            if step.present:
                assert route not in self.routes, f"route exists: {step}"
                assert step.dst.version == 6 or self.links[step.ifindex][1], f"IPv4 route on a down link: {step}"
                self.routes.add(route)
            else:
                assert route in self.routes, f"no such route: {step}"
                self.routes.discard(route)
        elif isinstance(step, NeighbourChange):
            assert self.links[step.ifindex][0] == step.ifname, step
            if step.present:  # ip neigh replace
                self.neighbours[(step.ifindex, step.addr)] = step.mac
            else:
                assert (step.ifindex, step.addr) in self.neighbours, f"no such neighbour: {step}"
                del self.neighbours[(step.ifindex, step.addr)]
        elif isinstance(step, AddressChange):
            addr = (step.ifindex, step.addr, step.prefixlen)
            assert self.links[step.ifindex][0] == step.ifname, step
            assert (addr in self.addresses) != step.present, step
            (self.addresses.add if step.present else self.addresses.discard)(addr)
        elif isinstance(step, ReportConnected):
            self.reported.append(step.xenbus_path)
        elif isinstance(step, PurgeConntrack):
            self.purged.append(step.addrs)
        elif isinstance(step, (RemoveNamespace, CreateNamespace, MoveIntoNamespace, CreateVeth, ConfigureNamespace)):
            self.apply_namespace(step)
        else:
            assert isinstance(step, RunHooks), step  # nothing modelled

    def index_of(self, name: str) -> int | None:
        return next((i for i, (n, _, _) in self.links.items() if n == name), None)

    def new_link(self, name: str) -> int:
        assert self.index_of(name) is None, f"EEXIST: {name}"
        index = max(self.links, default=1) + 1
        self.links[index] = (name, False, 0)
        return index

    def apply_namespace(self, step: Step) -> None:
        """A mapped vif's namespace steps, as nsgateway.Namespaces makes them."""
        if isinstance(step, RemoveNamespace):
            if step.ns not in self.namespaces:
                return
            inside, _ = self.namespaces.pop(step.ns)
            if step.peer in inside:  # a veth goes with both ends
                veth = self.index_of(step.ifname)
                assert veth is not None, f"a veth without its netvm end: {step}"
                self.vanish(veth)
            if step.ifname in inside:  # the real vif back, down, under libxl's name
                self.new_link(step.restore_name)
        elif isinstance(step, CreateNamespace):
            assert step.ns not in self.namespaces, f"EEXIST: {step}"
            self.namespaces[step.ns] = (set(), None)
        elif isinstance(step, MoveIntoNamespace):
            index = self.index_of(step.old_name)
            if index is None:
                raise ApplyError(f"interface {step.old_name} does not exist")  # as the handler says
            inside, _ = self.namespaces[step.ns]
            assert step.ifname not in inside, f"EEXIST inside: {step}"
            self.links.pop(index)
            inside.add(step.ifname)
        elif isinstance(step, CreateVeth):
            inside, _ = self.namespaces[step.ns]
            assert step.peer not in inside, f"EEXIST inside: {step}"
            self.new_link(step.ifname)
            inside.add(step.peer)
        elif isinstance(step, ConfigureNamespace):
            inside, _ = self.namespaces[step.ns]
            assert {step.ifname, step.peer} <= inside, f"configuring a namespace without its links: {step}"
            self.namespaces[step.ns] = (inside, listed_table(step.rules))

    def run(self, plan: Plan, state: VifState) -> None:
        for step in plan.steps:
            self.apply(step, guard=state.elements)

    def vanish(self, index: int) -> None:
        """The backend destroyed the interface: what lived on it goes with it."""
        name = self.links.pop(index)[0]
        self.routes = {r for r in self.routes if r[2] != index}
        self.neighbours = {k: v for k, v in self.neighbours.items() if k[0] != index}
        self.addresses = {a for a in self.addresses if a[0] != index}
        self.sysctls = {k: v for k, v in self.sysctls.items() if f"/conf/{name}/" not in k}
        self.nft = {o for o in self.nft if not (o[0] == "flowdev" and o[4] == name)}


# --- the model seen through the gateways: what observe.py reads -------------
#
# The property tests never read the model themselves: they run the real
# kernel reader (vif_route_qubes.observe) over these gateways, which answer
# each read as the kernel's netlink and libnftables would answer it for the
# modelled objects. So the reader cannot drift from the code it stands for.


def conf_key(key: str, ifname: str, where: str) -> str:
    return key.replace(f"/conf/{ifname}/", f"/conf/{where}/", 1)


class ModelRtnl:
    """Rtnl's reads over the model (every modelled route is a main-table host route)."""

    def __init__(self, k: Kernel) -> None:
        self.k = k

    def get_link(self, name: str) -> RtLink | None:
        found = [RtLink(i, n, up, group) for i, (n, up, group) in self.k.links.items() if n == name]
        assert len(found) <= 1, f"two interfaces called {name}"
        return found[0] if found else None

    def host_routes_on(self, index: int) -> list[tuple[IPAddress, int]]:
        return [(dst, metric) for dst, metric, oif in sorted(self.k.routes, key=str) if oif == index]

    def host_routes_to(self, dst: IPAddress) -> list[HostRoute]:
        return [HostRoute(oif, metric) for d, metric, oif in sorted(self.k.routes, key=str) if d == dst]

    def list_permanent_neighbours(self, index: int) -> list[tuple[IPAddress, str | None]]:
        return [(a, mac) for (i, a), mac in self.k.neighbours.items() if i == index]

    def list_addresses(self, index: int) -> list[tuple[IPAddress, int]]:
        return [(a, p) for i, a, p in sorted(self.k.addresses, key=str) if i == index]


class ModelNft:
    """Nft's reads over the model, answering as libnftables' JSON listings do."""

    def __init__(self, k: Kernel) -> None:
        self.k = k

    def query(self, command: dict[str, Any], *, terse: bool = False) -> list[dict[str, Any]] | None:
        ((what, body),) = command["list"].items()
        nft = sorted(self.k.nft, key=str)
        if what in ("chains", "sets"):
            kind = what[:-1]
            return [{kind: {"family": o[1], "table": o[2], "name": o[3]}} for o in nft if o[0] == kind]
        if what == "tables":
            return [{"table": {"family": o[1], "name": o[2]}} for o in nft if o[0] == "table"]
        if what == "set":
            where = (body["family"], body["table"], body["name"])
            if ("set", *where) not in self.k.nft:
                return None
            # elements as libnftables lists them: an address, or {"concat": [ifname, address]}
            elems = [o[4] for o in nft if o[0] == "elem" and o[1:4] == where]
            listed = [{"concat": [e[0], str(e[1])]} if isinstance(e, tuple) else str(e) for e in elems]
            set_: dict[str, Any] = {"family": where[0], "table": where[1], "name": where[2]}
            return [{"set": set_ | ({"elem": listed} if listed else {})}]
        if what == "flowtable":
            where = (body["family"], body["table"], body["name"])
            if ("flowtable", *where) not in self.k.nft:
                return None  # libnftables: "No such file or directory"
            devs = [o[4] for o in nft if o[0] == "flowdev" and o[1:4] == where]
            listing: dict[str, Any] = {"family": where[0], "table": where[1], "name": where[2]}
            if devs:  # one device is listed as a string, several as a list (libnftables-json(5))
                listing["dev"] = devs[0] if len(devs) == 1 else devs
            return [{"flowtable": listing}]
        raise AssertionError(f"a query the model does not answer: {command}")

    def has_element(self, family: str, table: str, set_name: str, addr: IPAddress, ifname: str | None = None) -> bool:
        assert ("set", family, table, set_name) in self.k.nft, f"lookup in a set that does not exist: {set_name}"
        value: Any = (ifname, addr) if set_name == SET_ALLOWED else addr
        assert (ifname is not None) == (set_name == SET_ALLOWED), (set_name, ifname)
        return ("elem", family, table, set_name, value) in self.k.nft

    def accepts(self, commands: list[Any]) -> tuple[bool, str]:
        assert commands == build_flowtable_probe(), commands
        return self.k.flow_supported, "" if self.k.flow_supported else "Error: Could not process rule"


class ModelSysctl:
    def __init__(self, k: Kernel) -> None:
        self.k = k

    def exists(self, key: str) -> bool:
        assert key == "net/ipv6", key
        return self.k.ipv6

    def read(self, key: str) -> str | None:
        return self.k.sysctls.get(key)


class ModelNamespaces:
    """The namespaces gateway's reads over the model."""

    def __init__(self, k: Kernel) -> None:
        self.k = k

    def exists(self, ns: str) -> bool:
        return ns in self.k.namespaces

    def links_inside(self, ns: str, names: tuple[str, ...]) -> dict[str, bool]:
        inside, _ = self.k.namespaces[ns]
        return {name: name in inside for name in names}

    def table_inside(self, ns: str) -> tuple[dict[str, Any], ...] | None:
        return self.k.namespaces[ns][1]


def listed_table(commands: tuple[Any, ...] | list[Any]) -> tuple[dict[str, Any], ...] | None:
    """The netdev table that ``commands`` leave, as libnftables lists it (a netdev chain without its device)."""
    items: list[dict[str, Any]] | None = None
    for command in commands:
        ((verb, obj),) = command.items()
        ((kind, body),) = obj.items()
        if kind == "table":
            items = [{"table": dict(body)}] if verb == "add" else None
        elif verb == "add" and items is not None and kind in ("chain", "rule"):
            items.append({kind: {k: v for k, v in body.items() if k != "dev"}})
        else:
            raise AssertionError(f"not modelled: {command}")
    return tuple(items) if items is not None else None


def model_gateways(k: Kernel) -> Gateways:
    """The gateways over the model: reads only (the plans are applied by Kernel.apply)."""
    unused: Any = object()
    return Gateways(rtnl=cast(Any, ModelRtnl(k)), nft=cast(Any, ModelNft(k)), sysctl=cast(Any, ModelSysctl(k)),
                    conntrack=unused, hooks=unused, status=unused, namespaces=cast(Any, ModelNamespaces(k)))


# --- generated worlds: inputs and a kernel before the event ------------------


class World:
    """A vif's inputs and the modelled kernel; every read of the kernel is the real observe.py's."""

    def __init__(self, inp: VifInputs, kernel: Kernel, index: int, ipv6_kernel: bool, ipv6_on_vif: bool,
                 flow_supported: bool) -> None:
        self.inp, self.kernel, self.index = inp, kernel, index
        kernel.ipv6, kernel.flow_supported = ipv6_kernel, flow_supported
        self.gw = model_gateways(kernel)
        if index in kernel.links:
            self.set_ipv6_on_vif(ipv6_on_vif)

    @property
    def ipv6_kernel(self) -> bool:
        return self.kernel.ipv6

    @property
    def flow_supported(self) -> bool:
        return self.kernel.flow_supported

    def set_ipv6_on_vif(self, on: bool) -> None:
        """disable_ipv6 of the vif (a kernel without IPv6 has no such key)."""
        if self.kernel.ipv6:
            name = self.kernel.links[self.index][0]
            self.kernel.sysctls[f"net/ipv6/conf/{name}/disable_ipv6"] = "0" if on else "1"

    def __repr__(self) -> str:
        k = self.kernel
        return (f"World({self.inp!r}, index={self.index}, ipv6_kernel={k.ipv6}, "
                f"flow_supported={k.flow_supported}, nft={sorted(map(str, k.nft))}, "
                f"links={k.links}, sysctls={k.sysctls}, routes={k.routes}, neighbours={k.neighbours}, "
                f"addresses={k.addresses})")

    def environment(self) -> Environment:
        return read_environment(self.gw, self.inp)

    def describe(self, inp: VifInputs | None = None) -> VifState:
        return describe(inp or self.inp, read_environment(self.gw, inp or self.inp))

    def observe(self, state: VifState, *, others: bool = False) -> Observed:
        env = self.environment()
        return read_observed(self.gw, state, env.link, env, others=others)

    def online(self) -> tuple[VifState, Plan]:
        state = self.describe()
        return state, plan_online(state, self.observe(state), self.inp.xenbus_path)

    def offline(self, inp: VifInputs | None = None) -> tuple[VifState, Plan]:
        state = self.describe(inp)
        env = read_environment(self.gw, inp or self.inp)
        return state, plan_offline(state, read_observed(self.gw, state, env.link, env, others=True), NO_NAMESPACE)


NO_NAMESPACE = NamespaceFacts(False, False, False, False, False, None)
SYSCTL_VALUES = st.sampled_from(["0", "1", "2"])


def _antispoof_objects(family: str, table: bool, sets: frozenset[str], chains: frozenset[str]) -> list[Any]:
    """The commands that make exactly these anti-spoofing objects (with their chains' rules)."""
    keep = []
    for command in build_antispoof(family, table=False, sets=(), chains=()):
        ((kind, body),) = command["add"].items()
        if (kind == "table" and table) or (kind == "set" and body["name"] in sets) or (
                kind == "chain" and body["name"] in chains) or (kind == "rule" and body["chain"] in chains):
            keep.append(command)
    return keep


@st.composite
def base_objects(draw: st.DrawFn) -> tuple[bool, frozenset[str], frozenset[str]]:
    """Which anti-spoofing objects a family has: all (the usual case), none, or a consistent part."""
    kind = draw(st.sampled_from(["all", "all", "none", "part"]))
    if kind == "all":
        return True, frozenset(ANTISPOOF_SETS), frozenset(ANTISPOOF_CHAINS)
    if kind == "none":
        return False, frozenset(), frozenset()
    sets = draw(st.frozensets(st.sampled_from(ANTISPOOF_SETS)))
    chains = draw(st.frozensets(st.sampled_from(ANTISPOOF_CHAINS)))
    # a rule can only match a set and jump to a chain that exist
    if SET_ALLOWED not in sets:
        chains -= {"antispoof"}
    if SET_DOWNSTREAM not in sets or "antispoof" not in chains:
        chains -= {"prerouting"}
    return True, sets, chains


@st.composite
def worlds(draw: st.DrawFn, *, fresh: bool | None = None, mapped: bool | None = None, stale: bool = False) -> World:
    """A vif's inputs and the kernel before its event: a fresh vif (link down under libxl's name,
    nothing of ours), or one with any consistent part of its objects already there (``stale``: and
    permanent neighbour entries for the client's addresses with another MAC)."""
    inp = draw(vif_inputs(mapped=mapped))
    if fresh is None:
        fresh = draw(st.booleans())
    ipv6_kernel = draw(st.booleans())
    ipv6_on_vif = ipv6_kernel and draw(st.booleans())
    k = Kernel()
    index = draw(link_indexes)
    other_index = index - 1  # another client's interface
    if fresh:
        name, up, group = inp.vif.name, False, 0
    else:
        name = draw(st.sampled_from(sorted({inp.vif.name, inp.ifname})))
        up = draw(st.booleans())
        group = VIF_GROUP if name != inp.vif.name else draw(st.sampled_from([0, VIF_GROUP]))
    k.links[index] = (name, up, group)
    world = World(inp, k, index, ipv6_kernel, ipv6_on_vif, draw(st.booleans()))
    state = world.describe()

    for s in state.sysctls:
        default = draw(SYSCTL_VALUES)
        k.sysctls[conf_key(s.key, state.ifname, "default")] = default
        k.sysctls[conf_key(s.key, state.ifname, name)] = default if fresh else draw(st.sampled_from([default, s.value]))
    for family in FAMILIES if ipv6_kernel else FAMILIES[:1]:
        k.nft_run(_antispoof_objects(family, *draw(base_objects())))
    if draw(st.booleans()):  # the acceleration table, with the uplink in it
        k.nft_run(build_flowtable("eth0", table=False, present=True))
        if not fresh and draw(st.booleans()):
            k.nft_run(build_flowtable(name, table=True, present=True))

    sets = {o[1:4] for o in k.nft if o[0] == "set"}
    for addr in state.client_addresses:
        family = "ip" if addr.version == 4 else "ip6"
        if draw(st.integers(0, 3)) == 0:
            # Another VM reusing the address (its offline has not run): its
            # interface routes it, and it is in the sets.
            k.routes.add((addr, draw(st.integers(0, MAX_DOMID)), other_index))
            for e in (Element(SET_ALLOWED, addr, OTHER_VIF), Element(SET_DOWNSTREAM, addr)):
                if (family, QUBES_TABLE, e.kind) in sets:
                    k.nft.add(element_object(e))
    if not fresh:
        for e in state.elements:
            if (element_object(e)[1], QUBES_TABLE, e.kind) in sets and draw(st.booleans()):
                k.nft.add(element_object(e))
        for r in state.routes:
            if (up or r.dst.version == 6) and draw(st.booleans()):
                k.routes.add((r.dst, r.metric, index))
        for n in state.neighbours:
            if n.mac is not None and draw(st.booleans()):
                # (a stale entry with another MAC: see test_undo_of_a_replaced_neighbour_restores_it)
                k.neighbours[(index, n.addr)] = draw(macs) if stale and draw(st.booleans()) else n.mac
        for a in state.addresses:
            if draw(st.booleans()):
                k.addresses.add((index, a.addr, a.prefixlen))
    # What an administrator's hook (or the kernel) put on the vif: never ours.
    for addr, prefixlen in draw(link_addresses):
        if (addr, prefixlen) not in {(a.addr, a.prefixlen) for a in state.addresses}:
            k.addresses.add((index, addr, prefixlen))
    return world


def check_online_did_its_work(world: World, state: VifState) -> None:
    k, index = world.kernel, world.index
    name, up, group = k.links[index]
    assert (name, up, group) == (state.ifname, True, VIF_GROUP)
    assert all(element_object(e) in k.nft for e in state.elements)
    assert {(r.dst, r.metric) for r in state.routes} <= {(d, m) for d, m, i in k.routes if i == index}
    assert all(k.neighbours.get((index, n.addr)) == n.mac for n in state.neighbours)
    assert all((index, a.addr, a.prefixlen) in k.addresses for a in state.addresses)
    assert all(k.sysctls[conf_key(s.key, state.ifname, name)] == s.value for s in state.sysctls)
    in_flowtable = any(o[0] == "flowdev" and o[4] == name for o in k.nft)
    assert in_flowtable or not (state.flowtable and world.flow_supported)
    assert k.reported == [world.inp.xenbus_path]
    assert k.purged == ([state.purge] if state.purge else [])


def persistent(k: Kernel) -> set[NftObject]:
    """What an event may leave created: anti-spoofing objects and the acceleration table (not their contents)."""
    return {o for o in k.nft if o[0] in ("table", "set", "chain", "rule", "flowtable")}


def without_persistent(snapshot: tuple[Any, ...]) -> tuple[Any, ...]:
    return (frozenset(o for o in snapshot[0] if o[0] in ("elem", "flowdev")), *snapshot[1:])


@HEAVY
@given(worlds())
def test_description(world: World) -> None:
    """describe: elements for the client's addresses wherever the kernel has the family, routes and
    neighbours only where IPv6 works on the vif (never for a mapped vif), gateways as full-prefix
    addresses, sysctls inside the interface's own directory, one note per address left out."""
    inp, env = world.inp, world.environment()
    state = describe(inp, env)
    mapped = inp.mapping is not None
    used = inp.addresses.used
    protected = [a for a in used if a.version == 4 or env.ipv6_kernel]
    routed = [a for a in used if a.version == 4 or (env.ipv6_on_vif and not mapped)]
    assert state.vif == inp.vif.name and state.ifname == inp.ifname and state.group == VIF_GROUP
    assert state.elements == tuple([Element(SET_ALLOWED, a, inp.ifname) for a in protected]
                                   + [Element(SET_DOWNSTREAM, a) for a in protected])
    assert [r.dst for r in state.routes] == routed and len({r.metric for r in state.routes}) <= 1
    assert all(r.metric > 0 for r in state.routes) or inp.vif.domid == MAX_DOMID
    assert [(n.addr, n.mac) for n in state.neighbours] == [(a, inp.mac) for a in routed]
    assert state.purge == tuple(protected) and state.client_addresses == tuple(protected)
    assert state.hook_addresses == used
    gateways: list[IPAddress] = [inp.gateway] if inp.gateway is not None else []
    if inp.gateway6 is not None and not inp.gateway6.is_link_local and env.ipv6_on_vif and not mapped:
        gateways.append(inp.gateway6)
    assert [(a.addr, a.prefixlen) for a in state.addresses] == [(g, g.max_prefixlen) for g in gateways]
    keys = [s.key for s in state.sysctls]
    assert len(set(keys)) == len(keys) and keys[0] == f"net/ipv4/conf/{inp.ifname}/proxy_arp"
    for key in keys:  # /proc/sys/net/ipv?/conf/<ifname>/<name>: the name never escapes its directory
        parts = key.split("/")
        assert len(parts) == 5 and parts[0] == "net" and parts[1] in ("ipv4", "ipv6") and parts[2:4] == [
            "conf", inp.ifname]
        assert parts[1] == "ipv4" or env.ipv6_kernel
    assert (f"net/ipv4/conf/{inp.ifname}/send_redirects" in keys) == inp.harden
    assert (f"net/ipv6/conf/{inp.ifname}/proxy_ndp" in keys) == (inp.gateway6 in gateways)
    assert (f"net/ipv6/conf/{inp.ifname}/disable_ipv6" in keys) == (mapped and env.ipv6_kernel)
    assert (state.namespace is not None) == mapped
    if state.namespace is not None and inp.mapping is not None:
        assert state.namespace.name == namespace_name(inp.ifname) and state.namespace.vif == inp.vif.name
        assert state.namespace.rules == tuple(build_nat_table(inp.mapping, inp.ifname, peer_name(inp.ifname)))
    assert len(state.notes) == len(used) - len(routed) + len(inp.addresses.ignored) + (
        inp.gateway6 is not None and not inp.gateway6.is_link_local and not mapped and not env.ipv6_on_vif)


@pytest.mark.parametrize(("vif", "metric"), [("vif1.0", 32751), ("vif12.0", 32740), ("vif12.7", 32740),
                                             ("vif100.0", 32652), ("vif32751.0", 1)])
def test_route_metric_examples(vif: str, metric: int) -> None:
    """A few literal metrics (contract: 32752 - domid)."""
    inp = VifInputs(vif=parse_vif_name("vif", vif), xenbus_path="backend/vif/1/0", ifname=vif,
                    addresses=parse_address_list("ip", "10.137.0.12"), ip_missing=False, mac="00:16:3e:00:00:01",
                    vif_type="vif", gateway=IPv4Address("10.137.0.1"), gateway6=None, harden=False, flowtable=False)
    state = describe(inp, Environment(None, False, False))
    assert [r.metric for r in state.routes] == [metric]


@PROPS
@given(st.integers(0, MAX_DOMID - 1), st.integers(0, MAX_DOMID - 1), st.integers(0, 99), st.integers(0, 99))
def test_route_metric_positive_and_decreasing(d1: int, d2: int, devid1: int, devid2: int) -> None:
    """The route metric is positive and strictly decreasing in the domid (later VMs preferred); the devid
    does not matter."""
    assume(d1 < d2)

    def metric(domid: int, devid: int) -> int:
        return parse_vif_name("vif", f"vif{domid}.{devid}").metric

    assert metric(d1, devid1) > metric(d2, devid2) > 0
    assert metric(d1, devid1) == metric(d1, devid2)


@HEAVY
@given(worlds())
def test_online_plan_order_and_contents(world: World) -> None:
    """plan_online: rename and sysctls, then the purge, then one NftChange, then the link up in the vif
    group, then routes, neighbours, gateway addresses, hooks; the report last; only our addresses."""
    inp = world.inp
    state, plan = world.online()
    steps = plan.steps
    link = world.environment().link
    assert link is not None and plan.ifname == inp.ifname and plan.link_index == world.index

    nft = positions(steps, NftChange)
    assert len(nft) <= 1
    ups = positions(steps, SetLink)
    assert len(ups) <= 1 and all(steps[i].up and steps[i].group == VIF_GROUP for i in ups)  # type: ignore[union-attr]
    assert bool(ups) == (not link.up or link.group != VIF_GROUP)
    barrier = (nft or [-1])[0]  # everything that configures comes before the elements...
    assert all(i < barrier for i in positions(steps, Rename, SetSysctl, PurgeConntrack)) or not nft
    assert all(i < j for i in positions(steps, Rename) for j in positions(steps, SetSysctl, PurgeConntrack))
    assert all(i > barrier for i in ups)  # ... the link comes up only after them
    after = max([barrier, *ups])
    changes = positions(steps, RouteChange, NeighbourChange, AddressChange)
    assert all(i > after for i in changes)
    assert all(i > j for i in positions(steps, RunHooks) for j in changes + [after])
    assert isinstance(steps[-1], ReportConnected) and positions(steps, ReportConnected) == [len(steps) - 1]
    assert all(getattr(s, "present", True) for s in steps)
    assert [s for s in steps if isinstance(s, PurgeConntrack)] == ([PurgeConntrack(state.purge)] if state.purge else [])

    # Rename first, exactly when the interface does not have its name yet.
    assert (positions(steps, Rename) == [0]) == (link.name != inp.ifname)
    if link.name != inp.ifname:
        assert steps[0] == Rename(world.index, inp.vif.name, inp.ifname)

    # Only the client's used addresses and this netvm's gateways appear.
    allowed = set(inp.addresses.used) | {g for g in (inp.gateway, inp.gateway6) if g is not None}
    for step in steps:
        assert set(addresses_of(step)) <= allowed, step
    protected = {e.addr for e in state.elements}
    metrics = {s.metric for s in steps if isinstance(s, RouteChange)}
    assert len(metrics) <= 1
    for step in steps:
        if isinstance(step, RouteChange):
            assert step.dst in protected  # never routed unprotected
        if isinstance(step, NeighbourChange):
            assert step.addr in protected and step.mac == inp.mac and step.mac is not None
        if isinstance(step, AddressChange):
            assert step.addr in (inp.gateway, inp.gateway6) and step.prefixlen == step.addr.max_prefixlen
            assert not step.addr.is_link_local
        if isinstance(step, (RouteChange, NeighbourChange, AddressChange)):
            assert step.ifname == inp.ifname and step.ifindex == world.index


@FEW
@given(vif_inputs(), st.booleans())
def test_online_without_the_interface_plans_nothing(inp: VifInputs, ipv6: bool) -> None:
    """plan_online refuses (ApplyError) when the interface does not exist."""
    world = World(inp, Kernel(), 2, ipv6, False, False)
    state = world.describe()
    obs = world.observe(state)
    assert obs.link is None
    with pytest.raises(ApplyError):
        plan_online(state, obs, inp.xenbus_path)


@HEAVY
@given(worlds())
def test_online_applies_and_converges(world: World) -> None:
    """Online, applied to the model of any kernel state, leaves the vif complete (protected, up in the
    vif group, routed, reachable, reported) and touches nothing else; a second online changes nothing."""
    k = world.kernel
    foreign = {a for a in k.addresses if a[1] not in {g for g in (world.inp.gateway, world.inp.gateway6)}}
    others = {o for o in k.nft if o[0] == "elem" and OTHER_VIF in str(o[4])}
    state, plan = world.online()
    k.run(plan, state)
    check_online_did_its_work(world, state)
    assert foreign <= k.addresses and others <= k.nft

    again = world.online()[1]
    assert [type(s) for s in again.steps if not isinstance(s, (PurgeConntrack, RunHooks, ReportConnected))] == []


@HEAVY
@given(worlds(), st.data())
def test_undo_log_restores_the_state_before(world: World, data: st.DataObject) -> None:
    """After any prefix of an online plan, the inverses of the applied steps, in reverse, return the
    kernel to exactly its state before, but for the anti-spoofing objects and acceleration table an
    event may create and never removes (another vif may rely on them at once)."""
    k = world.kernel
    before = k.state()
    state, plan = world.online()
    applied = plan.steps[:data.draw(st.integers(0, len(plan.steps)), label="applied")]
    undo = []
    for step in applied:
        k.apply(step, guard=state.elements)
        inverse = step.inverse()
        if inverse is not None:
            undo.append(inverse)
    for inverse in reversed(undo):
        k.apply(inverse)
    assert without_persistent(k.state()) == without_persistent(before)


def test_undo_of_a_replaced_neighbour_restores_it() -> None:
    """A permanent entry for the client's address with another MAC (stale) is replaced by online;
    the undo log should put it back, not delete it."""
    inp = VifInputs(vif=parse_vif_name("vif", "vif12.0"), xenbus_path="backend/vif/12/0", ifname="vif12.0",
                    addresses=parse_address_list("ip", "10.137.0.12"), ip_missing=False, mac="00:16:3e:00:00:12",
                    vif_type="vif", gateway=IPv4Address("10.137.0.1"), gateway6=None, harden=False, flowtable=False)
    k = Kernel()
    k.links[5] = ("vif12.0", False, 0)
    k.sysctls = {"net/ipv4/conf/default/proxy_arp": "0", "net/ipv4/conf/vif12.0/proxy_arp": "0"}
    k.nft_run(build_antispoof("ip", table=False, sets=(), chains=()))
    k.neighbours[(5, IPv4Address("10.137.0.12"))] = "00:16:3e:00:00:99"  # stale
    world = World(inp, k, 5, False, False, False)
    before = k.state()
    state, plan = world.online()
    undo = []
    for step in plan.steps:
        k.apply(step, guard=state.elements)
        inverse = step.inverse()
        if inverse is not None:
            undo.append(inverse)
    for inverse in reversed(undo):
        k.apply(inverse)
    assert k.neighbours == before[4]


def _simple_world(k: Kernel, domid: int, index: int) -> World:
    name, addr = f"vif{domid}.0", IPv4Address(f"10.137.0.{domid}")
    inp = VifInputs(vif=parse_vif_name("vif", name), xenbus_path=f"backend/vif/{domid}/0", ifname=name,
                    addresses=parse_address_list("ip", str(addr)), ip_missing=False, mac=f"00:16:3e:00:00:{domid:02x}",
                    vif_type="vif", gateway=IPv4Address("10.137.0.1"), gateway6=None, harden=False, flowtable=False)
    k.links[index] = (name, False, 0)
    k.sysctls |= {"net/ipv4/conf/default/proxy_arp": "0", f"net/ipv4/conf/{name}/proxy_arp": "0"}
    return World(inp, k, index, False, False, False)


def test_undo_leaves_other_vifs_protected() -> None:
    """Two VMs start on a netvm whose anti-spoofing objects are missing (its ruleset flushed): vif A's
    transaction creates them; vif B's whole event runs while A's hooks do; then A fails to report (its VM
    was destroyed meanwhile) and unwinds its undo log. B, up in the vif group, must stay protected."""
    k = Kernel()
    a, b = _simple_world(k, 12, 5), _simple_world(k, 13, 6)
    state_a, plan_a = a.online()
    undo = []
    for step in plan_a.steps[:-1]:  # everything but the report
        k.apply(step, guard=state_a.elements)
        inverse = step.inverse()
        if inverse is not None:
            undo.append(inverse)
    state_b, plan_b = b.online()
    k.run(plan_b, state_b)
    for inverse in reversed(undo):
        k.apply(inverse)
    assert k.links[6] == ("vif13.0", True, VIF_GROUP)
    assert all(element_object(e) in k.nft for e in state_b.elements)
    assert {("chain", "ip", QUBES_TABLE, c) for c in ANTISPOOF_CHAINS} <= k.nft


MEANWHILE = st.sampled_from(["nothing", "nothing", "vanished", "no QubesDB", "IPv6 switched"])


@HEAVY
@given(worlds(fresh=True), MEANWHILE)
def test_online_then_offline_restores_the_model(world: World, meanwhile: str) -> None:
    """Online then offline leaves the modelled kernel as it was (anti-spoofing objects and the
    acceleration table aside, which an event may create and never removes), also when the interface
    vanished first; without QubesDB, or with IPv6 switched on or off on the vif meanwhile, offline
    still takes the client off the network (what online made of QubesDB's values and of IPv6 then
    goes with the interface)."""
    k = world.kernel
    state, online = world.online()
    before = k.state()
    k.run(online, state)
    check_online_did_its_work(world, state)
    created = persistent(k)
    offline_inp = None
    switched_off = False
    if meanwhile == "vanished":
        k.vanish(world.index)
    elif meanwhile == "no QubesDB":  # read_inputs(qdb=None): no gateways, flags or mapping
        offline_inp = world.inp._replace(gateway=None, gateway6=None, harden=False, flowtable=False, mapping=None)
    elif meanwhile == "IPv6 switched" and world.ipv6_kernel:
        switched_off = world.environment().ipv6_on_vif
        world.set_ipv6_on_vif(not switched_off)
        if switched_off:  # disable_ipv6=1: the kernel drops the interface's IPv6 state
            k.routes = {r for r in k.routes if not (r[2] == world.index and r[0].version == 6)}
            k.neighbours = {key: v for key, v in k.neighbours.items() if not (key[0] == world.index
                                                                                 and key[1].version == 6)}
            k.addresses = {a for a in k.addresses if not (a[0] == world.index and a[1].version == 6)}
    offline_state, offline = world.offline(offline_inp)
    assert offline.command == "offline" and not positions(offline.steps, ReportConnected)
    # kept by design: the downstream element of an address another interface routes
    elsewhere = world.observe(offline_state, others=True).routed_elsewhere
    kept = {element_object(Element(SET_DOWNSTREAM, a)) for a in elsewhere}
    k.run(offline, offline_state)

    expected = list(before)
    expected[0] = frozenset(o for o in before[0] if o[0] in ("elem", "flowdev")) | created | kept
    after = list(k.state())
    if meanwhile == "vanished":
        expected[1] = {}
        expected[2] = {key: v for key, v in before[2].items() if f"/conf/{world.inp.vif.name}/" not in key}
        expected[3] = frozenset(r for r in before[3] if r[2] != world.index)
        expected[4] = {}
        expected[5] = frozenset()
        expected[0] = frozenset(o for o in expected[0] if not (o[0] == "flowdev" and o[4] == world.inp.ifname))
    elif meanwhile == "no QubesDB":
        # the gateway addresses and the hardening sysctls stay (and go with the interface)
        assert before[5] <= after[5] and {a[1] for a in after[5] - before[5]} <= {world.inp.gateway, world.inp.gateway6}
        after[2] = expected[2] = {}
        after[5] = expected[5] = frozenset()
    elif meanwhile == "IPv6 switched":
        # the IPv6 sysctls of the vif stay (and go with the interface)
        after[2] = {key: v for key, v in after[2].items() if not key.startswith("net/ipv6/")}
        expected[2] = {key: v for key, v in before[2].items() if not key.startswith("net/ipv6/")}
        if switched_off:  # what the kernel dropped with IPv6 (an administrator's addresses too)
            expected[5] = frozenset(a for a in before[5] if not (a[0] == world.index and a[1].version == 6))
    assert tuple(after) == tuple(expected)

    # ... and a second offline finds nothing more to remove
    again = world.offline(offline_inp)[1]
    assert [s for s in again.steps if not isinstance(s, (PurgeConntrack, RunHooks))] == []


@HEAVY
@given(worlds(fresh=True), st.data())
def test_offline_keeps_downstream_exactly_when_routed_elsewhere(world: World, data: st.DataObject) -> None:
    """Offline removes every ``allowed`` element of the vif, and its ``downstream`` element exactly when
    another interface routes the address (a new VM reusing it must stay protected from forgeries),
    also when the interface is already gone (libxl often runs offline after Xen removed it)."""
    k = world.kernel
    state, online = world.online()
    k.run(online, state)
    for addr in state.client_addresses:  # a new VM took the address meanwhile (or an old one still has it)
        if data.draw(st.booleans(), label=f"{addr} routed elsewhere"):
            k.routes.add((addr, 7, world.index - 1))
    if data.draw(st.booleans(), label="vanished before offline"):
        k.vanish(world.index)
    # the oracle: the model's routing table itself, not the reader
    routed = {d for d, _, i in k.routes if i != world.index and d in state.client_addresses}
    offline_state, offline = world.offline()
    assert world.observe(offline_state, others=True).routed_elsewhere == routed
    k.run(offline, offline_state)
    for e in state.elements:
        kept = e.kind == SET_DOWNSTREAM and e.addr in routed
        assert (element_object(e) in k.nft) == kept, e
    assert len(offline.notes) == len([a for a in state.client_addresses if a in routed])
    assert all(any(str(a) in n for n in offline.notes) for a in routed)


@HEAVY
@given(worlds(), st.lists(host_addresses, min_size=1, max_size=3))
def test_offline_without_the_ip_key_finds_exactly_the_vifs_addresses(world: World, others: list[IPAddress]) -> None:
    """Offline's fallback when XenStore lost the ``ip`` key: the addresses paired with the vif's name in
    ``allowed`` (read_allowed_addresses), never another VM's, whatever else the sets hold."""
    k = world.kernel
    state, online = world.online()
    k.run(online, state)
    for addr in others:  # other VMs' pairs
        family = "ip" if addr.version == 4 else "ip6"
        if ("set", family, QUBES_TABLE, SET_ALLOWED) in k.nft:
            k.nft.add(element_object(Element(SET_ALLOWED, addr, f"vif{32700 + len(k.nft)}.0")))
    found = read_allowed_addresses(world.gw, world.inp.ifname)
    protected = [e.addr for e in state.elements if e.kind == SET_ALLOWED]
    assert found.used == tuple(sorted(protected, key=lambda a: a.version)) and found.ignored == ()


@HEAVY
@given(worlds(stale=True))
def test_offline_plan_order(world: World) -> None:
    """plan_offline, from any state: link down (group 0) first, routes before the elements go, nothing
    added, no report, the rename undone after the hooks, the purge last; only our addresses; applied,
    it leaves nothing of the vif's (a neighbour entry for the client's address, whatever its MAC,
    is ours; an address routed elsewhere stays in downstream)."""
    inp = world.inp
    state, plan = world.offline()
    steps = plan.steps
    link = world.environment().link
    assert link is not None
    if link.up or link.group != 0:
        assert steps[0] == SetLink(world.index, link.name, False, 0, link.up, link.group)
    assert not any(isinstance(s, SetLink) and s.up for s in steps)
    assert not positions(steps, ReportConnected)
    nft = positions(steps, NftChange)
    assert len(nft) <= 1 and all(i < j for i in positions(steps, RouteChange) for j in nft)
    for step in steps:
        assert not getattr(step, "present", False), step
        assert set(addresses_of(step)) <= set(inp.addresses.used) | {inp.gateway, inp.gateway6}, step
        if isinstance(step, NftChange):  # removals only: nothing is left that was not there
            before = set(world.kernel.nft)
            world.kernel.apply(step)
            assert world.kernel.nft <= before and not step.undo
            world.kernel.nft = before
    renames = positions(steps, Rename)
    assert (renames != []) == (link.name == inp.ifname != inp.vif.name)
    if renames:
        assert steps[renames[0]] == Rename(world.index, inp.ifname, inp.vif.name)
        assert all(i < renames[0] for i in positions(steps, RunHooks, SetSysctl, RouteChange, NeighbourChange,
                                                      AddressChange))
    if state.purge:
        assert isinstance(steps[-1], PurgeConntrack) and steps[-1].addrs == state.purge

    k = world.kernel
    elsewhere = world.observe(state, others=True).routed_elsewhere
    k.run(plan, state)
    index = world.index
    assert k.links[index] == (inp.vif.name, False, 0)
    assert not any(k.neighbours.get((index, n.addr)) for n in state.neighbours)
    assert not any((r.dst, r.metric, index) in k.routes for r in state.routes)
    assert not any((index, a.addr, a.prefixlen) in k.addresses for a in state.addresses)
    assert {e for e in state.elements if element_object(e) in k.nft} <= {
        e for e in state.elements if e.kind == SET_DOWNSTREAM and e.addr in elsewhere}
    assert not any(o[0] == "flowdev" and o[4] in (inp.vif.name, inp.ifname) for o in k.nft)


# --- the nftables JSON of plans and builders ---------------------------------


@HEAVY
@given(worlds())
def test_plan_nft_json_holds_only_intended_objects(world: World) -> None:
    """The transactions of online and offline plans, and their undos, hold only allowed commands
    naming the vif and the client's addresses."""
    names = {world.inp.ifname, world.inp.vif.name, "eth0"}
    addresses = {str(a) for a in world.inp.addresses.used}
    state, online = world.online()
    world.kernel.run(online, state)
    offline = world.offline()[1]
    for step in online.steps + offline.steps:
        if isinstance(step, NftChange):
            check_commands(list(step.commands), names, addresses)
            check_commands(list(step.undo), names, addresses)
            assert step.commands


@HEAVY
@given(mappings(), ifnames)
def test_nat_table_holds_only_intended_objects(m: MappedAddress, ifname: str) -> None:
    """A mapped vif's netdev table: only our table, its two chains on the vif and peer, only the mapping's addresses."""
    peer = peer_name(ifname)
    assert len(peer) < 16 and peer != ifname
    assert namespace_name(ifname) == f"{ifname}-nat"
    commands = build_nat_table(m, ifname, peer)
    check_commands(commands, {ifname, peer}, mapping_addresses(m))
    assert {json.dumps(c["add"]["table"], sort_keys=True) for c in commands if "table" in c.get("add", {})} == {
        json.dumps({"family": "netdev", "name": "qubes-nat"}, sort_keys=True)}
    devices = {c["add"]["chain"]["name"]: c["add"]["chain"]["dev"] for c in commands if "chain" in c.get("add", {})}
    assert devices == {"from-client": ifname, "from-netvm": peer}
    assert all(c["add"]["rule"]["family"] == "netdev" for c in commands if "rule" in c.get("add", {}))


namespace_facts = st.builds(
    lambda exists, real, peer, present, matches, link: NamespaceFacts(
        exists, exists and real, exists and peer, exists and present, exists and present and matches, link),
    st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans(),
    st.none() | st.builds(Link, link_indexes, st.sampled_from(["vif12.0", "vif-work"]), st.booleans(),
                          st.sampled_from([0, VIF_GROUP])))


@HEAVY
@given(vif_inputs(mapped=True), st.sampled_from([True, True, True, False]), namespace_facts)
def test_plan_namespace_converges(inp: VifInputs, keep_mapping: bool, facts: NamespaceFacts) -> None:
    """plan_namespace: nothing to do when in place; another mapping's table is torn down and built
    anew; each missing piece made once, in order, the configuration last; no mapping, no namespace."""
    if not keep_mapping:
        inp = inp._replace(mapping=None)
    state = describe(inp, Environment(None, True, False))
    spec = state.namespace
    try:
        steps = plan_namespace(state, facts)
    except ConfigError as exc:
        check_config_error(exc, "vif")
        # the vif is nowhere: not inside, and in the netvm either no device of
        # its name or only our veth's end (which exists once the vif moved in)
        ours = facts.exists and facts.peer_inside
        assert spec is not None and not facts.real_inside and (facts.netvm_link is None or ours)
        assert not (facts.table_present and not facts.table_matches)
        return
    if spec is None:
        assert steps == ([RemoveNamespace(f"{inp.ifname}-nat", inp.ifname, peer_name(inp.ifname), inp.vif.name)]
                         if facts.exists else [])
        return
    if facts.exists and facts.real_inside and facts.peer_inside and facts.table_matches:
        assert steps == []
        return
    rebuilt = facts.table_present and not facts.table_matches
    kinds = [type(s) for s in steps]
    expected: list[type] = [RemoveNamespace] if rebuilt else []
    expected += [CreateNamespace] if rebuilt or not facts.exists else []
    expected += [MoveIntoNamespace] if rebuilt or not facts.real_inside else []
    expected += [CreateVeth] if rebuilt or not facts.peer_inside else []
    assert kinds == [*expected, ConfigureNamespace]
    for step in steps:
        assert getattr(step, "ns", spec.name) == spec.name
        if isinstance(step, MoveIntoNamespace):
            assert (step.old_name, step.ifname) == (inp.vif.name, inp.ifname)
        if isinstance(step, CreateVeth):
            assert (step.ifname, step.peer, step.peer_mac) == (inp.ifname, spec.peer, inp.mac)
    last = steps[-1]
    assert isinstance(last, ConfigureNamespace) and last.mapping == inp.mapping and last.rules == spec.rules
    assert inp.mapping is not None
    check_commands(list(last.rules), {inp.ifname, spec.peer}, mapping_addresses(inp.mapping))


@HEAVY
@given(vif_inputs(mapped=True), mappings(), st.data())
def test_namespace_read_planned_and_applied_converges(inp: VifInputs, other: MappedAddress,
                                                      data: st.DataObject) -> None:
    """A mapped vif's namespace in any state the kernel can hold, read by observe.read_namespace through
    the model's gateways: the facts are the model's, the plan applied to the model puts the vif inside
    with its veth and the mapping's table, and a second reading plans nothing. Only a vif that is
    nowhere (neither inside nor in the netvm under libxl's name) may refuse (ConfigError) or fail."""
    k = Kernel()
    world = World(inp, k, 2, False, False, False)
    state = world.describe()
    spec = state.namespace
    assert spec is not None and inp.mapping is not None
    ns, ifname, peer = spec.name, spec.ifname, spec.peer
    exists = data.draw(st.booleans(), label="namespace exists")
    real_inside = exists and data.draw(st.booleans(), label="vif inside")
    peer_inside = exists and data.draw(st.booleans(), label="veth inside")
    table = data.draw(st.sampled_from(["none", "ours", "another"]), label="table") if exists else "none"
    if exists:
        rules = {"none": None, "ours": spec.rules, "another": build_nat_table(other, ifname, peer)}[table]
        k.namespaces[ns] = ({n for n, inside in ((ifname, real_inside), (peer, peer_inside)) if inside},
                            listed_table(rules) if rules is not None else None)
    if peer_inside:  # the veth's netvm end, named as the vif
        veth = k.new_link(ifname)
        k.links[veth] = (ifname, *data.draw(st.sampled_from([(False, 0), (True, VIF_GROUP)]), label="veth end"))
    vif_outside = not real_inside and k.index_of(inp.vif.name) is None and data.draw(st.booleans(),
                                                                                     label="vif in the netvm")
    if vif_outside:
        k.new_link(inp.vif.name)

    facts = read_namespace(world.gw, spec, ns, ifname, peer, inp)
    matches = table == "ours" or (table == "another" and listed_table(build_nat_table(other, ifname, peer))
                                  == listed_table(spec.rules))
    assert facts[:5] == (exists, real_inside, peer_inside, table != "none", matches)
    somewhere = real_inside or vif_outside
    try:
        steps = plan_namespace(state, facts)
        for step in steps:
            k.apply(step)
    except (ConfigError, ApplyError):
        assert not somewhere, facts
        return
    again = read_namespace(world.gw, spec, ns, ifname, peer, inp)
    assert again[:5] == (True, True, True, True, True)
    assert plan_namespace(state, again) == []
    # what online then finds in the netvm: the veth's end, under the vif's name (not yet in the vif group)
    link = find_link(world.gw, inp, our_veth=True)
    assert link is not None and link.name == ifname and k.index_of(inp.vif.name) in (None, link.ifindex)


@HEAVY
@given(hostile_names, hostile_names, st.lists(host_addresses, min_size=1, max_size=3), mappings(), st.booleans(),
       st.booleans())
@example('x" } } ; flush ruleset ; {', "vif1.0,eth0", [V4_EXAMPLE, V6_EXAMPLE], MAPPING_EXAMPLE, False, True)
@example("a b\nc", "@allowed . 10.0.0.1", [V4_EXAMPLE], MAPPING_EXAMPLE, True, False)
def test_hostile_names_stay_single_json_strings(name: str, peer: str, addrs: list[IPAddress], m: MappedAddress,
                                                 table_exists: bool, present: bool) -> None:
    """Whatever string is passed as an interface name, it is one JSON string value: the structure never changes."""
    p1, p2 = "\x01PLACEHOLDER-1\x01", "\x01PLACEHOLDER-2\x01"
    subst = {p1: name, p2: peer}

    def build(n: str, p: str) -> list[Any]:
        elements = [e for a in addrs for e in (Element(SET_ALLOWED, a, n), Element(SET_DOWNSTREAM, a))]
        return [
            build_elements(elements, present=present),
            build_flowtable(n, table=table_exists, present=present),
            build_nat_table(m, n, p),
        ]

    benign, hostile = build(p1, p2), build(name, peer)
    same_shape(benign, hostile, subst)
    for text in (json.dumps(hostile), json.dumps(hostile, ensure_ascii=False)):
        assert json.loads(text) == hostile



# =============================================================================
# 3. DNS
# =============================================================================


@PROPS
@given(virtual_dns, st.lists(upstreams, max_size=5))
def test_dns_mapping(virtual: list[IPv4Address], servers: list[Upstream]) -> None:
    """Each virtual address gets one mapping, to a usable upstream (cycling) or
    a refusal; 2 rules each in the DNAT chain, and 2 in the refusal chain
    for the refused ones."""
    kept, notes = usable(servers)
    assert all(is_usable_upstream(s.addr) for s in kept)
    assert [s.addr for s in kept] == list(dict.fromkeys(s.addr for s in servers if is_usable_upstream(s.addr)))
    # Notes only about the family asked for: IPv6 servers are the IPv6 pass's business.
    assert len(notes) == sum(s.addr.version == 4 and not is_usable_upstream(s.addr) for s in servers)

    mapping = plan_mapping(virtual, kept)
    assert [item.virtual for item in mapping] == virtual
    if not kept:
        assert all(item.upstream is None for item in mapping)
    else:
        assert [item.upstream for item in mapping] == [kept[i % len(kept)] for i in range(len(virtual))]
    for item in mapping:
        assert item.upstream is None or (item.upstream in servers and is_usable_upstream(item.upstream.addr))

    rules, refusals = build_rules(mapping), build_refusals(mapping)
    assert len(rules) == 2 * len(virtual)
    for item, pair in zip(mapping, zip(rules[::2], rules[1::2], strict=True), strict=True):
        for proto, rule in zip(("udp", "tcp"), pair, strict=True):
            assert rule[0]["match"]["right"] == str(item.virtual)
            assert rule[1]["match"]["left"]["payload"]["protocol"] == proto
            assert rule[2] == ({"dnat": {"addr": str(item.upstream.addr)}} if item.upstream else {"redirect": None})
    refused = [item for item in mapping if item.upstream is None]
    assert len(refusals) == 2 * len(refused)
    for item, pair in zip(refused, zip(refusals[::2], refusals[1::2], strict=True), strict=True):
        for proto, rule in zip(("udp", "tcp"), pair, strict=True):
            assert rule[0]["match"]["right"] == str(item.virtual)
            assert rule[1]["match"]["left"]["payload"]["protocol"] == proto
            assert "reject" in rule[2]

    commands = build_replace(rules, refusals)
    check_commands(commands, set(), {str(v) for v in virtual} | {str(s.addr) for s in kept})
    verbs = [next(iter(c)) for c in commands]
    # Per chain: add (no-op if present), delete, add; all in one transaction.
    assert verbs.count("delete") == 2 and verbs.index("delete") == 2
    assert len(commands) == 1 + 2 * 3 + len(rules) + len(refusals)


@PROPS
@given(resolv_conf_texts)
def test_resolv_conf_never_raises(text: str) -> None:
    """Any resolv.conf text parses to at most 16 address objects, never an exception."""
    servers, notes = parse_resolv_conf(text)
    assert len(servers) <= 16
    assert all(isinstance(s.addr, (IPv4Address, IPv6Address)) for s in servers)
    assert all(len(n.splitlines()) == 1 for n in notes)


@PROPS
@given(resolved_dns_values)
def test_resolved_dns_never_raises(value: Any) -> None:
    """Any DNS property value yields at most 16 well-formed upstreams, global ones first."""
    servers, _notes = parse_resolved_dns(value)
    assert len(servers) <= 16
    assert all(isinstance(s.addr, (IPv4Address, IPv6Address)) for s in servers)
    globals_ = [s.origin.endswith("global") for s in servers]
    assert globals_ == sorted(globals_, reverse=True)
