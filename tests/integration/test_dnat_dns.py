"""qubes-setup-dnat-to-ns with packets: client queries to the virtual DNS
addresses answered (UDP and TCP) through the DNAT by dnsmasq upstream, and
the chain following every change of the uplink's DNS."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from qubes_netsim.dbus import FakeResolved, PrivateBus, set_dns
from qubes_netsim.netns import wait_for
from qubes_netsim.topology import VIRTUAL_DNS, Client, SimNetvm

SERVER_A, SERVER_B = "198.51.100.1", "198.51.100.53"
ANSWER_A, ANSWER_B = "192.0.2.1", "192.0.2.2"  # what each server says who.test is
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dispatcher_hook() -> str:
    """The hook under test: the one in QUBES_NETSIM_BIN when that directory
    has it (tests/package/roundtrip.sh links the installed hook there), else
    the source tree's."""
    installed = os.path.join(os.environ.get("QUBES_NETSIM_BIN", ""), "qubes-nmhook")
    if os.environ.get("QUBES_NETSIM_BIN") and os.path.exists(installed):
        return installed
    return os.path.join(REPO, "dispatcher", "qubes-nmhook")


@pytest.fixture
def dns(sim: SimNetvm) -> Iterator[tuple[SimNetvm, Client]]:
    sim.start_dns({"who.test": ANSWER_A}, SERVER_A)
    sim.start_dns({"who.test": ANSWER_B}, SERVER_B)
    client = sim.add_client(12, "10.137.0.12")
    assert sim.vif_route("online", client).returncode == 0
    yield sim, client


def resolve(client: Client, server: str, *, tcp: bool = False) -> str | None:
    argv = ["dig", "+short", "+time=1", "+tries=1", f"@{server}", "who.test"]
    if tcp:
        argv.insert(1, "+tcp")
    result = client.ns.run(argv, check=False, timeout=10)
    answer = result.stdout.strip()
    return answer if result.returncode == 0 and answer else None


def answers(client: Client) -> dict[tuple[str, str], str | None]:
    return {
        (virtual, proto): resolve(client, virtual, tcp=proto == "tcp")
        for virtual in VIRTUAL_DNS
        for proto in ("udp", "tcp")
    }


def dns_packets_upstream(sim: SimNetvm) -> Callable[[], int]:
    """Count DNS packets reaching the upstream host (the uplink side)."""
    sim.upstream.run(["nft", ("add table inet obs;"
                              " add chain inet obs pre { type filter hook prerouting priority -500; };"
                              "add rule inet obs pre udp dport 53 counter;"
                              " add rule inet obs pre tcp dport 53 counter")])

    return lambda: sim.upstream.counter_packets("inet", "obs", "pre")


def fake_systemctl(sim: SimNetvm) -> str:
    """A systemctl first in PATH that records its arguments and, at that
    moment, the kernel's dnat-dns chain. Returns the log path."""
    bindir = os.path.join(sim.workdir, "fakebin")
    os.makedirs(bindir, exist_ok=True)
    log = os.path.join(sim.workdir, "systemctl.log")
    path = os.path.join(bindir, "systemctl")
    with open(path, "w") as handle:
        handle.write(f'#!/bin/sh\necho "systemctl $*" >> {log}\nnft list chain ip qubes dnat-dns >> {log} 2>&1\n')
    os.chmod(path, stat.S_IRWXU)
    return log


def env_with_fakes(sim: SimNetvm) -> dict[str, str]:
    env = sim.env()
    env["PATH"] = os.path.join(sim.workdir, "fakebin") + ":" + env["PATH"]
    return env


def read(path: str) -> str:
    return open(path).read() if os.path.exists(path) else ""


# --- the basics -----------------------------------------------------------


def test_both_virtual_addresses_answer_over_udp_and_tcp(dns: tuple[SimNetvm, Client]) -> None:
    sim, client = dns
    sim.write_resolv_conf(f"nameserver {SERVER_A}\n")

    result = sim.dnat()

    assert result.returncode == 0, result.stderr
    assert answers(client) == {key: ANSWER_A for key in answers(client)}


def test_two_upstreams_are_paired_in_order(dns: tuple[SimNetvm, Client]) -> None:
    sim, client = dns
    sim.write_resolv_conf(f"nameserver {SERVER_A}\nnameserver {SERVER_B}\n")

    assert sim.dnat().returncode == 0

    assert resolve(client, VIRTUAL_DNS[0]) == ANSWER_A
    assert resolve(client, VIRTUAL_DNS[1]) == ANSWER_B
    assert resolve(client, VIRTUAL_DNS[1], tcp=True) == ANSWER_B


def test_unchanged_input_exits_100_and_leaves_the_kernel_alone(dns: tuple[SimNetvm, Client]) -> None:
    sim, _ = dns
    assert sim.dnat().returncode == 0
    before = sim.dnat_chain(handles=True)  # with handles: a replacement would renumber them

    result = sim.dnat()

    assert result.returncode == 100, result.stderr
    assert sim.dnat_chain(handles=True) == before


def test_no_usable_upstream_refuses_dns_to_both_addresses(dns: tuple[SimNetvm, Client]) -> None:
    sim, client = dns
    seen_upstream = dns_packets_upstream(sim)
    sim.write_resolv_conf("nameserver 127.0.0.53\nnameserver ::1\nnameserver 224.0.0.251\n")

    result = sim.dnat()

    assert result.returncode == 0, result.stderr
    assert "DNS to the IPv4 virtual addresses is refused" in result.stderr
    assert all(answer is None for answer in answers(client).values())
    assert seen_upstream() == 0, "no query may leave the netvm untranslated"
    assert "dnat to" not in sim.dnat_chain()
    refusals = sim.netvm.run(["nft", "list", "chain", "ip", "qubes", "dnat-dns-refuse"]).stdout
    assert refusals.count("reject") == 4 and refusals.count("reject with tcp reset") == 2


def test_loopback_stub_is_skipped_with_a_log_line(dns: tuple[SimNetvm, Client]) -> None:
    sim, client = dns
    sim.write_resolv_conf(f"nameserver 127.0.0.53\nnameserver {SERVER_B}\n")

    result = sim.dnat()

    assert "skipping 127.0.0.53" in result.stderr
    assert resolve(client, VIRTUAL_DNS[0]) == ANSWER_B
    assert resolve(client, VIRTUAL_DNS[1]) == ANSWER_B


def test_garbage_in_resolv_conf_is_skipped(dns: tuple[SimNetvm, Client]) -> None:
    sim, client = dns
    sim.write_resolv_conf("nameserver\nnameserver 1.2.3.4.5\nnameserver }; flush ruleset\n"
                          f"\x00\xff binary\nnameserver {SERVER_A}\n")

    result = sim.dnat()

    assert result.returncode == 0, result.stderr
    assert "not an address" in result.stderr
    assert resolve(client, VIRTUAL_DNS[1]) == ANSWER_A


def test_bad_virtual_dns_in_qubesdb_is_an_error_and_keeps_the_old_chain(dns: tuple[SimNetvm, Client]) -> None:
    sim, _ = dns
    assert sim.dnat().returncode == 0
    before = sim.dnat_chain(handles=True)
    sim.qubesdb.write("/qubes-netvm-secondary-dns", "10.139.1.2; drop")

    result = sim.dnat()

    assert result.returncode == 1
    assert result.stderr.strip().endswith("/qubes-netvm-secondary-dns: bad address '10.139.1.2; drop'")
    assert sim.dnat_chain(handles=True) == before


def test_status_and_dry_run(dns: tuple[SimNetvm, Client]) -> None:
    sim, _ = dns
    sim.write_resolv_conf(f"nameserver {SERVER_A}\n")
    before = sim.dnat_chain(handles=True)

    dry = sim.dnat("--dry-run")
    status = sim.dnat("--status")

    assert dry.returncode == 0
    assert f"ip daddr 10.139.1.1 udp dport 53 dnat to {SERVER_A}" in dry.stdout
    assert sim.dnat_chain(handles=True) == before
    assert f"10.139.1.1 -> {SERVER_A} ({sim.resolv_conf} line 1)" in status.stdout
    assert "differ (run" in status.stdout
    assert sim.dnat().returncode == 0
    assert "up to date" in sim.dnat("--status").stdout


# --- the dispatcher and the firewall reload --------------------------------


def test_dispatcher_follows_an_upstream_change(dns: tuple[SimNetvm, Client]) -> None:
    sim, client = dns
    log = fake_systemctl(sim)
    wrapper = os.path.join(sim.workdir, "setup-dnat")
    with open(wrapper, "w") as handle:
        handle.write("#!/bin/sh\nexec " + " ".join(sim.dnat_argv()) + ' "$@"\n')
    os.chmod(wrapper, stat.S_IRWXU)
    env = env_with_fakes(sim) | {"QUBES_SETUP_DNAT_TO_NS": wrapper}
    hook = [dispatcher_hook(), "eth0"]

    sim.write_resolv_conf(f"nameserver {SERVER_A}\n")
    assert sim.netvm.run(hook + ["up"], env=env).returncode == 0
    assert resolve(client, VIRTUAL_DNS[0]) == ANSWER_A
    assert "try-restart qubes-updates-proxy.service" in read(log)

    sim.write_resolv_conf(f"nameserver {SERVER_B}\n")
    assert sim.netvm.run(hook + ["dhcp4-change"], env=env).returncode == 0
    assert resolve(client, VIRTUAL_DNS[0]) == ANSWER_B
    assert resolve(client, VIRTUAL_DNS[1], tcp=True) == ANSWER_B
    assert read(log).count("try-restart qubes-updates-proxy.service") == 2

    # `nmcli device reapply` dispatches only `reapply`: followed too.
    sim.write_resolv_conf(f"nameserver {SERVER_A}\n")
    assert sim.netvm.run(hook + ["reapply"], env=env).returncode == 0
    assert resolve(client, VIRTUAL_DNS[1]) == ANSWER_A
    sim.write_resolv_conf(f"nameserver {SERVER_B}\n")
    assert sim.netvm.run(hook + ["reapply"], env=env).returncode == 0
    assert read(log).count("try-restart qubes-updates-proxy.service") == 4

    # Unchanged (exit 100): no restart of the updates proxy.
    assert sim.netvm.run(hook + ["dns-change"], env=env).returncode == 0
    assert read(log).count("try-restart qubes-updates-proxy.service") == 4

    # Other actions: the tool does not even run.
    sim.write_resolv_conf(f"nameserver {SERVER_A}\n")
    assert sim.netvm.run(hook + ["connectivity-change"], env=env).returncode == 0
    assert resolve(client, VIRTUAL_DNS[0]) == ANSWER_B


def test_firewall_reload_is_requested_after_the_commit(dns: tuple[SimNetvm, Client]) -> None:
    sim, _ = dns
    log = fake_systemctl(sim)
    open(os.path.join(sim.service_dir, "qubes-firewall"), "w").close()
    sim.write_resolv_conf(f"nameserver {SERVER_B}\n")

    assert sim.dnat(env=env_with_fakes(sim)).returncode == 0

    recorded = read(log)
    assert "systemctl --no-block try-reload-or-restart qubes-firewall.service" in recorded
    # What systemctl saw in the kernel when it was asked: the new chain.
    assert f"dnat to {SERVER_B}" in recorded


def test_no_firewall_reload_without_its_service(dns: tuple[SimNetvm, Client]) -> None:
    sim, _ = dns
    log = fake_systemctl(sim)
    assert sim.dnat(env=env_with_fakes(sim)).returncode == 0
    assert "qubes-firewall" not in read(log)


# --- systemd-resolved over D-Bus -------------------------------------------


@pytest.fixture
def bus(dns: tuple[SimNetvm, Client]) -> Iterator[PrivateBus]:
    sim, _ = dns
    private = PrivateBus().start()
    sim.bus_address = private.address
    try:
        yield private
    finally:
        private.stop()


def test_resolved_global_entries_alone_when_there_are_any(dns: tuple[SimNetvm, Client], bus: PrivateBus) -> None:
    """A global server beside per-link ones (Tailscale's 100.100.100.100 beside
    the LAN's): every query goes to the global one, none bypasses it."""
    sim, client = dns
    sim.write_resolv_conf("nameserver 127.0.0.53\n")  # the stub, as with resolved
    fake = FakeResolved(bus, [(2, SERVER_B), (0, SERVER_A), (2, "2001:db8:100::53")]).start()
    try:
        result = sim.dnat()
        status = sim.dnat("--status").stdout
    finally:
        fake.stop()

    assert result.returncode == 0, result.stderr
    assert answers(client) == {key: ANSWER_A for key in answers(client)}
    assert f"10.139.1.1 -> {SERVER_A} (systemd-resolved, global)" in status
    assert f"10.139.1.2 -> {SERVER_A} (systemd-resolved, global)" in status
    assert "2 per-link server(s) ignored" in result.stderr


def test_resolved_per_link_entries_alone(dns: tuple[SimNetvm, Client], bus: PrivateBus) -> None:
    sim, client = dns
    sim.write_resolv_conf(f"nameserver {SERVER_A}\n")
    fake = FakeResolved(bus, [(3, SERVER_B)]).start()
    try:
        assert sim.dnat().returncode == 0
    finally:
        fake.stop()
    assert resolve(client, VIRTUAL_DNS[0]) == ANSWER_B, "resolved wins over resolv.conf"


@pytest.mark.parametrize("mode", ["error", "wrong-type", "silent"])
def test_broken_resolved_falls_back_to_resolv_conf(dns: tuple[SimNetvm, Client], bus: PrivateBus, mode: str) -> None:
    sim, client = dns
    sim.write_resolv_conf(f"nameserver {SERVER_B}\n")
    fake = FakeResolved(bus, [(0, SERVER_A)]).start()
    fake.mode = mode
    try:
        result = sim.dnat("--timeout", "0.5")
    finally:
        fake.stop()
    assert result.returncode == 0, result.stderr
    assert resolve(client, VIRTUAL_DNS[0]) == ANSWER_B


def test_bus_without_resolved_falls_back(dns: tuple[SimNetvm, Client], bus: PrivateBus) -> None:
    sim, client = dns
    sim.write_resolv_conf(f"nameserver {SERVER_B}\n")
    assert sim.dnat().returncode == 0
    assert resolve(client, VIRTUAL_DNS[1]) == ANSWER_B


# --- watch mode --------------------------------------------------------------


def _mapped_to(sim: SimNetvm, server: str) -> bool:
    return sim.dnat_chain(handles=True).count(f"dnat to {server}") == 4


def test_watch_follows_resolv_conf_and_resolved_within_a_second(dns: tuple[SimNetvm, Client], bus: PrivateBus) -> None:
    sim, client = dns
    sim.write_resolv_conf(f"nameserver {SERVER_A}\n")
    watcher = sim.netvm.popen(sim.dnat_argv("--watch"), env=sim.env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    fake = None
    try:
        wait_for(lambda: _mapped_to(sim, SERVER_A), timeout=10, what="the initial chain")

        started = time.monotonic()
        sim.write_resolv_conf(f"nameserver {SERVER_B}\n")
        wait_for(lambda: _mapped_to(sim, SERVER_B), timeout=5, what="the chain after a resolv.conf change")
        resolv_conf_latency = time.monotonic() - started
        assert resolve(client, VIRTUAL_DNS[0]) == ANSWER_B

        # resolved appears on the bus, then its servers change.
        fake = FakeResolved(bus, [(0, SERVER_A)]).start()
        wait_for(lambda: _mapped_to(sim, SERVER_A), timeout=5, what="the chain once resolved appears")
        started = time.monotonic()
        set_dns(bus, [(0, SERVER_B)])
        wait_for(lambda: _mapped_to(sim, SERVER_B), timeout=5, what="the chain after PropertiesChanged")
        resolved_latency = time.monotonic() - started
        assert resolve(client, VIRTUAL_DNS[1], tcp=True) == ANSWER_B
    finally:
        if fake is not None:
            fake.stop()
        watcher.terminate()
        _, err = watcher.communicate(timeout=10)
    print(f"watch latency: resolv.conf {resolv_conf_latency * 1000:.0f} ms, resolved {resolved_latency * 1000:.0f} ms")
    assert resolv_conf_latency < 1.0 and resolved_latency < 1.0, err


def _reloaded(old: str, new: str) -> Callable[[SimNetvm], object]:
    """The dnat-dns chain reloaded by hand with ``old`` replaced by ``new``
    in its listing: as many rules as before, one thing different."""
    def edit(sim: SimNetvm) -> None:
        listing = sim.dnat_chain()
        assert old in listing
        sim.netvm.run(["nft", "-f", "-"], input_="delete chain ip qubes dnat-dns\n" + listing.replace(old, new, 1))
    return edit


HAND_EDITS: dict[str, Callable[[SimNetvm], object]] = {
    "rule appended": lambda sim: sim.netvm.run(["nft", "add rule ip qubes dnat-dns udp dport 5353 accept"]),
    "rule inserted first": lambda sim: sim.netvm.run(
        ["nft", f"insert rule ip qubes dnat-dns ip daddr {VIRTUAL_DNS[0]} udp dport 53 counter accept"]),
    "rules flushed": lambda sim: sim.netvm.run(["nft", "flush chain ip qubes dnat-dns"]),
    "one target changed": _reloaded(f"dnat to {SERVER_B}", "dnat to 198.51.100.99"),
    "one port changed": _reloaded("tcp dport 53", "tcp dport 5353"),
    "priority changed": _reloaded("priority dstnat;", "priority dstnat + 1;"),
    "refusal chain added to": lambda sim: sim.netvm.run(["nft", "add rule ip qubes dnat-dns-refuse tcp dport 53 drop"]),
}


@pytest.mark.parametrize("edit", list(HAND_EDITS))
def test_a_hand_edit_of_the_chains_is_never_taken_as_unchanged(sim: SimNetvm, edit: str) -> None:
    """The exit-100 decision compares the kernel's chains with the computed
    ones in full: any edit by hand is seen and undone (exit 0), then 100."""
    sim.write_resolv_conf(f"nameserver {SERVER_A}\nnameserver {SERVER_B}\n")
    assert sim.dnat().returncode == 0
    assert sim.dnat().returncode == 100
    installed = sim.dnat_chain(), sim.netvm.run(["nft", "list", "chain", "ip", "qubes", "dnat-dns-refuse"]).stdout

    HAND_EDITS[edit](sim)
    assert sim.dnat_chain() != installed[0] or \
        sim.netvm.run(["nft", "list", "chain", "ip", "qubes", "dnat-dns-refuse"]).stdout != installed[1]

    result = sim.dnat()
    assert result.returncode == 0, result.stderr
    assert (sim.dnat_chain(), sim.netvm.run(["nft", "list", "chain", "ip", "qubes", "dnat-dns-refuse"]).stdout) \
        == installed
    assert sim.dnat().returncode == 100
