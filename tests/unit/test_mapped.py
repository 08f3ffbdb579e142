"""Mapped addresses, pure parts: convergence plans, the NAT table, reading."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address as A

import pytest

from qubes_netsim.qubesdbd import CMD_WATCH, QubesDBDouble
from qubesnet.errors import ConfigError
from qubesnet.qubesdb import QubesDB
from tests.unit.test_nft_builders import check_golden
from vif_route_qubes.mapped import (
    ConfigureNamespace,
    CreateNamespace,
    CreateVethPair,
    Mapping,
    MoveIntoNamespace,
    NsFacts,
    RemoveNamespace,
    build_nat_table,
    peer_name,
    plan_mapped,
    read_mapping,
    table_matches,
)

M = Mapping(A("10.138.7.9"), A("192.168.1.128"), A("192.168.1.1"), A("10.137.0.1"), (), A("10.139.1.1"))
MAC = "00:16:3e:5e:6c:0c"
FRESH = NsFacts(ns_exists=False, real_in_ns=False, peer_in_ns=False, netvm_index=5, netvm_name="vif12.0")


def kinds(steps: list) -> list[type]:
    return [type(s) for s in steps]


def test_fresh_vif() -> None:
    steps = plan_mapped("vif12.0", "vif12.0", M, MAC, FRESH)
    assert kinds(steps) == [CreateNamespace, MoveIntoNamespace, CreateVethPair, ConfigureNamespace]
    assert steps[1] == MoveIntoNamespace("vif12.0-nat", 5, "vif12.0", "vif12.0")
    assert steps[2] == CreateVethPair("vif12.0-nat", "vif12.0", "vif12.0-p", MAC)


def test_renamed_vif_is_renamed_on_its_way_in() -> None:
    steps = plan_mapped("vif-work", "vif12.0", M, MAC, FRESH)
    assert steps[0] == CreateNamespace("vif-work-nat")
    assert steps[1] == MoveIntoNamespace("vif-work-nat", 5, "vif12.0", "vif-work")


def test_healthy_namespace_is_left_alone() -> None:
    listing = tuple(_as_listing(build_nat_table(M, "vif12.0", "vif12.0-p")))
    facts = NsFacts(True, True, True, 9, "vif12.0", listing)
    assert plan_mapped("vif12.0", "vif12.0", M, MAC, facts) == []


def test_other_mapping_is_taken_down_first() -> None:
    other = Mapping(A("10.138.7.9"), A("192.168.1.77"), A("192.168.1.1"), A("10.137.0.1"))
    listing = tuple(_as_listing(build_nat_table(other, "vif12.0", "vif12.0-p")))
    facts = NsFacts(True, True, True, 9, "vif12.0", listing)
    assert plan_mapped("vif12.0", "vif12.0", M, MAC, facts) == [
        RemoveNamespace("vif12.0-nat", "vif12.0", "vif12.0-p", "vif12.0")]


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        # crashed after creating the namespace
        (NsFacts(True, False, False, 5, "vif12.0"), [MoveIntoNamespace, CreateVethPair, ConfigureNamespace]),
        # crashed after moving the vif in
        (NsFacts(True, True, False, None, None), [CreateVethPair, ConfigureNamespace]),
        # crashed before the rules
        (NsFacts(True, True, True, 9, "vif12.0"), [ConfigureNamespace]),
    ],
)
def test_leftovers_of_a_crash_converge(facts: NsFacts, expected: list[type]) -> None:
    assert kinds(plan_mapped("vif12.0", "vif12.0", M, MAC, facts)) == expected


def test_unmapped_removes_a_leftover_namespace() -> None:
    facts = NsFacts(True, True, True, 9, "vif12.0")
    assert kinds(plan_mapped("vif12.0", "vif12.0", None, MAC, facts)) == [RemoveNamespace]
    assert plan_mapped("vif12.0", "vif12.0", None, MAC, FRESH) == []


def test_vanished_vif_is_an_error() -> None:
    facts = NsFacts(True, False, True, 9, "vif12.0")  # our veth, no real vif anywhere
    with pytest.raises(ConfigError, match="does not exist"):
        plan_mapped("vif12.0", "vif12.0", M, MAC, facts)


def test_long_names_get_a_peer_that_fits() -> None:
    assert peer_name("vif12.0") == "vif12.0-p"
    assert peer_name("vif32752.12345") == "to-netvm"


def _as_listing(commands: list) -> list[dict]:
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


def test_nat_table_golden() -> None:
    check_golden("nat-table.json", build_nat_table(M, "vif12.0", "vif12.0-p"))


def test_hiding_adds_a_drop_and_dns_through_the_gateway() -> None:
    hidden = Mapping(M.real, M.visible, M.visible_gateway, M.gateway, (A("10.137.0.1"), A("10.139.1.1")), A("10.139.1.1"))
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
    with pytest.raises(ConfigError, match="^/mapped-ip/10.138.7.9/visible-ip: "):
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
