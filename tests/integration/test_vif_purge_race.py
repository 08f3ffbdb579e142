"""The conntrack purge runs under the event's locks, in the documented order.

The locks exist for the address-reuse race: a new VM gets the address of
one that is going away. A connection created for the address while the
event waits on its lock must be gone once the event has run; a purge
started before the locks would have missed it, and a new client could ride
on the old one's conntrack entry.

Each case holds the event's address lock from the test process (one byte
of the shared lock file, qubesnet.locks), starts the event, waits until the
kernel lists the event as blocked on that byte (/proc/locks: no sleep, no
guess), creates the connection, and releases the lock.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from qubes_netsim.topology import UPSTREAM, Client, SimNetvm
from qubesnet.constants import LOCK_FILE
from qubesnet.locks import KeyLocks, slot

# An address of its own: the lock file is the host's, shared with concurrent runs.
ADDR = "10.137.0.231"
REAL, VISIBLE, VISIBLE_GW = "10.138.7.231", "192.168.1.131", "192.168.1.1"
ENTRY = "-p udp --sport 4242 --dport 53 -t 120"


def _blocked_on(offset: int) -> bool:
    """Whether a process waits for a POSIX lock on byte ``offset`` of the lock file."""
    inode = os.stat(LOCK_FILE).st_ino
    with open("/proc/locks") as handle:
        for line in handle:
            fields = line.split()
            if "->" in fields and fields[fields.index("->") + 1] == "POSIX":
                where, start = fields[-3], fields[-2]
                if where.rsplit(":", 1)[-1] == str(inode) and start == str(offset):
                    return True
    return False


@contextmanager
def _held(addr: str) -> Iterator[int]:
    locks = KeyLocks(LOCK_FILE)
    locks.acquire([f"addr:{addr}"], 10)
    try:
        yield slot(f"addr:{addr}")
    finally:
        locks.release()


def _entries(sim: SimNetvm, addr: str) -> str:
    return sim.netvm.run(["conntrack", "-L", "-s", addr], check=False).stdout


def _event_meets_a_new_connection(sim: SimNetvm, client: Client | None, command: str, addr: str) -> None:
    """``command`` blocked on ``addr``'s lock while a connection of ``addr`` appears."""
    with _held(addr) as offset:
        event = sim.netvm.popen(sim.vif_route_argv(command), env=sim.env(client),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            while not _blocked_on(offset):
                assert event.poll() is None, event.communicate()
                assert time.monotonic() < deadline, f"{command} never waited for the lock of {addr}"
                time.sleep(0.01)
            sim.netvm.sh(f"conntrack -I -s {addr} -d {UPSTREAM} {ENTRY}")
            assert addr in _entries(sim, addr), "the connection exists while the event waits"
        except BaseException:
            event.kill()
            raise
    assert event.wait(timeout=30) == 0, event.communicate()[1]


def test_online_purges_connections_made_while_it_waited_for_the_lock(sim: SimNetvm) -> None:
    client = sim.add_client(31, ADDR)

    _event_meets_a_new_connection(sim, client, "online", ADDR)

    assert ADDR not in _entries(sim, ADDR)
    assert client.ping(UPSTREAM)


def test_offline_purges_connections_made_while_it_waited_for_the_lock(sim: SimNetvm) -> None:
    client = sim.add_client(31, ADDR)
    assert sim.vif_route("online", client).returncode == 0

    _event_meets_a_new_connection(sim, client, "offline", ADDR)

    assert ADDR not in _entries(sim, ADDR)


def test_reconcile_of_a_vif_never_configured_purges_under_the_lock(sim: SimNetvm) -> None:
    """libxl saw the vif connected, but nothing of it was ever configured:
    reconcile converges it as online would, purge included, under the same locks."""
    client = sim.add_client(31, ADDR)
    sim.xenstore.write(f"{sim.xenstore.home()}/{client.xenbus_path}/hotplug-status", "connected")

    _event_meets_a_new_connection(sim, None, "reconcile", ADDR)

    assert ADDR not in _entries(sim, ADDR)
    assert client.ping(UPSTREAM)


@pytest.mark.parametrize("command", ["online", "offline"])
def test_mapped_vif_purges_under_the_lock(sim: SimNetvm, command: str) -> None:
    client = sim.add_mapped_client(random.randint(300, 32000), REAL, VISIBLE, VISIBLE_GW)
    try:
        if command == "offline":
            assert sim.vif_route("online", client).returncode == 0

        _event_meets_a_new_connection(sim, client, command, REAL)

        assert REAL not in _entries(sim, REAL)
    finally:
        sim.vif_route("offline", client)  # the -nat namespace is the host's
