"""Forged sources are dropped: proven with packets.

Each case sends pings with a forged source and checks, with a counting rule
placed in the netvm's custom-forward chain (the oracle), that not one packet
with that source was forwarded, and that the antispoof/prerouting drop
counters moved. A positive control shows the oracle sees real traffic.
"""

from __future__ import annotations

import pytest

from qubes_netsim.topology import UPSTREAM, UPSTREAM6, Client, SimNetvm


def send_as(client: Client, forged: str, count: int = 2) -> bool:
    """Ping the upstream host from ``client`` with source ``forged``; True if answered."""
    if ":" in forged:
        address, target, extra = f"-6 addr {{}} {forged}/128 dev eth0", UPSTREAM6, " nodad"
    else:
        address, target, extra = f"addr {{}} {forged}/32 dev eth0", UPSTREAM, ""
    client.ns.sh(f"ip {address.format('add')}{extra}")
    try:
        return client.ping(target, source=forged, count=count, wait=1)
    finally:
        client.ns.sh(f"ip {address.format('del')}", check=False)


@pytest.fixture
def two_clients(sim: SimNetvm) -> tuple[Client, Client]:
    a = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")
    b = sim.add_client(13, "10.137.0.13")
    for client in (a, b):
        assert sim.vif_route("online", client).returncode == 0
    return a, b


def test_the_oracle_sees_real_traffic(sim: SimNetvm, two_clients: tuple[Client, Client]) -> None:
    client, _ = two_clients
    forwarded = sim.forwarded_counter("10.137.0.12")
    forwarded6 = sim.forwarded_counter("fd09:24ef:4179::a89:12")
    assert client.ping(UPSTREAM, count=2)
    assert client.ping(UPSTREAM6, count=2)
    assert forwarded() >= 2 and forwarded6() >= 2


@pytest.mark.parametrize(
    "forged",
    [
        "10.137.0.13",  # another client's address
        "10.137.0.99",  # an address nobody has
        "198.51.100.77",  # an address of the upstream network
        "fd09:24ef:4179::a89:13",  # an IPv6 address not assigned to the client
    ],
)
def test_forged_source_is_never_forwarded(sim: SimNetvm, two_clients: tuple[Client, Client], forged: str) -> None:
    attacker, _ = two_clients
    family = "ip6" if ":" in forged else "ip"
    forwarded = sim.forwarded_counter(forged)
    drops = sim.counter(family, "antispoof")

    assert not send_as(attacker, forged)

    assert forwarded() == 0
    assert sim.counter(family, "antispoof") >= drops + 2


def test_client_without_ipv6_cannot_send_ipv6(sim: SimNetvm, two_clients: tuple[Client, Client]) -> None:
    _, ipv4_only = two_clients
    ipv4_only.ns.sh("ip -6 route add default dev eth0")
    forwarded = sim.forwarded_counter("fd09:24ef:4179::a89:13")

    assert not send_as(ipv4_only, "fd09:24ef:4179::a89:13")

    assert forwarded() == 0


def test_address_of_an_offline_client_is_dropped(sim: SimNetvm, two_clients: tuple[Client, Client]) -> None:
    """Offline takes the client's address out of both sets (kernel state),
    and the next VM on the same vif, given another address, cannot send
    with the old one (packets): a stale ("vif13.0", "10.137.0.13") left in
    ``allowed`` would let it, which is what tells "removed" from "not removed"
    (another vif could never use that pair anyway)."""
    _, leaving = two_clients
    assert sim.vif_route("offline", leaving).returncode == 0

    assert sim.set_elements("ip", "allowed") == {("vif12.0", "10.137.0.12")}
    assert sim.set_elements("ip", "downstream") == {"10.137.0.12"}

    # The vif comes back for a VM that was given 10.137.0.50.
    # (The new address first: deleting the last one flushes the routes of eth0.)
    leaving.ns.sh("ip addr add 10.137.0.50/32 dev eth0 && ip addr del 10.137.0.13/32 dev eth0")
    sim.write_backend(leaving, ip="10.137.0.50")
    assert sim.vif_route("online", leaving).returncode == 0
    assert leaving.ping(UPSTREAM, wait=1), "the vif forwards its new address (positive control)"
    forwarded = sim.forwarded_counter("10.137.0.13")
    drops = sim.counter("ip", "antispoof")

    assert not send_as(leaving, "10.137.0.13")

    assert forwarded() == 0
    assert sim.counter("ip", "antispoof") >= drops + 2


def test_client_address_arriving_from_the_uplink_is_dropped(sim: SimNetvm, two_clients: tuple[Client, Client]) -> None:
    """A downstream address can only live behind its vif: from eth0 it is forged."""
    drops = sim.counter("ip", "prerouting")
    sim.upstream.sh("ip addr add 10.137.0.12/32 dev eth0")

    answered = sim.upstream.run(
        ["ping", "-n", "-q", "-c", "2", "-W", "1", "-I", "10.137.0.12", "198.51.100.2"], check=False
    ).returncode == 0

    assert not answered
    assert sim.counter("ip", "prerouting") >= drops + 2
