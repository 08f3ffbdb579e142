"""Mapped (hidden) addresses: a client that only knows its visible address.

Domids are random so that the host-wide namespace names (<vif>-nat) of
concurrent runs do not meet.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Iterator

import pytest

from qubes_netsim.netns import Netns, namespaces
from qubes_netsim.topology import GATEWAY, UPSTREAM, VIRTUAL_DNS, Client, SimNetvm
from tests import oracle
from tests.integration.fault_runner import fault_argv

REAL, VISIBLE, VISIBLE_GW = "10.138.7.9", "192.168.1.128", "192.168.1.1"


def domid() -> int:
    return random.randint(300, 32000)


def our_namespaces(sim: SimNetvm, client: Client) -> set[str]:
    """The host's namespaces that this case can have made: the simulation's
    and the vif's NAT namespace (others belong to concurrent runs)."""
    return {n for n in namespaces() if n.startswith(f"{sim.prefix}-") or n == f"{client.vif}-nat"}


@pytest.fixture
def mapped(sim: SimNetvm) -> Iterator[tuple[SimNetvm, Client]]:
    sim.start_dns({"who.test": "192.0.2.1"})
    yield sim, sim.add_mapped_client(domid(), REAL, VISIBLE, VISIBLE_GW)


def test_client_reaches_gateway_and_upstream_under_its_real_address(mapped: tuple[SimNetvm, Client]) -> None:
    sim, client = mapped
    from_real, from_visible = sim.forwarded_counter(REAL), sim.forwarded_counter(VISIBLE)

    result = sim.vif_route("online", client)

    assert result.returncode == 0, result.stderr
    assert sim.hotplug_status(client) == "connected"
    ns = Netns(f"{client.vif}-nat")
    assert ns.exists()
    inside = {link["ifname"] for link in ns.ip_json("link", "show")}
    assert {client.vif, f"{client.vif}-p"} <= inside
    assert "table netdev qubes-nat" in ns.run(["nft", "list", "ruleset"]).stdout
    # The netvm configures the veth end exactly like a vif, under the real address.
    assert sim.set_elements("ip", "allowed") == {(client.vif, REAL)}
    assert [r["dev"] for r in sim.routes() if r["dst"] == REAL] == [client.vif]

    assert client.ping(VISIBLE_GW)
    assert client.ping(UPSTREAM, count=2)
    assert from_real() >= 2 and from_visible() == 0, "upstream only ever sees the real (masqueraded) address"
    # Replies came back translated: the client's own view of the ping.
    reply = client.ns.run(["ping", "-n", "-c", "1", "-W", "2", UPSTREAM]).stdout
    assert f"from {UPSTREAM}" in reply


def dig(client: Client, server: str) -> str | None:
    result = client.ns.run(["dig", "+short", "+time=1", "+tries=1", f"@{server}", "who.test"], check=False)
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


def test_dns_through_the_virtual_addresses(mapped: tuple[SimNetvm, Client]) -> None:
    sim, client = mapped
    assert sim.vif_route("online", client).returncode == 0
    assert sim.dnat().returncode == 0
    assert dig(client, VIRTUAL_DNS[1]) == "192.0.2.1"


@pytest.mark.parametrize("forged", ["10.137.0.50", REAL, "192.168.1.129"])
def test_forged_sources_never_leave_the_namespace(mapped: tuple[SimNetvm, Client], forged: str) -> None:
    sim, client = mapped
    assert sim.vif_route("online", client).returncode == 0
    assert client.ping(VISIBLE_GW), "the client knows its gateway's MAC: forged packets do go out"
    seen = sim.forwarded_counter(forged)
    client.ns.sh(f"ip addr add {forged}/32 dev eth0")

    assert not client.ping(UPSTREAM, source=forged, count=2, wait=1)

    assert seen() == 0
    nat = Netns(f"{client.vif}-nat")
    spoof_drops = nat.counter_packets("netdev", "qubes-nat", "from-client",
                                      lambda rule: any(e.get("match", {}).get("op") == "!=" for e in rule["expr"]))
    assert spoof_drops >= 2


def test_arp_is_answered_only_for_the_visible_gateway(mapped: tuple[SimNetvm, Client]) -> None:
    sim, client = mapped
    assert sim.vif_route("online", client).returncode == 0
    assert client.ping(VISIBLE_GW)
    for other in ("10.137.0.99", REAL, GATEWAY):
        client.ns.sh(f"ip route add {other} dev eth0")
        client.ping(other, wait=1)
    neighbours = {n["dst"]: n for n in client.ns.ip_json("neigh", "show", "dev", "eth0")}
    assert neighbours[VISIBLE_GW].get("lladdr") == "fe:ff:ff:ff:ff:ff"
    for other in ("10.137.0.99", REAL, GATEWAY):
        assert "lladdr" not in neighbours.get(other, {}), f"ARP for {other} was answered"


def test_offline_leaves_no_namespace_no_veth_no_element(mapped: tuple[SimNetvm, Client]) -> None:
    sim, client = mapped
    before_ns = our_namespaces(sim, client)
    before = oracle.snapshot(sim.netvm)
    assert sim.vif_route("online", client).returncode == 0

    result = sim.vif_route("offline", client)

    assert result.returncode == 0, result.stderr
    assert our_namespaces(sim, client) == before_ns
    assert oracle.snapshot(sim.netvm) == before
    # The vif itself (a veth here, where a namespace's deletion would have
    # destroyed it) is back in the netvm under its own name, down.
    assert sim.netvm.ip_json("link", "show", "dev", client.vif)[0]["ifname"] == client.vif


def test_cycles_leave_no_residue(mapped: tuple[SimNetvm, Client]) -> None:
    sim, client = mapped
    before_ns = our_namespaces(sim, client)
    before = oracle.snapshot(sim.netvm)
    for _ in range(3):
        assert sim.vif_route("online", client).returncode == 0
        assert client.ping(UPSTREAM)
        assert sim.vif_route("offline", client).returncode == 0
        assert our_namespaces(sim, client) == before_ns
        assert oracle.snapshot(sim.netvm) == before


def test_online_twice_keeps_the_namespace(mapped: tuple[SimNetvm, Client]) -> None:
    sim, client = mapped
    assert sim.vif_route("online", client).returncode == 0
    first = oracle.snapshot(sim.netvm, (client.vif,))
    inode = os.stat(f"/run/netns/{client.vif}-nat").st_ino

    result = sim.vif_route("online", client)

    assert result.returncode == 0, result.stderr
    assert "removed namespace" not in result.stderr
    assert os.stat(f"/run/netns/{client.vif}-nat").st_ino == inode
    assert oracle.snapshot(sim.netvm, (client.vif,)) == first
    assert client.ping(UPSTREAM)


def test_a_changed_mapping_rebuilds_the_namespace(mapped: tuple[SimNetvm, Client]) -> None:
    sim, client = mapped
    assert sim.vif_route("online", client).returncode == 0
    sim.write_mapping(REAL, "192.168.1.77", VISIBLE_GW)
    client.ns.sh(f"ip addr add 192.168.1.77/32 dev eth0 && ip addr del {VISIBLE}/32 dev eth0"
                 f" && ip route replace default via {VISIBLE_GW} dev eth0")

    assert sim.vif_route("online", client).returncode == 0
    assert client.ping(UPSTREAM)


def test_every_step_of_a_mapped_online_rolls_back(mapped: tuple[SimNetvm, Client]) -> None:
    sim, client = mapped
    before_ns = our_namespaces(sim, client)
    before = oracle.snapshot(sim.netvm)
    for step in range(64):
        result = sim.netvm.run(fault_argv(sim, step, "online"), check=False, env=sim.env(client))
        if result.returncode == 0:
            break
        assert f"injected fault before step {step}" in result.stderr
        assert our_namespaces(sim, client) == before_ns, f"namespace left after a fault at step {step}"
        assert oracle.snapshot(sim.netvm) == before, f"residue after a fault at step {step}"
        assert sim.hotplug_status(client) == "error"
    assert step >= 12, "4 namespace steps and the netvm end's"
    assert client.ping(UPSTREAM)


@pytest.mark.parametrize("crash_at", [1, 2, 3, 4, 8])
def test_a_crashed_run_is_cleaned_up_by_the_next_one(mapped: tuple[SimNetvm, Client], crash_at: int) -> None:
    sim, client = mapped
    before_ns = our_namespaces(sim, client)
    argv = fault_argv(sim, crash_at, "online", mode="crash")
    assert sim.netvm.run(argv, check=False, env=sim.env(client)).returncode == 137

    assert sim.vif_route("online", client).returncode == 0
    assert client.ping(UPSTREAM)
    assert sim.vif_route("offline", client).returncode == 0
    assert our_namespaces(sim, client) == before_ns

    # And a crash followed directly by offline.
    assert sim.netvm.run(argv, check=False, env=sim.env(client)).returncode == 137
    assert sim.vif_route("offline", client).returncode == 0
    assert our_namespaces(sim, client) == before_ns
    assert sim.netvm.ip_json("link", "show", "dev", client.vif), "the vif survived"


def test_mapping_written_during_the_bounded_wait(sim: SimNetvm) -> None:
    client = sim.add_mapped_client(domid(), REAL, VISIBLE, VISIBLE_GW, write_mapping=False)
    late = threading.Timer(0.5, sim.write_mapping, (REAL, VISIBLE, VISIBLE_GW))
    late.start()
    try:
        result = sim.vif_route("online", client, "--mapped-wait", "10")
    finally:
        late.cancel()
    assert result.returncode == 0, result.stderr
    assert client.ping(UPSTREAM)


def test_mapping_after_the_wait_is_picked_up_by_a_rerun(sim: SimNetvm) -> None:
    client = sim.add_mapped_client(domid(), REAL, VISIBLE, VISIBLE_GW, write_mapping=False)

    result = sim.vif_route("online", client, "--mapped-wait", "0.3")

    assert result.returncode == 0, result.stderr
    assert not client.ping(UPSTREAM, wait=1), "without its mapping the client cannot send"
    sim.write_mapping(REAL, VISIBLE, VISIBLE_GW)
    assert sim.vif_route("online", client).returncode == 0
    assert client.ping(UPSTREAM)
    assert sim.vif_route("offline", client).returncode == 0
    assert not Netns(f"{client.vif}-nat").exists()


def test_no_wait_outside_the_hidden_range(sim: SimNetvm) -> None:
    client = sim.add_client(domid(), "10.137.0.40")
    result = sim.vif_route("online", client, "--mapped-wait", "30", timeout=20)
    assert result.returncode == 0


def test_hiding_the_netvm_addresses(mapped: tuple[SimNetvm, Client]) -> None:
    sim, client = mapped
    sim.qubesdb.write("/qubes-service/hide-netvm-addresses", "1")
    assert sim.vif_route("online", client).returncode == 0
    assert sim.dnat().returncode == 0

    assert client.ping(VISIBLE_GW), "the gateway, through the translation"
    assert not client.ping(GATEWAY, wait=1), "not the real gateway"
    assert dig(client, VIRTUAL_DNS[0]) is None, "not the virtual DNS address"
    assert dig(client, VISIBLE_GW) == "192.0.2.1", "DNS through the visible gateway"
    assert client.ping(UPSTREAM)


def test_without_hiding_the_virtual_dns_is_reachable(mapped: tuple[SimNetvm, Client]) -> None:
    sim, client = mapped
    assert sim.vif_route("online", client).returncode == 0
    assert sim.dnat().returncode == 0
    assert dig(client, VIRTUAL_DNS[0]) == "192.0.2.1"
    assert dig(client, VISIBLE_GW) is None, "no DNS on the gateway unless hiding"


def test_dry_run_shows_the_namespace_plan(mapped: tuple[SimNetvm, Client]) -> None:
    sim, client = mapped
    before_ns = our_namespaces(sim, client)
    result = sim.vif_route("online", client, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"ip netns add {client.vif}-nat" in result.stdout
    assert f"ip link set {client.vif} netns {client.vif}-nat" in result.stdout
    assert "netdev table qubes-nat" in result.stdout
    assert our_namespaces(sim, client) == before_ns


def _drops_of_revealing_icmp(client: Client) -> int:
    """Packets counted by the from-netvm rule that drops the ICMP errors
    other than destination-unreachable (read with nft -j, as the oracle)."""
    listing = json.loads(Netns(f"{client.vif}-nat").run(["nft", "-j", "list", "table", "netdev", "qubes-nat"]).stdout)
    for item in listing["nftables"]:
        rule = item.get("rule")
        if rule and rule["chain"] == "from-netvm" and "time-exceeded" in json.dumps(rule["expr"]):
            return sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    return -1  # no such rule


def test_icmp_errors_that_reveal_the_real_address_never_reach_the_client(mapped: tuple[SimNetvm, Client]) -> None:
    """The netvm's "time exceeded" for a client's packet quotes the packet
    with its real source address (nftables cannot rewrite the quote): it is
    dropped in the NAT namespace, counted, and the client sees nothing."""
    sim, client = mapped
    assert sim.vif_route("online", client).returncode == 0
    assert client.ping(UPSTREAM), "the upstream is reachable at all"
    before = _drops_of_revealing_icmp(client)
    assert before >= 0, "the rule dropping revealing ICMP errors is missing"
    # TTL 1: the netvm, the first router, answers with ICMP time exceeded.
    out = client.ns.run(["ping", "-n", "-c", "1", "-W", "1", "-t", "1", UPSTREAM], check=False).stdout
    assert "exceeded" not in out.lower(), out
    assert _drops_of_revealing_icmp(client) > before, "no time-exceeded was dropped: did the netvm send one?"


def test_fragmentation_needed_reaches_the_client(mapped: tuple[SimNetvm, Client]) -> None:
    """ICMP "fragmentation needed" is let through the translation (path MTU
    discovery): the netvm's uplink MTU is lowered, a client's 1400-byte
    ping with DF set is answered by the netvm with that error, and the
    client gets it. (Its embedded header still names the real source, so
    the client's kernel does not cache the MTU for the visible one: ping,
    which reads the error itself, sees it.)"""
    sim, client = mapped
    assert sim.vif_route("online", client).returncode == 0
    assert client.ping(UPSTREAM)
    sim.netvm.sh("ip link set eth0 mtu 1300")
    out = client.ns.run(["ping", "-n", "-c", "1", "-W", "1", "-M", "do", "-s", "1400", UPSTREAM], check=False).stdout
    assert "Frag needed and DF set (mtu = 1300)" in out, out
