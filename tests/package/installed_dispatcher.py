"""The installed package under a real NetworkManager, with the real neighbours.

Run by tests/package/roundtrip.sh only (the name does not match test_*.py,
so `make test` does not collect it): the package and stand-in Qubes
packages whose originals append each run of theirs to
``QUBES_ROUNDTRIP_ORIGINALS_LOG`` are installed at the real paths, and
``QUBES_NETSIM_BIN`` leads to the installed entry points.

NetworkManager runs with the system's own ``/etc/NetworkManager/dispatcher.d``
(qubes_netsim.nm, ``hook=None``): the installed ``qubes-nmhook`` and anything
else there, the diverted original included if dpkg had put it there. A
sentinel sorting after every other script records each action once all of
them ran for it. Activating, changing the DNS and reapplying, going down:
our hook's tool ran for every action the hook acts on, the DNAT chain
followed, and the originals never ran. Against 0.1.0 (diversion to
``dispatcher.d/qubes-nmhook.qubes-orig``) this test fails: the round trip
checks that too.
"""

from __future__ import annotations

import os

import pytest

from qubes_netsim import nm
from qubes_netsim.netns import wait_for
from qubes_netsim.topology import NETVM_UPLINK, UPSTREAM, VIRTUAL_DNS, SimNetvm, bin_path

from ..integration.test_dnat_networkmanager import ANSWER_A, ANSWER_B, SERVER_A, SERVER_B, chain_maps

pytestmark = [pytest.mark.netns, pytest.mark.networkmanager]

# The actions dispatcher/qubes-nmhook leaves alone (see its header).
SKIPPED = {"pre-up", "pre-down", "vpn-pre-up", "vpn-pre-down", "hostname", "connectivity-change"}


def originals_runs() -> list[str]:
    path = os.environ.get("QUBES_ROUNDTRIP_ORIGINALS_LOG")
    assert path, "QUBES_ROUNDTRIP_ORIGINALS_LOG is unset: run this through tests/package/roundtrip.sh"
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]


def test_installed_hook_runs_on_each_action_and_the_original_never(sim: SimNetvm) -> None:
    assert os.environ.get("QUBES_NETSIM_BIN"), "QUBES_NETSIM_BIN is unset: run this through tests/package/roundtrip.sh"
    before = originals_runs()
    sim.start_dns({"who.test": ANSWER_A}, SERVER_A)
    sim.start_dns({"who.test": ANSWER_B}, SERVER_B)
    client = sim.add_client(12, "10.137.0.12")
    # As libxl would: /etc/xen/scripts/vif-route-qubes online.
    assert sim.vif_route("online", client).returncode == 0
    manager = nm.SimNetworkManager(
        sim.netvm.name, sim.workdir, hook=None,
        tool_argv=[bin_path("qubes-setup-dnat-to-ns"), "--qubes-service-dir", sim.service_dir],
        qubesdb_socket=sim.qubesdb.path, address=f"{NETVM_UPLINK}/24", gateway=UPSTREAM, dns=[SERVER_A],
    ).start()
    try:
        manager.nmcli("connection", "up", "uplink")
        manager.wait_dispatched("up", 0)
        wait_for(chain_maps(sim, {v: SERVER_A for v in VIRTUAL_DNS}), what="the chain after up")

        seen = len(manager.dispatched())
        manager.nmcli("connection", "modify", "uplink", "ipv4.dns", SERVER_B)
        manager.nmcli("device", "reapply", nm.UPLINK)
        manager.wait_dispatched("reapply", seen)
        wait_for(chain_maps(sim, {v: SERVER_B for v in VIRTUAL_DNS}), what="the chain after reapply")

        seen = len(manager.dispatched())
        manager.nmcli("connection", "down", "uplink")
        manager.wait_dispatched("down", seen)
        wait_for(chain_maps(sim, {v: None for v in VIRTUAL_DNS}), what="the chain after down")

        dispatched = manager.dispatched()
        ours = [(action, status) for _, action, status in manager.hook_runs()]
    finally:
        manager.stop()
    print(f"\ndispatched: {dispatched}\nours ran for: {ours}")
    ran = originals_runs()[len(before):]
    assert not ran, "the replaced original ran:\n" + "\n".join(ran)
    assert {"up", "reapply", "down"} <= set(dispatched)
    assert [action for action, _ in ours] == [a for a in dispatched if a not in SKIPPED]
    assert {status for _, status in ours} <= {0, 100}
