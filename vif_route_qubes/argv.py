"""The command line as libxl and udev give it, read without argparse.

``vif-route-qubes online`` runs on every VM start, and argparse with its
gettext, textwrap and help machinery costs milliseconds there for nothing.
:func:`parse_hotplug_argv` reads exactly the forms whose meaning is plain
(a hotplug command and the hotplug options, each spelled out in full) and
gives up on anything else: ``--help``, abbreviations, grouped short options,
bad values, the admin commands. Those go to the argparse parser in cli.py,
which stays the one reference for meaning, messages and exit codes; for the
forms read here, the result is what argparse would have produced.
"""

from __future__ import annotations

from typing import NamedTuple

HOTPLUG_COMMANDS = ("online", "offline", "add", "remove")


class Args(NamedTuple):
    """The parsed command line, whichever parser read it."""

    command: str
    targets: tuple[str, ...] = ()
    json: bool = False
    verbose: bool = False
    dry_run: bool = False
    hooks_dir: str = ""
    mapped_wait: float = 5.0
    timeout: float = 5.0


_FLAGS = {"-v": "verbose", "--verbose": "verbose", "-n": "dry_run", "--dry-run": "dry_run"}
_VALUES = {"--hooks-dir": "hooks_dir", "--mapped-wait": "mapped_wait", "--timeout": "timeout"}
_FLOATS = ("mapped_wait", "timeout")


def parse_hotplug_argv(argv: list[str], hooks_dir: str) -> Args | None:
    """The hotplug call form, or None for anything argparse must read."""
    values: dict[str, object] = {"hooks_dir": hooks_dir}
    command: str | None = None
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word in _FLAGS:
            values[_FLAGS[word]] = True
            continue
        name, eq, value = word.partition("=")
        if name in _VALUES:
            if not eq:
                if i == len(argv):
                    return None
                value = argv[i]
                i += 1
            if value.startswith("-"):
                return None  # argparse's rules for values that look like options
            field = _VALUES[name]
            if field in _FLOATS:
                try:
                    values[field] = float(value)  # what argparse's type=float calls
                except ValueError:
                    return None
            else:
                values[field] = value
            continue
        if word in HOTPLUG_COMMANDS and command is None:
            command = word
            continue
        return None
    if command is None:
        return None
    return Args(command=command, **values)  # type: ignore[arg-type]
