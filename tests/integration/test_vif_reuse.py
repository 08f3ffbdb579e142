"""An address given to a new VM while the old one's vif is already gone.

The usual order when dom0 reuses an address: Xen destroys VM 12's vif,
VM 13 starts with 12's address, and libxl's offline for vif12.0 runs late.
That offline must take nothing of 13's: the address stays in
``downstream`` (where it makes forgeries of 13's address from the uplink
drop), and 13 keeps its pair in ``allowed``, its route, and the network.
"""

from __future__ import annotations

from qubes_netsim.topology import UPSTREAM, UPSTREAM6, SimNetvm
from tests import oracle

ADDR, ADDR6 = "10.137.0.12", "fd09:24ef:4179::a89:12"


def test_offline_of_a_deleted_vif_keeps_the_address_its_successor_has(sim: SimNetvm) -> None:
    old = sim.add_client(12, ADDR, ADDR6)
    assert sim.vif_route("online", old).returncode == 0
    sim.netvm.run(["ip", "link", "delete", "vif12.0"])  # Xen destroyed VM 12's vif
    new = sim.add_client(13, ADDR, ADDR6)
    assert sim.vif_route("online", new).returncode == 0
    routes_before = [r for r in oracle.snapshot(sim.netvm)["routes"] if ADDR in str(r) or ADDR6 in str(r)]

    result = sim.vif_route("offline", old)

    assert result.returncode == 0, result.stderr
    assert sim.set_elements("ip", "downstream") == {ADDR}
    assert sim.set_elements("ip6", "downstream") == {ADDR6}
    assert sim.set_elements("ip", "allowed") == {("vif13.0", ADDR)}
    assert sim.set_elements("ip6", "allowed") == {("vif13.0", ADDR6)}
    routes_after = [r for r in oracle.snapshot(sim.netvm)["routes"] if ADDR in str(r) or ADDR6 in str(r)]
    assert routes_after == routes_before and routes_after
    assert new.ping(UPSTREAM)
    assert new.ping(UPSTREAM6)
