"""vif-route-qubes status, reconcile and watch: the whole netvm seen and repaired.

Triggers are the installed systemd files: the drop-ins of the units that
(re)load the base ruleset run ``qubes-vif-reconcile.service``. systemd does
not run here, so ``run_unit_hook`` does what it would: it reads the
drop-in's ExecStartPost and, for the reconcile unit it names, that unit's
ExecStart, and runs it (with the simulation's entry point in place of the
installed path).
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from qubes_netsim.topology import GATEWAY6, UPSTREAM, UPSTREAM6, Client, SimNetvm, bin_path
from tests import oracle
from tests.integration.fault_runner import fault_argv, paused_online

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSTEMD = os.path.join(ROOT, "systemd")
INSTALLED = "/etc/xen/scripts/vif-route-qubes"


def admin(sim: SimNetvm, *args: str) -> subprocess.CompletedProcess[str]:
    return sim.netvm.run(sim.vif_route_argv(*args), env=sim.env(), check=False, timeout=60)


def unit_command(path: str, key: str) -> list[list[str]]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    with open(path) as handle:
        parser.read_string(handle.read())
    raw = [line for line in parser["Service"].get(key, "").splitlines() if line.strip()]
    return [line.lstrip("-").split() for line in raw]


def run_unit_hook(sim: SimNetvm, dropin_unit: str, key: str = "ExecStartPost") -> subprocess.CompletedProcess[str]:
    """What systemd does after (re)loading ``dropin_unit``, with our drop-in installed."""
    (argv,) = unit_command(os.path.join(SYSTEMD, f"{dropin_unit}.d", "50-qubes-vif-reconcile.conf"), key)
    assert argv[0].endswith("systemctl") and argv[-2:] == ["restart", "qubes-vif-reconcile.service"], argv
    (start,) = unit_command(os.path.join(SYSTEMD, "qubes-vif-reconcile.service"), "ExecStart")
    assert start[0] == INSTALLED
    return admin(sim, *start[1:])


@pytest.fixture
def five(sim: SimNetvm) -> Iterator[tuple[SimNetvm, list[Client]]]:
    clients = [sim.add_client(20 + n, f"10.137.0.{20 + n}") for n in range(5)]
    for client in clients:
        assert sim.vif_route("online", client).returncode == 0
    yield sim, clients


def reachable(clients: list[Client]) -> list[bool]:
    return [c.ping(UPSTREAM, wait=0.5) for c in clients]


@pytest.mark.parametrize("unit", ["nftables.service", "qubes-antispoof.service"])
def test_a_ruleset_reload_is_repaired_by_the_trigger(five: tuple[SimNetvm, list[Client]], unit: str) -> None:
    sim, clients = five
    expected = sim.set_elements("ip", "allowed")
    before = oracle.ruleset(sim.netvm)
    assert all(reachable(clients))
    ran = os.path.join(sim.workdir, "hooks-ran")
    hook = os.path.join(sim.hooks_dir, "record")
    with open(hook, "w") as handle:
        handle.write(f"#!/bin/sh\necho \"$@\" >> {ran}\n")
    os.chmod(hook, 0o755)
    # A long-lived connection of a running client, which a reconcile must not forget.
    sim.netvm.run(["conntrack", "-I", "-p", "tcp", "-s", "10.137.0.20", "-d", UPSTREAM, "--sport", "40000",
                   "--dport", "443", "--state", "ESTABLISHED", "--timeout", "600"], check=False)

    sim.netvm.run(["nft", "flush ruleset"])  # what nftables.service's /etc/nftables.conf begins with
    sim.load_base_ruleset()  # qubes-antispoof.service, qubes-iptables.service
    assert not any(reachable(clients)), "the reload cut the clients off"
    status = admin(sim, "status")
    assert status.returncode == 1 and status.stdout.count("drift: missing allowed") == 5, status.stdout

    started = time.monotonic()
    result = run_unit_hook(sim, unit)
    while not all(reachable(clients)):
        assert time.monotonic() - started < 2.0, "clients not restored within 2 s"
    elapsed = time.monotonic() - started
    print(f"ruleset reload -> all 5 clients reachable: {elapsed * 1000:.0f} ms")

    assert result.returncode == 0, result.stdout + result.stderr
    assert all(f"{c.vif}: converged" in result.stdout for c in clients)
    assert "reconcile: 5 changed, 0 failed" in result.stdout
    assert sim.set_elements("ip", "allowed") == expected
    assert oracle.ruleset(sim.netvm) == before  # no duplicates, nothing extra
    assert not os.path.exists(ran), "reconcile re-ran the hooks of configured vifs"
    kept = sim.netvm.run(["conntrack", "-L", "-s", "10.137.0.20"], check=False).stdout
    assert "dport=443" in kept, "reconcile purged a running client's connections"
    again = run_unit_hook(sim, unit, "ExecReload")
    assert "reconcile: 0 changed, 0 failed" in again.stdout
    assert admin(sim, "status").returncode == 0


@pytest.mark.parametrize("kill_at", [1, 2, 3, 5])
def test_a_killed_offline_leaves_an_orphan_that_reconcile_removes(sim: SimNetvm, kill_at: int) -> None:
    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")
    other = sim.add_client(13, "10.137.0.13")
    assert sim.vif_route("online", other).returncode == 0
    before = oracle.snapshot(sim.netvm, (client.vif,))
    assert sim.vif_route("online", client).returncode == 0

    killed = sim.netvm.run(fault_argv(sim, kill_at, "offline", mode="crash"), check=False, env=sim.env(client))
    assert killed.returncode == 137, killed.stderr
    sim.xenstore.rm(f"{sim.xenstore.home()}/backend/vif/12")  # libxl goes on: the backend is gone

    status = admin(sim, "status", "--json")
    assert status.returncode == 1
    report = json.loads(status.stdout)
    verdicts = {v["name"]: v["verdict"] for v in report["vifs"]}
    assert verdicts == {"vif13.0": "ok", "vif12.0": "orphan"}, report

    left = oracle.snapshot(sim.netvm, (client.vif,))
    dry = admin(sim, "--dry-run", "reconcile")
    assert dry.returncode == 0 and "vif12.0: removed orphan" in dry.stdout, dry.stdout + dry.stderr
    assert oracle.snapshot(sim.netvm, (client.vif,)) == left, "a dry run changed something"

    result = admin(sim, "reconcile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vif12.0: removed orphan" in result.stdout
    assert oracle.snapshot(sim.netvm, (client.vif,)) == before
    assert admin(sim, "status").returncode == 0
    assert other.ping(UPSTREAM)


def test_status_shows_drifted_orphaned_failed_and_invalid_vifs(sim: SimNetvm) -> None:
    ok, drifted, failed, orphan, bad = (sim.add_client(20 + n, f"10.137.0.{20 + n}") for n in range(5))
    for client in (ok, drifted, orphan):
        assert sim.vif_route("online", client).returncode == 0
    sim.netvm.sh(f"ip link set {drifted.vif} down")
    home = sim.xenstore.home()
    sim.xenstore.write(f"{home}/{failed.xenbus_path}/hotplug-status", "error")
    sim.xenstore.write(f"{home}/{failed.xenbus_path}/hotplug-error", "nftables refused the transaction")
    sim.xenstore.rm(f"{home}/backend/vif/{orphan.domid}")
    sim.xenstore.write(f"{home}/{bad.xenbus_path}/ip", "10.137.0.24; rm -rf /")

    result = admin(sim, "status")
    print(result.stdout)
    assert result.returncode == 1
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("vif")}
    assert lines[ok.vif].endswith("  ok")
    assert "drift: link down; no route to 10.137.0.21" in lines[drifted.vif]
    assert "failed: nftables refused the transaction" in lines[failed.vif]
    assert "orphan: interface up in group 2; neighbour 10.137.0.23; address 10.137.0.1" in lines[orphan.vif]
    assert "allowed 10.137.0.23" in lines[orphan.vif]
    assert "invalid: " in lines[bad.vif] and "/ip" in lines[bad.vif]
    assert "virtual DNS:" in result.stdout

    only = admin(sim, "status", "--json", ok.vif)
    assert only.returncode == 0 and [v["name"] for v in json.loads(only.stdout)["vifs"]] == [ok.vif]


def test_status_takes_no_lock_an_online_holds(sim: SimNetvm) -> None:
    """A status run while an online is paused holding its locks still completes."""
    client = sim.add_client(12, "10.137.0.12")
    with paused_online(sim, client):
        started = time.monotonic()
        result = admin(sim, "status")
        print(f"status while an online holds its locks: {(time.monotonic() - started) * 1000:.0f} ms")
        assert "vif12.0" in result.stdout and "pending" in result.stdout


def test_status_during_50_concurrent_onlines_delays_none(sim: SimNetvm) -> None:
    domids = list(range(100, 150))
    sim.add_bulk_vifs(domids)

    def onlines() -> list[float]:
        procs = []
        for domid in domids:
            env = sim.env(vif=f"vif{domid}.0", XENBUS_PATH=f"backend/vif/{domid}/0")
            procs.append((time.monotonic(), sim.netvm.popen(sim.vif_route_argv("online"), env=env,
                                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
        times = []
        for began, proc in procs:
            assert proc.wait(timeout=120) == 0, proc.communicate()[1]
            times.append(time.monotonic() - began)
        return times

    alone = onlines()
    for domid in domids:
        env = sim.env(vif=f"vif{domid}.0", XENBUS_PATH=f"backend/vif/{domid}/0")
        assert sim.netvm.run(sim.vif_route_argv("offline"), env=env, check=False).returncode == 0
    statuses = [sim.netvm.popen([bin_path("vif-route-qubes"), "status"], env=sim.env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for _ in range(3)]
    beside = onlines()
    for proc in statuses:
        proc.wait(timeout=120)
    print(f"50 concurrent onlines, slowest: {max(alone) * 1000:.0f} ms alone, "
          f"{max(beside) * 1000:.0f} ms with 3 status runs beside them")
    assert admin(sim, "status").returncode == 0


def test_gateway6_appearing_and_going_reaches_running_clients(sim: SimNetvm) -> None:
    sim.qubesdb.rm("/qubes-netvm-gateway6")
    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")
    assert sim.vif_route("online", client).returncode == 0
    assert not client.ping(UPSTREAM6, wait=0.5)
    watch = sim.netvm.popen([bin_path("vif-route-qubes"), "watch"], env=sim.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        def poll(condition: object, what: str) -> float:
            started = time.monotonic()
            while not condition():  # type: ignore[operator]
                assert time.monotonic() - started < 10, what
                time.sleep(0.05)
            return time.monotonic() - started

        poll(lambda: "/qubes-netvm-gateway6" in sim.qubesdb.watched_paths(), "the watch never subscribed")
        sim.qubesdb.write("/qubes-netvm-gateway6", GATEWAY6)
        took = poll(lambda: client.ping(UPSTREAM6, wait=0.5), "no IPv6 after gateway6 appeared")
        print(f"gateway6 appeared -> client's IPv6 works: {took * 1000:.0f} ms")
        assert f"{GATEWAY6}/128" in oracle.addresses(sim.netvm)[client.vif]
        assert sim.netvm.sysctl(f"net/ipv6/conf/{client.vif}/proxy_ndp") == "1"

        sim.qubesdb.rm("/qubes-netvm-gateway6")
        poll(lambda: f"{GATEWAY6}/128" not in oracle.addresses(sim.netvm)[client.vif], "gateway6 address kept")
        assert sim.netvm.sysctl(f"net/ipv6/conf/{client.vif}/proxy_ndp") == "0"
        assert not [r for r in sim.routes("-6") if r.get("dev") == client.vif and r["dst"].startswith("fd09")]
        assert client.ping(UPSTREAM)
    finally:
        watch.kill()
        watch.wait()
