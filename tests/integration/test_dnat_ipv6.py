"""IPv6 virtual DNS, and refusing at once what no server can answer.

QubesDB holds the IPv6 virtual addresses (fd09:24ef:4179::a8b:1 and ::a8b:2,
as Qubes reserves them) beside the IPv4 ones; a dual-stack client queries
all four through the netvm. dnsmasq upstreams on IPv4 and IPv6 answer
``who.test`` differently, so the answer tells which server was used.

A family without a usable server must fail at once (a resolver then moves
on to the other family instead of waiting seconds): a probe in the client
measures the time from sending to the ICMP(v6) port unreachable (UDP) or the
reset (TCP), and the upstream counts that no DNS packet reached it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator

import pytest

from qubes_netsim.topology import UPSTREAM, UPSTREAM6, VIRTUAL_DNS, Client, SimNetvm

from .test_dnat_dns import dns_packets_upstream, resolve

VIRTUAL_DNS6 = ("fd09:24ef:4179::a8b:1", "fd09:24ef:4179::a8b:2")
SERVER4, SERVER6, SERVER6_B = UPSTREAM, UPSTREAM6, "2001:db8:100::53"
ANSWER4, ANSWER6, ANSWER6_B = "192.0.2.4", "192.0.2.6", "192.0.2.66"
REFUSAL_BOUND = 0.1  # seconds: the "fails in under 100 ms"

# Run in the client: one UDP query and one TCP connection to ADDRESS port 53;
# prints {"udp": [outcome, seconds], "tcp": [outcome, seconds]}.
PROBE = r"""
import errno, json, socket, struct, sys, time
address = sys.argv[1]
family = socket.AF_INET6 if ":" in address else socket.AF_INET
query = struct.pack(">HHHHHH", 0x5151, 0x0100, 1, 0, 0, 0) + b"\x03who\x04test\x00" + struct.pack(">HH", 1, 1)
out = {}
udp = socket.socket(family, socket.SOCK_DGRAM)
udp.settimeout(3)
udp.connect((address, 53))
start = time.monotonic()
udp.send(query)
try:
    udp.recv(512)
    out["udp"] = ["answer", time.monotonic() - start]
except ConnectionRefusedError:
    out["udp"] = ["refused", time.monotonic() - start]
except socket.timeout:
    out["udp"] = ["timeout", time.monotonic() - start]
except OSError as exc:  # another ICMP error: unreachable, prohibited...
    out["udp"] = [errno.errorcode.get(exc.errno or 0, str(exc)), time.monotonic() - start]
tcp = socket.socket(family, socket.SOCK_STREAM)
tcp.settimeout(3)
start = time.monotonic()
try:
    tcp.connect((address, 53))
    out["tcp"] = ["connected", time.monotonic() - start]
except ConnectionRefusedError:
    out["tcp"] = ["refused", time.monotonic() - start]
except socket.timeout:
    out["tcp"] = ["timeout", time.monotonic() - start]
except OSError as exc:  # another ICMP error: unreachable, prohibited...
    out["tcp"] = [errno.errorcode.get(exc.errno or 0, str(exc)), time.monotonic() - start]
print(json.dumps(out))
"""


def probe(client: Client, address: str) -> dict[str, tuple[str, float]]:
    result = client.ns.run([sys.executable, "-c", PROBE, address], timeout=20)
    return {k: (v[0], float(v[1])) for k, v in json.loads(result.stdout).items()}


@pytest.fixture
def dual(sim: SimNetvm) -> Iterator[tuple[SimNetvm, Client]]:
    sim.start_dns({"who.test": ANSWER4}, SERVER4)
    sim.start_dns({"who.test": ANSWER6}, SERVER6)
    sim.start_dns({"who.test": ANSWER6_B}, SERVER6_B)
    sim.qubesdb.write("/qubes-netvm-primary-dns6", VIRTUAL_DNS6[0])
    sim.qubesdb.write("/qubes-netvm-secondary-dns6", VIRTUAL_DNS6[1])
    client = sim.add_client(14, "10.137.0.14", "fd09:24ef:4179::a89:e")
    result = sim.vif_route("online", client)
    assert result.returncode == 0, result.stderr
    yield sim, client


def answers(client: Client, virtual: tuple[str, ...]) -> set[str | None]:
    return {resolve(client, v, tcp=tcp) for v in virtual for tcp in (False, True)}


def chain(sim: SimNetvm, family: str, name: str, handles: bool = False) -> str:
    return sim.netvm.run(["nft", *(["-a"] if handles else []), "list", "chain", family, "qubes", name],
                         check=False).stdout


def assert_refused_fast(client: Client, virtual: tuple[str, ...], what: str) -> None:
    for address in virtual:
        outcome = probe(client, address)
        print(f"\nrefusal {what} {address}: UDP {outcome['udp'][1] * 1000:.1f} ms, "
              f"TCP {outcome['tcp'][1] * 1000:.1f} ms")
        for proto in ("udp", "tcp"):
            kind, seconds = outcome[proto]
            assert kind == "refused", f"{address} {proto}: {kind} after {seconds:.3f} s"
            assert seconds < REFUSAL_BOUND, f"{address} {proto}: refused only after {seconds:.3f} s"


def test_dual_stack_uplink_answers_through_both_families(dual: tuple[SimNetvm, Client]) -> None:
    sim, client = dual
    sim.write_resolv_conf(f"nameserver {SERVER4}\nnameserver {SERVER6}\nnameserver {SERVER6_B}\n")

    result = sim.dnat()

    assert result.returncode == 0, result.stderr
    assert answers(client, VIRTUAL_DNS) == {ANSWER4}
    # Paired in order per family: ::a8b:1 -> the first IPv6 server, ::a8b:2 -> the second.
    assert resolve(client, VIRTUAL_DNS6[0]) == ANSWER6 and resolve(client, VIRTUAL_DNS6[0], tcp=True) == ANSWER6
    assert resolve(client, VIRTUAL_DNS6[1]) == ANSWER6_B and resolve(client, VIRTUAL_DNS6[1], tcp=True) == ANSWER6_B
    status = sim.dnat("--status").stdout
    assert f"{VIRTUAL_DNS6[0]} -> {SERVER6} ({sim.resolv_conf} line 2)" in status
    assert f"{VIRTUAL_DNS[1]} -> {SERVER4} ({sim.resolv_conf} line 1)" in status
    assert status.count("up to date") == 2, status


def test_ipv4_only_uplink_refuses_ipv6_at_once(dual: tuple[SimNetvm, Client]) -> None:
    sim, client = dual
    seen_upstream = dns_packets_upstream(sim)
    sim.write_resolv_conf(f"nameserver {SERVER4}\n")

    result = sim.dnat()

    assert result.returncode == 0, result.stderr
    assert "DNS to the IPv6 virtual addresses is refused" in result.stderr
    assert answers(client, VIRTUAL_DNS) == {ANSWER4}
    before = seen_upstream()
    assert_refused_fast(client, VIRTUAL_DNS6, "IPv6 (IPv4-only uplink)")
    assert answers(client, VIRTUAL_DNS6) == {None}
    assert seen_upstream() == before, "no IPv6 query may leave the netvm untranslated"
    assert "refused (no usable IPv6 upstream server)" in sim.dnat("--status").stdout


def test_ipv6_only_uplink_answers_and_refuses_ipv4_at_once(dual: tuple[SimNetvm, Client]) -> None:
    sim, client = dual
    seen_upstream = dns_packets_upstream(sim)
    sim.write_resolv_conf(f"nameserver {SERVER6}\n")

    assert sim.dnat().returncode == 0

    assert answers(client, VIRTUAL_DNS6) == {ANSWER6}
    before = seen_upstream()
    assert_refused_fast(client, VIRTUAL_DNS, "IPv4 (IPv6-only uplink)")
    assert answers(client, VIRTUAL_DNS) == {None}
    assert seen_upstream() == before, "no IPv4 query may leave the netvm untranslated"


def test_no_upstream_refuses_both_families_and_leaks_nothing(dual: tuple[SimNetvm, Client]) -> None:
    sim, client = dual
    seen_upstream = dns_packets_upstream(sim)
    sim.write_resolv_conf("nameserver 127.0.0.53\nnameserver ::1\nnameserver fe80::1%eth0\nnameserver ff02::fb\n")

    result = sim.dnat()

    assert result.returncode == 0, result.stderr
    assert "skipping fe80::1" in result.stderr and "link-local" in result.stderr
    assert_refused_fast(client, VIRTUAL_DNS, "IPv4 (no upstream)")
    assert_refused_fast(client, VIRTUAL_DNS6, "IPv6 (no upstream)")
    assert answers(client, VIRTUAL_DNS + VIRTUAL_DNS6) == {None}
    assert seen_upstream() == 0


def test_refused_at_once_even_without_any_route(dual: tuple[SimNetvm, Client]) -> None:
    """The uplink gone (no default routes): the kernel's own "unreachable"
    is a soft error UDP sockets ignore; the refusal must not depend on routes."""
    sim, client = dual
    sim.write_resolv_conf("nameserver 127.0.0.53\n")
    assert sim.dnat().returncode == 0
    sim.netvm.sh("ip route del default && ip -6 route del default")

    assert_refused_fast(client, VIRTUAL_DNS, "IPv4 (no route)")
    assert_refused_fast(client, VIRTUAL_DNS6, "IPv6 (no route)")


def test_both_families_in_one_decision(dual: tuple[SimNetvm, Client]) -> None:
    """Exit 100 only when both families match; a change of one family leaves
    the other's chains untouched (same rule handles)."""
    sim, client = dual
    sim.write_resolv_conf(f"nameserver {SERVER4}\nnameserver {SERVER6}\n")
    assert sim.dnat().returncode == 0
    assert sim.dnat().returncode == 100
    ip_before = chain(sim, "ip", "dnat-dns", handles=True)

    sim.write_resolv_conf(f"nameserver {SERVER4}\nnameserver {SERVER6_B}\n")
    assert sim.dnat().returncode == 0

    assert chain(sim, "ip", "dnat-dns", handles=True) == ip_before
    assert answers(client, VIRTUAL_DNS6) == {ANSWER6_B}
    assert sim.dnat().returncode == 100


def test_ipv6_keys_removed_from_qubesdb_remove_the_ipv6_chains(dual: tuple[SimNetvm, Client]) -> None:
    sim, _ = dual
    sim.write_resolv_conf(f"nameserver {SERVER4}\nnameserver {SERVER6}\n")
    assert sim.dnat().returncode == 0
    assert "dnat to 2001:db8:100::1" in chain(sim, "ip6", "dnat-dns")

    sim.qubesdb.rm("/qubes-netvm-primary-dns6")
    sim.qubesdb.rm("/qubes-netvm-secondary-dns6")
    result = sim.dnat()

    assert result.returncode == 0, result.stderr
    assert "not using 1 IPv6 server(s)" in result.stderr
    assert chain(sim, "ip6", "dnat-dns") == "" and chain(sim, "ip6", "dnat-dns-refuse") == ""
    assert "prerouting" in chain(sim, "ip6", "prerouting"), "the rest of the ip6 table stays"
    assert sim.dnat().returncode == 100


def test_without_ipv6_virtual_addresses_ip6_is_not_touched(sim: SimNetvm) -> None:
    sim.write_resolv_conf(f"nameserver {SERVER4}\nnameserver {SERVER6}\n")
    before = sim.netvm.run(["nft", "-a", "list", "table", "ip6", "qubes"]).stdout

    assert sim.dnat().returncode == 0

    assert sim.netvm.run(["nft", "-a", "list", "table", "ip6", "qubes"]).stdout == before
    assert "dnat to 198.51.100.1" in chain(sim, "ip", "dnat-dns")


def test_bad_ipv6_virtual_address_is_an_error_and_changes_nothing(dual: tuple[SimNetvm, Client]) -> None:
    sim, _ = dual
    assert sim.dnat().returncode == 0
    before = sim.netvm.run(["nft", "-s", "-a", "list", "ruleset"]).stdout
    sim.qubesdb.write("/qubes-netvm-secondary-dns6", "fd09::1; flush ruleset")

    result = sim.dnat()

    assert result.returncode == 1
    assert result.stderr.strip().startswith("qubes-setup-dnat-to-ns: /qubes-netvm-secondary-dns6: bad address")
    assert sim.netvm.run(["nft", "-s", "-a", "list", "ruleset"]).stdout == before


def test_dry_run_shows_both_families(dual: tuple[SimNetvm, Client]) -> None:
    sim, _ = dual
    sim.write_resolv_conf(f"nameserver {SERVER4}\n")
    dry = sim.dnat("--dry-run")
    assert dry.returncode == 0
    assert f"ip daddr {VIRTUAL_DNS[0]} udp dport 53 dnat to {SERVER4}" in dry.stdout
    assert f"ip6 daddr {VIRTUAL_DNS6[0]} tcp dport 53 reject with tcp reset" in dry.stdout
    assert chain(sim, "ip6", "dnat-dns") == ""
    assert os.path.exists(sim.resolv_conf)
