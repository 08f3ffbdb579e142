"""Load: many vifs at once, as when many VMs start or stop together.

The model is simple: a vif that went online has its two set elements per
family, its host routes and its permanent neighbours; one that went offline
has none. After each wave the kernel must hold exactly the model.
"""

from __future__ import annotations

import subprocess
from ipaddress import ip_address

from qubes_netsim.topology import SimNetvm
from tests.reliability.conftest import Ledger, size


def _run_all(sim: SimNetvm, work: list[tuple[int, str]]) -> list[int]:
    """Start every (domid, command) at once; their exit statuses."""
    procs = []
    for domid, command in work:
        env = sim.env(vif=f"vif{domid}.0", XENBUS_PATH=f"backend/vif/{domid}/0")
        procs.append(sim.netvm.popen(sim.vif_route_argv(command), env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE))
    return [proc.wait(timeout=300) for proc in procs]


def _kernel_view(sim: SimNetvm) -> dict[str, set[object]]:
    # (the kernel's own prefix route for the /128 gateway address aside)
    routes = {(str(ip_address(r["dst"])), r["dev"]) for fam in ("-4", "-6") for r in sim.routes(fam)
              if r.get("dev", "").startswith("vif") and r.get("protocol") != "kernel"}
    neigh = {(str(ip_address(n["dst"])), n["dev"], n["lladdr"])
             for n in sim.netvm.ip_json("neigh", "show", "nud", "permanent")}
    return {
        "allowed": sim.set_elements("ip", "allowed") | sim.set_elements("ip6", "allowed"),
        "downstream": sim.set_elements("ip", "downstream") | sim.set_elements("ip6", "downstream"),
        "routes": routes,
        "neighbours": neigh,
    }


def _model(vifs: dict[int, tuple[str, str, str]], online: set[int]) -> dict[str, set[object]]:
    model: dict[str, set[object]] = {"allowed": set(), "downstream": set(), "routes": set(), "neighbours": set()}
    for domid in online:
        v4, v6, mac = vifs[domid]
        vif = f"vif{domid}.0"
        for addr in (v4, str(ip_address(v6))):
            model["allowed"].add((vif, addr))
            model["downstream"].add(addr)
            model["routes"].add((addr, vif))
            model["neighbours"].add((addr, vif, mac))
    return model


def _lost(view: dict[str, set[object]], model: dict[str, set[object]]) -> int:
    """Objects missing or left over, compared with the model."""
    return sum(len(view[k] ^ model[k]) for k in model)


def test_waves_of_concurrent_onlines_and_offlines(sim: SimNetvm, ledger: Ledger) -> None:
    count = size(30, 100)
    domids = list(range(1000, 1000 + count))
    vifs = sim.add_bulk_vifs(domids)

    statuses = _run_all(sim, [(d, "online") for d in domids])
    view, model = _kernel_view(sim), _model(vifs, set(domids))
    lost = _lost(view, model) + sum(s != 0 for s in statuses)
    connected = sum(sim.xenstore.read(f"backend/vif/{d}/0/hotplug-status") == b"connected" for d in domids)
    ledger.record("load", f"{count} onlines at once", count, lost=lost + count - connected)
    assert statuses == [0] * count
    assert connected == count
    assert view == model

    half = domids[: count // 2]
    rest = domids[count // 2:]
    statuses = _run_all(sim, [(d, "offline") for d in half] + [(d, "online") for d in rest])
    view, model = _kernel_view(sim), _model(vifs, set(rest))
    lost = _lost(view, model) + sum(s != 0 for s in statuses)
    ledger.record("load", f"{len(half)} offlines while {len(rest)} re-onlines", count, lost=lost)
    assert statuses == [0] * count
    assert view == model
