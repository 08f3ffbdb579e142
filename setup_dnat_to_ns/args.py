"""The command line, and its usual form read without argparse.

The dispatcher hook runs ``qubes-setup-dnat-to-ns`` with no arguments on
every NetworkManager event: building an argparse parser there (gettext,
locale, regular expressions) costs milliseconds for nothing. The forms
:func:`parse_plain` reads are those of qubesnet.cliutil.read_plain_argv;
anything else goes to the argparse parser in cli.py, which stays the
reference (tests/unit/test_argv.py checks they agree).
"""

from __future__ import annotations

from qubesnet.cliutil import read_plain_argv
from qubesnet.records import Record


class Args(Record):
    """The parsed command line, whichever parser read it."""

    dry_run: bool = False
    status: bool = False
    watch: bool = False
    verbose: bool = False
    resolv_conf: str = "/etc/resolv.conf"
    qubes_service_dir: str = "/run/qubes-service"
    timeout: float = 2.0


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
    return Args()._replace(**found)  # type: ignore[arg-type]  # names and types checked by the reader
