"""Tests written because a mutant of ``make mutation`` (tools/mutation.py) survived.

Each names the mutant it kills. The kernel reader (observe.py) is run here
against fake gateways that answer as the kernel would: the decisions the
pure planner takes are only as good as the facts it is given.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address, ip_address
from typing import Any, cast

import pytest

from qubesnet.errors import ApplyError
from qubesnet.netlink.rtnl import HostRoute
from tests.unit.test_describe import ENV, GW, GW6, V4, V6, inputs
from tests.unit.test_diff import NO_NS, configured
from vif_route_qubes.describe import describe
from vif_route_qubes.diff import plan_offline, plan_online
from vif_route_qubes.gateways import Gateways
from vif_route_qubes.observe import read_observed
from vif_route_qubes.state import Address, Element, Link, Route, VifState
from vif_route_qubes.steps import AddressChange, NftChange

LINK = Link(7, "vif12.0", True, 2)
OTHER_VIF = 9
ADMIN = IPv4Address("10.137.0.99")  # put on the vif by an administrator's hook


class FakeRtnl:
    def __init__(self, routes: dict[str, list[HostRoute]], addresses: list[tuple[Any, int]]) -> None:
        self.routes = routes
        self.addresses = addresses

    def host_routes_to(self, addr: Any) -> list[HostRoute]:
        return self.routes.get(str(addr), [])

    def host_routes_on(self, index: int) -> list[tuple[Any, int]]:
        return [(ip_address(dst), r.metric) for dst, found in self.routes.items() for r in found if r.oif == index]

    def list_permanent_neighbours(self, index: int) -> list[tuple[Any, str | None]]:
        return []

    def list_addresses(self, index: int) -> list[tuple[Any, int]]:
        return self.addresses


def _key(command: Any) -> str:
    return json.dumps(command, sort_keys=True)


class FakeNft:
    """The full base layout; a lookup finds exactly the elements present."""

    def __init__(self, present: set[Element], refuse: str | None = None) -> None:
        self.present = {(e.kind, str(e.addr), e.ifname) for e in present}
        self.refuse = refuse

    def query(self, command: dict[str, Any], *, terse: bool = False) -> list[dict[str, Any]]:
        what = next(iter(command["list"]))
        families = ("ip", "ip6")
        if what == "chains":
            return [{"chain": {"family": f, "table": "qubes", "name": n}} for f in families
                    for n in ("prerouting", "antispoof")]
        if what == "sets":
            return [{"set": {"family": f, "table": "qubes", "name": n}} for f in families
                    for n in ("allowed", "downstream")]
        if what == "tables":
            return [{"table": {"family": f, "name": "qubes"}} for f in families]
        raise AssertionError(f"unexpected query {command}")

    def has_element(self, family: str, table: str, set_name: str, addr: Any, ifname: str | None = None) -> bool:
        if self.refuse is not None:
            raise ApplyError(f"cannot read set {set_name}: {self.refuse}")
        return (set_name, str(addr), ifname) in self.present


class FakeSysctl:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def read(self, key: str) -> str | None:
        return self.values.get(key, "0")


def gateways(rtnl: FakeRtnl, nft: FakeNft, sysctls: dict[str, str] | None = None) -> Gateways:
    unused: Any = object()
    return Gateways(rtnl=cast(Any, rtnl), nft=cast(Any, nft), sysctl=cast(Any, FakeSysctl(sysctls or {})),
                    conntrack=unused, hooks=unused, status=unused, namespaces=unused)


def state_() -> VifState:
    return describe(inputs(), ENV)


def observe(rtnl: FakeRtnl, nft: FakeNft) -> Any:
    return read_observed(gateways(rtnl, nft), state_(), LINK, ENV, others=True)


# --- mutant offline-removes-unowned-addresses ---


def test_offline_removes_only_the_gateway_addresses_it_describes() -> None:
    """Whatever the kernel reader reports, the planner removes only what online puts there."""
    state = state_()
    obs = configured(state, addresses=frozenset({*state.addresses, Address(ADMIN, 32)}))
    removed = {s.addr for s in plan_offline(state, obs, NO_NS).steps if isinstance(s, AddressChange)}
    assert removed == {GW, GW6}


def test_an_address_a_hook_put_on_the_vif_never_reads_as_ours() -> None:
    on_link = [(GW, 32), (GW6, 128), (ADMIN, 32), (ip_address("fe80::fcff:ffff:feff:ffff"), 64)]
    obs = observe(FakeRtnl({}, on_link), FakeNft(set()))
    assert obs.addresses == frozenset({Address(GW, 32), Address(GW6, 128)})


# --- mutant observe-nothing-routed-elsewhere ---


def test_a_host_route_through_another_interface_is_reported_and_keeps_downstream() -> None:
    state = state_()
    routes = {str(V4): [HostRoute(OTHER_VIF, 32739)], str(V6): [HostRoute(LINK.ifindex, 32740)]}
    obs = read_observed(gateways(FakeRtnl(routes, []), FakeNft(set(state.elements))), state, LINK, ENV, others=True)
    assert obs.routed_elsewhere == frozenset({V4})
    assert obs.routes == frozenset({Route(V6, 32740)})
    (nft,) = [s for s in plan_offline(state, obs, NO_NS).steps if isinstance(s, NftChange)]
    deleted = [c["delete"]["element"] for c in nft.commands if "delete" in c]
    assert {"family": "ip", "table": "qubes", "name": "downstream", "elem": [str(V4)]} not in deleted
    assert {"family": "ip6", "table": "qubes", "name": "downstream", "elem": [str(V6)]} in deleted


def test_our_own_route_at_another_metric_is_neither_ours_nor_elsewhere() -> None:
    obs = observe(FakeRtnl({str(V4): [HostRoute(LINK.ifindex, 1)]}, []), FakeNft(set()))
    assert obs.routes == frozenset() and obs.routed_elsewhere == frozenset()


# --- mutant observe-all-elements-present ---


def test_set_elements_are_read_one_by_one_when_not_all_are_there() -> None:
    state = state_()
    there = {Element("allowed", V4, "vif12.0"), Element("downstream", V4)}
    obs = read_observed(gateways(FakeRtnl({}, []), FakeNft(there)), state, LINK, ENV)
    assert obs.elements == frozenset(there)
    (nft,) = [s for s in plan_online(state, obs, "x").steps if isinstance(s, NftChange)]
    added = {(c["add"]["element"]["name"], c["add"]["element"]["family"]) for c in nft.commands
             if "element" in c.get("add", {})}
    assert added == {("allowed", "ip6"), ("downstream", "ip6")}


def test_all_elements_present_are_read_as_present() -> None:
    state = state_()
    obs = observe(FakeRtnl({}, []), FakeNft(set(state.elements)))
    assert obs.elements == frozenset(state.elements)


def test_a_set_that_cannot_be_read_fails_instead_of_reading_as_empty() -> None:
    with pytest.raises(ApplyError, match="cannot read set"):
        observe(FakeRtnl({}, []), FakeNft(set(), refuse="Operation not permitted"))


def test_online_does_not_list_the_routing_table() -> None:
    """What other interfaces route matters to offline only: online's cost stays flat."""
    class Counting(FakeRtnl):
        def host_routes_to(self, addr: Any) -> list[HostRoute]:
            raise AssertionError("online listed the whole routing table")

    obs = read_observed(gateways(Counting({}, []), FakeNft(set())), state_(), LINK, ENV)
    assert obs.routed_elsewhere == frozenset()
