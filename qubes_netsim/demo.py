"""The main job in the simulated environment, with a short readable report.

Builds the namespaces and doubles, runs the real ``vif-route-qubes online``
for every client as libxl would, shows that clients reach their gateway and
the upstream host, that forged sources are dropped, and that ``offline``
removes every trace. Everything is torn down afterwards, also on Ctrl-C.
"""

from __future__ import annotations

import os
import random
import time

from .topology import GATEWAY, GATEWAY6, UPSTREAM, UPSTREAM6, UPSTREAM_NAME, VIRTUAL_DNS, Client, SimNetvm


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def section(self, title: str) -> None:
        print(f"\n-- {title} --")

    def check(self, label: str, ok: bool, detail: str = "") -> bool:
        mark = "ok  " if ok else "FAIL"
        print(f"  [{mark}] {label}{'  ' + detail if detail else ''}")
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok


def _traces(sim: SimNetvm, client: Client) -> list[str]:
    """What of the client is still configured in the netvm (empty = none)."""
    found = []
    addrs = {str(a) for a in (client.ipv4, client.ipv6) if a is not None}
    for family in ("ip", "ip6"):
        for elem in sim.set_elements(family, "allowed"):
            if elem[0] == client.vif:
                found.append(f"allowed {elem[0]} . {elem[1]}")
        for elem in sim.set_elements(family, "downstream"):
            if elem in addrs:
                found.append(f"downstream {elem}")
    for family in ("-4", "-6"):
        for route in sim.routes(family):
            if route.get("dst") in addrs:
                found.append(f"route {route['dst']} dev {route.get('dev')}")
    return found


def run_demo() -> int:
    report = Report()
    sim = SimNetvm()
    print(f"== Simulated Qubes network VM (namespaces {sim.prefix}-*) ==")
    try:
        sim.create()
        sim.start_dns({UPSTREAM_NAME: UPSTREAM})
        clients = [
            sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12"),
            sim.add_client(13, "10.137.0.13"),
            sim.add_client(14, "10.137.0.14"),
        ]
        # A disposable VM with a hidden address (random domid: the namespace
        # name <vif>-nat is host-wide).
        dispvm = sim.add_mapped_client(random.randint(1000, 32000), "10.138.7.9", "192.168.1.128", "192.168.1.1")
        clients.append(dispvm)
        print(f"netvm uplink 198.51.100.2 (upstream host {UPSTREAM}), client gateway {GATEWAY} / {GATEWAY6}")
        for c in clients:
            extra = f" + {c.ipv6}" if c.ipv6 else ""
            hidden = f" (hidden: it believes it is {c.visible} behind 192.168.1.1)" if c.visible else ""
            print(f"client {c.vif}: {c.ipv4}{extra}, MAC {c.mac}{hidden}")

        report.section("online: the real vif-route-qubes, started as libxl starts it")
        for c in clients:
            started = time.monotonic()
            result = sim.vif_route("online", c)
            elapsed = (time.monotonic() - started) * 1000
            status = sim.hotplug_status(c)
            report.check(f"{c.vif} online", result.returncode == 0 and status == "connected",
                         f"exit {result.returncode}, hotplug-status={status}, {elapsed:.0f} ms"
                         + (f"\n         {result.stderr.strip()}" if result.returncode else ""))

        report.section("connectivity")
        for c in clients:
            gateway = "192.168.1.1" if c.visible else GATEWAY
            report.check(f"{c.vif} pings its gateway {gateway}", c.ping(gateway))
            report.check(f"{c.vif} pings the upstream host {UPSTREAM}", c.ping(UPSTREAM))
            if c.ipv6:
                report.check(f"{c.vif} pings the upstream host {UPSTREAM6} over IPv6", c.ping(UPSTREAM6))

        report.section("DNS: the NetworkManager dispatcher runs qubes-setup-dnat-to-ns on `up`")
        wrapper = os.path.join(sim.workdir, "setup-dnat")
        with open(wrapper, "w") as handle:
            handle.write("#!/bin/sh\nexec " + " ".join(sim.dnat_argv()) + ' "$@"\n')
        os.chmod(wrapper, 0o700)
        hook = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dispatcher", "qubes-nmhook")
        if not os.path.exists(hook):
            hook = "/etc/NetworkManager/dispatcher.d/qubes-nmhook"
        result = sim.netvm.run([hook, "eth0", "up"], check=False, env=sim.env() | {"QUBES_SETUP_DNAT_TO_NS": wrapper})
        mappings = [line.strip() for line in sim.dnat("--status").stdout.splitlines() if "->" in line]
        report.check("dispatcher hook ran", result.returncode == 0, "; ".join(mappings[:2]))
        for c in (clients[0], clients[1], dispvm):
            for server, tcp in ((VIRTUAL_DNS[0], False), (VIRTUAL_DNS[1], True)):
                argv = ["dig", "+short", "+time=2", "+tries=1", f"@{server}", UPSTREAM_NAME] + (["+tcp"] if tcp else [])
                answer = c.ns.run(argv, check=False).stdout.strip()
                report.check(f"{c.vif} resolves {UPSTREAM_NAME} through {server} ({'TCP' if tcp else 'UDP'})",
                             answer == UPSTREAM, f"answer {answer or 'none'}")

        report.section("anti-spoofing: forged sources are dropped by the netvm")
        attacker, victim = clients[0], clients[1]
        for label, forged in (
            (f"another client's address ({victim.vif})", str(victim.ipv4)),
            ("an address nobody has", "10.137.0.99"),
        ):
            before = sim.counter("ip", "antispoof")
            attacker.ns.sh(f"ip addr add {forged}/32 dev eth0")
            replied = attacker.ping(UPSTREAM, source=forged, wait=1)
            attacker.ns.sh(f"ip addr del {forged}/32 dev eth0")
            after = sim.counter("ip", "antispoof")
            report.check(f"{attacker.vif} sends as {label} {forged}", not replied and after > before,
                         f"no reply; antispoof drop counter {before} -> {after}")

        report.section("offline: every trace removed")
        leaving = clients[1]
        result = sim.vif_route("offline", leaving)
        report.check(f"{leaving.vif} offline", result.returncode == 0, f"exit {result.returncode}")
        traces = _traces(sim, leaving)
        report.check(f"no set element or route of {leaving.vif} left", not traces, "; ".join(traces))
        report.check(f"{leaving.vif} has no network any more", not leaving.ping(UPSTREAM, wait=1))
        before = sim.counter("ip", "antispoof")
        attacker.ns.sh(f"ip addr add {leaving.ipv4}/32 dev eth0")
        replied = attacker.ping(UPSTREAM, source=str(leaving.ipv4), wait=1)
        attacker.ns.sh(f"ip addr del {leaving.ipv4}/32 dev eth0")
        report.check(f"{attacker.vif} sends as the offline client's {leaving.ipv4}",
                     not replied and sim.counter("ip", "antispoof") > before, "dropped")
        for c in (clients[0], clients[2], dispvm):
            sim.vif_route("offline", c)
            report.check(f"{c.vif} offline leaves no trace", not _traces(sim, c))
        report.check(f"{dispvm.vif}-nat namespace removed", not os.path.exists(f"/run/netns/{dispvm.vif}-nat"))
    except KeyboardInterrupt:
        print("\ninterrupted")
        report.failed += 1
    finally:
        sim.destroy()
        print(f"\ntorn down: namespaces {sim.prefix}-* and the XenStore/QubesDB doubles")
    print(f"\n== {report.passed} checks passed, {report.failed} failed ==")
    return 0 if report.failed == 0 else 1
