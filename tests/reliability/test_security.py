"""Security invariants, proven with packets, for every client of a topology.

The topology: A (IPv4 + IPv6), B (IPv4 only), M (a mapped disposable: it
believes it is 192.168.1.128, the netvm knows it as 10.138.x.y), P (its vif
exists but was never brought online) and O (went online, then offline).

Each check sends real packets and reads two independent counters:
  * "sent": an egress counter on the sender's own interface, proving the
    packet really left (a check whose packet never left proves nothing);
  * "passed": a counter in the netvm's prerouting hook at priority -200,
    after the antispoof stage (raw, -300): packets with that source which
    got past it.
Neither is part of the code under test; both live in their own `oracle`
tables. A positive control shows the "passed" counter sees real traffic.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from qubes_netsim.netns import Netns, wait_for
from qubes_netsim.topology import (
    GATEWAY,
    GATEWAY6,
    NETVM_UPLINK,
    NETVM_UPLINK6,
    UPSTREAM,
    UPSTREAM6,
    VIF_MAC,
    Client,
    SimNetvm,
)
from qubes_netsim.xenstored import WRITE
from tests.reliability.conftest import FULL, Ledger

WAIT = 0.5  # seconds a ping waits for its answer (a drop costs this much)
MAPPED_VISIBLE, MAPPED_VISIBLE_GW = "192.168.1.128", "192.168.1.1"


def _family(address: str) -> str:
    return "ip6" if ":" in address else "ip"


class Counters:
    """Counting rules keyed by a label, in a table of their own."""

    def __init__(self, ns: Netns, family: str, table: str, chain: str, hook: str) -> None:
        self.ns, self.family, self.table, self.chain = ns, family, table, chain
        ns.run(["nft", "add", "table", family, table])
        ns.run(["nft", "add", "chain", family, table, chain, "{ " + hook + " }"])
        self.labels: dict[str, int] = {}

    def add(self, label: str, *match: str) -> None:
        if label not in self.labels:
            self.ns.run(["nft", "add", "rule", self.family, self.table, self.chain, *match, "counter",
                         "comment", f'"{label}"'])
            self.labels[label] = 0

    def read(self, label: str) -> int:
        found: list[dict[str, Any]] = []

        def labelled(rule: dict[str, Any]) -> bool:
            if rule.get("comment") == label:
                found.append(rule)
            return rule.get("comment") == label

        packets = self.ns.counter_packets(self.family, self.table, self.chain, labelled)
        if not found:
            raise AssertionError(f"no oracle rule {label!r}")
        return packets


@dataclass
class Net:
    sim: SimNetvm
    a: Client
    b: Client
    m: Client
    p: Client
    o: Client
    passed: Counters  # netvm prerouting, after antispoof
    leaving: Counters  # netvm postrouting: what the netvm sends out, by in/out interface
    sent: dict[str, Counters]  # per sender namespace, egress of its interface


def _sender_oracle(ns: Netns, device: str) -> Counters:
    return Counters(ns, "netdev", "oracle", "sent", f'type filter hook egress device "{device}" priority 0;')


def _static_gateways(client: Client, gateway: str, gateway6: str | None) -> None:
    """The client's gateways resolved once and for all, so that a forged
    source never waits on ARP or neighbour discovery to leave."""
    client.ns.sh(f"ip neigh replace {gateway} lladdr {VIF_MAC} dev eth0 nud permanent")
    if gateway6:
        client.ns.sh(f"ip -6 route replace {gateway6} dev eth0 && ip -6 route replace default via {gateway6} dev eth0"
                     f" && ip -6 neigh replace {gateway6} lladdr {VIF_MAC} dev eth0 nud permanent")


@pytest.fixture(scope="module")
def net(shared_sim: SimNetvm) -> Iterator[Net]:
    sim = shared_sim
    a = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")
    b = sim.add_client(13, "10.137.0.13")
    m = sim.add_mapped_client(random.randint(300, 32000), f"10.138.{random.randint(1, 250)}.9",
                              MAPPED_VISIBLE, MAPPED_VISIBLE_GW)
    p = sim.add_client(15, "10.137.0.15", "fd09:24ef:4179::a89:15")
    o = sim.add_client(16, "10.137.0.16", "fd09:24ef:4179::a89:16")
    for client in (a, b, m, o):
        result = sim.vif_route("online", client)
        assert result.returncode == 0, result.stderr
    assert sim.vif_route("offline", o).returncode == 0
    for client in (a, b, p, o):
        _static_gateways(client, GATEWAY, GATEWAY6)
    _static_gateways(m, MAPPED_VISIBLE_GW, GATEWAY6)
    sim.upstream.sh(f"ip route replace 10.137.0.0/16 via {NETVM_UPLINK} && ip route replace 10.138.0.0/16 via"
                    f" {NETVM_UPLINK} && ip -6 route replace fd09:24ef:4179::/64 via {NETVM_UPLINK6}")
    passed = Counters(sim.netvm, "inet", "oracle", "passed", "type filter hook prerouting priority -200;")
    leaving = Counters(sim.netvm, "inet", "oracle", "leaving", "type filter hook postrouting priority -500;")
    sent = {c.ns.name: _sender_oracle(c.ns, "eth0") for c in (a, b, m, p, o)}
    sent[sim.upstream.name] = _sender_oracle(sim.upstream, "eth0")
    yield Net(sim, a, b, m, p, o, passed, leaving, sent)
    # The module's simulated netvm is destroyed by shared_sim; the mapped
    # namespace is host-wide, so it goes explicitly.
    sim.vif_route("offline", m)


def _addresses(client: Client) -> list[str]:
    return [str(x) for x in (client.ipv4, client.ipv6) if x is not None]


def _ping(ns: Netns, source: str, target: str) -> bool:
    argv = ["ping", "-n", "-q", "-c", "1", "-W", f"{WAIT:g}", "-I", source, target]
    return ns.run(argv, check=False, timeout=10).returncode == 0


def send_forged(net: Net, ns: Netns, source: str, *, to: tuple[str, str] = (UPSTREAM, UPSTREAM6),
                must_leave: bool = True) -> tuple[bool, int]:
    """Ping ``to`` (an IPv4 and an IPv6 target) from ``ns`` with ``source``
    (added to eth0 for the duration unless there already); returns (answered, packets with that
    source past antispoof)."""
    family = _family(source)
    target = to[1] if family == "ip6" else to[0]
    label = f"{family} saddr {source}"
    net.passed.add(label, family, "saddr", source)
    sent = net.sent[ns.name]
    sent.add(label, family, "saddr", source)
    before_sent, before_passed = sent.read(label), net.passed.read(label)
    plen = 128 if family == "ip6" else 32
    # A client's own address is already there and stays.
    added = ns.sh(f"ip addr add {source}/{plen} dev eth0" + (" nodad" if family == "ip6" else ""),
                  check=False).returncode == 0
    try:
        answered = _ping(ns, source, target)
    finally:
        if added:
            ns.sh(f"ip addr del {source}/{plen} dev eth0", check=False)
    if must_leave:
        assert sent.read(label) > before_sent, f"the packet from {source} never left {ns.name}: the check is void"
    return answered, net.passed.read(label) - before_passed


def record(ledger: Ledger, what: str, violated: bool) -> None:
    ledger.record("security", what, 1, violations=int(violated))


# --- the positive control --------------------------------------------------


def test_the_oracle_sees_every_online_clients_own_traffic(net: Net) -> None:
    for client, sources in ((net.a, _addresses(net.a)), (net.b, _addresses(net.b))):
        for source in sources:
            label = f"{_family(source)} saddr {source}"
            net.passed.add(label, _family(source), "saddr", source)
            before = net.passed.read(label)
            assert _ping(client.ns, source, UPSTREAM6 if ":" in source else UPSTREAM), source
            assert net.passed.read(label) > before, source
    label = f"ip saddr {net.m.ipv4}"
    net.passed.add(label, "ip", "saddr", str(net.m.ipv4))
    before = net.passed.read(label)
    assert _ping(net.m.ns, MAPPED_VISIBLE, UPSTREAM)
    assert net.passed.read(label) > before, "the mapped client's packets arrive under its real address"


# --- forged sources from every online client -------------------------------


def _forgeries(net: Net, attacker: Client) -> list[str]:
    others = [c for c in (net.a, net.b, net.m, net.p, net.o) if c is not attacker]
    sources = [address for c in others for address in _addresses(c)]
    sources += ["10.137.0.99", NETVM_UPLINK, "198.51.100.77"]  # nobody's; the netvm's; the uplink's network
    sources += ["fd09:24ef:4179::a89:99", "2001:db8:100::77"]  # IPv6 not assigned to anyone here
    if attacker.ipv6 is None:
        sources.append("fd09:24ef:4179::a89:" + format(attacker.domid % 0x10000, "x"))  # "its" IPv6
    if attacker is net.m:
        sources.append(MAPPED_VISIBLE.replace(".128", ".129"))  # a neighbour of its visible address
    return sources if FULL else sources[::3]


@pytest.mark.parametrize("who", ["a", "b", "m"])
def test_forged_sources_never_get_past_the_netvm(net: Net, ledger: Ledger, who: str) -> None:
    attacker: Client = getattr(net, who)
    failures = []
    for source in _forgeries(net, attacker):
        # A mapped client's forgeries die in its own namespace, before the
        # netvm: they still leave the client.
        answered, passed = send_forged(net, attacker.ns, source)
        violated = answered or passed > 0
        record(ledger, f"client {who} forging {source}", violated)
        if violated:
            failures.append(f"{source}: answered={answered} passed={passed}")
    assert not failures, failures


# --- downstream addresses arriving from the uplink -------------------------


def test_downstream_addresses_from_the_uplink_are_dropped(net: Net, ledger: Ledger) -> None:
    sources = _addresses(net.a) + _addresses(net.b) + [str(net.m.ipv4)]
    failures = []
    for source in sources:
        answered, passed = send_forged(net, net.sim.upstream, source, to=(NETVM_UPLINK, NETVM_UPLINK6))
        violated = answered or passed > 0
        record(ledger, f"uplink forging {source}", violated)
        if violated:
            failures.append(f"{source}: answered={answered} passed={passed}")
    assert not failures, failures


# --- before online, after offline ------------------------------------------


def _forwarded_from(net: Net, client: Client, source: str) -> int:
    """Packets from ``source`` that came in on the client's vif and leave
    the netvm by another interface (the netvm's own multicast listener and
    neighbour discovery on the vif are not forwarding)."""
    label = f"{client.vif} {source} forwarded"
    net.leaving.add(label, "iifname", client.vif, "oifname", "!=", client.vif, _family(source), "saddr", source)
    return net.leaving.read(label)


def _check_nothing_forwarded(net: Net, ledger: Ledger, client: Client, what: str, must_leave: bool) -> None:
    """The vif is not online: its own addresses get nowhere. (Before online
    its addresses are nobody's yet, so they are not "forged" for the
    antispoof stage: the forward chain's rule for interfaces outside the
    vif group is what stops them; the oracle is what leaves the netvm.)"""
    for source in _addresses(client):
        before = _forwarded_from(net, client, source)
        answered, _ = send_forged(net, client.ns, source, must_leave=must_leave)
        forwarded = _forwarded_from(net, client, source) - before
        record(ledger, f"{what}, {source}", answered or forwarded > 0)
        assert not answered and forwarded == 0, f"{what}: {source} answered={answered} forwarded={forwarded}"


@contextmanager
def link_up(net: Net, client: Client) -> Iterator[None]:
    """The netvm end of the client's vif up, as someone other than the hotplug might set it."""
    net.sim.netvm.sh(f"ip link set {client.vif} up")
    try:
        yield
    finally:
        net.sim.netvm.sh(f"ip link set {client.vif} down")


def test_no_traffic_from_a_vif_never_brought_online(net: Net, ledger: Ledger) -> None:
    # As Xen creates it: the netvm end is down; nothing can even leave.
    _check_nothing_forwarded(net, ledger, net.p, "pending vif, link down", must_leave=False)
    with link_up(net, net.p):
        _check_nothing_forwarded(net, ledger, net.p, "pending vif, link up", must_leave=True)


def test_no_traffic_after_offline_even_if_the_link_comes_back_up(net: Net, ledger: Ledger) -> None:
    with link_up(net, net.o):
        _check_nothing_forwarded(net, ledger, net.o, "offline vif, link up", must_leave=True)


def test_nothing_passes_while_online_is_still_running(net: Net, ledger: Ledger) -> None:
    """Online stopped just before it reports (XenStore frozen on the
    hotplug-status write): the rules are complete; only the vif's own
    addresses pass, and they do."""
    sim, client = net.sim, net.p
    status = f"{sim.xenstore.home()}/{client.xenbus_path}/hotplug-status"
    sim.xenstore.freeze_on = (WRITE, status)
    proc = sim.netvm.popen(sim.vif_route_argv("--timeout", "60", "online"), env=sim.env(client))
    try:
        wait_for(lambda: sim.xenstore.frozen, timeout=30, what="online to reach its status write")
        own, foreign = str(client.ipv4), str(net.a.ipv4)
        answered_own, passed_own = send_forged(net, client.ns, own)
        answered_foreign, passed_foreign = send_forged(net, client.ns, foreign)
        violated = answered_foreign or passed_foreign > 0
        record(ledger, "mid-online forging", violated)
        assert not violated
        assert answered_own and passed_own > 0, "its own address passes once the rules are in"
    finally:
        sim.xenstore.freeze_on = None
        sim.xenstore.thaw()
        assert proc.wait(timeout=30) == 0
        assert sim.vif_route("offline", client).returncode == 0
        _static_gateways(client, GATEWAY, GATEWAY6)


# --- client to client -------------------------------------------------------


def test_a_client_cannot_reach_another_directly(net: Net, ledger: Ledger) -> None:
    """A to B: refused by the netvm's forward chain; even an on-link route
    to B gets the netvm's MAC (proxy ARP), never B's, so there is no path
    around the netvm; once the administrator allows it in custom-forward,
    it flows, through the netvm."""
    sim, a, b = net.sim, net.a, net.b
    label = f"{a.vif} to {b.vif}"
    net.leaving.add(label, "iifname", a.vif, "oifname", b.vif)
    before = net.leaving.read(label)

    reached = _ping(a.ns, str(a.ipv4), str(b.ipv4))
    record(ledger, "client to client through the default rules", reached)
    assert not reached and net.leaving.read(label) == before

    a.ns.sh(f"ip route add {b.ipv4}/32 dev eth0")
    try:
        reached = _ping(a.ns, str(a.ipv4), str(b.ipv4))
        macs = {n.get("lladdr") for n in a.ns.ip_json("neigh", "show", "dev", "eth0") if n.get("lladdr")}
        record(ledger, "client to client on-link", reached or b.mac in macs)
        assert not reached and b.mac not in macs, macs
    finally:
        a.ns.sh(f"ip route del {b.ipv4}/32 dev eth0", check=False)

    rule = ["ip", "qubes", "custom-forward", "iifname", a.vif, "oifname", b.vif, "accept"]
    sim.netvm.run(["nft", "add", "rule", *rule])
    try:
        assert _ping(a.ns, str(a.ipv4), str(b.ipv4)), "allowed by the administrator, it flows"
        assert net.leaving.read(label) > before, "and it flowed through the netvm"
    finally:
        sim.netvm.run(["nft", "flush", "chain", "ip", "qubes", "custom-forward"])
