"""The command line as libxl and udev give it, read without argparse.

``vif-route-qubes online`` runs on every VM start, and argparse with its
gettext, locale and help machinery costs milliseconds there for nothing.
:func:`parse_hotplug_argv` reads exactly the forms whose meaning is plain
(a hotplug command and the hotplug options, each spelled out in full: see
qubesnet.cliutil.read_plain_argv) and gives up on anything else: ``--help``,
abbreviations, grouped short options, bad values, the admin commands. Those
go to the argparse parser in cli.py, which stays the one reference for
meaning, messages and exit codes; for the forms read here, the result is
what argparse would have produced (tests/unit/test_argv.py).
"""

from __future__ import annotations

from qubesnet.cliutil import read_plain_argv
from qubesnet.records import Record

HOTPLUG_COMMANDS = ("online", "offline", "add", "remove")


class Args(Record):
    """The parsed command line, whichever parser read it."""

    command: str
    targets: tuple[str, ...] = ()
    json: bool = False
    verbose: bool = False
    dry_run: bool = False
    hooks_dir: str = ""
    mapped_wait: float = 5.0
    timeout: float = 5.0


FLAGS = {"-v": "verbose", "--verbose": "verbose", "-n": "dry_run", "--dry-run": "dry_run"}
VALUES = {"--hooks-dir": "hooks_dir", "--mapped-wait": "mapped_wait", "--timeout": "timeout"}


def parse_hotplug_argv(argv: list[str], hooks_dir: str) -> Args | None:
    """The hotplug call form, or None for anything argparse must read."""
    read = read_plain_argv(argv, FLAGS, VALUES, ("mapped_wait", "timeout"), HOTPLUG_COMMANDS)
    if read is None:
        return None
    command, found = read
    if command is None:
        return None
    return Args(command, hooks_dir=hooks_dir)._replace(**found)  # type: ignore[arg-type]  # fields checked by the reader
