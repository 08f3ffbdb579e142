"""The early conntrack purge: started in a thread, taken by the plan's purge
step as if the step had purged itself (its count, or its failure).

The kernel's part (the dump, the deletes) is the namespace tier's
(tests/integration/test_vif_purge_race.py and the vif tests); here the
walk is replaced by a stand-in (fault injection), on a real socket.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from ipaddress import ip_address

import pytest
from pytest_mock import MockerFixture

from qubesnet.errors import ApplyError
from qubesnet.netlink.ctnl import Conntrack, IPAddress
from qubesnet.netlink.nlsock import NetlinkError
from vif_route_qubes.apply import Applier
from vif_route_qubes.handlers import HANDLERS
from vif_route_qubes.steps import PurgeConntrack

A = (ip_address("10.137.0.12"), ip_address("fd09:24ef:4179::a89:12"))
B = (ip_address("10.137.0.13"),)
DEADLINE = 10.0


@pytest.fixture
def ct() -> Iterator[Conntrack]:
    conntrack = Conntrack()
    yield conntrack
    conntrack.close()


class Walk:
    """A stand-in for the kernel's walk: records who ran it, with what, and
    holds until released (so the caller's overlap can be seen)."""

    def __init__(self, result: int | BaseException = 3) -> None:
        self.result = result
        self.calls: list[tuple[frozenset[IPAddress], str]] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, wanted: frozenset[IPAddress]) -> int:
        self.calls.append((wanted, threading.current_thread().name))
        assert self.release.wait(DEADLINE)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


def test_the_step_takes_the_early_purge_of_its_addresses(ct: Conntrack, mocker: MockerFixture) -> None:
    walk = Walk(3)
    walk.release.clear()
    mocker.patch.object(ct, "_purge_now", walk)
    ct.start_purge(A)
    # start_purge returned while the walk still runs: the caller's work overlaps it.
    walk.release.set()
    assert ct.purge(reversed(A)) == 3
    assert walk.calls == [(frozenset(A), "conntrack-purge")], "one walk, in the background, not run again"


def test_a_step_for_fewer_addresses_takes_the_early_purge(ct: Conntrack, mocker: MockerFixture) -> None:
    """A kernel without IPv6: online starts the purge for every client
    address, the plan's step names the IPv4 one only (there are no IPv6
    entries to purge); the table is walked once, not twice."""
    walk = Walk(2)
    mocker.patch.object(ct, "_purge_now", walk)
    ct.start_purge(A)
    assert ct.purge(A[:1]) == 2
    assert walk.calls == [(frozenset(A), "conntrack-purge")], "one walk, not run again"


def test_a_failed_early_purge_is_the_steps_failure(ct: Conntrack, mocker: MockerFixture) -> None:
    """Fail closed exactly as a synchronous purge: the applier sees the
    kernel's error at the purge step."""
    error = NetlinkError(errno.ENOBUFS, "dump conntrack table", "")
    mocker.patch.object(ct, "_purge_now", Walk(error))
    ct.start_purge(A)
    gw = mocker.Mock(conntrack=ct)
    with pytest.raises(ApplyError, match="dump conntrack table"):
        Applier(gw, HANDLERS, lambda line: None).apply([PurgeConntrack(A)])


def test_other_addresses_wait_for_the_early_purge_then_purge_themselves(ct: Conntrack, mocker: MockerFixture) -> None:
    walk = Walk(NetlinkError(errno.EIO, "dump conntrack table", ""))
    mocker.patch.object(ct, "_purge_now", walk)
    ct.start_purge(A)
    walk.result = 1
    assert ct.purge(B) == 1, "the early purge's outcome belongs to no step"
    assert [c[0] for c in walk.calls] == [frozenset(A), frozenset(B)]
    assert walk.calls[1][1] == threading.current_thread().name


def test_settle_waits_for_an_early_purge_no_step_took(ct: Conntrack, mocker: MockerFixture) -> None:
    walk = Walk(NetlinkError(errno.EIO, "dump conntrack table", ""))
    mocker.patch.object(ct, "_purge_now", walk)
    ct.start_purge(A)
    ct.settle()
    assert len(walk.calls) == 1
    assert all(t.name != "conntrack-purge" for t in threading.enumerate()), "the thread is over"
    walk.result = 2
    assert ct.purge(A) == 2, "a later purge walks again"


def test_no_addresses_no_thread(ct: Conntrack, mocker: MockerFixture) -> None:
    walk = Walk()
    mocker.patch.object(ct, "_purge_now", walk)
    ct.start_purge(())
    assert ct._pending is None and walk.calls == []
