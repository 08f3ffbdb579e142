"""Property-based tests (hypothesis) of validation, planning and the nftables JSON.

Each test states one property in its docstring and checks it for generated
values: hostile text and bytes for the parsers, generated valid inputs and
kernel facts for the planners, generated mappings and upstream lists for the
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
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

from qubesnet.constants import FAMILIES, MAX_DOMID, VIF_GROUP
from qubesnet.errors import ApplyError, ConfigError
from qubesnet.layout import required_chains
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
from vif_route_qubes.inputs import VifInputs
from vif_route_qubes.mapped import (
    ConfigureNamespace,
    Mapping,
    NsFacts,
    RemoveNamespace,
    build_nat_table,
    namespace_name,
    peer_name,
    plan_mapped,
)
from vif_route_qubes.nftplan import (
    build_add_elements,
    build_flowtable_add,
    build_flowtable_remove,
    build_remove_elements,
)
from vif_route_qubes.plan import (
    AntispoofElements,
    Facts,
    GatewayAddress,
    HostRoute,
    LinkState,
    Neighbour,
    Plan,
    PurgeConntrack,
    Rename,
    ReportConnected,
    RunHooks,
    SetSysctl,
    plan_offline,
    plan_online,
)

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
    if isinstance(step, AntispoofElements):
        return step.addresses
    if isinstance(step, HostRoute):
        return (step.dst,)
    if isinstance(step, (Neighbour, GatewayAddress)):
        return (step.addr,)
    if isinstance(step, RunHooks):
        return () if step.addr is None else (step.addr,)
    return ()


def positions(steps: tuple, kind: type) -> list[int]:
    return [i for i, s in enumerate(steps) if isinstance(s, kind)]


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
def vif_inputs(draw: st.DrawFn) -> VifInputs:
    """What read_inputs could return for an ``online`` event."""
    vif = draw(vif_names())
    ifname = draw(renamed_ifnames) if draw(st.booleans()) else vif.name
    # 0-2 addresses of either family (sometimes a third, ignored one), as
    # the `ip` key lists them: the real parser builds the AddressList.
    listed = draw(address_lists)
    addresses = parse_address_list("ip", " ".join(str(a) for a in listed))
    used = set(addresses.used)
    # read_inputs insists on a gateway when there is an IPv4 address
    gateway = draw(ipv4_hosts if addresses.ipv4 is not None else maybe_ipv4_hosts)
    gateway6 = draw(maybe_gateway6)
    assume(gateway not in used and gateway6 not in used)  # the netvm's address is no client's
    mac = draw(macs if used else maybe_macs)
    return VifInputs(
        vif=vif, xenbus_path=f"backend/vif/{vif.domid}/{vif.devid}", ifname=ifname, addresses=addresses,
        ip_missing=not listed and draw(st.booleans()), mac=mac, vif_type="vif", gateway=gateway,
        gateway6=gateway6, harden=draw(st.booleans()), flowtable=draw(st.booleans()),
    )


# per family: the complete layout (the usual case) or any part of it
CHAIN_SUBSETS = {
    family: st.one_of(st.just(required_chains(family)), st.frozensets(st.sampled_from(sorted(required_chains(family)))))
    for family in FAMILIES
}
link_indexes = st.integers(1, 2**31 - 1)


@st.composite
def kernel_facts(draw: st.DrawFn, inp: VifInputs) -> Facts:
    """What query_facts could observe for an interface that exists."""
    ipv6_kernel = draw(st.booleans())
    mapped = draw(st.booleans())
    # query_facts: IPv6 is never on for a mapped vif, nor without kernel IPv6.
    ipv6_on_vif = ipv6_kernel and not mapped and draw(st.booleans())
    chains: dict[str, frozenset[str]] = {}
    tables: set[str] = set()
    for family in FAMILIES:
        present = draw(CHAIN_SUBSETS[family])
        if present:
            chains[family] = present
            tables.add(family)
        elif draw(st.booleans()):
            tables.add(family)  # a table without chains
    return Facts(
        link_name=draw(st.sampled_from(sorted({inp.vif.name, inp.ifname}))),  # renamed by an earlier run, or not
        link_index=draw(link_indexes),
        ipv6_kernel=ipv6_kernel,
        ipv6_on_vif=ipv6_on_vif,
        chains=chains,
        qubes_tables=frozenset(tables),
        mapped=mapped,
        flow_table_exists=draw(st.booleans()),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[VifInputs, Facts]:
    inp = draw(vif_inputs())
    return inp, draw(kernel_facts(inp))


hidden_addresses = st.integers(1, 0xFFFE).map(lambda n: IPv4Address(0x0A8A0000 + n))  # 10.138.0.0/16


@st.composite
def mappings(draw: st.DrawFn) -> Mapping:
    real = draw(hidden_addresses | ipv4_hosts)
    visible = draw(ipv4_hosts)
    visible_gateway = draw(ipv4_hosts)
    gateway = draw(st.just(visible_gateway) | ipv4_hosts)
    assume(len({real, visible, visible_gateway}) == 3 and gateway not in (real, visible))
    dns = draw(maybe_ipv4_hosts)
    hide = tuple(dict.fromkeys(draw(st.lists(ipv4_hosts, max_size=4))))
    return Mapping(real, visible, visible_gateway, gateway, hide, dns)


def mapping_addresses(m: Mapping) -> set[str]:
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
MAPPING_EXAMPLE = Mapping(IPv4Address("10.138.7.9"), IPv4Address("192.168.1.128"), IPv4Address("192.168.1.1"),
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
CHAINS = set().union(*(required_chains(f) for f in FAMILIES)) | {"forward", "dnat-dns", "dnat-dns-refuse", "from-client", "from-netvm"}
LAYOUT_ADDRESSES = {"fe80::"}  # the link-local prefix in the ip6 input chain


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
        for a, b in zip(benign, hostile):
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
    text = spaces[0] + "".join(t + s for t, s in zip(texts, spaces[1:]))
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
# 2. Planning
# =============================================================================


@HEAVY
@given(scenarios())
def test_online_plan_order_and_contents(scenario: tuple[VifInputs, Facts]) -> None:
    """plan_online: antispoof before link up; routes, neighbours, gateways after; report last; only our addresses."""
    inp, facts = scenario
    plan = plan_online(inp, facts)
    steps = plan.steps
    assert plan.ifname == inp.ifname and plan.link_index == facts.link_index

    (anti,) = positions(steps, AntispoofElements)
    (up,) = positions(steps, LinkState)
    assert steps[up] == LinkState(up=True, group=VIF_GROUP)
    assert steps[anti].present and anti < up
    assert all(i < anti for i in positions(steps, PurgeConntrack))
    assert all(i < up for i in positions(steps, SetSysctl) + positions(steps, Rename))
    for kind in (HostRoute, Neighbour, GatewayAddress):
        assert all(i > up and steps[i].present for i in positions(steps, kind))
    assert isinstance(steps[-1], ReportConnected) and len(positions(steps, ReportConnected)) == 1

    # Rename first, exactly when the interface still has the libxl name.
    wants_rename = inp.renamed and facts.link_name == inp.vif.name
    assert (positions(steps, Rename) == [0]) == wants_rename
    if wants_rename:
        assert steps[0] == Rename(inp.vif.name, inp.ifname)
    for step in steps:  # /proc/sys/net/ipv?/conf/<ifname>/<name>: the name never escapes its directory
        if isinstance(step, SetSysctl):
            assert step.key.split("/")[:4] == ["net", step.key.split("/")[1], "conf", inp.ifname]
            assert len(step.key.split("/")) == 5 and inp.ifname not in (".", "..")

    # Only the client's used addresses and this netvm's gateways appear.
    allowed = set(inp.addresses.used) | {g for g in (inp.gateway, inp.gateway6) if g is not None}
    for step in steps:
        assert set(addresses_of(step)) <= allowed, step
    protected = set(steps[anti].addresses)
    assert protected == {a for a in inp.addresses.used if a.version == 4 or facts.ipv6_kernel}
    for step in steps:
        if isinstance(step, HostRoute):
            assert step.dst in inp.addresses.used and step.dst in protected  # never routed unprotected
            assert step.metric == 32752 - inp.vif.domid >= 0
            assert step.dst.version == 4 or facts.ipv6_on_vif
        if isinstance(step, Neighbour):
            assert step.addr in protected and step.mac == inp.mac and step.mac is not None
            assert step.addr.version == 4 or facts.ipv6_on_vif
        if isinstance(step, GatewayAddress):
            assert step.addr in (inp.gateway, inp.gateway6) and step.prefixlen == step.addr.max_prefixlen
            assert not step.addr.is_link_local
            assert step.addr.version == 4 or facts.ipv6_on_vif
    routes = [s.dst for s in steps if isinstance(s, HostRoute)]
    assert routes == [a for a in inp.addresses.used if a.version == 4 or facts.ipv6_on_vif]


@FEW
@given(vif_inputs(), st.booleans())
def test_online_without_the_interface_plans_nothing(inp: VifInputs, ipv6: bool) -> None:
    """plan_online refuses (ApplyError) when the interface does not exist."""
    with pytest.raises(ApplyError):
        plan_online(inp, Facts(link_name=None, link_index=None, ipv6_kernel=ipv6, ipv6_on_vif=False))


# --- a tiny model of the kernel objects a plan touches ----------------------

KERNEL_LINK_LOCAL = IPv6Address("fe80::fcff:ffff:feff:ffff")


def nft_effect(model: set[tuple], commands: list[Any]) -> None:
    """Apply the element and flowtable-device parts of a transaction to the model."""
    for command in commands:
        ((verb, obj),) = command.items()
        ((kind, body),) = obj.items()
        change = model.add if verb == "add" else model.discard
        if kind == "element":
            for elem in body["elem"]:
                if body["name"] == "allowed":
                    ifname, addr = elem["concat"]
                    change(("allowed", ifname, ipaddress.ip_address(addr)))
                else:
                    change(("downstream", ipaddress.ip_address(elem)))
        elif kind == "flowtable":
            for dev in body["dev"]:
                change(("flowdev", dev))
        # tables, sets, chains and rules are the base layout: they persist.


def apply_plan(model: set[tuple], plan: Plan) -> None:
    """What the applier does to the modelled objects, step by step (no other vif holds an address)."""
    name = plan.ifname
    for step in plan.steps:
        change = model.add if getattr(step, "present", False) else model.discard
        if isinstance(step, AntispoofElements):
            if step.present:
                nft_effect(model, list(step.layout) + build_add_elements(name, step.addresses) + list(step.flowtable))
            else:
                nft_effect(model, build_remove_elements(name, step.addresses, step.addresses) + list(step.flowtable))
        elif isinstance(step, LinkState):
            if step.up:
                # the security argument: nothing passes before its antispoof elements are in
                protected = [a for s in plan.steps if isinstance(s, AntispoofElements) for a in s.addresses]
                for addr in protected:
                    assert ("allowed", name, addr) in model and ("downstream", addr) in model
                model.add(("up", name))
            else:
                model.discard(("up", name))
        elif isinstance(step, HostRoute):
            change(("route", step.dst, step.metric))
        elif isinstance(step, Neighbour):
            change(("neigh", step.addr))
        elif isinstance(step, GatewayAddress):
            change(("addr", step.addr, step.prefixlen))


@HEAVY
@given(scenarios(), st.booleans(), st.booleans())
def test_online_then_offline_restores_the_model(scenario: tuple[VifInputs, Facts], vanished: bool,
                                                ipv6_later: bool) -> None:
    """Online then offline leaves the modelled kernel as it was (empty), also when the interface vanished first
    or IPv6 was switched on or off on it meanwhile."""
    inp, facts = scenario
    model: set[tuple] = set()
    online = plan_online(inp, facts)
    apply_plan(model, online)

    # online did its work: the client is protected, routed and reachable
    name = online.ifname
    (anti,) = [s for s in online.steps if isinstance(s, AntispoofElements)]
    for addr in anti.addresses:
        assert {("allowed", name, addr), ("downstream", addr)} <= model
    assert ("up", name) in model
    assert {o[1] for o in model if o[0] == "route"} == {s.dst for s in online.steps if isinstance(s, HostRoute)}
    assert (("flowdev", name) in model) == inp.flowtable

    on_link = tuple((s.addr, s.prefixlen) for s in online.steps if isinstance(s, GatewayAddress))
    if facts.ipv6_on_vif:
        on_link += ((KERNEL_LINK_LOCAL, 64),)  # the kernel's own: not ours to remove
    offline_facts = facts._replace(
        link_name=None if vanished else name,
        link_index=None if vanished else facts.link_index,
        link_addresses=() if vanished else on_link,
        flow_table_exists=facts.flow_table_exists or bool(anti.flowtable),
        ipv6_on_vif=facts.ipv6_kernel and not facts.mapped and ipv6_later,
    )
    if vanished:  # the interface's routes, neighbours, addresses and hooks go with it
        model -= {o for o in model if o[0] in ("route", "neigh", "addr", "up", "flowdev")}
    # offline reads no QubesDB: no gateways, no service flags
    offline_inp = inp._replace(gateway=None, gateway6=None, harden=False, flowtable=False)
    offline = plan_offline(offline_inp, offline_facts)
    assert not any(isinstance(s, GatewayAddress) and s.addr.is_link_local for s in offline.steps)
    apply_plan(model, offline)
    assert model == set()


@HEAVY
@given(scenarios(), link_addresses)
def test_offline_plan_order(scenario: tuple[VifInputs, Facts], on_link: list[tuple[IPAddress, int]]) -> None:
    """plan_offline: link down first, everything removed, no report, only our addresses and full-prefix gateways."""
    inp, facts = scenario
    plan = plan_offline(inp, facts._replace(link_addresses=tuple(on_link)))
    removed = [(s.addr, s.prefixlen) for s in plan.steps if isinstance(s, GatewayAddress)]
    assert removed == [(a, n) for a, n in on_link if n == a.max_prefixlen and a not in LINK_LOCAL6]
    steps = plan.steps
    assert steps[0] == LinkState(up=False, group=0)
    assert not positions(steps, ReportConnected)
    (anti,) = positions(steps, AntispoofElements)
    assert not steps[anti].present
    assert all(i < anti for i in positions(steps, HostRoute))
    for step in steps:
        assert not getattr(step, "present", False)
        if not isinstance(step, GatewayAddress):
            assert set(addresses_of(step)) <= set(inp.addresses.used)
        if isinstance(step, HostRoute):
            assert step.metric == 32752 - inp.vif.domid


# --- the nftables JSON of plans and builders ---------------------------------


@HEAVY
@given(scenarios())
def test_plan_nft_json_holds_only_intended_objects(scenario: tuple[VifInputs, Facts]) -> None:
    """The online/offline transactions of a plan hold only allowed commands naming the vif and its addresses."""
    inp, facts = scenario
    online = plan_online(inp, facts)
    (anti,) = [s for s in online.steps if isinstance(s, AntispoofElements)]
    offline = plan_offline(inp, facts._replace(flow_table_exists=True))
    (anti_off,) = [s for s in offline.steps if isinstance(s, AntispoofElements)]
    name = online.ifname
    transactions = [
        list(anti.layout) + build_add_elements(name, anti.addresses) + list(anti.flowtable),
        build_remove_elements(name, anti.addresses, anti.addresses) + list(anti.layout_undo),
        build_remove_elements(offline.ifname, anti_off.addresses, anti_off.addresses) + list(anti_off.flowtable),
    ]
    for commands in transactions:
        check_commands(commands, {name, offline.ifname}, {str(a) for a in inp.addresses.used})
    assert len(build_add_elements(name, anti.addresses)) == 2 * len(anti.addresses)


@HEAVY
@given(mappings(), ifnames)
def test_nat_table_holds_only_intended_objects(m: Mapping, ifname: str) -> None:
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


@HEAVY
@given(mappings(), ifnames, st.none() | macs, st.booleans(), st.booleans(), st.booleans(),
       st.none() | st.integers(1, 2**31 - 1), st.sampled_from(["own", "other", "none"]))
def test_plan_mapped_converges(m: Mapping, ifname: str, mac: str | None, ns_exists: bool, real_in_ns: bool,
                               peer_in_ns: bool, index: int | None, listing_kind: str) -> None:
    """plan_mapped: nothing to do when in place; a wrong table is torn down alone; configuration comes last."""
    peer = peer_name(ifname)
    def listed(mapping: Mapping) -> tuple[dict[str, Any], ...]:  # as `nft -j list table` shows it
        return tuple({k: c["add"][k]} for c in build_nat_table(mapping, ifname, peer)
                     for k in ("chain", "rule") if k in c.get("add", {}))

    own, other = listed(m), listed(m._replace(visible=m.real))
    listing = {"own": own, "other": other, "none": None}[listing_kind] if ns_exists else None
    facts = NsFacts(ns_exists, ns_exists and real_in_ns, ns_exists and peer_in_ns, index, "vif12.0", listing)
    try:
        steps = plan_mapped(ifname, "vif12.0", m, mac, facts)
    except ConfigError as exc:
        check_config_error(exc, "vif")
        assert not facts.real_in_ns and (index is None or facts.peer_in_ns)
        return
    if mac is None:
        assert steps == ([RemoveNamespace(f"{ifname}-nat", ifname, peer, "vif12.0")] if ns_exists else [])
        return
    if any(isinstance(s, RemoveNamespace) for s in steps):
        assert len(steps) == 1 and listing_kind == "other"
        return
    if ns_exists and facts.real_in_ns and facts.peer_in_ns and listing_kind == "own":
        assert steps == []
        return
    assert isinstance(steps[-1], ConfigureNamespace)
    check_commands(list(steps[-1].rules), {ifname, peer}, mapping_addresses(m))


@HEAVY
@given(hostile_names, hostile_names, st.lists(host_addresses, min_size=1, max_size=3), mappings(), st.booleans())
@example('x" } } ; flush ruleset ; {', "vif1.0,eth0", [V4_EXAMPLE, V6_EXAMPLE], MAPPING_EXAMPLE, False)
@example("a b\nc", "@allowed . 10.0.0.1", [V4_EXAMPLE], MAPPING_EXAMPLE, True)
def test_hostile_names_stay_single_json_strings(name: str, peer: str, addrs: list[IPAddress], m: Mapping,
                                                 table_exists: bool) -> None:
    """Whatever string is passed as an interface name, it is one JSON string value: the structure never changes."""
    p1, p2 = "\x01PLACEHOLDER-1\x01", "\x01PLACEHOLDER-2\x01"
    subst = {p1: name, p2: peer}

    def build(n: str, p: str) -> list[Any]:
        return [
            build_add_elements(n, addrs),
            build_remove_elements(n, addrs, addrs),
            build_flowtable_add(n, table_exists),
            build_flowtable_remove(n),
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
    for item, pair in zip(mapping, zip(rules[::2], rules[1::2])):
        for proto, rule in zip(("udp", "tcp"), pair):
            assert rule[0]["match"]["right"] == str(item.virtual)
            assert rule[1]["match"]["left"]["payload"]["protocol"] == proto
            assert rule[2] == ({"dnat": {"addr": str(item.upstream.addr)}} if item.upstream else {"redirect": None})
    refused = [item for item in mapping if item.upstream is None]
    assert len(refusals) == 2 * len(refused)
    for item, pair in zip(refused, zip(refusals[::2], refusals[1::2])):
        for proto, rule in zip(("udp", "tcp"), pair):
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
    servers, notes = parse_resolved_dns(value)
    assert len(servers) <= 16
    assert all(isinstance(s.addr, (IPv4Address, IPv6Address)) for s in servers)
    globals_ = [s.origin.endswith("global") for s in servers]
    assert globals_ == sorted(globals_, reverse=True)
