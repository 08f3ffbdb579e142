"""offline cleanup, idempotent reruns, address reuse and the base layout."""

from __future__ import annotations

from qubes_netsim.topology import GATEWAY, UPSTREAM, SimNetvm
from tests import oracle


def test_offline_removes_every_trace(sim: SimNetvm) -> None:
    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")
    before = oracle.snapshot(sim.netvm)
    assert sim.vif_route("online", client).returncode == 0
    assert client.ping(UPSTREAM)

    result = sim.vif_route("offline", client)

    assert result.returncode == 0, result.stderr
    after = oracle.snapshot(sim.netvm)
    assert after["ruleset"] == before["ruleset"]
    assert after["routes"] == before["routes"]
    assert after["neighbours"] == before["neighbours"]
    assert after["addresses"] == before["addresses"]
    assert after["links"]["vif12.0"] == {"up": False, "group": "default", "address": "fe:ff:ff:ff:ff:ff"}
    assert not client.ping(UPSTREAM, wait=1)


def test_offline_when_the_interface_is_already_gone(sim: SimNetvm) -> None:
    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")
    before = oracle.ruleset(sim.netvm)
    assert sim.vif_route("online", client).returncode == 0
    sim.netvm.run(["ip", "link", "delete", "vif12.0"])  # Xen destroyed the vif first

    result = sim.vif_route("offline", client)

    assert result.returncode == 0, result.stderr
    assert oracle.ruleset(sim.netvm) == before


def test_offline_without_the_ip_key_finds_the_elements_in_the_set(sim: SimNetvm) -> None:
    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")
    before = oracle.ruleset(sim.netvm)
    assert sim.vif_route("online", client).returncode == 0
    sim.xenstore.rm(f"{client.xenbus_path}/ip")

    assert sim.vif_route("offline", client).returncode == 0
    assert oracle.ruleset(sim.netvm) == before


def test_offline_of_an_unknown_vif_succeeds(sim: SimNetvm) -> None:
    client = sim.add_client(12, "10.137.0.12")
    before = oracle.snapshot(sim.netvm)
    env = sim.env(client, vif="vif77.0", XENBUS_PATH="backend/vif/77/0")

    result = sim.vif_route("offline", client, env=env)

    assert result.returncode == 0, result.stderr
    assert oracle.snapshot(sim.netvm) == before


def test_offline_twice_succeeds(sim: SimNetvm) -> None:
    client = sim.add_client(12, "10.137.0.12")
    assert sim.vif_route("online", client).returncode == 0
    assert sim.vif_route("offline", client).returncode == 0
    before = oracle.snapshot(sim.netvm)
    assert sim.vif_route("offline", client).returncode == 0
    assert oracle.snapshot(sim.netvm) == before


def test_online_twice_converges_to_the_same_state(sim: SimNetvm) -> None:
    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")
    assert sim.vif_route("online", client).returncode == 0
    first = oracle.snapshot(sim.netvm, ("vif12.0",))

    result = sim.vif_route("online", client)

    assert result.returncode == 0, result.stderr
    assert oracle.snapshot(sim.netvm, ("vif12.0",)) == first
    assert sim.hotplug_status(client) == "connected"
    assert client.ping(UPSTREAM)


def test_online_offline_online_cycle(sim: SimNetvm) -> None:
    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")
    assert sim.vif_route("online", client).returncode == 0
    first = oracle.snapshot(sim.netvm, ("vif12.0",))
    assert sim.vif_route("offline", client).returncode == 0
    assert sim.vif_route("online", client).returncode == 0
    assert oracle.snapshot(sim.netvm, ("vif12.0",)) == first
    assert client.ping(GATEWAY)


def test_address_reused_by_a_new_vm_before_the_old_one_went_offline(sim: SimNetvm) -> None:
    """A new VM got the address of a dying one, whose offline runs late."""
    old = sim.add_client(12, "10.137.0.12")
    assert sim.vif_route("online", old).returncode == 0
    old.ns.sh("ip addr flush dev eth0")
    new = sim.add_client(13, "10.137.0.12")
    assert sim.vif_route("online", new).returncode == 0

    assert sim.vif_route("offline", old).returncode == 0

    assert sim.set_elements("ip", "downstream") == {"10.137.0.12"}
    assert sim.set_elements("ip", "allowed") == {("vif13.0", "10.137.0.12")}
    assert new.ping(UPSTREAM)


def test_missing_antispoof_objects_are_created_and_nothing_else(bare_sim: SimNetvm) -> None:
    """The filter and nat chains belong to the netvm's firewall service: a hotplug never creates them."""
    sim = bare_sim
    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")
    assert sim.netvm.nft_json("list", "ruleset") == []

    result = sim.vif_route("online", client)

    assert result.returncode == 0, result.stderr
    chains = {(c["chain"]["family"], c["chain"]["name"]) for c in sim.netvm.nft_json("list", "chains")}
    sets = {(s["set"]["family"], s["set"]["name"]) for s in sim.netvm.nft_json("list", "sets")}
    assert chains == {(f, n) for f in ("ip", "ip6") for n in ("prerouting", "antispoof")}
    assert sets == {(f, n) for f in ("ip", "ip6") for n in ("allowed", "downstream")}
    assert client.ping(GATEWAY)
    forged_drops = sim.counter("ip", "antispoof")
    client.ns.sh("ip addr add 10.137.0.99/32 dev eth0")
    assert not client.ping(UPSTREAM, source="10.137.0.99", wait=1)
    assert sim.counter("ip", "antispoof") > forged_drops


def test_layout_is_created_once(bare_sim: SimNetvm) -> None:
    sim = bare_sim
    first = sim.add_client(12, "10.137.0.12")
    second = sim.add_client(13, "10.137.0.13")
    assert sim.vif_route("online", first).returncode == 0
    rules = len([i for i in sim.netvm.nft_json("list", "ruleset") if "rule" in i])

    assert sim.vif_route("online", second).returncode == 0
    assert sim.vif_route("online", first).returncode == 0

    assert len([i for i in sim.netvm.nft_json("list", "ruleset") if "rule" in i]) == rules


def test_partial_layout_is_completed(bare_sim: SimNetvm) -> None:
    """qubes-setup-dnat-to-ns may have created the table with only its chain."""
    sim = bare_sim
    sim.netvm.run(["nft", "add table ip qubes;"
                          " add chain ip qubes dnat-dns { type nat hook prerouting priority dstnat; }"])
    client = sim.add_client(12, "10.137.0.12")

    assert sim.vif_route("online", client).returncode == 0

    chains = {c["chain"]["name"] for c in sim.netvm.nft_json("list", "chains", "ip")}
    assert chains == {"dnat-dns", "prerouting", "antispoof"}
    assert client.ping(GATEWAY)
