"""Many events at once, as when many VMs start together: nothing is lost."""

from __future__ import annotations

import subprocess

from qubes_netsim.topology import UPSTREAM, SimNetvm

COUNT = 20


def test_twenty_vifs_brought_online_concurrently(sim: SimNetvm) -> None:
    clients = [sim.add_client(20 + n, f"10.137.0.{20 + n}", f"fd09:24ef:4179::a89:{20 + n:x}") for n in range(COUNT)]
    procs = [sim.netvm.popen(sim.vif_route_argv("online"), env=sim.env(c), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE) for c in clients]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]

    assert [code for code, _ in results] == [0] * COUNT, [err for code, err in results if code]
    assert all(sim.hotplug_status(c) == "connected" for c in clients)
    assert sim.set_elements("ip", "allowed") == {(c.vif, str(c.ipv4)) for c in clients}
    assert sim.set_elements("ip6", "allowed") == {(c.vif, str(c.ipv6)) for c in clients}
    assert sim.set_elements("ip", "downstream") == {str(c.ipv4) for c in clients}
    routed = {r["dst"]: r["dev"] for r in sim.routes("-4")}
    assert all(routed.get(str(c.ipv4)) == c.vif for c in clients)
    assert all(c.ping(UPSTREAM) for c in clients)

    procs = [sim.netvm.popen(sim.vif_route_argv("offline"), env=sim.env(c), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE) for c in clients]
    assert [p.wait(timeout=120) for p in procs] == [0] * COUNT
    assert not sim.set_elements("ip", "allowed") and not sim.set_elements("ip6", "downstream")
    assert not [r for r in sim.routes("-4") if r["dst"].startswith("10.137.")]
