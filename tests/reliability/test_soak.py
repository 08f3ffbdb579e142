"""Soak: long runs of the same events leave nothing behind.

Kernel state (set elements, routes, neighbours, addresses, namespaces,
conntrack entries) after every cycle equals the state before the first;
a process running the events through the library (as a daemon would)
keeps a flat count of descriptors and threads and flat memory; the
long-lived watch mode of qubes-setup-dnat-to-ns likewise.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

from qubes_netsim.netns import namespaces, wait_for
from qubes_netsim.topology import UPSTREAM, SimNetvm
from tests import oracle
from tests.reliability.conftest import Ledger, size

HERE = os.path.dirname(__file__)
RSS_SLACK_KB = 2048  # the allocator's own variation, not a leak


def _namespaces(prefix: str) -> set[str]:
    return {n for n in namespaces() if n.startswith(prefix) or n.startswith("vif12.0")}


def _conntrack_count(sim: SimNetvm) -> int:
    return int(sim.netvm.sysctl("net/netfilter/nf_conntrack_count") or 0)


def test_many_cycles_of_the_entry_point_leave_no_residue(sim: SimNetvm, ledger: Ledger) -> None:
    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")
    cycles = size(40, 1000)
    # One cycle first: online sets per-interface sysctls (proxy_arp, proxy_ndp)
    # that offline leaves alone, as the interface itself goes away under Xen.
    assert sim.vif_route("online", client).returncode == 0
    assert sim.vif_route("offline", client).returncode == 0
    before = oracle.snapshot(sim.netvm, (client.vif,))
    namespaces = _namespaces(sim.prefix)
    conntrack = _conntrack_count(sim)
    leaks = 0
    for n in range(cycles):
        assert sim.vif_route("online", client).returncode == 0
        if n % 10 == 0:
            assert client.ping(UPSTREAM), "traffic creates conntrack entries to be purged"
        assert sim.vif_route("offline", client).returncode == 0
        if n % 10 == 0 or n == cycles - 1:
            after = oracle.snapshot(sim.netvm, (client.vif,))
            differs = [key for key in before if after.get(key) != before[key]]
            differs += ["namespaces"] * (_namespaces(sim.prefix) != namespaces)
            differs += ["conntrack"] * (_conntrack_count(sim) > conntrack)
            leaks += bool(differs)
            assert not differs, f"residue after cycle {n}: {differs}"
    ledger.record("soak", "entry point cycles", cycles, leaks=leaks)


def test_many_events_in_one_process_keep_resources_flat(sim: SimNetvm, ledger: Ledger) -> None:
    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")
    cycles = size(40, 1000)
    env = sim.env(client) | {"PYTHONPATH": os.path.dirname(os.path.dirname(HERE))}
    result = sim.netvm.run([sys.executable, os.path.join(HERE, "soak_runner.py"), str(cycles), sim.hooks_dir],
                           env=env, check=False, timeout=1800)
    assert result.returncode == 0, result.stderr
    marks = json.loads(result.stdout.strip().splitlines()[-1])
    warm, end = marks["warm"], marks["end"]
    leaks = int(end["fds"] > warm["fds"]) + int(end["threads"] > warm["threads"])
    leaks += int(end["rss_kb"] - warm["rss_kb"] > RSS_SLACK_KB)
    ledger.record("soak", "library cycles in one process", cycles, leaks=leaks)
    ledger.note(f"{cycles} cycles in one process: fds {warm['fds']} -> {end['fds']}, threads {warm['threads']} -> "
                f"{end['threads']}, RSS {warm['rss_kb']} -> {end['rss_kb']} kB")
    assert end["fds"] == warm["fds"] and end["threads"] == warm["threads"], marks
    assert end["rss_kb"] - warm["rss_kb"] <= RSS_SLACK_KB, marks


def _watch_resources(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as handle:
        rss = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
    return len(os.listdir(f"/proc/{pid}/fd")), rss


def test_watch_mode_stays_flat(sim: SimNetvm, ledger: Ledger) -> None:
    changes = size(20, 300)
    servers = ("198.51.100.1", "198.51.100.53")
    sim.write_resolv_conf(f"nameserver {servers[0]}\n")
    watcher = sim.netvm.popen(sim.dnat_argv("--watch"), env=sim.env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)

    def chain_points_at(server: str) -> bool:
        return sim.dnat_chain().count(server) == 4

    try:
        wait_for(lambda: chain_points_at(servers[0]), timeout=15, what="the first chain")
        warm = None
        for n in range(1, changes + 1):
            server = servers[n % 2]
            sim.write_resolv_conf(f"nameserver {server}\n")
            wait_for(functools.partial(chain_points_at, server), timeout=15, what=f"change {n}")
            if n == 10:
                warm = _watch_resources(watcher.pid)
        end = _watch_resources(watcher.pid)
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    assert warm is not None
    leaks = int(end[0] > warm[0]) + int(end[1] - warm[1] > RSS_SLACK_KB)
    ledger.record("soak", "watch-mode changes", changes, leaks=leaks)
    ledger.note(f"{changes} DNS changes under --watch: fds {warm[0]} -> {end[0]}, RSS {warm[1]} -> {end[1]} kB")
    assert end[0] == warm[0], f"descriptors {warm[0]} -> {end[0]}"
    assert end[1] - warm[1] <= RSS_SLACK_KB, f"memory {warm[1]} -> {end[1]} kB"
