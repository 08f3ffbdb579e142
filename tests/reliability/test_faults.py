"""Faults during a hotplug: the state is the old one or the new one, and the
next run converges.

For faults the code sees (a daemon hanging, nftables refusing, the interface
vanishing) online rolls back to exactly the old state. SIGKILL gives no
chance to roll back: multi-step netlink changes cannot be atomic, so what is
checked there is that the state fails closed (a link that is up always has
its anti-spoofing elements; nftables changes are whole transactions) and that
rerunning the same command converges to exactly the state of a clean run.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time

import pytest

from qubes_netsim.topology import UPSTREAM, Client, SimNetvm
from qubes_netsim.xenstored import READ, WRITE
from tests import oracle
from tests.integration.fault_runner import fault_argv
from tests.integration.test_vif_rollback import _client
from tests.reliability.conftest import Ledger, size


def _vif_elements(sim: SimNetvm, client: Client) -> set[object]:
    found: set[object] = set()
    for family in ("ip", "ip6"):
        found |= {("allowed", family, e) for e in sim.set_elements(family, "allowed") if e[0] == client.vif}
        addrs = {str(client.ipv4), str(client.ipv6)}
        found |= {("downstream", family, e) for e in sim.set_elements(family, "downstream") if e in addrs}
    return found


def _fails_closed(sim: SimNetvm, client: Client, full_elements: set[object]) -> bool:
    """A link that is up (in group 2) has all its anti-spoofing elements;
    the elements are all there or none (one nftables transaction)."""
    elements = _vif_elements(sim, client)
    if elements not in (set(), full_elements):
        return False
    links = sim.netvm.ip_json("link", "show", "dev", client.vif) if client.vif in oracle.links(sim.netvm) else []
    up = bool(links) and "UP" in links[0].get("flags", []) and links[0].get("group") == "2"
    return not up or elements == full_elements


def test_xenstore_hanging_before_hotplug_status(sim: SimNetvm, ledger: Ledger) -> None:
    client = _client(sim)
    before = oracle.snapshot(sim.netvm, (client.vif,))
    sim.xenstore.freeze_on = (WRITE, f"{sim.xenstore.home()}/{client.xenbus_path}/hotplug-status")

    started = time.monotonic()
    result = sim.vif_route("online", client, "--timeout", "1")
    elapsed = time.monotonic() - started
    sim.xenstore.freeze_on = None
    sim.xenstore.thaw()

    survived = result.returncode == 1 and oracle.snapshot(sim.netvm, (client.vif,)) == before and elapsed < 10
    rerun = sim.vif_route("online", client)
    survived = survived and rerun.returncode == 0 and client.ping(UPSTREAM)
    ledger.record("faults", "xenstore hangs before hotplug-status", survived=int(survived))
    assert result.returncode == 1 and "did not answer within 1 s" in result.stderr
    assert elapsed < 10, "bounded by the time-out"
    assert survived


def test_xenstore_hanging_while_reading_inputs(sim: SimNetvm, ledger: Ledger) -> None:
    client = _client(sim)
    before = oracle.snapshot(sim.netvm, (client.vif,))
    sim.xenstore.freeze_on = (READ, f"{sim.xenstore.home()}/{client.xenbus_path}/mac")
    result = sim.vif_route("online", client, "--timeout", "0.5")
    sim.xenstore.freeze_on = None
    sim.xenstore.thaw()
    survived = result.returncode == 1 and oracle.snapshot(sim.netvm, (client.vif,)) == before
    survived = survived and sim.vif_route("online", client).returncode == 0
    ledger.record("faults", "xenstore hangs while reading", survived=int(survived))
    assert survived, result.stderr


def test_qubesdb_absent(sim: SimNetvm, ledger: Ledger) -> None:
    client = _client(sim)
    assert sim.vif_route("online", client).returncode == 0
    assert sim.vif_route("offline", client).returncode == 0
    before = oracle.snapshot(sim.netvm, (client.vif,))
    sim.qubesdb.stop()
    try:
        online = sim.vif_route("online", client, "--timeout", "0.5")
        unchanged = oracle.snapshot(sim.netvm, (client.vif,)) == before
        error = sim.hotplug_error(client) or ""
    finally:
        sim.restart_qubesdb()
    survived = online.returncode == 1 and unchanged and "QubesDB" in error
    # offline without QubesDB removes all that does not depend on it (the
    # client's elements, routes, neighbours; the link down); the gateway
    # addresses QubesDB named stay until the interface goes, or a rerun.
    assert sim.vif_route("online", client).returncode == 0
    sim.qubesdb.stop()
    try:
        offline = sim.vif_route("offline", client, "--timeout", "0.5")
        after = oracle.snapshot(sim.netvm, (client.vif,))
    finally:
        sim.restart_qubesdb()
    survived = survived and offline.returncode == 0 and after["ruleset"] == before["ruleset"]
    def main_table(routes: list[str]) -> list[str]:
        return [r for r in routes if '"table": "local"' not in r]  # (the gateway address's own route)

    survived = survived and main_table(after["routes"]) == main_table(before["routes"])
    survived = survived and after["neighbours"] == before["neighbours"]
    survived = survived and not after["links"][client.vif]["up"]
    rerun = sim.vif_route("offline", client)
    survived = survived and rerun.returncode == 0 and oracle.snapshot(sim.netvm, (client.vif,)) == before
    ledger.record("faults", "qubesdb absent", survived=int(survived))
    assert survived, (online.stderr, offline.stderr)


def test_nftables_refusing_the_transaction(sim: SimNetvm, ledger: Ledger) -> None:
    client = _client(sim)
    # The kernel refuses the commit: a downstream set that is full.
    sim.netvm.run(["nft", "flush ruleset"])
    sim.netvm.run(["nft", "-f", "-"], input_="""
table ip6 qubes {
    set downstream { type ipv6_addr; size 1; elements = { fd09:24ef:4179::99 } }
    set allowed { type ifname . ipv6_addr; }
    chain antispoof { }
    chain prerouting { type filter hook prerouting priority raw; }
    chain custom-input { }
    chain custom-forward { }
    chain _icmpv6 { }
    chain input { type filter hook input priority filter; }
    chain forward { type filter hook forward priority filter; }
    chain postrouting { type nat hook postrouting priority srcnat; }
}
""")
    before = oracle.snapshot(sim.netvm, (client.vif,))
    result = sim.vif_route("online", client)
    survived = result.returncode == 1 and oracle.snapshot(sim.netvm, (client.vif,)) == before
    survived = survived and "nftables refused" in (sim.hotplug_error(client) or "")
    ledger.record("faults", "nftables refuses", survived=int(survived))
    assert survived, result.stderr


@pytest.mark.parametrize("step", [3, 5, 7, 9])
def test_interface_disappearing_between_steps(sim: SimNetvm, ledger: Ledger, step: int) -> None:
    client = _client(sim)
    baseline = oracle.ruleset(sim.netvm)
    result = sim.netvm.run(fault_argv(sim, step, "online", mode="delete-link"), check=False, env=sim.env(client))
    left = _vif_elements(sim, client)
    offline = sim.vif_route("offline", client)
    survived = (result.returncode == 1 and not left and offline.returncode == 0
                and oracle.ruleset(sim.netvm) == baseline)
    ledger.record("faults", f"vif vanishes before step {step}", survived=int(survived))
    assert result.returncode == 1, result.stderr
    assert not left, "the undo removed the elements of a vif that is gone"
    assert survived, offline.stderr


def _kill_after(proc: subprocess.Popen[str], delay: float) -> None:
    deadline = time.monotonic() + delay
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)  # fault timing, not synchronisation
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)


def test_sigkill_at_random_points_then_rerun_converges(sim: SimNetvm, ledger: Ledger) -> None:
    client = _client(sim)
    rng = random.Random(20261123)
    # Reference states of clean runs.
    baseline = oracle.snapshot(sim.netvm, (client.vif,))
    assert sim.vif_route("online", client).returncode == 0
    online_state = oracle.snapshot(sim.netvm, (client.vif,))
    full = _vif_elements(sim, client)
    started = time.monotonic()
    assert sim.vif_route("offline", client).returncode == 0
    duration = time.monotonic() - started
    offline_state = oracle.snapshot(sim.netvm, (client.vif,))
    assert offline_state["ruleset"] == baseline["ruleset"]

    kills = size(12, 60)
    failures = []
    landed = 0
    for n in range(kills):
        command = rng.choice(("online", "offline"))
        proc = sim.netvm.popen(sim.vif_route_argv(command), env=sim.env(client), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        _kill_after(proc, rng.uniform(0, duration * 1.2))
        landed += proc.wait(timeout=30) == -signal.SIGKILL
        closed = _fails_closed(sim, client, full)
        rerun = sim.vif_route(command, client)
        expected = online_state if command == "online" else offline_state
        converged = rerun.returncode == 0 and oracle.snapshot(sim.netvm, (client.vif,)) == expected
        ledger.record("faults", f"SIGKILL #{n} during {command}", survived=int(closed and converged))
        if not (closed and converged):
            failures.append((n, command, closed, rerun.stderr))
    assert not failures
    assert landed >= kills // 2, f"only {landed} of {kills} kills hit a running process"


def test_two_processes_for_the_same_vif(sim: SimNetvm, ledger: Ledger) -> None:
    client = _client(sim)
    assert sim.vif_route("online", client).returncode == 0
    online_state = oracle.snapshot(sim.netvm, (client.vif,))
    assert sim.vif_route("offline", client).returncode == 0
    offline_state = oracle.snapshot(sim.netvm, (client.vif,))
    failures = []
    for n, pair in enumerate([("online", "online"), ("online", "offline"), ("offline", "online")] * size(2, 6)):
        results: list[int] = []

        def run(command: str, results: list[int] = results) -> None:
            results.append(sim.netvm.run(sim.vif_route_argv(command), check=False, env=sim.env(client)).returncode)

        threads = [threading.Thread(target=run, args=(c,)) for c in pair]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        state = oracle.snapshot(sim.netvm, (client.vif,))
        wanted = [online_state] if pair == ("online", "online") else [online_state, offline_state]
        ok = results == [0, 0] and state in wanted
        ledger.record("faults", f"two at once #{n} {pair}", survived=int(ok))
        if not ok:
            failures.append((pair, results))
        sim.vif_route("offline", client)
    assert not failures
