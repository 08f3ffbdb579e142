"""nftables JSON builders: golden files for the layout, exact commands for a vif.

Golden files live in tests/unit/golden/. To add or update one after an
intended change, run the tests with UPDATE_GOLDEN=1, review the diff of the
JSON file, and commit it with the change that caused it.
"""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Address, IPv6Address

import pytest

from qubesnet.layout import build_layout_removal, build_missing_layout, required_chains
from vif_route_qubes.nftplan import (
    build_add_elements,
    build_flowtable_add,
    build_flowtable_remove,
    build_remove_elements,
)

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def check_golden(name: str, value: object) -> None:
    path = os.path.join(GOLDEN, name)
    text = json.dumps(value, indent=1, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        with open(path, "w") as handle:
            handle.write(text)
    with open(path) as handle:
        assert json.loads(handle.read()) == json.loads(text), f"{name} differs; see this module's docstring"


@pytest.mark.parametrize("family", ["ip", "ip6"])
def test_full_layout_golden(family: str) -> None:
    check_golden(f"layout-{family}.json", build_missing_layout(family, ()))


def test_complete_layout_needs_nothing() -> None:
    for family in ("ip", "ip6"):
        assert build_missing_layout(family, required_chains(family)) == []
        assert build_layout_removal(family, required_chains(family), True) == []


def test_partial_layout_adds_only_missing_chains() -> None:
    existing = required_chains("ip") - {"antispoof", "prerouting"}
    commands = build_missing_layout("ip", existing)
    chains = [c["add"]["chain"]["name"] for c in commands if "chain" in c.get("add", {})]
    rules = {c["add"]["rule"]["chain"] for c in commands if "rule" in c.get("add", {})}
    assert chains == ["antispoof", "prerouting"]
    assert rules == {"antispoof", "prerouting"}
    # Users of a chain are removed before the chain they jump to.
    removed = [c["delete"]["chain"]["name"] for c in build_layout_removal("ip", existing, True)]
    assert removed == ["prerouting", "antispoof"]


def test_layout_removal_of_a_new_table_deletes_the_table() -> None:
    assert build_layout_removal("ip6", (), False) == [{"delete": {"table": {"family": "ip6", "name": "qubes"}}}]


def test_vif_elements() -> None:
    commands = build_add_elements("vif12.0", [IPv4Address("10.137.0.12"), IPv6Address("fd09::12")])
    assert commands == [
        {"add": {"element": {"family": "ip", "table": "qubes", "name": "allowed",
                             "elem": [{"concat": ["vif12.0", "10.137.0.12"]}]}}},
        {"add": {"element": {"family": "ip", "table": "qubes", "name": "downstream", "elem": ["10.137.0.12"]}}},
        {"add": {"element": {"family": "ip6", "table": "qubes", "name": "allowed",
                             "elem": [{"concat": ["vif12.0", "fd09::12"]}]}}},
        {"add": {"element": {"family": "ip6", "table": "qubes", "name": "downstream", "elem": ["fd09::12"]}}},
    ]


def test_removal_adds_before_deleting_so_it_never_fails_on_absence() -> None:
    commands = build_remove_elements("vif12.0", [IPv4Address("10.137.0.12")], [])
    assert [next(iter(c)) for c in commands] == ["add", "delete"]
    assert commands[0]["add"] == commands[1]["delete"]


def test_downstream_kept_when_asked() -> None:
    commands = build_remove_elements("vif12.0", [IPv4Address("10.137.0.12")], [])
    assert all(c[next(iter(c))]["element"]["name"] == "allowed" for c in commands)


def test_flowtable_commands() -> None:
    create = build_flowtable_add("vif12.0", table_exists=False)
    assert create[0] == {"add": {"table": {"family": "inet", "name": "qubes-flowtable"}}}
    assert create[1]["add"]["flowtable"]["dev"] == ["vif12.0"]
    assert build_flowtable_add("vif12.0", table_exists=True) == [create[1]]
    remove = build_flowtable_remove("vif12.0")
    assert [next(iter(c)) for c in remove] == ["add", "delete"]


@pytest.mark.parametrize("ifname", ['vif1.0"; flush ruleset', "vif1.0 } }"])
def test_values_stay_json_strings(ifname: str) -> None:
    """Even a hostile string (never reaching here: validated before) stays one value."""
    (allowed, _) = build_add_elements(ifname, [IPv4Address("10.137.0.12")])
    assert allowed["add"]["element"]["elem"] == [{"concat": [ifname, "10.137.0.12"]}]
