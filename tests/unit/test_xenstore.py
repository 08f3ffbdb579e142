"""The XenStore client against the protocol double, and the double against
Debian's real xenstore-utils (which keeps the double honest)."""

from __future__ import annotations

import os
import pathlib
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator

import pytest

import qubesnet.xenstore
from qubes_netsim.xenstored import WRITE, XenStoreDouble
from qubesnet.errors import StoreError
from qubesnet.xenstore import XenStore, XenStoreError, default_address


@pytest.fixture
def xsd(tmp_path: object) -> Iterator[XenStoreDouble]:
    with XenStoreDouble(os.path.join(str(tmp_path), "xs.sock"), domid=1) as double:
        yield double


@pytest.fixture
def xs(xsd: XenStoreDouble) -> Iterator[XenStore]:
    with XenStore.open(xsd.path, timeout=2) as client:
        yield client


def test_read_write_relative_and_absolute(xsd: XenStoreDouble, xs: XenStore) -> None:
    xs.write("backend/vif/12/0/ip", "10.137.0.12")
    assert xsd.read("/local/domain/1/backend/vif/12/0/ip") == b"10.137.0.12"
    assert xs.read("/local/domain/1/backend/vif/12/0/ip") == b"10.137.0.12"
    assert xs.read("backend/vif/12/0/ip") == b"10.137.0.12"


def test_missing_key_is_none_not_an_exception(xs: XenStore) -> None:
    assert xs.read("backend/vif/99/0/ip") is None
    assert xs.directory("backend/vif/99") is None


def test_directory_and_rm(xs: XenStore) -> None:
    xs.write("a/b/c", "1")
    xs.write("a/b/d", "2")
    assert sorted(xs.directory("a/b") or []) == ["c", "d"]
    xs.rm("a/b/c")
    assert xs.directory("a/b") == ["d"]
    xs.rm("a/b/c")  # already gone: fine
    xs.rm("a")
    assert xs.read("a/b/d") is None


def test_binary_and_empty_values(xs: XenStore) -> None:
    xs.write("k", b"\x00\xffbytes")
    assert xs.read("k") == b"\x00\xffbytes"
    xs.write("e", "")
    assert xs.read("e") == b""


def test_daemon_errors_are_distinct(xsd: XenStoreDouble, xs: XenStore) -> None:
    xsd.error_for[(WRITE, "/local/domain/1/x")] = "EACCES"
    with pytest.raises(XenStoreError) as info:
        xs.write("x", "1")
    assert info.value.errno == "EACCES"
    with pytest.raises(XenStoreError, match="EINVAL"):
        xs.read("bad path")


def test_oversized_request_is_refused_locally(xs: XenStore) -> None:
    with pytest.raises(StoreError, match="4096"):
        xs.write("k", "x" * 4096)


def test_oversized_reply_names_the_path(xsd: XenStoreDouble, xs: XenStore) -> None:
    xsd.write("/local/domain/1/big", b"1" * 5000)  # only a double can hold this
    with pytest.raises(StoreError, match=r"^/local/domain/1/big: XenStore sent an oversized reply \(5000 bytes"):
        xs.read("/local/domain/1/big")
    assert not xs.usable  # the rest of the reply is still in the stream
    with pytest.raises(StoreError, match="unusable"):
        xs.read("/local/domain/1/other")


def test_silent_daemon_times_out(xsd: XenStoreDouble) -> None:
    xsd.freeze()
    with (XenStore.open(xsd.path, timeout=0.2) as client,
          pytest.raises(StoreError, match=r"did not answer within 0\.2 s")):
        client.read("x")


def test_no_daemon(tmp_path: object) -> None:
    with pytest.raises(StoreError, match="cannot connect to XenStore"):
        XenStore.open(os.path.join(str(tmp_path), "nothing.sock"), timeout=0.2)


def test_watch_events_between_replies_are_skipped(tmp_path: object) -> None:
    """A stray WATCH_EVENT before the reply does not confuse the client."""
    path = os.path.join(str(tmp_path), "raw.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        kind, req_id, tx, length = struct.unpack("<IIII", conn.recv(16))
        conn.recv(length)
        event = b"some/path\0token\0"
        conn.sendall(struct.pack("<IIII", 15, 0, 0, len(event)) + event)
        conn.sendall(struct.pack("<IIII", kind, req_id, tx, 5) + b"value")
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    with XenStore.open(path, timeout=2) as client:
        assert client.read("k") == b"value"
    thread.join()
    listener.close()


def test_default_address_order(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """XENSTORED_PATH, else the daemon's socket if it exists, else the
    device: each case on its own, whatever this host has."""
    socket_path = tmp_path / "socket"
    monkeypatch.setattr(qubesnet.xenstore, "XENSTORED_SOCKETS", (str(socket_path),))
    assert default_address({"XENSTORED_PATH": "/x/y"}) == "/x/y"
    assert default_address({}) == "/dev/xen/xenbus"
    socket_path.touch()
    assert default_address({}) == str(socket_path)
    assert default_address({"XENSTORED_PATH": "/x/y"}) == "/x/y"


def _tool(xsd: XenStoreDouble, *argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XENSTORED_PATH=xsd.path)
    return subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=10)


@pytest.mark.subprocess
@pytest.mark.xenstore_utils
def test_real_xenstore_utils_against_the_double(xsd: XenStoreDouble) -> None:
    assert _tool(xsd, "xenstore-write", "backend/vif/12/0/ip", "10.137.0.12").returncode == 0
    assert xsd.read("/local/domain/1/backend/vif/12/0/ip") == b"10.137.0.12"
    read = _tool(xsd, "xenstore-read", "backend/vif/12/0/ip")
    assert (read.returncode, read.stdout) == (0, "10.137.0.12\n")
    assert _tool(xsd, "xenstore-read", "backend/vif/12/0/nope").returncode != 0
    listing = _tool(xsd, "xenstore-ls", "-f", "/local/domain/1")
    assert listing.returncode == 0
    assert '/local/domain/1/backend/vif/12/0/ip = "10.137.0.12"' in listing.stdout
    assert _tool(xsd, "xenstore-list", "/local/domain/1/backend/vif/12/0").stdout.split() == ["ip"]
    assert _tool(xsd, "xenstore-exists", "backend/vif/12/0/ip").returncode == 0
    assert _tool(xsd, "xenstore-rm", "backend/vif/12/0/ip").returncode == 0
    assert _tool(xsd, "xenstore-exists", "backend/vif/12/0/ip").returncode != 0


@pytest.mark.subprocess
@pytest.mark.xenstore_utils
def test_our_client_and_the_real_tools_agree(xsd: XenStoreDouble) -> None:
    with XenStore.open(xsd.path, timeout=2) as client:
        client.write("backend/vif/12/0/hotplug-status", "connected")
        assert _tool(xsd, "xenstore-read", "backend/vif/12/0/hotplug-status").stdout == "connected\n"
        _tool(xsd, "xenstore-write", "backend/vif/12/0/mac", "00:16:3e:5e:6c:0c")
        assert client.read("backend/vif/12/0/mac") == b"00:16:3e:5e:6c:0c"
