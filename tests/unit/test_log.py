"""The import-free loggers (qubesnet/log.py): handed to ``logging`` by
default, straight to stderr and syslog once an entry point directs them."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator

import pytest

from qubesnet import log, syslog


@pytest.fixture(autouse=True)
def _undirected() -> Iterator[None]:
    yield
    log.undirect()


def test_by_default_records_go_to_logging(caplog: pytest.LogCaptureFixture) -> None:
    logger = log.get_logger("qubesnet.test")
    with caplog.at_level(logging.INFO, logger="qubesnet.test"):
        logger.info("online %s: %s", "vif12.0", "connected")
        logger.debug("not at this level")
        assert logger.isEnabledFor(log.INFO) and not logger.isEnabledFor(log.DEBUG)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("qubesnet.test", logging.INFO, "online vif12.0: connected")]


def test_directed_records_at_the_level_reach_every_sink() -> None:
    got: list[tuple[int, str]] = []
    log.direct(log.INFO, [lambda level, text: got.append((level, text)), lambda level, text: got.append((0, text))])
    logger = log.get_logger("x")
    logger.debug("hidden %s", 1)
    logger.warning("kept %s%%", 100)
    logger.error("plain, no args: 100%")
    assert got == [(log.WARNING, "kept 100%"), (0, "kept 100%"), (log.ERROR, "plain, no args: 100%"),
                   (0, "plain, no args: 100%")]
    assert not logger.isEnabledFor(log.DEBUG)


def test_direct_logging_writes_the_lines_setup_logging_writes(tmp_path: object, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = os.path.join(str(tmp_path), "log")
    daemon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    daemon.bind(path)
    daemon.settimeout(5)
    monkeypatch.setattr(syslog, "SYSLOG_SOCKET", path)
    try:
        log.setup_direct_logging("qubes-setup-dnat-to-ns", verbose=False)
        log.get_logger("qubes-setup-dnat-to-ns").error("%s", "/qubes-netvm-primary-dns: bad address")
        assert capsys.readouterr().err == "qubes-setup-dnat-to-ns: /qubes-netvm-primary-dns: bad address\n"
        assert daemon.recv(4096) == (
            f"<27>qubes-setup-dnat-to-ns[{os.getpid()}]: /qubes-netvm-primary-dns: bad address\0".encode())
    finally:
        daemon.close()
