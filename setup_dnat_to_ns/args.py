"""The command line, and its usual form read without argparse.

The dispatcher hook runs ``qubes-setup-dnat-to-ns`` with no arguments on
every NetworkManager event: building an argparse parser there (gettext,
locale, regular expressions) costs milliseconds for nothing. The forms
:func:`parse_plain` reads are those of qubesnet.cliutil.read_plain_argv;
anything else goes to the argparse parser in cli.py, which stays the
reference (tests/unit/test_argv.py checks they agree).
"""

from __future__ import annotations

from collections import namedtuple

from qubesnet.cliutil import read_plain_argv


class Args(namedtuple("Args", ("dry_run", "status", "watch", "verbose", "resolv_conf", "qubes_service_dir",
                               "timeout"),
                      defaults=(False, False, False, False, "/etc/resolv.conf", "/run/qubes-service", 2.0))):
    """The parsed command line: dry_run, status, watch, verbose (bool),
    resolv_conf, qubes_service_dir (str), timeout (float)."""

    __slots__ = ()


FLAGS = {"-v": "verbose", "--verbose": "verbose", "-n": "dry_run", "--dry-run": "dry_run", "--status": "status",
         "--watch": "watch"}
VALUES = {"--resolv-conf": "resolv_conf", "--qubes-service-dir": "qubes_service_dir", "--timeout": "timeout"}
MODES = ("dry_run", "status", "watch")  # argparse's mutually exclusive group


def parse_plain(argv: list[str]) -> Args | None:
    """The usual call forms, or None for anything argparse must read."""
    read = read_plain_argv(argv, FLAGS, VALUES, ("timeout",))
    if read is None:
        return None
    found = read[1]
    if sum(1 for mode in MODES if mode in found) > 1:
        return None  # argparse's error message
    return Args()._replace(**found)
