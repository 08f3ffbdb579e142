"""status, reconcile and watch at the gateway seam: the XenStore and QubesDB
doubles, a FakeNet, and the real survey, orchestration and applier."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from ipaddress import ip_address
from types import SimpleNamespace
from typing import Any

import pytest

from qubesnet.netlink.nlsock import NetlinkError
from tests.unit.world import GATEWAY, HOME, World, world
from vif_route_qubes import admin
from vif_route_qubes.admin import Context, Previous, run_reconcile, run_status, run_watch

V4, V4B = ip_address("10.137.0.12"), ip_address("10.137.0.13")


@pytest.fixture
def w(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    # The DNS part of status reads the host's nftables: not this tier's business.
    monkeypatch.setattr(admin, "dns_status", lambda timeout: {"lines": ["dns: (not read here)"]})
    yield from world(str(tmp_path))


def ctx(w: World) -> Context:
    return Context(w.xs, w.open_qubesdb, w.net.gateways, lock_file=w.lock_file)


def connected(w: World, domid: int, ip: str, **keys: str) -> None:
    w.backend(domid, ip, **keys)
    w.net.add_link(f"vif{domid}.0")
    w.run("online", domid)
    w.xsd.write(f"{HOME}/backend/vif/{domid}/0/hotplug-status", "connected")


def status(w: World, *targets: str, as_json: bool = False) -> tuple[int, str]:
    out = io.StringIO()
    code = run_status(ctx(w), out, targets=targets, as_json_output=as_json, timeout=1)
    return code, out.getvalue()


def reconcile(w: World, previous: Previous | None = None) -> tuple[int, str]:
    out = io.StringIO()
    return run_reconcile(ctx(w), out, previous=previous), out.getvalue()


def test_status_of_a_healthy_netvm(w: World) -> None:
    connected(w, 12, str(V4))
    w.backend(14, "10.137.0.14")  # no hotplug-status yet: pending, still healthy

    code, out = status(w)

    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "DOMID", "ADDRESSES", "MAC", "HOTPLUG", "MAPPED", "VERDICT"]
    assert lines[1].split()[:2] == ["vif12.0", "12"] and lines[1].endswith("ok")
    assert "pending: hotplug-status is not set" in lines[2]
    assert "virtual DNS:" in out


def test_status_names_drift_failures_invalid_values_and_orphans(w: World) -> None:
    connected(w, 12, str(V4))
    w.net.elements.discard(("ip", "allowed", ("vif12.0", V4)))
    w.backend(13, "10.137.0.13", **{"hotplug-status": "error", "hotplug-error": "no such device"})
    w.backend(15, "10.137.0.300")
    w.net.add_link("vif16.0", up=True, group=2)

    code, out = status(w, as_json=True)

    assert code == 1
    doc = json.loads(out)
    verdicts = {v["name"]: (v["verdict"], v["detail"]) for v in doc["vifs"]}
    assert verdicts["vif12.0"] == ("drift", [f"missing allowed {V4}"])
    assert verdicts["vif13.0"] == ("failed", ["no such device"])
    assert verdicts["vif15.0"][0] == "invalid"
    assert verdicts["vif16.0"] == ("orphan", ["interface up in group 2"])
    assert doc["schema"] == admin.SCHEMA and not doc["ok"] and doc["dns"] == {"lines": ["dns: (not read here)"]}


def test_status_of_named_vifs_only(w: World) -> None:
    connected(w, 12, str(V4))
    connected(w, 13, str(V4B), vifname="vif-work")
    code, out = status(w, "vif13.0")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["NAME", "vif-work"]
    assert "virtual DNS" not in out
    assert status(w, "vif99.0")[1] == "no vifs\n"


def test_a_read_error_is_drift_with_its_reason(w: World) -> None:
    connected(w, 12, str(V4))
    w.net.fail["rtnl.host_routes_on"] = NetlinkError(16, "Device or resource busy")
    doc = json.loads(status(w, as_json=True)[1])
    (vif,) = doc["vifs"]
    assert vif["verdict"] == "drift" and "Device or resource busy" in vif["detail"][0]


def test_reconcile_converges_drift_without_hooks_or_purge(w: World) -> None:
    connected(w, 12, str(V4))
    w.net.elements.discard(("ip", "allowed", ("vif12.0", V4)))
    w.net.conntrack = {V4}
    w.net.hooks.clear()

    code, out = reconcile(w)

    assert code == 0 and "vif12.0: converged" in out and "reconcile: 1 changed, 0 failed" in out
    assert ("ip", "allowed", ("vif12.0", V4)) in w.net.elements
    assert w.net.conntrack == {V4}, "a running client keeps its connections"
    assert w.net.hooks == [] and w.net.reported == ["connected"], "no second report to libxl"
    assert reconcile(w) == (0, "reconcile: 0 changed, 0 failed\n")


def test_reconcile_of_a_vif_never_configured_runs_hooks_and_purges(w: World) -> None:
    w.backend(12, str(V4), **{"hotplug-status": "connected"})
    w.net.add_link("vif12.0")
    w.net.conntrack = {V4}

    code, _ = reconcile(w)

    link = w.net.link("vif12.0")
    assert code == 0 and link is not None and link.up
    assert w.net.conntrack == set() and w.net.hooks and w.net.reported == []


def test_reconcile_removes_orphans_as_offline_would(w: World) -> None:
    connected(w, 12, str(V4))
    w.xsd.rm(f"{HOME}/backend/vif/12")
    w.net.elements.add(("ip", "downstream", ip_address("10.137.0.99")))

    code, out = reconcile(w)

    assert code == 0 and "vif12.0: removed orphan" in out and "-: removed orphan" in out
    link = w.net.link("vif12.0")
    assert link is not None and not link.up and link.group == 0
    assert not w.net.elements and not w.net.routes and not w.net.neighbours


def test_an_orphans_downstream_stays_while_another_vif_routes_it(w: World) -> None:
    connected(w, 13, str(V4))
    w.net.elements.discard(("ip", "allowed", ("vif13.0", V4)))  # drift of vif13.0, and a lone downstream

    reconcile(w)

    assert ("ip", "downstream", V4) in w.net.elements


def test_an_orphan_claimed_meanwhile_is_left_to_its_hotplug(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w.net.add_link("vif12.0", up=True, group=2)
    real = admin.survey

    def then_claimed(c: Context, targets: tuple[str, ...] = ()) -> list[Any]:
        reports = real(c, targets)
        w.backend(12, str(V4))
        return reports

    monkeypatch.setattr(admin, "survey", then_claimed)
    code, out = reconcile(w)
    assert code == 0 and "removed" not in out
    link = w.net.link("vif12.0")
    assert link is not None and link.up


def test_reconcile_names_what_it_could_not_converge(w: World) -> None:
    connected(w, 12, str(V4))
    w.net.elements.discard(("ip", "allowed", ("vif12.0", V4)))
    w.net.fail["nft.run"] = NetlinkError(1, "Operation not permitted")

    code, out = reconcile(w)

    assert code == 1 and "vif12.0: could not converge" in out and "0 changed, 1 failed" in out


def test_reconcile_after_a_gateway_change_moves_every_connected_vif(w: World) -> None:
    connected(w, 12, str(V4))
    old = Previous(ip_address(GATEWAY), None, True)
    w.qdbd.write("/qubes-netvm-gateway", "10.137.0.254")

    code, out = reconcile(w, previous=old)

    index = w.net.link("vif12.0").ifindex  # type: ignore[union-attr]
    gateways = {a for i, a, _ in w.net.addresses if i == index and a.version == 4}
    assert code == 0 and "vif12.0: converged" in out
    assert gateways == {ip_address("10.137.0.254")}


def test_a_vif_whose_hotplug_ran_meanwhile_is_left_alone(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    connected(w, 12, str(V4))
    w.net.elements.discard(("ip", "allowed", ("vif12.0", V4)))
    real = admin.survey

    def then_offline(c: Context, targets: tuple[str, ...] = ()) -> list[Any]:
        reports = real(c, targets)
        w.xsd.write(f"{HOME}/backend/vif/12/0/hotplug-status", "error")
        return reports

    monkeypatch.setattr(admin, "survey", then_offline)
    assert reconcile(w)[1] == "reconcile: 0 changed, 0 failed\n"


def test_watch_reconciles_when_the_gateways_change(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Previous | None] = []

    def reconciled(c: Context, out: object, *, previous: Previous | None = None) -> int:
        seen.append(previous)
        raise KeyboardInterrupt  # ends the endless watch

    monkeypatch.setattr(admin, "run_reconcile", reconciled)

    def change_when_watched() -> None:
        deadline = time.monotonic() + 10
        while len(w.qdbd.watched_paths()) < len(admin.WATCHED) and time.monotonic() < deadline:
            time.sleep(0.01)
        w.qdbd.write("/qubes-netvm-gateway", "10.137.0.254")

    helper = threading.Thread(target=change_when_watched)
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        run_watch(ctx(w), io.StringIO())
    helper.join()
    assert seen == [Previous(ip_address(GATEWAY), ip_address("fd09:24ef:4179::a89:1"), True)]


def test_watch_retries_while_qubesdb_is_unreachable(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w.qdbd.stop()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        raise KeyboardInterrupt

    # admin's own name for the time module: the doubles' threads keep the real sleep
    monkeypatch.setattr(admin, "time", SimpleNamespace(sleep=sleep, monotonic=time.monotonic))
    with pytest.raises(KeyboardInterrupt):
        run_watch(ctx(w), io.StringIO(), retry=7)
    assert waits == [7]


def test_status_without_qubesdb_says_what_it_cannot_know(w: World) -> None:
    w.backend(12, str(V4), **{"hotplug-status": "connected"})
    w.net.add_link("vif12.0")
    w.qdbd.stop()
    doc = json.loads(status(w, as_json=True)[1])
    (vif,) = doc["vifs"]
    assert vif["verdict"] == "drift"
