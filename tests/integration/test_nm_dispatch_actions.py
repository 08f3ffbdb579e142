"""Which dispatcher actions the real NetworkManager sends, per release.

A recording script in the private ``dispatcher.d`` (next to our hook, so it
sees what any hook there sees) logs every action from NetworkManager's
start on; the uplink is activated, the DNS configuration reloaded
(``nmcli general reload dns-full``), given new DNS servers (applied by
``nmcli device reapply`` and by re-activation), a VPN (qubes_netsim.fakevpn,
with a DNS server of its own) brought up and down, and the uplink taken
down. The observed actions must equal the row of ``OBSERVED`` for the
running release: the README's table of dispatcher actions is these facts,
so a release that dispatches otherwise fails here until both are updated
(measure with ``pytest -s``: the actions are printed).

Settling: NetworkManager queues requests to nm-dispatcher, which runs them
in order; after each command the log is polled until the expected number of
actions has arrived and then for a quiet window without a new one, so an
extra action (a late ``dns-change``) is seen, not missed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from qubes_netsim import fakevpn, nm
from qubes_netsim.netns import wait_for
from qubes_netsim.topology import UPSTREAM, VIRTUAL_DNS, SimNetvm

from .test_dnat_networkmanager import SERVER_A, SERVER_B, chain_maps, make_manager

pytestmark = pytest.mark.networkmanager

VPN_DNS = "203.0.113.53"
QUIET = 1.5  # seconds without a new action before a step counts as settled
DEADLINE = 15.0

# (step, nmcli arguments): the uplink's connection profile is "uplink".
STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("start", ()),  # NetworkManager started, no command yet
    ("activate", ("connection", "up", "uplink")),
    ("reload DNS", ("general", "reload", "dns-full")),
    ("modify DNS only", ("connection", "modify", "uplink", "ipv4.dns", SERVER_B)),
    ("device reapply", ("device", "reapply", nm.UPLINK)),
    ("modify DNS, re-activate", ("connection", "modify", "uplink", "ipv4.dns", SERVER_A)),
    ("re-activate", ("connection", "up", "uplink")),
    ("VPN up", ("connection", "up", fakevpn.CONNECTION)),
    ("VPN down", ("connection", "down", fakevpn.CONNECTION)),
    ("down", ("connection", "down", "uplink")),
)

# Measured: NetworkManager major.minor -> step -> actions seen in dispatcher.d,
# in order, leaving out `connectivity-change` (see IGNORED). pre-up and
# pre-down go only to pre-up.d and pre-down.d. `dns-change` comes only from
# 1.52 and only for a reload of the DNS configuration: never for new servers
# of a connection (reapply, re-activation) nor for a VPN's.
_MEASURED = {
    "start": ["hostname"],
    "activate": ["up"],
    "reload DNS": [],
    "modify DNS only": [],
    "device reapply": ["reapply"],
    "modify DNS, re-activate": [],
    "re-activate": ["down", "up"],
    "VPN up": ["vpn-up"],
    "VPN down": ["vpn-down"],
    "down": ["down"],
}
OBSERVED: dict[str, dict[str, list[str]]] = {
    "1.42": _MEASURED,  # Debian 12 (1.42.4)
    "1.52": {**_MEASURED, "reload DNS": ["dns-change"]},  # Debian 13 (1.52.1)
}
# Sent around state changes by NetworkManager's connectivity tracking (here
# without checks: NONE/FULL as the default route comes and goes), whose
# timing against the other actions varies from run to run; our hook ignores it.
IGNORED = {"connectivity-change"}

RECORDER = """#!/bin/sh
echo "$2 ${{1:-none}}" >> {log}
"""


def release() -> str:
    out = os.popen(f"{nm.NM_BINARY} --version").read().strip()
    return ".".join(out.split(".")[:2])


class Recorder:
    def __init__(self, path: str) -> None:
        self.path = path

    def actions(self) -> list[str]:
        """Every action recorded so far, in order, but the IGNORED ones."""
        if not os.path.exists(self.path):
            return []
        with open(self.path) as handle:
            return [action for action in (line.split()[0] for line in handle if line.strip())
                    if action not in IGNORED]

    def settle(self, before: int, expected: int) -> list[str]:
        """The actions after the first ``before``, once ``expected`` of them
        have arrived and none more for QUIET seconds (deadline DEADLINE)."""
        wait_for(lambda: len(self.actions()) - before >= expected, timeout=DEADLINE,
                 what=f"{expected} dispatcher actions")
        deadline = time.monotonic() + DEADLINE
        seen, since = len(self.actions()), time.monotonic()
        while time.monotonic() - since < QUIET and time.monotonic() < deadline:
            time.sleep(0.1)
            now = len(self.actions())
            if now != seen:
                seen, since = now, time.monotonic()
        return self.actions()[before:]


@pytest.fixture
def recorded(sim: SimNetvm) -> Iterator[tuple[SimNetvm, nm.SimNetworkManager, Recorder]]:
    manager = make_manager(sim)
    try:
        recorder = Recorder(os.path.join(manager.dir, "actions.log"))
        manager.add_dispatcher_script("00-record-actions", RECORDER.format(log=recorder.path))
        fakevpn.install(manager, gateway=UPSTREAM, dns=[VPN_DNS])
        manager.start()
        yield sim, manager, recorder
    finally:
        manager.stop()


def test_dispatched_actions_are_the_measured_ones(
        recorded: tuple[SimNetvm, nm.SimNetworkManager, Recorder]) -> None:
    """The actions of each step are the measured ones; our hook ran the tool
    once for each of them but `hostname` (which it ignores); while the VPN is
    up its DNS server comes first in resolv.conf and the DNAT chain follows."""
    sim, manager, recorder = recorded
    version = release()
    expected = OBSERVED.get(version)
    seen: dict[str, list[str]] = {}
    for step, argv in STEPS:
        before = 0 if step == "start" else len(recorder.actions())
        if argv:
            manager.nmcli(*argv)
        seen[step] = recorder.settle(before, len(expected.get(step, [])) if expected else 0)
        print(f"\nNetworkManager {version}: {step}: {' '.join(seen[step]) or '(nothing)'}")
        if step == "VPN up":
            with open(manager.resolv_conf) as handle:
                servers = [line.split()[1] for line in handle if line.startswith("nameserver ")]
            assert servers[:1] == [VPN_DNS], servers
            wait_for(chain_maps(sim, {VIRTUAL_DNS[0]: VPN_DNS}), timeout=DEADLINE, what="the VPN's DNS in the chain")
    assert expected is not None, f"NetworkManager {version} not measured yet: add {seen!r} to OBSERVED and the README"
    assert seen == expected
    every = [action for step, _ in STEPS for action in seen[step] if action != "hostname"]
    wait_for(lambda: len(manager.hook_runs()) >= len(every), timeout=DEADLINE, what="the hook's runs")
    assert [action for _, action, _ in manager.hook_runs()] == every
