"""Reading a vif event's inputs from the XenStore and QubesDB doubles."""

from __future__ import annotations

import os
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address

import pytest

from qubes_netsim.qubesdbd import QubesDBDouble
from qubes_netsim.xenstored import XenStoreDouble
from qubesnet.errors import ConfigError
from qubesnet.qubesdb import QubesDB
from qubesnet.xenstore import XenStore
from vif_route_qubes.inputs import parse_env, read_inputs

ENV = {"vif": "vif12.0", "XENBUS_PATH": "backend/vif/12/0"}
BASE = "/local/domain/1/backend/vif/12/0"


@pytest.fixture
def stores(tmp_path: object) -> Iterator[tuple[XenStoreDouble, QubesDBDouble, XenStore, QubesDB]]:
    d = str(tmp_path)
    with XenStoreDouble(os.path.join(d, "xs.sock"), domid=1) as xsd, QubesDBDouble(os.path.join(d, "q.sock")) as qdbd:
        xsd.write(f"{BASE}/ip", "10.137.0.12 fd09:24ef:4179::a89:12")
        xsd.write(f"{BASE}/mac", "00:16:3e:5e:6c:0c")
        xsd.write(f"{BASE}/type", "vif")
        qdbd.write("/qubes-netvm-gateway", "10.137.0.1")
        qdbd.write("/qubes-netvm-gateway6", "fd09:24ef:4179::a89:1")
        with XenStore.open(xsd.path, 2) as xs, QubesDB.open(qdbd.path, 2) as qdb:
            yield xsd, qdbd, xs, qdb


def test_complete_online_inputs(stores: tuple) -> None:
    _, _, xs, qdb = stores
    inp = read_inputs(parse_env(ENV), xs, qdb, online=True)
    assert inp.vif.name == "vif12.0" and inp.ifname == "vif12.0" and not inp.renamed
    assert inp.addresses.used == (IPv4Address("10.137.0.12"), IPv6Address("fd09:24ef:4179::a89:12"))
    assert inp.mac == "00:16:3e:5e:6c:0c" and inp.vif_type == "vif"
    assert inp.gateway == IPv4Address("10.137.0.1")
    assert inp.gateway6 == IPv6Address("fd09:24ef:4179::a89:1")
    assert not inp.harden and not inp.flowtable


def test_vifname_and_service_flags(stores: tuple) -> None:
    xsd, qdbd, xs, qdb = stores
    xsd.write(f"{BASE}/vifname", "vif-work")
    qdbd.write("/qubes-service/harden-network-interfaces", "1")
    inp = read_inputs(parse_env(ENV), xs, qdb, online=True)
    assert inp.ifname == "vif-work" and inp.renamed and inp.harden


def test_offline_needs_no_qubesdb_nor_mac(stores: tuple) -> None:
    xsd, _, xs, _ = stores
    xsd.rm(f"{BASE}/mac")
    inp = read_inputs(parse_env(ENV), xs, None, online=False)
    assert inp.mac is None and inp.gateway is None


def test_missing_ip_key_is_remembered(stores: tuple) -> None:
    xsd, _, xs, _ = stores
    xsd.rm(f"{BASE}/ip")
    inp = read_inputs(parse_env(ENV), xs, None, online=False)
    assert inp.ip_missing and inp.addresses.used == ()


@pytest.mark.parametrize(
    ("where", "key", "value", "named"),
    [
        ("xs", "ip", "10.137.0.12; rm -rf /", "backend/vif/12/0/ip"),
        ("xs", "ip", b"\xff\xfe", "backend/vif/12/0/ip"),
        ("xs", "mac", "00:16:3e:5e:6c", "backend/vif/12/0/mac"),
        ("xs", "vifname", "eth0 up", "backend/vif/12/0/vifname"),
        ("xs", "vifname", "vif13.0", "backend/vif/12/0/vifname"),
        ("xs", "type", "vif;x", "backend/vif/12/0/type"),
        ("qdb", "/qubes-netvm-gateway", "10.137.0.1/24", "/qubes-netvm-gateway"),
        ("qdb", "/qubes-netvm-gateway", "fd09::1", "/qubes-netvm-gateway"),
        ("qdb", "/qubes-netvm-gateway6", "10.137.0.1", "/qubes-netvm-gateway6"),
        ("qdb", "/qubes-service/harden-network-interfaces", "yes", "/qubes-service/harden-network-interfaces"),
    ],
)
def test_bad_values_name_their_key(stores: tuple, where: str, key: str, value: str | bytes, named: str) -> None:
    xsd, qdbd, xs, qdb = stores
    if where == "xs":
        xsd.write(f"{BASE}/{key}", value)
    else:
        qdbd.write(key, value)
    with pytest.raises(ConfigError) as info:
        read_inputs(parse_env(ENV), xs, qdb, online=True)
    assert str(info.value).startswith(f"{named}: ")


def test_missing_mac_is_an_error_for_online_with_addresses(stores: tuple) -> None:
    xsd, _, xs, qdb = stores
    xsd.rm(f"{BASE}/mac")
    with pytest.raises(ConfigError, match="backend/vif/12/0/mac: missing"):
        read_inputs(parse_env(ENV), xs, qdb, online=True)


def test_missing_gateway_is_an_error_for_an_ipv4_client(stores: tuple) -> None:
    _, qdbd, xs, qdb = stores
    qdbd.rm("/qubes-netvm-gateway")
    with pytest.raises(ConfigError, match=r"^/qubes-netvm-gateway: missing"):
        read_inputs(parse_env(ENV), xs, qdb, online=True)


@pytest.mark.parametrize(
    ("env", "key"),
    [({}, "XENBUS_PATH"), ({"XENBUS_PATH": "backend/vif/12/0"}, "vif"),
     ({"vif": "vif12.0", "XENBUS_PATH": "a//b"}, "XENBUS_PATH"),
     ({"vif": "eth0", "XENBUS_PATH": "backend/vif/12/0"}, "vif")],
)
def test_environment(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_env(env)
    assert info.value.key == key
