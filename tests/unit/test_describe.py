"""vif_route_qubes.describe: the one description of a vif, from validated inputs."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from qubesnet.validate import AddressList, VifName
from vif_route_qubes.describe import describe, subtract
from vif_route_qubes.inputs import VifInputs
from vif_route_qubes.mapped import MappedAddress
from vif_route_qubes.state import Address, Element, Environment, Neighbour, Route, Sysctl

V4, V6 = IPv4Address("10.137.0.12"), IPv6Address("fd09:24ef:4179::a89:12")
GW, GW6 = IPv4Address("10.137.0.1"), IPv6Address("fd09:24ef:4179::a89:1")
MAC = "00:16:3e:5e:6c:0c"
ENV = Environment(link=None, ipv6_kernel=True, ipv6_on_vif=True)


def inputs(**changes: object) -> VifInputs:
    base = VifInputs(
        vif=VifName("vif12.0", 12, 0), xenbus_path="backend/vif/12/0", ifname="vif12.0",
        addresses=AddressList(V4, V6), ip_missing=False, mac=MAC, vif_type="vif",
        gateway=GW, gateway6=GW6, harden=False, flowtable=False,
    )
    return base._replace(**changes)  # type: ignore[arg-type]


def test_a_dual_stack_vif() -> None:
    state = describe(inputs(), ENV)
    assert state.ifname == "vif12.0" and state.group == 2
    assert state.sysctls == (Sysctl("net/ipv4/conf/vif12.0/proxy_arp", "1"),
                             Sysctl("net/ipv6/conf/vif12.0/proxy_ndp", "1"))
    assert set(state.elements) == {Element("allowed", V4, "vif12.0"), Element("allowed", V6, "vif12.0"),
                                   Element("downstream", V4), Element("downstream", V6)}
    # domid 12: metric 32740 (the contract: 32752 - domid)
    assert state.routes == (Route(V4, 32740), Route(V6, 32740))
    assert state.neighbours == (Neighbour(V4, MAC), Neighbour(V6, MAC))
    assert state.addresses == (Address(GW, 32), Address(GW6, 128))
    assert state.purge == (V4, V6) and state.hook_addresses == (V4, V6)
    assert state.namespace is None and not state.flowtable and state.notes == ()


def test_later_vms_get_lower_metrics() -> None:
    assert describe(inputs(vif=VifName("vif1.0", 1, 0)), ENV).routes[0].metric == 32751
    assert describe(inputs(vif=VifName("vif32752.0", 32752, 0)), ENV).routes[0].metric == 0


def test_ipv6_disabled_on_the_vif_is_protected_but_not_routed() -> None:
    state = describe(inputs(), ENV._replace(ipv6_on_vif=False))
    assert Element("downstream", V6) in state.elements  # still protected
    assert state.routes == (Route(V4, 32740),) and state.neighbours == (Neighbour(V4, MAC),)
    assert state.addresses == (Address(GW, 32),)
    assert any("no route to fd09:24ef:4179::a89:12" in n for n in state.notes)


def test_no_ipv6_in_the_kernel_leaves_ipv6_out_entirely() -> None:
    state = describe(inputs(), Environment(None, ipv6_kernel=False, ipv6_on_vif=False))
    assert {e.addr for e in state.elements} == {V4} and state.purge == (V4,)
    assert all("ipv6" not in s.key for s in state.sysctls)


def test_link_local_gateway6_is_not_put_on_the_vif() -> None:
    state = describe(inputs(gateway6=IPv6Address("fe80::1")), ENV)
    assert state.addresses == (Address(GW, 32),)
    assert Sysctl("net/ipv6/conf/vif12.0/proxy_ndp", "1") not in state.sysctls


def test_hardening_only_with_the_service() -> None:
    plain = {s.key for s in describe(inputs(), ENV).sysctls}
    hardened = {s.key: s.value for s in describe(inputs(harden=True), ENV).sysctls}
    assert not any("redirects" in k for k in plain)
    assert hardened["net/ipv4/conf/vif12.0/send_redirects"] == "0"
    assert hardened["net/ipv6/conf/vif12.0/accept_ra"] == "0"
    no_v6 = {s.key for s in describe(inputs(harden=True), ENV._replace(ipv6_on_vif=False)).sysctls}
    assert not any(k.startswith("net/ipv6") for k in no_v6)


def test_renamed_vif_is_described_under_its_new_name() -> None:
    state = describe(inputs(ifname="vif-work"), ENV)
    assert state.vif == "vif12.0" and state.ifname == "vif-work"
    assert Element("allowed", V4, "vif-work") in state.elements
    assert state.sysctls[0].key == "net/ipv4/conf/vif-work/proxy_arp"


def test_no_addresses_runs_hooks_once_and_protects_nothing() -> None:
    state = describe(inputs(addresses=AddressList(None, None), mac=None), ENV)
    assert state.elements == () and state.routes == () and state.hook_addresses == ()


def test_offline_without_qubesdb_describes_no_gateway() -> None:
    state = describe(inputs(gateway=None, gateway6=None, mac=None), ENV)
    assert state.addresses == () and state.neighbours == (Neighbour(V4, None), Neighbour(V6, None))


def test_mapped_vif_has_a_namespace_and_no_ipv6() -> None:
    m = MappedAddress(IPv4Address("10.138.7.9"), IPv4Address("192.168.1.128"), IPv4Address("192.168.1.1"), GW)
    state = describe(inputs(addresses=AddressList(m.real, V6), mapping=m), ENV)
    assert state.namespace is not None
    assert (state.namespace.name, state.namespace.peer, state.namespace.vif) == ("vif12.0-nat", "vif12.0-p", "vif12.0")
    assert Sysctl("net/ipv6/conf/vif12.0/disable_ipv6", "1") in state.sysctls
    assert state.routes == (Route(m.real, 32740),) and state.addresses == (Address(GW, 32),)


def test_ignored_extra_addresses_are_noted() -> None:
    extra = IPv4Address("10.137.0.99")
    state = describe(inputs(addresses=AddressList(V4, V6, (extra,))), ENV)
    assert extra not in {e.addr for e in state.elements}
    assert any("ignoring extra address 10.137.0.99" in n for n in state.notes)


def test_clients_ipv6_is_routed_only_when_ipv6_is_on_for_the_netvm() -> None:
    state = describe(inputs(gateway6=None, netvm_ipv6=False), ENV)
    assert state.routes == (Route(V4, 32740),)
    assert Element("downstream", V6) in state.elements  # still protected
    assert describe(inputs(gateway6=None, netvm_ipv6=True), ENV).routes == (Route(V4, 32740), Route(V6, 32740))


def test_what_a_gateway_that_went_away_leaves_behind() -> None:
    before = describe(inputs(), ENV)
    after = describe(inputs(gateway6=None, netvm_ipv6=False), ENV)
    stale = subtract(before, after)
    assert stale.addresses == (Address(GW6, 128),)
    assert stale.sysctls == (Sysctl("net/ipv6/conf/vif12.0/proxy_ndp", "1"),)
    assert stale.routes == (Route(V6, 32740),) and stale.neighbours == (Neighbour(V6, MAC),)
    assert stale.elements == () and stale.hook_addresses == () and stale.purge == ()
    assert subtract(after, after).addresses == ()
