"""observe.py, the kernel reader, driven through its gateway seam (FakeNet)."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from qubesnet.constants import FLOW_FAMILY, FLOW_TABLE
from qubesnet.errors import ApplyError
from qubesnet.netlink.nlsock import NetlinkError
from tests.unit.fakenet import FakeNet
from tests.unit.test_describe import ENV, inputs
from tests.unit.world import World, world
from vif_route_qubes.describe import describe
from vif_route_qubes.mapped_names import peer_name
from vif_route_qubes.observe import (
    find_link,
    read_allowed_addresses,
    read_environment,
    read_namespace,
    read_observed,
    read_set_elements,
)
from vif_route_qubes.state import Element, Link

V4, V6 = ip_address("10.137.0.12"), ip_address("fd09:24ef:4179::a89:12")


def test_a_renamed_vif_is_found_only_in_the_vif_group() -> None:
    net = FakeNet()
    net.add_link("vif-work", group=2)
    inp = inputs(ifname="vif-work")
    assert find_link(net.gateways(), inp) == Link(1, "vif-work", False, 2)
    net.links[1] = net.links[1]._replace(group=1)  # say, the uplink under that name
    assert find_link(net.gateways(), inp) is None


def test_a_failed_read_raises_never_reads_as_absent() -> None:
    net = FakeNet()
    net.fail["rtnl.get_link"] = NetlinkError(16, "Device or resource busy")
    with pytest.raises(ApplyError, match=r"cannot read interface vif12\.0: Device or resource busy"):
        find_link(net.gateways(), inputs())
    net = FakeNet()
    net.add_link("vif12.0")
    state = describe(inputs(), ENV)
    net.fail["rtnl.list_addresses"] = NetlinkError(16, "Device or resource busy")
    with pytest.raises(ApplyError, match=r"cannot read the routes, neighbours or addresses of vif12\.0"):
        read_observed(net.gateways(), state, find_link(net.gateways(), inputs()), ENV)


def test_environment_of_a_netvm_without_ipv6() -> None:
    net = FakeNet(ipv6=False)
    net.add_link("vif12.0")
    env = read_environment(net.gateways(), inputs())
    assert not env.ipv6_kernel and not env.ipv6_on_vif and env.link is not None


def test_only_the_described_objects_are_read() -> None:
    net = FakeNet()
    link = net.add_link("vif12.0", up=True, group=2)
    other = ip_address("10.137.0.99")
    net.addresses |= {(link.ifindex, ip_address("10.137.0.1"), 32), (link.ifindex, other, 32)}
    net.neighbours |= {(link.ifindex, V4): "00:16:3e:5e:6c:0c", (link.ifindex, other): "00:16:3e:00:00:01"}
    net.routes |= {(V4, 32740, link.ifindex), (other, 1, link.ifindex)}
    state = describe(inputs(), ENV)
    obs = read_observed(net.gateways(), state, Link(*link), ENV)
    assert {a.addr for a in obs.addresses} == {ip_address("10.137.0.1")}
    assert {n.addr for n in obs.neighbours} == {V4}
    assert {r.dst for r in obs.routes} == {V4}
    assert obs.routed_elsewhere == frozenset(), "others: only when asked"


def test_routed_elsewhere_with_and_without_the_vif() -> None:
    """An address another interface routes, whether or not the vif itself
    is still there (libxl often runs offline after Xen removed it)."""
    net = FakeNet()
    other = net.add_link("vif13.0", up=True, group=2)
    net.routes.add((V4, 32739, other.ifindex))
    state = describe(inputs(), ENV)
    assert read_observed(net.gateways(), state, None, ENV, others=True).routed_elsewhere == {V4}
    mine = net.add_link("vif12.0", up=True, group=2)
    assert read_observed(net.gateways(), state, Link(*mine), ENV, others=True).routed_elsewhere == {V4}
    net.routes = {(V4, 32740, mine.ifindex)}
    assert read_observed(net.gateways(), state, Link(*mine), ENV, others=True).routed_elsewhere == frozenset()


def test_elements_of_missing_sets_are_absent_and_missing_objects_are_listed() -> None:
    net = FakeNet(layout=False)
    net.tables.add(("ip", "qubes"))  # an empty table: no sets, no chains
    state = describe(inputs(), ENV)
    obs = read_observed(net.gateways(), state, None, ENV)
    assert obs.elements == frozenset()
    assert obs.base["ip"].table and not obs.base["ip"].sets and not obs.base["ip6"].table


def test_flowtable_membership_support_and_probe() -> None:
    state = describe(inputs(flowtable=True), ENV)
    net = FakeNet(flowtables=False)
    link = Link(*net.add_link("vif12.0"))
    assert not read_observed(net.gateways(), state, link, ENV).flow.supported
    net.flowtables = True
    assert read_observed(net.gateways(), state, link, ENV).flow == (True, False, False)
    net.chains.add((FLOW_FAMILY, FLOW_TABLE, "forward"))
    net.flowdevs.add("vif12.0")
    assert read_observed(net.gateways(), state, link, ENV).flow == (True, True, True)


def test_flow_table_without_chains_is_found_by_the_table_listing() -> None:
    state = describe(inputs(flowtable=True), ENV)
    net = FakeNet(flowtables=True)
    net.tables.add((FLOW_FAMILY, FLOW_TABLE))
    link = Link(*net.add_link("vif12.0"))
    assert read_observed(net.gateways(), state, link, ENV).flow.table


def test_set_listings_and_the_allowed_addresses_of_an_interface() -> None:
    net = FakeNet()
    net.elements |= {("ip", "allowed", ("vif12.0", V4)), ("ip6", "allowed", ("vif12.0", V6)),
                     ("ip", "allowed", ("vif13.0", ip_address("10.137.0.13"))), ("ip", "downstream", V4)}
    assert read_set_elements(net.gateways(), "ip", "downstream") == [(None, V4)]
    listed = read_allowed_addresses(net.gateways(), "vif12.0")
    assert (listed.ipv4, listed.ipv6) == (V4, V6)
    net.sets.clear()
    assert read_set_elements(net.gateways(), "ip", "allowed") == []


def test_namespace_facts() -> None:
    net = FakeNet()
    net.add_link("vif12.0")
    inp = inputs()
    facts = read_namespace(net.gateways(), None, "vif12.0-nat", "vif12.0", "vif12.0-p", inp)
    assert facts == (False, False, False, False, False, None)
    net.namespaces["vif12.0-nat"] = {}
    facts = read_namespace(net.gateways(), None, "vif12.0-nat", "vif12.0", "vif12.0-p", inp)
    assert facts.exists and not facts.real_inside and not facts.table_present
    assert facts.netvm_link == Link(1, "vif12.0", False, 0)


@pytest.fixture
def w(tmp_path: object) -> Iterator[World]:
    yield from world(str(tmp_path))


def test_a_mapped_vif_goes_into_its_namespace_and_comes_back(w: World) -> None:
    w.qdbd.write("/mapped-ip/10.138.7.9/visible-ip", "192.168.1.128")
    w.qdbd.write("/mapped-ip/10.138.7.9/visible-gateway", "192.168.1.1")
    w.backend(12, "10.138.7.9")
    w.net.add_link("vif12.0")

    w.run("online", 12)

    inside = w.net.namespaces["vif12.0-nat"]
    assert set(inside) == {"vif12.0", peer_name("vif12.0")}
    veth = w.net.link("vif12.0")
    assert veth is not None and veth.up and veth.group == 2, "the veth's end stands in for the vif"
    assert ("ip", "allowed", ("vif12.0", ip_address("10.138.7.9"))) in w.net.elements
    w.net.writes.clear()
    w.run("online", 12)
    assert not [x for x in w.net.writes if x.startswith("namespaces.")], "a healthy namespace is left alone"

    w.run("offline", 12)

    assert "vif12.0-nat" not in w.net.namespaces
    assert not w.net.elements
    assert w.net.link("vif12.0") is not None, "the real vif is back in the netvm"


def test_allowed_elements_of_the_vif_only() -> None:
    net = FakeNet()
    e = Element("allowed", V4, "vif12.0")
    net.elements.add(("ip", "allowed", ("vif13.0", V4)))
    state = describe(inputs(), ENV)._replace(elements=(e,))
    assert read_observed(net.gateways(), state, None, ENV).elements == frozenset()
