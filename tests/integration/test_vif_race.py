"""A late offline of a dying VM against the online of a new VM reusing its address.

Libxl may run the old VM's ``offline`` after XenStore lost its ``ip`` key
and while a new VM with the same address is coming up. The new VM's online
is paused (fault_runner --pause) after its set elements and before its link
and route exist: exactly where an offline that decided on the address
without holding its lock would find "nobody routes it" and remove it from
``downstream``, letting the uplink claim the new VM's address.
"""

from __future__ import annotations

import os
import subprocess
import time

from qubes_netsim.topology import NETVM_UPLINK, SimNetvm
from tests.integration.fault_runner import paused_online

ADDR = "10.137.0.12"


def _wait_for_file(path: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_late_offline_never_unprotects_the_address_of_a_new_vm(sim: SimNetvm) -> None:
    old = sim.add_client(12, ADDR)
    assert sim.vif_route("online", old).returncode == 0
    old.ns.sh("ip addr flush dev eth0")
    sim.xenstore.rm(f"{sim.xenstore.home()}/{old.xenbus_path}/ip")  # the dying VM's key is gone
    new = sim.add_client(13, ADDR)

    with paused_online(sim, new):
        offline = sim.netvm.popen(sim.vif_route_argv("offline"), env=sim.env(old),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # The offline must wait for the address: it may not finish while the online holds it.
        try:
            offline.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
    assert offline.wait(timeout=30) == 0, offline.communicate()[1]

    assert sim.set_elements("ip", "downstream") == {ADDR}
    assert sim.set_elements("ip", "allowed") == {("vif13.0", ADDR)}
    # The uplink claiming the address is dropped.
    drops = sim.counter("ip", "prerouting")
    sim.upstream.sh(f"ip addr add {ADDR}/32 dev eth0 && ip route add 10.137.0.1 via {NETVM_UPLINK}")
    sim.upstream.run(["ping", "-n", "-q", "-c", "2", "-W", "1", "-I", ADDR, "10.137.0.1"], check=False)
    assert sim.counter("ip", "prerouting") >= drops + 2
