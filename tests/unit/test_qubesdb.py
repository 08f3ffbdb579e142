"""The QubesDB client against the protocol double (which enforces the real limits)."""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from qubes_netsim.qubesdbd import QubesDBDouble
from qubesnet.errors import StoreError
from qubesnet.qubesdb import HEADER, Msg, QubesDB, default_address


@pytest.fixture
def qdbd(tmp_path: object) -> Iterator[QubesDBDouble]:
    with QubesDBDouble(os.path.join(str(tmp_path), "qdb.sock")) as double:
        double.write("/qubes-netvm-gateway", "10.137.0.1")
        double.write("/qubes-netvm-primary-dns", "10.139.1.1")
        double.write("/qubes-service/harden-network-interfaces", "1")
        double.write("/qubes-service/other", "0")
        yield double


@pytest.fixture
def qdb(qdbd: QubesDBDouble) -> Iterator[QubesDB]:
    with QubesDB.open(qdbd.path, timeout=2) as client:
        yield client


def test_header_is_72_bytes() -> None:
    assert HEADER.size == 72
    raw = HEADER.pack(Msg.CMD_READ, b"/x", 5)
    assert raw[0] == 0 and raw[1:3] == b"/x" and struct.unpack_from("@I", raw, 68) == (5,)


def test_read(qdb: QubesDB) -> None:
    assert qdb.read("/qubes-netvm-gateway") == b"10.137.0.1"


def test_missing_is_none(qdb: QubesDB) -> None:
    assert qdb.read("/qubes-netvm-gateway6") is None


def test_list_returns_full_paths(qdb: QubesDB) -> None:
    assert qdb.list("/qubes-service/") == ["/qubes-service/harden-network-interfaces", "/qubes-service/other"]
    assert qdb.list("/nothing/") == []


def test_multiread(qdb: QubesDB) -> None:
    assert qdb.multiread("/qubes-netvm-") == {
        "/qubes-netvm-gateway": b"10.137.0.1",
        "/qubes-netvm-primary-dns": b"10.139.1.1",
    }


def test_watch_events_are_skipped(qdbd: QubesDBDouble, qdb: QubesDB) -> None:
    qdbd.spurious_watch_events = True
    assert qdb.read("/qubes-netvm-gateway") == b"10.137.0.1"
    assert qdb.list("/qubes-service/") == ["/qubes-service/harden-network-interfaces", "/qubes-service/other"]
    assert qdb.multiread("/qubes-netvm-gateway") == {"/qubes-netvm-gateway": b"10.137.0.1"}
    assert qdb.read("/absent") is None


def test_invalid_paths_are_refused_before_sending(qdb: QubesDB) -> None:
    for path in ("relative", "/" + "x" * 63, "/é"):
        with pytest.raises(StoreError, match="invalid QubesDB path"):
            qdb.read(path)


def test_daemon_error_is_a_store_error(qdb: QubesDB) -> None:
    with pytest.raises(StoreError, match="refused"):
        qdb.read("/bad path")  # valid for us, not for the daemon's character set


def test_silent_daemon_times_out(qdbd: QubesDBDouble) -> None:
    qdbd.freeze()
    with QubesDB.open(qdbd.path, timeout=0.2) as client, pytest.raises(StoreError, match="did not answer"):
        client.read("/qubes-netvm-gateway")


def test_daemon_closing_the_connection(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "closing.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(HEADER.size)
        conn.close()  # the daemon dies after reading the request

    thread = threading.Thread(target=serve)
    thread.start()
    with QubesDB.open(path, timeout=2) as client, pytest.raises(StoreError, match="closed the connection"):
        client.read("/x")
    thread.join()
    listener.close()


def test_no_daemon(tmp_path: object) -> None:
    with pytest.raises(StoreError, match="cannot connect to QubesDB"):
        QubesDB.open(os.path.join(str(tmp_path), "none.sock"), timeout=0.2)


def test_default_address() -> None:
    assert default_address({"QUBESDB_SOCKET": "/tmp/q"}) == "/tmp/q"
    assert default_address({}) == "/var/run/qubes/qubesdb.sock"


def test_double_enforces_the_real_limits(qdbd: QubesDBDouble) -> None:
    with pytest.raises(ValueError):
        qdbd.write("/x", b"a" * 3072)
    with pytest.raises(ValueError):
        qdbd.write("/x", b"a\0b")
    with pytest.raises(ValueError):
        qdbd.write("/" + "p" * 63, b"v")
