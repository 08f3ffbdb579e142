"""A mapped (hidden-address) client whose vif is also renamed by ``vifname``.

Once the vif is in its namespace, the netvm's device under the new name is
our veth's end, down and outside the vif group until the rest of online
runs: online must take it as the vif's interface (found by the property
tests reading the model through observe.py: online failed with "interface
... does not exist").
"""

from __future__ import annotations

import random

from qubes_netsim.netns import Netns
from qubes_netsim.topology import UPSTREAM, SimNetvm
from tests import oracle

REAL, VISIBLE, VISIBLE_GW = "10.138.7.9", "192.168.1.128", "192.168.1.1"


def test_a_renamed_mapped_vif_comes_online_and_goes_offline_cleanly(sim: SimNetvm) -> None:
    domid = random.randint(300, 32000)  # namespace names are host-wide: concurrent runs must not meet
    vifname = f"vw{domid}"
    client = sim.add_mapped_client(domid, REAL, VISIBLE, VISIBLE_GW)
    sim.write_backend(client, vifname=vifname)
    before = oracle.snapshot(sim.netvm)
    try:
        result = sim.vif_route("online", client)

        assert result.returncode == 0, result.stderr
        assert sim.set_elements("ip", "allowed") == {(vifname, REAL)}
        link = sim.netvm.ip_json("link", "show", "dev", vifname)[0]
        assert "UP" in link["flags"] and link["group"] == "2"
        assert client.ping(UPSTREAM)

        result = sim.vif_route("offline", client)

        assert result.returncode == 0, result.stderr
        assert not Netns(f"{vifname}-nat").exists()
        assert oracle.snapshot(sim.netvm)["ruleset"] == before["ruleset"]
        assert sim.netvm.ip_json("link", "show", "dev", client.vif)[0]["ifname"] == client.vif
    finally:
        Netns(f"{vifname}-nat").delete()
