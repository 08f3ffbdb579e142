"""nftables JSON builders: golden files for the anti-spoofing objects, exact commands for a vif.

Golden files live in tests/unit/golden/. To add or update one after an
intended change, run the tests with UPDATE_GOLDEN=1, review the diff of the
JSON file, and commit it with the change that caused it.
"""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Address, IPv6Address

import pytest

from qubesnet.constants import SET_ALLOWED, SET_DOWNSTREAM
from qubesnet.layout import CHAINS, SETS, build_antispoof
from vif_route_qubes.nftplan import build_elements, build_flowtable
from vif_route_qubes.state import Element

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
V4, V6 = IPv4Address("10.137.0.12"), IPv6Address("fd09::12")


def check_golden(name: str, value: object) -> None:
    path = os.path.join(GOLDEN, name)
    text = json.dumps(value, indent=1, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        with open(path, "w") as handle:
            handle.write(text)
    with open(path) as handle:
        assert json.loads(handle.read()) == json.loads(text), f"{name} differs; see this module's docstring"


def verbs(commands: list) -> list[str]:
    return [next(iter(c)) for c in commands]


def objects(commands: list, verb: str, kind: str) -> list[str]:
    """The names of the ``kind`` objects ``verb``-ed, in order."""
    return [c[verb][kind]["name"] for c in commands if kind in c.get(verb, {})]


@pytest.mark.parametrize("family", ["ip", "ip6"])
def test_full_antispoof_golden(family: str) -> None:
    check_golden(f"antispoof-{family}.json", build_antispoof(family, table=False, sets=(), chains=()))


@pytest.mark.parametrize("family", ["ip", "ip6"])
def test_full_antispoof_removal_is_the_table(family: str) -> None:
    """What a fresh table brought, its removal takes away at once."""
    assert build_antispoof(family, table=False, sets=(), chains=(), present=False) == [
        {"delete": {"table": {"family": family, "name": "qubes"}}}]


def test_complete_antispoof_needs_nothing() -> None:
    for family in ("ip", "ip6"):
        for present in (True, False):
            assert build_antispoof(family, table=True, sets=SETS, chains=CHAINS, present=present) == []


def test_partial_antispoof_adds_only_missing_chains() -> None:
    commands = build_antispoof("ip", table=True, sets=SETS, chains=())
    assert verbs(commands) == ["add"] * len(commands)
    assert objects(commands, "add", "table") == [] and objects(commands, "add", "set") == []
    assert objects(commands, "add", "chain") == ["antispoof", "prerouting"]  # a goto target before its user
    rules = [c["add"]["rule"]["chain"] for c in commands if "rule" in c.get("add", {})]
    assert rules == ["antispoof", "antispoof", "prerouting", "prerouting"]
    # Users of a chain are removed before the chain they jump to.
    removal = build_antispoof("ip", table=True, sets=SETS, chains=(), present=False)
    assert verbs(removal) == ["delete", "delete"]
    assert objects(removal, "delete", "chain") == ["prerouting", "antispoof"]
    assert {c["delete"]["chain"]["table"] for c in removal} == {"qubes"}


def test_partial_antispoof_adds_only_the_missing_set() -> None:
    commands = build_antispoof("ip6", table=True, sets={SET_DOWNSTREAM}, chains=CHAINS)
    assert objects(commands, "add", "set") == [SET_ALLOWED]
    assert [c["add"]["set"]["type"] for c in commands] == [["ifname", "ipv6_addr"]]
    assert build_antispoof("ip6", table=True, sets={SET_DOWNSTREAM}, chains=CHAINS, present=False) == [
        {"delete": commands[0]["add"]}]


def test_antispoof_removal_deletes_chains_before_the_sets_they_match() -> None:
    removal = build_antispoof("ip", table=True, sets=(), chains=(), present=False)
    assert [(next(iter(c["delete"])), c["delete"][next(iter(c["delete"]))]["name"]) for c in removal] == [
        ("chain", "prerouting"), ("chain", "antispoof"), ("set", "allowed"), ("set", "downstream")]


def test_vif_elements() -> None:
    elements = [Element(SET_ALLOWED, V4, "vif12.0"), Element(SET_DOWNSTREAM, V4),
                Element(SET_ALLOWED, V6, "vif12.0"), Element(SET_DOWNSTREAM, V6)]
    assert build_elements(elements, present=True) == [
        {"add": {"element": {"family": "ip", "table": "qubes", "name": "allowed",
                             "elem": [{"concat": ["vif12.0", "10.137.0.12"]}]}}},
        {"add": {"element": {"family": "ip", "table": "qubes", "name": "downstream", "elem": ["10.137.0.12"]}}},
        {"add": {"element": {"family": "ip6", "table": "qubes", "name": "allowed",
                             "elem": [{"concat": ["vif12.0", "fd09::12"]}]}}},
        {"add": {"element": {"family": "ip6", "table": "qubes", "name": "downstream", "elem": ["fd09::12"]}}},
    ]


def test_removal_adds_before_deleting_so_it_never_fails_on_absence() -> None:
    commands = build_elements([Element(SET_ALLOWED, V4, "vif12.0")], present=False)
    assert verbs(commands) == ["add", "delete"]
    assert commands[0]["add"] == commands[1]["delete"]


def test_removal_names_only_the_elements_given() -> None:
    commands = build_elements([Element(SET_ALLOWED, V4, "vif12.0")], present=False)
    assert all(c[next(iter(c))]["element"]["name"] == "allowed" for c in commands)
    assert build_elements([], present=False) == build_elements([], present=True) == []


def test_flowtable_commands() -> None:
    create = build_flowtable("vif12.0", table=False, present=True)
    assert create[0] == {"add": {"table": {"family": "inet", "name": "qubes-flowtable"}}}
    assert create[1]["add"]["flowtable"]["dev"] == ["vif12.0"]
    assert verbs(create) == ["add"] * 4 and objects(create, "add", "chain") == ["forward"]
    assert build_flowtable("vif12.0", table=True, present=True) == [create[1]]
    remove = build_flowtable("vif12.0", table=True, present=False)
    assert verbs(remove) == ["add", "delete"] and remove[0]["add"] == remove[1]["delete"] == create[1]["add"]
    # the undo of a creation that made the table takes the table away
    assert build_flowtable("vif12.0", table=False, present=False) == [
        {"delete": {"table": {"family": "inet", "name": "qubes-flowtable"}}}]


@pytest.mark.parametrize("ifname", ['vif1.0"; flush ruleset', "vif1.0 } }"])
def test_values_stay_json_strings(ifname: str) -> None:
    """Even a hostile string (never reaching here: validated before) stays one value."""
    (allowed,) = build_elements([Element(SET_ALLOWED, V4, ifname)], present=True)
    assert allowed["add"]["element"]["elem"] == [{"concat": [ifname, "10.137.0.12"]}]
    (flow,) = build_flowtable(ifname, table=True, present=True)
    assert flow["add"]["flowtable"]["dev"] == [ifname]
