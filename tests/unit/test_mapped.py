"""Mapped addresses, pure parts: convergence plans, the NAT table, reading."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address as A
from typing import TYPE_CHECKING, Any

import pytest

from qubes_netsim.qubesdbd import CMD_WATCH, QubesDBDouble
from qubesnet.errors import ConfigError
from qubesnet.qubesdb import QubesDB
from qubesnet.validate import parse_address_list, parse_vif_name
from tests.unit.test_nft_builders import check_golden
from vif_route_qubes.describe import describe
from vif_route_qubes.diff import plan_namespace
from vif_route_qubes.inputs import VifInputs, read_mapping
from vif_route_qubes.mapped import MappedAddress, build_nat_table, table_matches
from vif_route_qubes.mapped_names import namespace_name, peer_name
from vif_route_qubes.nssteps import ConfigureNamespace, CreateNamespace, CreateVeth, MoveIntoNamespace, RemoveNamespace
from vif_route_qubes.state import Environment, Link, NamespaceFacts, VifState

if TYPE_CHECKING:
    from vif_route_qubes.steps import Step

M = MappedAddress(A("10.138.7.9"), A("192.168.1.128"), A("192.168.1.1"), A("10.137.0.1"), (), A("10.139.1.1"))
MAC = "00:16:3e:5e:6c:0c"
VIF_LINK = Link(5, "vif12.0", False, 0)  # the real vif, still in the netvm
FRESH = NamespaceFacts(exists=False, real_inside=False, peer_inside=False, table_present=False, table_matches=False,
                       netvm_link=VIF_LINK)


def state(ifname: str = "vif12.0", mapping: MappedAddress | None = M) -> VifState:
    """The description of vif12.0 with the mapping (as describe makes it)."""
    vif = parse_vif_name("vif", "vif12.0")
    inp = VifInputs(vif=vif, xenbus_path="backend/vif/12/0", ifname=ifname,
                    addresses=parse_address_list("ip", "10.138.7.9"), ip_missing=False, mac=MAC, vif_type="vif",
                    gateway=A("10.137.0.1"), gateway6=None, harden=False, flowtable=False, mapping=mapping)
    return describe(inp, Environment(Link(5, "vif12.0", False, 0), ipv6_kernel=True, ipv6_on_vif=True))


def kinds(steps: list[Step]) -> list[type]:
    return [type(s) for s in steps]


def test_description_of_a_mapped_vif() -> None:
    spec = state().namespace
    assert spec is not None
    assert (spec.name, spec.ifname, spec.peer, spec.vif, spec.client_mac, spec.mapping) == (
        "vif12.0-nat", "vif12.0", "vif12.0-p", "vif12.0", MAC, M)
    assert list(spec.rules) == build_nat_table(M, "vif12.0", "vif12.0-p")
    assert state(mapping=None).namespace is None


def test_fresh_vif() -> None:
    steps = plan_namespace(state(), FRESH)
    assert kinds(steps) == [CreateNamespace, MoveIntoNamespace, CreateVeth, ConfigureNamespace]
    assert steps[0] == CreateNamespace("vif12.0-nat")
    assert steps[1] == MoveIntoNamespace("vif12.0-nat", "vif12.0", "vif12.0")
    assert steps[2] == CreateVeth("vif12.0-nat", "vif12.0", "vif12.0-p", MAC)
    assert steps[3] == ConfigureNamespace("vif12.0-nat", "vif12.0", "vif12.0-p", M, MAC,
                                          tuple(build_nat_table(M, "vif12.0", "vif12.0-p")))


def test_renamed_vif_is_renamed_on_its_way_in() -> None:
    steps = plan_namespace(state("vif-work"), FRESH)
    assert steps[0] == CreateNamespace("vif-work-nat")
    assert steps[1] == MoveIntoNamespace("vif-work-nat", "vif12.0", "vif-work")
    assert steps[2] == CreateVeth("vif-work-nat", "vif-work", "vif-work-p", MAC)


def test_healthy_namespace_is_left_alone() -> None:
    facts = NamespaceFacts(True, True, True, True, True, Link(9, "vif12.0", True, 2))  # the netvm end of the veth
    assert plan_namespace(state(), facts) == []


@pytest.mark.parametrize("netvm_link", [None, Link(9, "vif12.0", True, 2)])
def test_other_mapping_is_taken_down_and_built_anew(netvm_link: Link | None) -> None:
    """A namespace holding another mapping's table: removed, then built again in the same plan
    (the real vif is inside it, so the netvm has no link of its own name but the veth's end)."""
    facts = NamespaceFacts(True, True, True, True, False, netvm_link)
    steps = plan_namespace(state(), facts)
    assert steps[0] == RemoveNamespace("vif12.0-nat", "vif12.0", "vif12.0-p", "vif12.0")
    assert kinds(steps[1:]) == [CreateNamespace, MoveIntoNamespace, CreateVeth, ConfigureNamespace]


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        # crashed after creating the namespace
        (NamespaceFacts(True, False, False, False, False, VIF_LINK),
         [MoveIntoNamespace, CreateVeth, ConfigureNamespace]),
        # crashed after moving the vif in
        (NamespaceFacts(True, True, False, False, False, None), [CreateVeth, ConfigureNamespace]),
        # crashed before the rules
        (NamespaceFacts(True, True, True, False, False, Link(9, "vif12.0", False, 0)), [ConfigureNamespace]),
    ],
)
def test_leftovers_of_a_crash_converge(facts: NamespaceFacts, expected: list[type]) -> None:
    assert kinds(plan_namespace(state(), facts)) == expected


def test_unmapped_removes_a_leftover_namespace() -> None:
    facts = NamespaceFacts(True, True, True, True, False, None)
    assert plan_namespace(state(mapping=None), facts) == [
        RemoveNamespace(namespace_name("vif12.0"), "vif12.0", peer_name("vif12.0"), "vif12.0")]
    assert plan_namespace(state(mapping=None), FRESH) == []


def test_vanished_vif_is_an_error() -> None:
    facts = NamespaceFacts(True, False, False, False, False, None)  # an empty namespace, no vif anywhere
    with pytest.raises(ConfigError, match="does not exist"):
        plan_namespace(state(), facts)
    with pytest.raises(ConfigError, match="does not exist"):
        plan_namespace(state(), FRESH._replace(netvm_link=None))


def test_vanished_vif_behind_our_veth_is_an_error() -> None:
    """Our veth is there, the real vif is nowhere: the netvm's device of the vif's name is the veth's
    end (read_namespace finds it by that name), which must never be moved into the namespace."""
    facts = NamespaceFacts(True, False, True, True, True, Link(9, "vif12.0", True, 2))
    with pytest.raises(ConfigError, match="does not exist"):
        plan_namespace(state(), facts)


def test_long_names_get_a_peer_that_fits() -> None:
    assert peer_name("vif12.0") == "vif12.0-p"
    assert peer_name("vif32752.12345") == "to-netvm"


def _as_listing(commands: list[Any]) -> list[dict[str, Any]]:
    """What `nft -j list table` shows for a table built from ``commands``."""
    out = []
    for c in commands:
        obj = c.get("add", {})
        if "chain" in obj:
            out.append({"chain": {k: v for k, v in obj["chain"].items() if k != "dev"}})
        if "rule" in obj:
            expr = [{"counter": {"packets": 3, "bytes": 99}} if "counter" in e else e for e in obj["rule"]["expr"]]
            out.append({"rule": {**obj["rule"], "expr": expr}})
    return out


def test_table_matches_ignores_counters() -> None:
    commands = build_nat_table(M, "vif12.0", "vif12.0-p")
    assert table_matches(tuple(_as_listing(commands)), commands)
    assert not table_matches(None, commands)
    assert not table_matches(tuple(_as_listing(commands)[:-1]), commands)


def test_table_matches_tells_mappings_apart() -> None:
    """Another mapping's table does not match, nor one with a rule moved; set element order does not matter."""
    commands = build_nat_table(M, "vif12.0", "vif12.0-p")
    other = MappedAddress(M.real, A("192.168.1.77"), M.visible_gateway, M.gateway)
    assert not table_matches(tuple(_as_listing(build_nat_table(other, "vif12.0", "vif12.0-p"))), commands)
    listing = _as_listing(commands)
    assert not table_matches(tuple(listing[:-2] + listing[-1:] + listing[-2:-1]), commands)
    hidden = M._replace(hide=(A("10.137.0.1"), A("10.139.1.1"), A("10.137.0.9")))
    hidden_commands = build_nat_table(hidden, "vif12.0", "vif12.0-p")
    shuffled = json.loads(json.dumps(_as_listing(hidden_commands)).replace(
        '["10.137.0.1", "10.139.1.1", "10.137.0.9"]', '["10.137.0.9", "10.137.0.1", "10.139.1.1"]'))
    assert shuffled != _as_listing(hidden_commands)
    assert table_matches(tuple(shuffled), hidden_commands)
    # what the description's spec holds is what is compared: its own table matches
    spec = state().namespace
    assert spec is not None and table_matches(tuple(_as_listing(list(spec.rules))), list(spec.rules))


def test_table_matches_as_each_nft_spells_it() -> None:
    """nft lists a one-element set as the element (1.0 and 1.1) and a matched
    ICMP code as its number (1.1, Debian 13): still the same table, so a second
    `online` keeps the namespace; another code is still another table."""
    hidden = build_nat_table(M._replace(hide=(A("10.139.1.1"),)), "vif12.0", "vif12.0-p")
    text = json.dumps(_as_listing(hidden))
    assert '{"set": ["10.139.1.1"]}' in text and '"right": "frag-needed"' in text
    as_nft_1_1 = text.replace('{"set": ["10.139.1.1"]}', '"10.139.1.1"').replace('"right": "frag-needed"', '"right": 4')
    assert table_matches(tuple(json.loads(as_nft_1_1)), hidden)
    other_code = text.replace('"right": "frag-needed"', '"right": 3')
    assert not table_matches(tuple(json.loads(other_code)), hidden)


def test_nat_table_golden() -> None:
    check_golden("nat-table.json", build_nat_table(M, "vif12.0", "vif12.0-p"))


def test_hiding_adds_a_drop_and_dns_through_the_gateway() -> None:
    hidden = M._replace(hide=(A("10.137.0.1"), A("10.139.1.1")))
    text = str(build_nat_table(hidden, "vif12.0", "vif12.0-p"))
    assert "'10.139.1.1'" in text and "'dport'" in text and "'sport'" in text
    plain = str(build_nat_table(M, "vif12.0", "vif12.0-p"))
    assert "'dport'" not in plain


@pytest.fixture
def qdb(tmp_path: object) -> Iterator[tuple[QubesDBDouble, QubesDB]]:
    with QubesDBDouble(os.path.join(str(tmp_path), "q.sock")) as double, QubesDB.open(double.path, 2) as client:
        double.write("/qubes-netvm-primary-dns", "10.139.1.1")
        yield double, client


def test_read_mapping(qdb: tuple[QubesDBDouble, QubesDB]) -> None:
    double, client = qdb
    double.write("/mapped-ip/10.138.7.9/visible-ip", "192.168.1.128")
    double.write("/mapped-ip/10.138.7.9/visible-gateway", "192.168.1.1")
    assert read_mapping(client, A("10.138.7.9"), A("10.137.0.1"), 0) == M


def test_same_address_is_no_mapping(qdb: tuple[QubesDBDouble, QubesDB]) -> None:
    double, client = qdb
    double.write("/mapped-ip/10.138.7.9/visible-ip", "10.138.7.9")
    double.write("/mapped-ip/10.138.7.9/visible-gateway", "192.168.1.1")
    assert read_mapping(client, A("10.138.7.9"), A("10.137.0.1"), 0) is None


def test_bad_mapping_names_its_key(qdb: tuple[QubesDBDouble, QubesDB]) -> None:
    double, client = qdb
    double.write("/mapped-ip/10.138.7.9/visible-ip", "192.168.1.128/24")
    double.write("/mapped-ip/10.138.7.9/visible-gateway", "192.168.1.1")
    with pytest.raises(ConfigError, match=r"^/mapped-ip/10\.138\.7\.9/visible-ip: "):
        read_mapping(client, A("10.138.7.9"), A("10.137.0.1"), 0)


def test_waits_for_a_late_mapping_in_the_hidden_range(qdb: tuple[QubesDBDouble, QubesDB]) -> None:
    double, client = qdb

    def late() -> None:
        double.write("/mapped-ip/10.138.7.9/visible-gateway", "192.168.1.1")
        double.write("/mapped-ip/10.138.7.9/visible-ip", "192.168.1.128")

    timer = threading.Timer(0.2, late)
    timer.start()
    assert read_mapping(client, A("10.138.7.9"), A("10.137.0.1"), 5) == M
    timer.join()


def test_gives_up_after_the_wait(qdb: tuple[QubesDBDouble, QubesDB]) -> None:
    _, client = qdb
    assert read_mapping(client, A("10.138.7.9"), A("10.137.0.1"), 0.2) is None


def test_never_waits_outside_the_hidden_range(qdb: tuple[QubesDBDouble, QubesDB]) -> None:
    double, client = qdb
    assert read_mapping(client, A("10.137.0.40"), A("10.137.0.1"), 60) is None
    assert CMD_WATCH not in [kind for kind, _, _ in double.requests]
