"""Syslog as the hotplug writes it (qubesnet/logsetup.py), checked against
the standard library's SysLogHandler as the oracle: same bytes on the wire."""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
from collections.abc import Iterator

import pytest

from qubesnet.logsetup import SyslogHandler


@pytest.fixture
def daemon(tmp_path: object) -> Iterator[tuple[str, socket.socket]]:
    path = os.path.join(str(tmp_path), "log")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def record(level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("vif-route-qubes", level, __file__, 1, msg, args, None)


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL])
def test_the_datagrams_are_those_of_the_standard_handler(daemon: tuple[str, socket.socket], level: int) -> None:
    path, sock = daemon
    fmt = logging.Formatter("vif-route-qubes[42]: %(message)s")
    ours = SyslogHandler(path)
    theirs = logging.handlers.SysLogHandler(path, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
    for handler in (ours, theirs):
        handler.setFormatter(fmt)
        handler.emit(record(level, "online %s: connected (%s)", "vif12.0", "10.137.0.12 é"))
    got, expected = sock.recv(4096), sock.recv(4096)
    ours.close()
    theirs.close()
    assert got == expected
    assert got.startswith(b"<") and got.endswith(b"\0")


def test_a_restarted_daemon_gets_the_next_message(daemon: tuple[str, socket.socket]) -> None:
    path, sock = daemon
    handler = SyslogHandler(path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.emit(record(logging.INFO, "first"))
    assert sock.recv(4096) == b"<30>first\0"
    sock.close()
    os.unlink(path)
    again = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    again.bind(path)
    again.settimeout(5)
    try:
        handler.emit(record(logging.ERROR, "second"))
        assert again.recv(4096) == b"<27>second\0"
    finally:
        again.close()
        handler.close()


def test_nobody_listening_is_an_error_at_setup_and_silent_later(daemon: tuple[str, socket.socket]) -> None:
    path, sock = daemon
    with pytest.raises(OSError):
        SyslogHandler(path + ".absent")
    handler = SyslogHandler(path)
    sock.close()
    os.unlink(path)
    handler.emit(record(logging.ERROR, "lost"))  # no exception, no traceback: stderr has it
    handler.close()
