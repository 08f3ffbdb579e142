"""Loggers that cost nothing to import, for the code qubes-setup-dnat-to-ns runs.

The ``logging`` package pulls in traceback, linecache, tokenize, textwrap,
string and weakref, with a dozen regular expressions compiled on the way:
about 4 ms on every dispatcher event (``python3 -X importtime``), a sixth of
the tool's whole run. (vif-route-qubes pays it anyway: pyroute2's netlink
module imports logging.)

A :class:`Logger` has the calls this code uses (``debug``, ``info``,
``warning``, ``error``, ``isEnabledFor``) and two modes:

- by default it hands every call to the standard ``logging`` logger of the
  same name (imported then): a library user, a test (pytest's caplog) and
  vif-route-qubes, which configures ``logging``, see what they always saw;
- once :func:`direct` has been called (by an entry point that does not load
  ``logging`` otherwise, qubesnet.logsetup.setup_direct_logging), records at
  or above its level go straight to its sinks, formatted as ``msg % args``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40

_sinks: Sequence[Callable[[int, str], None]] | None = None
_level = INFO


def direct(level: int, sinks: Sequence[Callable[[int, str], None]]) -> None:
    """From now on, records at ``level`` or above go to ``sinks`` (each
    called with the level and the formatted message), not to ``logging``."""
    global _sinks, _level
    _level, _sinks = level, tuple(sinks)


def undirect() -> None:
    """Back to handing every call to ``logging`` (tests)."""
    global _sinks
    _sinks = None


def _standard(name: str) -> Any:
    import logging

    return logging.getLogger(name)


class Logger:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 (logging's name, so both kinds fit)
        if _sinks is None:
            return bool(_standard(self.name).isEnabledFor(level))
        return level >= _level

    def log(self, level: int, msg: str, *args: object) -> None:
        if _sinks is None:
            _standard(self.name).log(level, msg, *args)
            return
        if level < _level:
            return
        text = msg % args if args else msg
        for sink in _sinks:
            sink(level, text)

    def debug(self, msg: str, *args: object) -> None:
        self.log(DEBUG, msg, *args)

    def info(self, msg: str, *args: object) -> None:
        self.log(INFO, msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        self.log(WARNING, msg, *args)

    def error(self, msg: str, *args: object) -> None:
        self.log(ERROR, msg, *args)


def get_logger(name: str) -> Logger:
    return Logger(name)


def setup_direct_logging(ident: str, verbose: bool) -> None:
    """What qubesnet.logsetup.setup_logging does (stderr, and syslog with
    facility daemon when /dev/log answers), for these loggers, without
    ``logging``. The same lines: ``ident: message`` on stderr,
    ``ident[pid]: message`` to syslog."""
    import os
    import sys

    from .syslog import SYSLOG_SOCKET, SyslogSocket

    def to_stderr(level: int, text: str) -> None:
        try:
            sys.stderr.write(f"{ident}: {text}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    sinks = [to_stderr]
    if os.path.exists(SYSLOG_SOCKET):
        try:
            syslog = SyslogSocket(SYSLOG_SOCKET)
        except OSError:
            pass  # no syslog daemon listening: stderr still has everything
        else:
            prefix = f"{ident}[{os.getpid()}]: "
            sinks.append(lambda level, text: syslog.send(level, prefix + text))
    direct(DEBUG if verbose else INFO, sinks)
