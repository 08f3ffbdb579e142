"""qubes-setup-dnat-to-ns --watch never goes blind: real files, a real bus.

resolv.conf here is laid out as on Debian with NetworkManager or resolved:
``etc/resolv.conf`` a relative symlink to ``run/nm/resolv.conf``. Each case
changes it in one of the ways resolvers and VPN clients do, polls the
kernel's chain against a deadline, requires the change to be followed within
a second, then changes it once more to show the watch still sees.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import pytest

from qubes_netsim.dbus import FakeResolved, PrivateBus, set_dns
from qubes_netsim.netns import wait_for
from qubes_netsim.topology import SimNetvm

A, B, C = "198.51.100.1", "198.51.100.53", "198.51.100.77"
FOLLOW_BOUND = 1.0  # seconds, from the change to the new chain in the kernel


class Layout(NamedTuple):
    sim: SimNetvm
    etc: str  # directory of the link
    run: str  # directory of its target
    link: str
    bus: PrivateBus


def write(path: str, server: str) -> None:
    """As resolvers do: a new file renamed over the old one."""
    with open(path + ".new", "w") as handle:
        handle.write(f"nameserver {server}\n")
    os.replace(path + ".new", path)


def mapped_to(sim: SimNetvm, server: str) -> Callable[[], bool]:
    return lambda: sim.dnat_chain().count(f"dnat to {server}") == 4


@pytest.fixture
def watched(sim: SimNetvm) -> Iterator[Layout]:
    base = os.path.join(sim.workdir, "fs")
    etc, run = os.path.join(base, "etc"), os.path.join(base, "run", "nm")
    os.makedirs(etc)
    os.makedirs(run)
    write(os.path.join(run, "resolv.conf"), A)
    link = os.path.join(etc, "resolv.conf")
    os.symlink("../run/nm/resolv.conf", link)
    bus = PrivateBus().start()
    sim.bus_address = bus.address
    argv = sim.dnat_argv("--watch")
    argv[argv.index("--resolv-conf") + 1] = link
    watcher = sim.netvm.popen(argv, env=sim.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(mapped_to(sim, A), timeout=10, what="the initial chain")
        yield Layout(sim, etc, run, link, bus)
    finally:
        watcher.terminate()
        try:
            _, err = watcher.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            watcher.kill()
            _, err = watcher.communicate()
        bus.stop()
        print(f"watch's log:\n{err}")


def follows(sim: SimNetvm, change: Callable[[], None], server: str, what: str) -> float:
    started = time.monotonic()
    change()
    wait_for(mapped_to(sim, server), timeout=5, what=what)
    elapsed = time.monotonic() - started
    print(f"\nwatch: {what}: followed in {elapsed * 1000:.0f} ms")
    assert elapsed < FOLLOW_BOUND, f"{what}: {elapsed:.2f} s"
    return elapsed


def still_sees(layout: Layout, server: str = C) -> None:
    """After the case, an ordinary change of the target is followed too."""
    follows(layout.sim, lambda: write(os.path.realpath(layout.link), server), server, "a further change")


def test_target_replaced_by_rename(watched: Layout) -> None:
    follows(watched.sim, lambda: write(os.path.join(watched.run, "resolv.conf"), B), B, "target renamed over")
    still_sees(watched)


def test_target_written_in_place(watched: Layout) -> None:
    def in_place() -> None:
        with open(os.path.join(watched.run, "resolv.conf"), "w") as handle:
            handle.write(f"nameserver {B}\n")

    follows(watched.sim, in_place, B, "target written in place")
    still_sees(watched)


def test_link_pointed_elsewhere(watched: Layout) -> None:
    """A changed link target counts as a change, and the new target is watched."""
    other_dir = os.path.join(os.path.dirname(watched.etc), "vpn")
    os.makedirs(other_dir)
    write(os.path.join(other_dir, "resolv.conf"), B)

    def repoint() -> None:
        os.symlink("../vpn/resolv.conf", watched.link + ".new")
        os.replace(watched.link + ".new", watched.link)

    follows(watched.sim, repoint, B, "link re-pointed")
    follows(watched.sim, lambda: write(os.path.join(other_dir, "resolv.conf"), C), C, "the new target changed")
    # The old target is no longer what counts.
    write(os.path.join(watched.run, "resolv.conf"), A)
    still_sees(watched, B)


def test_target_directory_removed_and_recreated(watched: Layout) -> None:
    shutil.rmtree(watched.run)  # the link dangles: no usable server for now
    wait_for(lambda: "dnat to" not in watched.sim.dnat_chain(), timeout=5, what="the chain without a server")

    def recreate() -> None:
        os.makedirs(watched.run)
        write(os.path.join(watched.run, "resolv.conf"), B)

    follows(watched.sim, recreate, B, "target directory recreated")
    still_sees(watched)


def test_link_directory_removed_and_recreated(watched: Layout) -> None:
    def recreate() -> None:
        shutil.rmtree(watched.etc)
        os.makedirs(watched.etc)
        os.symlink("../run/nm/resolv.conf", watched.link)
        write(os.path.join(watched.run, "resolv.conf"), B)

    follows(watched.sim, recreate, B, "link directory removed and recreated")
    still_sees(watched)


def test_whole_tree_replaced_by_rename(watched: Layout) -> None:
    base = os.path.dirname(watched.etc)

    def swap() -> None:
        fresh = base + ".new"
        os.makedirs(os.path.join(fresh, "etc"))
        os.makedirs(os.path.join(fresh, "run", "nm"))
        write(os.path.join(fresh, "run", "nm", "resolv.conf"), B)
        os.symlink("../run/nm/resolv.conf", os.path.join(fresh, "etc", "resolv.conf"))
        shutil.rmtree(base)
        os.rename(fresh, base)

    follows(watched.sim, swap, B, "whole tree removed and renamed into place")
    still_sees(watched)


def test_resolved_signals_and_restart(watched: Layout) -> None:
    fake = FakeResolved(watched.bus, [(0, B)]).start()
    try:
        wait_for(mapped_to(watched.sim, B), timeout=5, what="resolved appearing")
        follows(watched.sim, lambda: set_dns(watched.bus, [(0, C)]), C, "resolved PropertiesChanged")
    finally:
        fake.stop()
    # resolved restarts with other servers: NameOwnerChanged, twice.
    fresh: list[FakeResolved] = []
    try:
        follows(watched.sim, lambda: fresh.append(FakeResolved(watched.bus, [(0, B)]).start()), B, "resolved restarted")
        follows(watched.sim, lambda: set_dns(watched.bus, [(0, A)]), A, "the restarted resolved's change")
    finally:
        for item in fresh:
            item.stop()
    still_sees(watched)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (proc(5): fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("with_bus", [False, True], ids=["no-system-bus", "bus-without-resolved"])
def test_an_idle_watch_sleeps(sim: SimNetvm, with_bus: bool) -> None:
    """Nothing changing, no system bus (or one without resolved): the watch
    waits in select(), it does not spin while it retries the bus."""
    bus = PrivateBus().start() if with_bus else None
    if bus is not None:
        sim.bus_address = bus.address
    sim.write_resolv_conf(f"nameserver {A}\n")
    watcher = sim.netvm.popen(sim.dnat_argv("--watch"), env=sim.env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(mapped_to(sim, A), timeout=10, what="the initial chain")
        used = cpu_seconds(watcher.pid)
        started = time.monotonic()
        wait_for(lambda: time.monotonic() - started >= 2.0, timeout=5, what="two idle seconds")
        idle = cpu_seconds(watcher.pid) - used
        print(f"\nwatch: idle CPU over 2 s ({'bus' if with_bus else 'no bus'}): {idle * 1000:.0f} ms")
        assert idle < 0.2, f"{idle:.2f} s of CPU in 2 idle seconds"
        follows(sim, lambda: write(sim.resolv_conf, B), B, "a change after idling")
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
        if bus is not None:
            bus.stop()
