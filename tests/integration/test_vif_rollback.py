"""A failed online leaves nothing of itself behind, and the link down.

Faults are real where the environment allows it (nftables refusing the
transaction, a rename clash, XenStore refusing hotplug-status) and injected
before every single step otherwise (fault_runner.py), always against the
real kernel.
"""

from __future__ import annotations

import pytest

from qubes_netsim.topology import UPSTREAM, Client, SimNetvm
from qubes_netsim.xenstored import WRITE
from tests import oracle
from tests.integration.fault_runner import fault_argv


def _client(sim: SimNetvm) -> Client:
    return sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")


def _assert_failed_cleanly(sim: SimNetvm, client: Client, result: object, before: dict) -> None:
    assert result.returncode == 1, result.stderr  # type: ignore[attr-defined]
    assert oracle.snapshot(sim.netvm, (client.vif,)) == before
    assert not client.ping(UPSTREAM, wait=1)


def test_every_step_of_online_rolls_back(sim: SimNetvm) -> None:
    client = _client(sim)
    sim.qubesdb.write("/qubes-service/harden-network-interfaces", "1")
    sim.write_backend(client, vifname="vif-work")
    before = oracle.snapshot(sim.netvm, ("vif12.0",))
    failures = 0
    for step in range(64):
        result = sim.netvm.run(fault_argv(sim, step, "online"), check=False, env=sim.env(client))
        if result.returncode == 0:
            break
        failures += 1
        assert f"injected fault before step {step}" in result.stderr
        assert oracle.snapshot(sim.netvm, ("vif12.0",)) == before, f"residue after a fault at step {step}"
        assert sim.hotplug_status(client) == "error"
        assert f"injected fault before step {step}" in (sim.hotplug_error(client) or "")
    assert failures >= 15, "the plan has at least this many steps"
    assert sim.hotplug_status(client) == "connected"
    assert client.ping(UPSTREAM)


def test_hotplug_status_write_refused_undoes_everything(sim: SimNetvm) -> None:
    client = _client(sim)
    before = oracle.snapshot(sim.netvm, (client.vif,))
    path = f"{sim.xenstore.home()}/{client.xenbus_path}/hotplug-status"
    sim.xenstore.error_for[(WRITE, path)] = "EACCES"

    result = sim.vif_route("online", client)

    _assert_failed_cleanly(sim, client, result, before)
    assert "EACCES" in (sim.hotplug_error(client) or "")


def test_nftables_refusing_the_transaction_fails_cleanly(bare_sim: SimNetvm) -> None:
    sim = bare_sim
    # A layout whose downstream set is full: the kernel refuses the commit.
    sim.netvm.run(["nft", "-f", "-"], input_="""
table ip qubes {
    set allowed { type ifname . ipv4_addr; }
    set downstream { type ipv4_addr; size 1; elements = { 10.137.0.99 } }
    chain antispoof { }
    chain prerouting { type filter hook prerouting priority raw; }
    chain custom-input { }
    chain custom-forward { }
    chain input { type filter hook input priority filter; }
    chain forward { type filter hook forward priority filter; }
    chain postrouting { type nat hook postrouting priority srcnat; }
}
""")
    client = sim.add_client(12, "10.137.0.12")
    before = oracle.snapshot(sim.netvm, (client.vif,))

    result = sim.vif_route("online", client)

    _assert_failed_cleanly(sim, client, result, before)
    assert sim.hotplug_status(client) == "error"
    assert "nftables refused" in (sim.hotplug_error(client) or "")


def test_a_set_that_cannot_be_read_fails_cleanly(bare_sim: SimNetvm) -> None:
    """An allowed set of the wrong type: reading it fails, which is never taken for "empty"."""
    sim = bare_sim
    sim.netvm.run(["nft", "add table ip qubes; add set ip qubes allowed { type ipv4_addr; }"])
    client = sim.add_client(12, "10.137.0.12")
    before = oracle.snapshot(sim.netvm, (client.vif,))

    result = sim.vif_route("online", client)

    _assert_failed_cleanly(sim, client, result, before)
    assert "cannot read set allowed" in (sim.hotplug_error(client) or "")


def test_rename_clash_fails_cleanly(sim: SimNetvm) -> None:
    client = _client(sim)
    sim.write_backend(client, vifname="eth0")
    before = oracle.snapshot(sim.netvm, (client.vif,))

    result = sim.vif_route("online", client)

    _assert_failed_cleanly(sim, client, result, before)
    assert "ip link set vif12.0 name eth0" in (sim.hotplug_error(client) or "")
    assert "File exists" in (sim.hotplug_error(client) or "")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ip", "10.137.0.12 }; flush ruleset", "ip"),
        ("mac", "00:16:3E:5E:6C:0C", "mac"),
        ("vifname", "eth0; reboot", "vifname"),
    ],
)
def test_bad_xenstore_input_touches_nothing(sim: SimNetvm, key: str, value: str, message: str) -> None:
    client = _client(sim)
    sim.write_backend(client, **{key: value})
    before = oracle.snapshot(sim.netvm, (client.vif,))

    result = sim.vif_route("online", client)

    _assert_failed_cleanly(sim, client, result, before)
    error = sim.hotplug_error(client) or ""
    assert f"{client.xenbus_path}/{message}:" in error
    assert "\n" not in error
