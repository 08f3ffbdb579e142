"""vif_route_qubes.diff: online makes desired - actual, offline removes actual & ours.

The order of the online steps is the security argument (see diff.py); the
decisions that depend on other vifs are taken here, from observed facts.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest

from qubesnet.errors import ApplyError
from tests.unit.test_describe import ENV, MAC, V4, V6, inputs
from vif_route_qubes.describe import describe
from vif_route_qubes.diff import FLOWTABLE_UNSUPPORTED, plan_namespace, plan_offline, plan_online
from vif_route_qubes.mapped import MappedAddress
from vif_route_qubes.nssteps import ConfigureNamespace, CreateVeth, MoveIntoNamespace, RemoveNamespace
from vif_route_qubes.state import (
    BaseObjects,
    Element,
    FlowFacts,
    Link,
    NamespaceFacts,
    Observed,
    VifState,
)
from vif_route_qubes.steps import (
    AddressChange,
    NeighbourChange,
    NftChange,
    PurgeConntrack,
    Rename,
    ReportConnected,
    RouteChange,
    RunHooks,
    SetLink,
    SetSysctl,
)

FULL_BASE = {f: BaseObjects(True, frozenset({"allowed", "downstream"}), frozenset({"prerouting", "antispoof"}))
             for f in ("ip", "ip6")}
NO_NS = NamespaceFacts(False, False, False, False, False, None)
LINK = Link(7, "vif12.0", False, 0)


def fresh(state: VifState, link: Link | None = LINK, **changes: Any) -> Observed:
    """A new vif: down, nothing of ours there, sysctls at the kernel's defaults."""
    base = Observed(
        link=link,
        sysctls={s.key: "0" for s in state.sysctls},
        defaults={s.key: "0" for s in state.sysctls},
        elements=frozenset(), routes=frozenset(), neighbours=frozenset(), addresses=frozenset(),
        routed_elsewhere=frozenset(), base=FULL_BASE, flow=FlowFacts(False, False, False),
    )
    return base._replace(**changes)


def configured(state: VifState, **changes: Any) -> Observed:
    """The same vif after a successful online."""
    base = fresh(state, Link(7, state.ifname, True, 2))._replace(
        sysctls={s.key: s.value for s in state.sysctls},
        elements=frozenset(state.elements), routes=frozenset(state.routes),
        neighbours=frozenset(state.neighbours), addresses=frozenset(state.addresses),
        routed_elsewhere=frozenset(),
    )
    return base._replace(**changes)


def kinds(steps: tuple[Any, ...] | list[Any]) -> list[str]:
    return [type(s).__name__ for s in steps]


def position(steps: tuple[Any, ...], kind: type) -> list[int]:
    return [i for i, s in enumerate(steps) if isinstance(s, kind)]


def nft_elements(step: NftChange, verb: str) -> set[tuple[str, str]]:
    found = set()
    for command in step.commands:
        body = command.get(verb, {}).get("element")
        if body and not (verb == "add" and {"delete": command[verb]} in step.commands):
            for elem in body["elem"]:
                found.add((body["name"], str(elem["concat"][1] if isinstance(elem, dict) else elem)))
    return found


# --- online ---


def test_online_order_is_the_security_argument() -> None:
    state = describe(inputs(), ENV)
    steps = plan_online(state, fresh(state), "backend/vif/12/0").steps
    (nft,) = position(steps, NftChange)
    (up,) = position(steps, SetLink)
    assert steps[up] == SetLink(7, "vif12.0", True, 2, False, 0)
    assert max(position(steps, SetSysctl) + position(steps, PurgeConntrack)) < nft < up
    for kind in (RouteChange, NeighbourChange, AddressChange, RunHooks):
        assert min(position(steps, kind)) > up
    assert steps[-1] == ReportConnected("backend/vif/12/0")


def test_online_of_a_new_vif_makes_everything() -> None:
    state = describe(inputs(), ENV)
    plan = plan_online(state, fresh(state), "backend/vif/12/0")
    (nft,) = [s for s in plan.steps if isinstance(s, NftChange)]
    assert nft_elements(nft, "add") == {("allowed", "10.137.0.12"), ("downstream", "10.137.0.12"),
                                        ("allowed", "fd09:24ef:4179::a89:12"), ("downstream", "fd09:24ef:4179::a89:12")}
    assert [(s.dst, s.metric) for s in plan.steps if isinstance(s, RouteChange)] == [(V4, 32740), (V6, 32740)]
    assert all(s.present for s in plan.steps if isinstance(s, (RouteChange, NeighbourChange, AddressChange)))
    assert [s.mac for s in plan.steps if isinstance(s, NeighbourChange)] == [MAC, MAC]
    assert [s.argv for s in plan.steps if isinstance(s, RunHooks)] == [
        ("online", "vif12.0", "vif", "10.137.0.12"), ("online", "vif12.0", "vif", "fd09:24ef:4179::a89:12")]


def test_online_twice_changes_nothing_but_hooks_and_report() -> None:
    state = describe(inputs(), ENV)
    plan = plan_online(state, configured(state), "backend/vif/12/0")
    assert kinds(plan.steps) == ["PurgeConntrack", "RunHooks", "RunHooks", "ReportConnected"]


def test_only_what_is_missing_is_made_and_undone() -> None:
    state = describe(inputs(), ENV)
    half = configured(state, elements=frozenset({Element("allowed", V4, "vif12.0"), Element("downstream", V4)}),
                      routes=frozenset())
    (nft,) = [s for s in plan_online(state, half, "x").steps if isinstance(s, NftChange)]
    six = {("allowed", "fd09:24ef:4179::a89:12"), ("downstream", "fd09:24ef:4179::a89:12")}
    assert nft_elements(nft, "add") == six
    undo = nft.inverse()
    assert isinstance(undo, NftChange) and nft_elements(undo, "delete") == six  # never the elements it found


def test_sysctls_set_only_when_different_and_undone_to_what_they_were() -> None:
    state = describe(inputs(), ENV)
    obs = fresh(state, sysctls={"net/ipv4/conf/vif12.0/proxy_arp": "1", "net/ipv6/conf/vif12.0/proxy_ndp": "2"})
    (step,) = [s for s in plan_online(state, obs, "x").steps if isinstance(s, SetSysctl)]
    assert step == SetSysctl("net/ipv6/conf/vif12.0/proxy_ndp", "1", "2")
    assert step.inverse() == SetSysctl("net/ipv6/conf/vif12.0/proxy_ndp", "2", "1")


def test_a_missing_sysctl_fails_before_anything() -> None:
    state = describe(inputs(), ENV)
    with pytest.raises(ApplyError, match="proxy_arp does not exist"):
        plan_online(state, fresh(state, sysctls={}), "x")


def test_online_without_the_interface_fails() -> None:
    state = describe(inputs(), ENV)
    with pytest.raises(ApplyError, match=r"vif12\.0 does not exist"):
        plan_online(state, fresh(state, link=None), "x")


def test_rename_comes_first_and_everything_uses_the_new_name() -> None:
    state = describe(inputs(ifname="vif-work"), ENV)
    steps = plan_online(state, fresh(state), "x").steps
    assert steps[0] == Rename(7, "vif12.0", "vif-work")
    assert steps[0].inverse() == Rename(7, "vif-work", "vif12.0")
    assert all(s.ifname == "vif-work" for s in steps if isinstance(s, (SetLink, RouteChange)))


def test_missing_antispoof_objects_are_made_in_the_same_transaction_and_kept_by_the_undo() -> None:
    """Another vif's event may rely on them as soon as they exist: an undo never deletes them."""
    state = describe(inputs(), ENV)
    base = dict(FULL_BASE, ip6=BaseObjects(False, frozenset(), frozenset()))
    (nft,) = [s for s in plan_online(state, fresh(state, base=base), "x").steps if isinstance(s, NftChange)]
    assert nft.commands[0] == {"add": {"table": {"family": "ip6", "name": "qubes"}}}
    assert all(next(iter(c.get("delete", {"element": 0}))) == "element" for c in nft.undo)
    made = {c["add"]["chain"]["name"] for c in nft.commands if "chain" in c.get("add", {})}
    assert made == {"prerouting", "antispoof"}  # never the firewall service's chains


def test_flowtable_when_enabled_and_supported_else_a_note() -> None:
    state = describe(inputs(flowtable=True), ENV)
    plan = plan_online(state, fresh(state, flow=FlowFacts(True, True, False)), "x")
    (nft,) = [s for s in plan.steps if isinstance(s, NftChange)]
    assert {"add": {"flowtable": nft.commands[-1]["add"]["flowtable"]}} == nft.commands[-1]
    assert nft.commands[-1]["add"]["flowtable"]["dev"] == ["vif12.0"]
    unsupported = plan_online(state, fresh(state, flow=FlowFacts(False, False, False)), "x")
    assert FLOWTABLE_UNSUPPORTED in unsupported.notes
    assert not any("flowtable" in c for s in unsupported.steps if isinstance(s, NftChange) for c in s.commands[0])


# --- offline ---


def test_offline_takes_the_link_down_first_and_removes_what_online_made() -> None:
    state = describe(inputs(), ENV)
    plan = plan_offline(state, configured(state), NO_NS)
    assert plan.steps[0] == SetLink(7, "vif12.0", False, 0, True, 2)
    (nft,) = [s for s in plan.steps if isinstance(s, NftChange)]
    assert nft_elements(nft, "delete") == {(e.kind, str(e.addr)) for e in state.elements}
    assert {(s.dst, s.present) for s in plan.steps if isinstance(s, RouteChange)} == {(V4, False), (V6, False)}
    assert {s.addr for s in plan.steps if isinstance(s, AddressChange)} == {a.addr for a in state.addresses}
    # sysctls back to what a new interface gets
    assert {(s.key, s.value) for s in plan.steps if isinstance(s, SetSysctl)} == {
        ("net/ipv4/conf/vif12.0/proxy_arp", "0"), ("net/ipv6/conf/vif12.0/proxy_ndp", "0")}
    assert not position(plan.steps, ReportConnected)


def test_offline_keeps_downstream_while_another_interface_routes_the_address() -> None:
    state = describe(inputs(), ENV)
    plan = plan_offline(state, configured(state, routed_elsewhere=frozenset({V4})), NO_NS)
    (nft,) = [s for s in plan.steps if isinstance(s, NftChange)]
    assert ("downstream", "10.137.0.12") not in nft_elements(nft, "delete")
    assert ("allowed", "10.137.0.12") in nft_elements(nft, "delete")
    assert ("downstream", "fd09:24ef:4179::a89:12") in nft_elements(nft, "delete")
    assert any("10.137.0.12 stays in the downstream set" in n for n in plan.notes)


def test_offline_removes_nothing_that_is_not_there() -> None:
    state = describe(inputs(), ENV)
    plan = plan_offline(state, fresh(state), NO_NS)
    assert kinds(plan.steps) == ["RunHooks", "RunHooks", "PurgeConntrack"]


def test_offline_leaves_what_it_did_not_set() -> None:
    """A sysctl someone changed after online, and an address a hook added, are not ours."""
    state = describe(inputs(), ENV)
    obs = configured(state, sysctls={"net/ipv4/conf/vif12.0/proxy_arp": "1", "net/ipv6/conf/vif12.0/proxy_ndp": "5"},
                     addresses=frozenset())
    steps = plan_offline(state, obs, NO_NS).steps
    assert [s.key for s in steps if isinstance(s, SetSysctl)] == ["net/ipv4/conf/vif12.0/proxy_arp"]
    assert not position(steps, AddressChange)


def test_offline_renames_back_after_the_hooks() -> None:
    state = describe(inputs(ifname="vif-work"), ENV)
    steps = plan_offline(state, configured(state), NO_NS).steps
    (rename,) = position(steps, Rename)
    assert steps[rename] == Rename(7, "vif-work", "vif12.0")
    assert max(position(steps, RunHooks)) < rename


def test_offline_of_a_vanished_interface_cleans_nftables_and_conntrack() -> None:
    state = describe(inputs(), ENV)
    obs = configured(state)._replace(link=None, routes=frozenset(), neighbours=frozenset(), addresses=frozenset())
    assert kinds(plan_offline(state, obs, NO_NS).steps) == ["NftChange", "RunHooks", "RunHooks", "PurgeConntrack"]


def test_offline_of_a_mapped_vif_removes_its_namespace_last_but_conntrack() -> None:
    state = describe(inputs(), ENV)
    steps = plan_offline(state, configured(state), NO_NS._replace(exists=True)).steps
    assert kinds(steps)[-2:] == ["RemoveNamespace", "PurgeConntrack"]
    assert not position(steps, Rename)


# --- a mapped vif's namespace ---

MAP = MappedAddress(IPv4Address("10.138.7.9"), IPv4Address("192.168.1.128"), IPv4Address("192.168.1.1"),
                    IPv4Address("10.137.0.1"))


def mapped_state(mapping: MappedAddress | None = MAP) -> VifState:
    from qubesnet.validate import AddressList

    return describe(inputs(addresses=AddressList(MAP.real, None), mapping=mapping), ENV)


def test_a_fresh_mapped_vif_gets_its_namespace() -> None:
    steps = plan_namespace(mapped_state(), NO_NS._replace(netvm_link=LINK))
    assert kinds(steps) == ["CreateNamespace", "MoveIntoNamespace", "CreateVeth", "ConfigureNamespace"]
    assert steps[1] == MoveIntoNamespace("vif12.0-nat", "vif12.0", "vif12.0")
    assert steps[2] == CreateVeth("vif12.0-nat", "vif12.0", "vif12.0-p", MAC)


def test_a_healthy_namespace_is_left_alone() -> None:
    assert plan_namespace(mapped_state(), NamespaceFacts(True, True, True, True, True, None)) == []


def test_another_mapping_is_taken_down_and_built_anew() -> None:
    steps = plan_namespace(mapped_state(), NamespaceFacts(True, True, True, True, False, None))
    assert isinstance(steps[0], RemoveNamespace)
    assert kinds(steps)[1:] == ["CreateNamespace", "MoveIntoNamespace", "CreateVeth", "ConfigureNamespace"]


@pytest.mark.parametrize(("facts", "expected"), [
    (NamespaceFacts(True, False, False, False, False, LINK), [MoveIntoNamespace, CreateVeth, ConfigureNamespace]),
    (NamespaceFacts(True, True, False, False, False, None), [CreateVeth, ConfigureNamespace]),
    (NamespaceFacts(True, True, True, False, False, None), [ConfigureNamespace]),
])
def test_the_leftovers_of_a_crash_converge(facts: NamespaceFacts, expected: list[type]) -> None:
    assert [type(s) for s in plan_namespace(mapped_state(), facts)] == expected


def test_a_mapping_that_went_away_removes_the_namespace() -> None:
    steps = plan_namespace(mapped_state(None), NamespaceFacts(True, True, True, True, True, None))
    assert steps == [RemoveNamespace("vif12.0-nat", "vif12.0", "vif12.0-p", "vif12.0")]


def test_namespace_steps_undo_in_reverse() -> None:
    steps = plan_namespace(mapped_state(), NO_NS._replace(netvm_link=LINK))
    assert [type(s.inverse()).__name__ for s in steps] == ["DeleteNamespace", "MoveBack", "DeleteVeth", "NoneType"]


def test_a_vanished_vif_cannot_be_mapped() -> None:
    from qubesnet.errors import ConfigError

    with pytest.raises(ConfigError, match=r"vif12\.0 does not exist"):
        plan_namespace(mapped_state(), NO_NS)


# --- reconcile, a changed gateway, an orphan's downstream ---


def test_reconcile_runs_hooks_and_purges_only_for_a_vif_never_configured() -> None:
    from vif_route_qubes.diff import for_reconcile

    state = describe(inputs(), ENV)
    new = fresh(state)
    kept = for_reconcile(plan_online(state, new, "x"), state, new)
    assert position(kept.steps, RunHooks) and position(kept.steps, PurgeConntrack)
    assert not position(kept.steps, ReportConnected), "libxl saw it connected already"
    drifted = configured(state, elements=frozenset())
    plan = for_reconcile(plan_online(state, drifted, "x"), state, drifted)
    assert kinds(plan.steps) == ["NftChange"], "a running client keeps its connections; hooks ran at its online"
    half = fresh(state, elements=frozenset(state.elements[:1]))  # down, but an element of ours is there
    assert not position(for_reconcile(plan_online(state, half, "x"), state, half).steps, PurgeConntrack)


def test_what_a_changed_gateway_leaves_is_removed_before_the_report() -> None:
    from vif_route_qubes.describe import subtract
    from vif_route_qubes.diff import with_stale

    old = describe(inputs(), ENV)
    new = describe(inputs(gateway=IPv4Address("10.137.0.254")), ENV)
    stale = subtract(old, new)
    plan = with_stale(plan_online(new, configured(old), "x"), stale, configured(stale))
    assert kinds(plan.steps)[-2:] == ["AddressChange", "ReportConnected"]
    assert [(s.present, str(s.addr)) for s in plan.steps if isinstance(s, AddressChange)] == [
        (True, "10.137.0.254"), (False, "10.137.0.1")]


def test_an_orphans_downstream_goes_unless_routed_elsewhere() -> None:
    from vif_route_qubes.describe import restricted_to_downstream
    from vif_route_qubes.diff import plan_orphan_downstream

    state = restricted_to_downstream(describe(inputs(), ENV))
    assert {e.kind for e in state.elements} == {"downstream"} and not state.routes and not state.sysctls
    obs = configured(state, link=None)
    (nft,) = plan_orphan_downstream(state, obs).steps
    assert isinstance(nft, NftChange)
    assert nft_elements(nft, "delete") == {
        ("downstream", str(V4)), ("downstream", str(V6))}
    assert plan_orphan_downstream(state, obs._replace(routed_elsewhere=frozenset({V4, V6}))).steps == ()
