"""vif_route_qubes.survey and verdicts, pure parts: orphans and the words for drift."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address
from typing import TYPE_CHECKING

from tests.unit.test_describe import ENV, inputs
from tests.unit.test_diff import configured, fresh
from vif_route_qubes.describe import describe
from vif_route_qubes.survey import Inventory, VifReport, orphans
from vif_route_qubes.verdicts import drift_of

if TYPE_CHECKING:
    from vif_route_qubes.steps import Step


def report(name: str, domid: int) -> VifReport:
    return VifReport(name, domid, 0, f"backend/vif/{domid}/0", (), None, "connected", False, "ok", ())


def inventory(**changes: object) -> Inventory:
    base = Inventory(links={}, neighbours={}, addresses={}, proxy_arp=set(), allowed={}, downstream=set(),
                     namespaces=set())
    return base._replace(**changes)  # type: ignore[arg-type]


def test_what_xenstore_claims_is_no_orphan() -> None:
    inv = inventory(links={"vif12.0": (True, 2), "vif-work": (True, 2)},
                    neighbours={"vif12.0": set(), "vif-work": set()},
                    addresses={"vif12.0": set(), "vif-work": set()},
                    allowed={"vif12.0": {IPv4Address("10.137.0.12")}})
    claimed = [report("vif12.0", 12), report("vif-work", 13)]
    assert orphans(inv, claimed) == []


def test_an_interface_holding_our_state_without_xenstore_is_an_orphan() -> None:
    addr = IPv4Address("10.137.0.15")
    inv = inventory(links={"vif15.0": (False, 0), "vif16.0": (False, 0)},
                    neighbours={"vif15.0": {addr}, "vif16.0": set()},
                    addresses={"vif15.0": {IPv4Address("10.137.0.1")}, "vif16.0": set()},
                    proxy_arp={"vif15.0"})
    (found,) = orphans(inv, [])
    assert (found.name, found.domid, found.verdict, found.addresses) == ("vif15.0", 15, "orphan", ("10.137.0.15",))
    assert found.detail == ("interface down in group 0", "neighbour 10.137.0.15", "address 10.137.0.1", "proxy ARP")


def test_set_elements_of_a_vanished_interface_and_lone_downstream_entries_are_orphans() -> None:
    inv = inventory(allowed={"vif9.0": {ip_address("10.137.0.9")}},
                    downstream={ip_address("10.137.0.9"), ip_address("10.137.0.99")})
    names = [(r.name, r.detail) for r in orphans(inv, [])]
    assert names == [("vif9.0", ("allowed 10.137.0.9",)),
                     ("-", ("downstream 10.137.0.99 with no interface allowed to send it",))]


def test_a_nat_namespace_counts_only_beside_its_interface() -> None:
    """The named-namespace directory is shared by every network stack of the host."""
    inv = inventory(links={"vif7.0": (False, 0)}, neighbours={"vif7.0": set()}, addresses={"vif7.0": set()},
                    namespaces={"vif7.0-nat", "vif8.0-nat"})
    (found,) = orphans(inv, [])
    assert found.name == "vif7.0" and found.mapped and found.detail[-1] == "namespace vif7.0-nat"


def test_drift_in_words() -> None:
    state = describe(inputs(), ENV)
    assert drift_of(state, configured(state)) == ()
    words = drift_of(state, fresh(state))
    assert words[:3] == ("sysctl proxy_arp is 0, not 1", "sysctl proxy_ndp is 0, not 1", "missing allowed 10.137.0.12")
    assert "link down" in words and "no route to 10.137.0.12" in words and "no gateway address 10.137.0.1" in words


def test_verdict_from_the_hotplug_report_then_the_drift() -> None:
    from vif_route_qubes.verdicts import verdict_of

    assert verdict_of("error", ("x",)) == "failed"
    assert verdict_of(None, ()) == verdict_of("connecting", ("x",)) == "pending"
    assert verdict_of("connected", ()) == "ok"
    assert verdict_of("connected", ("link down",)) == "drift"


def test_what_reconcile_does_with_each_verdict() -> None:
    from vif_route_qubes.verdicts import reconcile_action

    assert reconcile_action("orphan", None, False, gateways_changed=False) == "remove"
    assert reconcile_action("drift", "connected", True, gateways_changed=False) == "converge"
    assert reconcile_action("drift", "connected", False, gateways_changed=False) is None, "inputs unreadable"
    assert reconcile_action("ok", "connected", True, gateways_changed=False) is None
    assert reconcile_action("ok", "connected", True, gateways_changed=True) == "converge"
    assert reconcile_action("pending", None, True, gateways_changed=True) is None
    assert reconcile_action("failed", "error", True, gateways_changed=True) is None


def test_drift_of_every_kind_of_object() -> None:
    """One phrase per missing object, in the order online would make them."""
    from tests.unit.test_diff import FULL_BASE, MAP
    from vif_route_qubes.nssteps import ConfigureNamespace, CreateNamespace
    from vif_route_qubes.state import BaseObjects, FlowFacts, Link

    state = describe(inputs(flowtable=True), ENV)
    partial = {"ip": BaseObjects(True, frozenset({"allowed"}), frozenset({"prerouting", "antispoof"})),
               "ip6": FULL_BASE["ip6"]}
    obs = configured(state, link=Link(7, "vif12.0", True, 0), routes=frozenset(state.routes[1:]),
                     neighbours=frozenset(state.neighbours[1:]), addresses=frozenset(state.addresses[1:]),
                     elements=frozenset(state.elements[1:]), sysctls={state.sysctls[0].key: "0"},
                     base=partial, flow=FlowFacts(True, True, False))
    namespace: list[Step] = [CreateNamespace("vif12.0-nat"), ConfigureNamespace("vif12.0-nat", "vif12.0", "p",
                                                                               MAP, "m", ())]
    assert drift_of(state._replace(ifname="vif-work"), obs, namespace) == (
        "namespace: ip netns add vif12.0-nat", "namespace vif12.0-nat not configured", "named vif12.0, not vif-work",
        "sysctl proxy_arp is 0, not 1", "sysctl proxy_ndp is None, not 1", "missing set ip qubes downstream",
        "missing allowed 10.137.0.12", "not in the flowtable", "link in group 0", "no route to 10.137.0.12",
        "no neighbour entry for 10.137.0.12", "no gateway address 10.137.0.1")
    assert drift_of(state, configured(state)._replace(flow=FlowFacts(True, True, True))) == ()
    assert drift_of(state, configured(state, link=Link(7, "vif12.0", False, 2))) == ("link down",)
