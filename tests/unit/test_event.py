"""Whole vif events at the gateway seam: run_event from XenStore and QubesDB
(the doubles) through describe, observe (the real reader), diff and apply,
against a FakeNet. The kernel's own behaviour is the namespace tier's."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_address

import pytest

from qubesnet.errors import ApplyError, StoreError
from qubesnet.netlink.nlsock import NetlinkError
from tests.unit.world import GATEWAY, HOME, World, mac_of, world
from vif_route_qubes import event
from vif_route_qubes.steps import PurgeConntrack, ReportConnected, SetLink

V4, V6 = ip_address("10.137.0.12"), ip_address("fd09:24ef:4179::a89:12")


@pytest.fixture
def w(tmp_path: object) -> Iterator[World]:
    yield from world(str(tmp_path))


def online(w: World, domid: int = 12, ip: str = f"{V4} {V6}", **keys: str) -> None:
    w.backend(domid, ip, **keys)
    w.net.add_link(f"vif{domid}.0")
    w.run("online", domid)


def test_online_configures_everything_and_reports(w: World) -> None:
    w.net.conntrack = {V4, ip_address("10.137.0.99")}
    online(w)

    link = w.net.link("vif12.0")
    assert link is not None and link.up and link.group == 2
    assert ("ip", "allowed", ("vif12.0", V4)) in w.net.elements and ("ip6", "downstream", V6) in w.net.elements
    assert {r[0] for r in w.net.routes} == {V4, V6}
    assert w.net.neighbours == {(link.ifindex, V4): mac_of(12), (link.ifindex, V6): mac_of(12)}
    assert (link.ifindex, ip_address(GATEWAY), 32) in w.net.addresses
    assert w.net.sysctls["net/ipv4/conf/vif12.0/proxy_arp"] == "1"
    assert w.net.conntrack == {ip_address("10.137.0.99")}, "the client's connections are purged, no other"
    assert w.net.reported == ["connected"]
    assert [h[:2] for h in w.net.hooks] == [["online", "vif12.0"], ["online", "vif12.0"]]


def test_online_twice_writes_only_what_every_online_does(w: World) -> None:
    online(w)
    w.net.writes.clear()
    w.run("online", 12)
    assert w.net.writes == ["conntrack.start_purge", "conntrack.purge", "hooks.run", "hooks.run", "status.connected"]


def test_the_purge_runs_under_the_locks_as_the_plans_step(w: World) -> None:
    """No purge before the plan: the first conntrack write comes after the
    sysctls (the order diff.py documents), none before the locks."""
    w.backend(12, str(V4))
    w.net.add_link("vif12.0")
    w.run("online", 12)
    writes = w.net.writes
    assert writes.index("conntrack.purge") > writes.index("sysctl.write")
    assert writes.index("conntrack.purge") < writes.index("nft.run")


def test_online_starts_the_purge_of_the_plans_addresses_once_it_holds_the_locks(w: World) -> None:
    """The early purge (the kernel's walk overlapping the planning) is the
    first write, and of the very addresses the plan's purge step names, so
    that the step takes its result instead of purging again."""
    w.backend(12, f"{V4} {V6}")
    w.net.add_link("vif12.0")
    plan = w.run("online", 12)
    assert w.net.writes[0] == "conntrack.start_purge"
    purge = next(s for s in plan.steps if isinstance(s, PurgeConntrack))
    assert w.net.purge_started == [frozenset(purge.addrs)]
    w.run("offline", 12)
    assert len(w.net.purge_started) == 1, "offline purges last, after the link is down: never early"


def test_offline_removes_what_online_made(w: World) -> None:
    w.backend(12, f"{V4} {V6}")
    w.net.add_link("vif12.0")
    before = (set(w.net.elements), set(w.net.routes), dict(w.net.sysctls), w.net.link("vif12.0"))
    w.run("online", 12)
    w.net.conntrack = {V4}
    plan = w.run("offline", 12)

    assert (set(w.net.elements), set(w.net.routes), dict(w.net.sysctls), w.net.link("vif12.0")) == before
    assert not w.net.neighbours and not w.net.addresses and not w.net.conntrack
    assert isinstance(plan.steps[0], SetLink) and isinstance(plan.steps[-1], PurgeConntrack), "purge last"


def test_offline_keeps_downstream_while_another_vif_routes_the_address(w: World) -> None:
    """vif12.0 gone already (libxl often runs offline after Xen removed it),
    its address now on vif13.0: downstream keeps it, vif13.0 keeps working."""
    online(w, 12, str(V4))
    w.net.remove_link("vif12.0")
    online(w, 13, str(V4))

    w.run("offline", 12)

    assert ("ip", "downstream", V4) in w.net.elements
    assert ("ip", "allowed", ("vif13.0", V4)) in w.net.elements
    assert ("ip", "allowed", ("vif12.0", V4)) not in w.net.elements
    assert {(r[0], w.net.links[r[2]].name) for r in w.net.routes} == {(V4, "vif13.0")}


def test_offline_of_a_present_vif_keeps_downstream_another_vif_routes(w: World) -> None:
    online(w, 12, str(V4))
    online(w, 13, str(V4))

    w.run("offline", 12)

    assert ("ip", "downstream", V4) in w.net.elements


def test_offline_without_the_ip_key_finds_the_addresses_in_allowed(w: World) -> None:
    online(w)
    w.xsd.rm(f"{HOME}/backend/vif/12/0/ip")

    plan = w.run("offline", 12)

    assert set(plan.addresses) == {V4, V6}
    assert not w.net.elements


def test_offline_without_the_ip_key_relocks_when_allowed_keeps_changing(w: World,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    online(w)
    w.xsd.rm(f"{HOME}/backend/vif/12/0/ip")
    from vif_route_qubes import observe

    calls = iter(range(100))
    real = observe.read_allowed_addresses

    def moving(gw: object, ifname: str) -> object:
        n = next(calls)
        listed = real(gw, ifname)  # type: ignore[arg-type]
        return listed._replace(ignored=(ip_address(f"10.0.0.{n}"),))

    monkeypatch.setattr(observe, "read_allowed_addresses", moving)
    with pytest.raises(ApplyError, match="keep changing; retry offline"):
        w.run("offline", 12)


def test_offline_without_qubesdb_removes_what_does_not_depend_on_it(w: World) -> None:
    online(w)
    w.qdbd.stop()

    w.run("offline", 12)

    assert not w.net.elements and not w.net.routes
    assert w.net.addresses, "the gateway addresses are QubesDB's: they go with the interface"


def test_offline_reports_every_error_together(w: World) -> None:
    online(w)
    w.net.fail["rtnl.del_route"] = NetlinkError(1, "Operation not permitted")
    with pytest.raises(ApplyError, match=r"Operation not permitted \(and 1 more errors\)"):
        w.run("offline", 12)
    assert not w.net.elements, "the other steps ran"


def test_a_failed_online_takes_the_link_down_and_undoes(w: World) -> None:
    w.backend(12, str(V4))
    w.net.add_link("vif12.0")
    w.net.fail["rtnl.add_neighbour"] = NetlinkError(22, "Invalid argument")

    with pytest.raises(ApplyError, match="Invalid argument"):
        w.run("online", 12)

    link = w.net.link("vif12.0")
    assert link is not None and not link.up and link.group == 0
    assert not w.net.elements and not w.net.routes
    assert w.net.sysctls["net/ipv4/conf/vif12.0/proxy_arp"] == "0"
    assert w.net.reported == []


def test_online_without_the_interface_fails_and_changes_nothing(w: World) -> None:
    w.backend(12, str(V4))
    with pytest.raises(ApplyError, match="does not exist"):
        w.run("online", 12)
    # Only the early purge, started with the locks: forgotten connections
    # of the client's own addresses are harmless (PurgeConntrack has no inverse).
    assert w.net.writes == ["conntrack.start_purge"]


def test_online_needs_qubesdb(w: World) -> None:
    w.backend(12, str(V4))
    w.net.add_link("vif12.0")
    w.qdbd.stop()
    with pytest.raises(StoreError):
        w.run("online", 12)


def test_dry_run_writes_nothing(w: World) -> None:
    w.backend(12, f"{V4} {V6}")
    w.net.add_link("vif12.0")
    plan = w.run("online", 12, dry_run=True)
    assert w.net.writes == [] and w.net.purge_started == [], "not even the early purge is started"
    assert any(isinstance(s, ReportConnected) for s in plan.steps)
    assert any(line.startswith("ip link set vif12.0 group 2 up") for line in w.reported)


def test_renamed_vif_comes_and_goes_under_its_new_name(w: World) -> None:
    online(w, vifname="vif-work")
    assert w.net.link("vif-work") is not None and w.net.link("vif12.0") is None
    w.run("offline", 12)
    assert w.net.link("vif12.0") is not None, "renamed back to libxl's name"


def test_lock_keys_name_the_interfaces_and_the_addresses(w: World) -> None:
    from vif_route_qubes.inputs import parse_env, read_inputs

    w.backend(12, f"{V4} {V6}", vifname="vif-work")
    env = parse_env({"vif": "vif12.0", "XENBUS_PATH": "backend/vif/12/0"})
    inp = read_inputs(env, w.xs, None, online=False)
    assert event.lock_keys(inp) == ["if:vif12.0", "if:vif-work", f"addr:{V4}", f"addr:{V6}"]
