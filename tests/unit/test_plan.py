"""vif_route_qubes.plan: the order of steps is the security argument."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from qubesnet.errors import ApplyError
from qubesnet.layout import required_chains
from qubesnet.validate import AddressList, VifName
from vif_route_qubes.inputs import VifInputs
from vif_route_qubes.plan import (
    AntispoofElements,
    Facts,
    GatewayAddress,
    HostRoute,
    LinkState,
    Neighbour,
    PurgeConntrack,
    Rename,
    ReportConnected,
    RunHooks,
    SetSysctl,
    plan_offline,
    plan_online,
)

V4, V6 = IPv4Address("10.137.0.12"), IPv6Address("fd09:24ef:4179::a89:12")
FULL_LAYOUT = {family: required_chains(family) for family in ("ip", "ip6")}


def inputs(**changes: object) -> VifInputs:
    base = VifInputs(
        vif=VifName("vif12.0", 12, 0),
        xenbus_path="backend/vif/12/0",
        ifname="vif12.0",
        addresses=AddressList(V4, V6),
        ip_missing=False,
        mac="00:16:3e:5e:6c:0c",
        vif_type="vif",
        gateway=IPv4Address("10.137.0.1"),
        gateway6=IPv6Address("fd09:24ef:4179::a89:1"),
        harden=False,
        flowtable=False,
    )
    return base._replace(**changes)


def facts(**changes: object) -> Facts:
    base = Facts(link_name="vif12.0", link_index=7, ipv6_kernel=True, ipv6_on_vif=True,
                 chains=FULL_LAYOUT, qubes_tables=frozenset({"ip", "ip6"}))
    return base._replace(**changes)


def position(steps: tuple, kind: type) -> list[int]:
    return [i for i, s in enumerate(steps) if isinstance(s, kind)]


def test_antispoof_elements_come_before_link_up_and_routes_after() -> None:
    steps = plan_online(inputs(), facts()).steps
    (elements,) = position(steps, AntispoofElements)
    (link_up,) = position(steps, LinkState)
    assert steps[elements].present and steps[elements].addresses == (V4, V6)
    assert steps[link_up] == LinkState(up=True, group=2)
    assert elements < link_up
    assert max(position(steps, PurgeConntrack)) < elements
    assert max(position(steps, SetSysctl)) < link_up
    for kind in (HostRoute, Neighbour, GatewayAddress, RunHooks):
        assert min(position(steps, kind)) > link_up
    assert isinstance(steps[-1], ReportConnected)


def test_online_contents() -> None:
    plan = plan_online(inputs(), facts())
    steps = plan.steps
    assert [s for s in steps if isinstance(s, HostRoute)] == [HostRoute(True, V4, 32740), HostRoute(True, V6, 32740)]
    assert [s for s in steps if isinstance(s, Neighbour)] == [
        Neighbour(True, V4, "00:16:3e:5e:6c:0c"), Neighbour(True, V6, "00:16:3e:5e:6c:0c")]
    assert [s for s in steps if isinstance(s, GatewayAddress)] == [
        GatewayAddress(True, IPv4Address("10.137.0.1"), 32), GatewayAddress(True, IPv6Address("fd09:24ef:4179::a89:1"), 128)]
    assert SetSysctl("net/ipv4/conf/vif12.0/proxy_arp", "1") in steps
    assert SetSysctl("net/ipv6/conf/vif12.0/proxy_ndp", "1") in steps
    assert [s for s in steps if isinstance(s, RunHooks)] == [RunHooks("online", V4), RunHooks("online", V6)]
    assert plan.link_index == 7 and plan.ifname == "vif12.0" and plan.notes == ()


def test_complete_layout_adds_no_layout_commands() -> None:
    (elements,) = [s for s in plan_online(inputs(), facts()).steps if isinstance(s, AntispoofElements)]
    assert elements.layout == () and elements.layout_undo == ()


def test_missing_layout_is_part_of_the_same_step() -> None:
    (elements,) = [s for s in plan_online(inputs(), facts(chains={}, qubes_tables=frozenset())).steps
                   if isinstance(s, AntispoofElements)]
    assert elements.layout, "the base layout is created in the elements' transaction"
    assert {"delete": {"table": {"family": "ip", "name": "qubes"}}} in elements.layout_undo


def test_ipv6_disabled_on_the_vif_skips_ipv6_routing_but_keeps_ipv4() -> None:
    plan = plan_online(inputs(), facts(ipv6_on_vif=False))
    routes = [s.dst for s in plan.steps if isinstance(s, HostRoute)]
    assert routes == [V4]
    assert not [s for s in plan.steps if isinstance(s, GatewayAddress) and s.addr.version == 6]
    assert not [s for s in plan.steps if isinstance(s, SetSysctl) and "ipv6" in s.key]
    (elements,) = [s for s in plan.steps if isinstance(s, AntispoofElements)]
    assert V6 in elements.addresses, "the IPv6 address stays protected"
    assert any("IPv6 is disabled on vif12.0" in note for note in plan.notes)


def test_ipv6_absent_from_the_kernel_leaves_ip6_alone() -> None:
    plan = plan_online(inputs(), facts(ipv6_kernel=False, ipv6_on_vif=False, chains={"ip": FULL_LAYOUT["ip"]}))
    (elements,) = [s for s in plan.steps if isinstance(s, AntispoofElements)]
    assert elements.addresses == (V4,)
    assert elements.layout == (), "no ip6 layout is created without IPv6"
    assert any("disabled in the kernel" in note for note in plan.notes)


def test_link_local_gateway6_is_not_configured() -> None:
    plan = plan_online(inputs(gateway6=IPv6Address("fe80::1")), facts())
    assert not [s for s in plan.steps if isinstance(s, GatewayAddress) and s.addr.version == 6]
    assert SetSysctl("net/ipv6/conf/vif12.0/proxy_ndp", "1") not in plan.steps


def test_hardening_only_when_asked() -> None:
    keys = lambda plan: {s.key for s in plan.steps if isinstance(s, SetSysctl)}  # noqa: E731
    plain = keys(plan_online(inputs(), facts()))
    hardened = keys(plan_online(inputs(harden=True), facts()))
    assert "net/ipv4/conf/vif12.0/send_redirects" not in plain
    assert {"net/ipv4/conf/vif12.0/send_redirects", "net/ipv6/conf/vif12.0/accept_ra",
            "net/ipv6/conf/vif12.0/accept_dad"} <= hardened


def test_rename_comes_first_and_names_follow() -> None:
    plan = plan_online(inputs(ifname="vif-work"), facts())
    assert plan.steps[0] == Rename("vif12.0", "vif-work")
    assert SetSysctl("net/ipv4/conf/vif-work/proxy_arp", "1") in plan.steps
    assert plan.ifname == "vif-work"


def test_no_rename_when_already_renamed() -> None:
    plan = plan_online(inputs(ifname="vif-work"), facts(link_name="vif-work"))
    assert not position(plan.steps, Rename)


def test_online_without_the_interface_fails_before_any_step() -> None:
    with pytest.raises(ApplyError, match="vif12.0 does not exist"):
        plan_online(inputs(), facts(link_name=None, link_index=None))


def test_no_addresses_runs_hooks_once_without_address() -> None:
    plan = plan_online(inputs(addresses=AddressList(None, None)), facts())
    assert [s for s in plan.steps if isinstance(s, RunHooks)] == [RunHooks("online", None)]
    assert not position(plan.steps, HostRoute)


def test_flowtable_only_when_enabled() -> None:
    def flowtable(**kw: object) -> tuple:
        (e,) = [s for s in plan_online(inputs(**kw), facts()).steps if isinstance(s, AntispoofElements)]
        return e.flowtable
    assert flowtable() == ()
    assert flowtable(flowtable=True)


def test_offline_takes_the_link_down_first_and_removes_in_reverse() -> None:
    plan = plan_offline(inputs(), facts())
    steps = plan.steps
    assert steps[0] == LinkState(up=False, group=0)
    (elements,) = position(steps, AntispoofElements)
    assert not steps[elements].present
    # The own routes go before the elements step, which asks the kernel
    # whether another vif still routes an address.
    assert max(position(steps, HostRoute)) < elements
    assert all(not s.present for s in steps if isinstance(s, (HostRoute, Neighbour, GatewayAddress)))
    assert [s for s in steps if isinstance(s, RunHooks)] == [RunHooks("offline", V4), RunHooks("offline", V6)]
    assert not position(steps, ReportConnected)


def test_offline_of_a_vanished_interface_only_cleans_nftables_and_conntrack() -> None:
    plan = plan_offline(inputs(), facts(link_name=None, link_index=None))
    kinds = {type(s) for s in plan.steps}
    assert kinds == {AntispoofElements, PurgeConntrack, RunHooks}


def test_offline_removes_ipv6_even_if_ipv6_is_now_disabled() -> None:
    plan = plan_offline(inputs(), facts(ipv6_on_vif=False))
    assert HostRoute(False, V6, 32740) in plan.steps


@pytest.mark.parametrize("domid", [0, 1, 100, 32752])
def test_metric_prefers_later_vms(domid: int) -> None:
    plan = plan_online(inputs(vif=VifName(f"vif{domid}.0", domid, 0), ifname=f"vif{domid}.0"), facts(link_name=f"vif{domid}.0"))
    metrics = {s.metric for s in plan.steps if isinstance(s, HostRoute)}
    assert metrics == {32752 - domid}
    assert all(m >= 0 for m in metrics)


def test_offline_removes_the_gateway_addresses_found_on_the_interface() -> None:
    found = (
        (IPv4Address("10.137.0.1"), 32),
        (IPv6Address("fd09:24ef:4179::a89:1"), 128),
        (IPv6Address("fe80::fcff:ffff:feff:ffff"), 64),  # the kernel's own
        (IPv4Address("192.0.2.9"), 24),  # not a gateway address online adds
    )
    plan = plan_offline(inputs(gateway=IPv4Address("10.137.0.99")), facts(link_addresses=found))
    assert [s for s in plan.steps if isinstance(s, GatewayAddress)] == [
        GatewayAddress(False, IPv4Address("10.137.0.1"), 32),
        GatewayAddress(False, IPv6Address("fd09:24ef:4179::a89:1"), 128),
    ]
