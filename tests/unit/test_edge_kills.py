"""Tests written because a mutant of validation, inputs, locks or the command
line's failure reporting in ``make mutation`` or ``make mutation-sample``
survived (docs/testing.md).

Each names the mutant it kills.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator

import pytest

from qubes_netsim.qubesdbd import QubesDBDouble
from qubes_netsim.xenstored import XenStoreDouble
from qubesnet.errors import ApplyError
from qubesnet.locks import KeyLocks, slot
from qubesnet.qubesdb import QubesDB
from qubesnet.xenstore import XenStore
from vif_route_qubes.cli import ExitCode, main
from vif_route_qubes.inputs import parse_env, read_inputs

CTX = multiprocessing.get_context("fork")
ENV = {"vif": "vif12.0", "XENBUS_PATH": "backend/vif/12/0"}
BASE = "/local/domain/1/backend/vif/12/0"


@pytest.fixture
def stores(tmp_path: object) -> Iterator[tuple[QubesDBDouble, XenStore, QubesDB]]:
    """A dual-stack client of a netvm whose QubesDB has IPv4 only."""
    d = str(tmp_path)
    with XenStoreDouble(os.path.join(d, "xs.sock"), domid=1) as xsd, QubesDBDouble(os.path.join(d, "q.sock")) as qdbd:
        xsd.write(f"{BASE}/ip", "10.137.0.12 fd09:24ef:4179::a89:12")
        xsd.write(f"{BASE}/mac", "00:16:3e:5e:6c:0c")
        qdbd.write("/qubes-netvm-gateway", "10.137.0.1")
        with XenStore.open(xsd.path, 2) as xs, QubesDB.open(qdbd.path, 2) as qdb:
            yield qdbd, xs, qdb


def test_ipv6_is_on_for_the_netvm_only_when_qubesdb_says_so(stores: tuple[QubesDBDouble, XenStore, QubesDB]) -> None:
    """Kills inputs-ipv6-always-on: online on a netvm without /qubes-ip6
    and /qubes-netvm-gateway6 routes no client IPv6; either key turns it
    on; offline takes it as on (so that routes are removed)."""
    qdbd, xs, qdb = stores
    env = parse_env(ENV)
    assert read_inputs(env, xs, qdb, online=True).netvm_ipv6 is False
    assert read_inputs(env, xs, qdb, online=False).netvm_ipv6 is True
    qdbd.write("/qubes-ip6", "fd09:24ef:4179::a89:1")
    assert read_inputs(env, xs, qdb, online=True).netvm_ipv6 is True
    qdbd.rm("/qubes-ip6")
    qdbd.write("/qubes-netvm-gateway6", "fd09:24ef:4179::a89:1")
    assert read_inputs(env, xs, qdb, online=True).netvm_ipv6 is True


def _hold(path: str, keys: list[str], ready: object, release: object) -> None:
    locks = KeyLocks(path)
    locks.acquire(keys, timeout=5)
    ready.set()  # type: ignore[attr-defined]
    release.wait(10)  # type: ignore[attr-defined]
    locks.release()


def _try_lock(path: str, keys: list[str], result: object) -> None:
    locks = KeyLocks(path)
    try:
        locks.acquire(keys, timeout=0.5)
    except ApplyError:
        result.put(False)  # type: ignore[attr-defined]
        return
    result.put(True)  # type: ignore[attr-defined]
    locks.release()


def test_a_timed_out_acquire_keeps_none_of_its_locks(tmp_path: object) -> None:
    """Kills locks-kept-after-timeout: a process that gave up waiting for
    one key must not sit on the keys it took before (here the lower slot):
    another process gets that key at once."""
    path = os.path.join(str(tmp_path), "hotplug.lock")
    low, high = sorted(["if:vif12.0", "addr:10.137.0.12"], key=slot)
    ready, release = CTX.Event(), CTX.Event()
    holder = CTX.Process(target=_hold, args=(path, [high], ready, release))
    holder.start()
    mine = KeyLocks(path)
    try:
        assert ready.wait(5)
        with pytest.raises(ApplyError):
            mine.acquire([low, high], timeout=0.3)  # takes `low`, then waits for `high`
        result = CTX.Queue()
        other = CTX.Process(target=_try_lock, args=(path, [low], result))
        other.start()
        other.join(10)
        assert result.get(timeout=5) is True, "the timed-out process still holds the key it took first"
    finally:
        release.set()
        holder.join(10)
        mine.release()


@pytest.fixture
def xsd(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[XenStoreDouble]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with XenStoreDouble(os.path.join(str(tmp_path), "xs.sock"), domid=1) as double:
        monkeypatch.setenv("XENSTORED_PATH", double.path)
        monkeypatch.setenv("QUBESDB_SOCKET", os.path.join(str(tmp_path), "absent.sock"))
        monkeypatch.setenv("vif", "vif12.0")
        monkeypatch.setenv("XENBUS_PATH", "backend/vif/12/0")
        double.write(f"{BASE}/ip", "10.137.0.12")
        double.write(f"{BASE}/mac", "00:16:3e:5e:6c:0c")
        yield double
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("argv", [["--dry-run", "restart"], ["--dry-run", "--timeout", "0.5", "online"]])
def test_a_failed_dry_run_writes_nothing(xsd: XenStoreDouble, argv: list[str]) -> None:
    """Kills cli-dry-run-reports-failure: a dry run fails like the real
    event (exit 1) but writes neither hotplug-status nor hotplug-error."""
    assert main(argv) == ExitCode.FAILURE
    assert xsd.read(f"{BASE}/hotplug-status") is None
    assert xsd.read(f"{BASE}/hotplug-error") is None
