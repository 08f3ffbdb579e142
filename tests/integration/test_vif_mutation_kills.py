"""Kernel-level tests written because mutants of ``make mutation`` survived the namespace tier.

The unit tier kills these mutants; these tests make the namespace tier see
the same mistakes in the real kernel (``tools/mutation.py --namespace-only``):
offline giving back what online changed (the name, the sysctls) and
leaving what it did not make (an address a hook put on the vif), and
online bringing the link up only once the anti-spoofing elements are in.
"""

from __future__ import annotations

from qubes_netsim.topology import SimNetvm
from tests.integration.fault_runner import paused_online

KEYS = (
    "net/ipv4/conf/{}/proxy_arp",
    "net/ipv6/conf/{}/proxy_ndp",
    "net/ipv4/conf/{}/send_redirects",
    "net/ipv4/conf/{}/accept_redirects",
    "net/ipv6/conf/{}/accept_ra",
)


def _names(sim: SimNetvm) -> set[str]:
    return {link["ifname"] for link in sim.netvm.ip_json("link", "show")}


def test_offline_gives_back_the_name_and_the_sysctls_online_changed(sim: SimNetvm) -> None:
    """Mutants offline-keeps-sysctls and offline-no-rename-back."""
    sim.qubesdb.write("/qubes-service/harden-network-interfaces", "1")
    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")
    sim.write_backend(client, vifname="vif-work")
    before = {key: sim.netvm.sysctl(key.format("vif12.0")) for key in KEYS}

    assert sim.vif_route("online", client).returncode == 0
    online = {key: sim.netvm.sysctl(key.format("vif-work")) for key in KEYS}
    assert online != before, "online changed none of the sysctls: the test proves nothing"

    result = sim.vif_route("offline", client)

    assert result.returncode == 0, result.stderr
    assert "vif12.0" in _names(sim) and "vif-work" not in _names(sim)
    assert {key: sim.netvm.sysctl(key.format("vif12.0")) for key in KEYS} == before


def test_offline_leaves_an_address_a_hook_put_on_the_vif(sim: SimNetvm) -> None:
    """Mutant offline-removes-unowned-addresses."""
    client = sim.add_client(12, "10.137.0.12")
    assert sim.vif_route("online", client).returncode == 0
    sim.netvm.run(["ip", "addr", "add", "10.137.0.99/32", "dev", "vif12.0"])

    result = sim.vif_route("offline", client)

    assert result.returncode == 0, result.stderr
    shown = sim.netvm.run(["ip", "-4", "-o", "addr", "show", "dev", "vif12.0"]).stdout
    assert "10.137.0.99/32" in shown
    assert "10.137.0.1/32" not in shown  # the gateway address online put there is gone


def test_the_link_goes_up_only_once_the_elements_are_in_the_sets(sim: SimNetvm) -> None:
    """Mutant link-up-before-elements: online paused just before it sets the link up."""
    client = sim.add_client(12, "10.137.0.12")
    with paused_online(sim, client):
        (link,) = sim.netvm.ip_json("link", "show", "dev", "vif12.0")
        assert "UP" not in link["flags"]
        assert sim.set_elements("ip", "allowed") == {("vif12.0", "10.137.0.12")}
        assert sim.set_elements("ip", "downstream") == {"10.137.0.12"}
