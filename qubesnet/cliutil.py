"""Command-line helpers shared by the entry points."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # argparse is imported only when a parser is built
    import argparse


def help_formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's raw-description formatter with the width given up front.

    argparse asks shutil for the terminal size whenever it builds a
    formatter, which it does on every add_argument: importing shutil for
    that costs milliseconds on every run, for help text nobody reads then.
    """
    import argparse

    try:
        width = int(os.environ.get("COLUMNS", "")) - 2
    except ValueError:
        width = 78
    return argparse.RawDescriptionHelpFormatter(prog, width=max(width, 40))


def read_plain_argv(argv: list[str], flags: dict[str, str], values: dict[str, str], floats: tuple[str, ...],
                    commands: tuple[str, ...] = ()) -> tuple[str | None, dict[str, object]] | None:
    """The usual call form of an entry point, read without argparse.

    Building an argparse parser (gettext, locale, regular expressions) costs
    milliseconds on every run: the hotplug on every VM start, the DNS tool
    on every dispatcher event. This reads exactly the forms whose meaning
    is plain: options from ``flags`` (store_true) and ``values`` (one
    argument, ``--opt VALUE`` or ``--opt=VALUE``, as float for the fields in
    ``floats``), each spelled out in full, and at most one word of
    ``commands``. Anything else (``--help``, abbreviations, grouped short
    options, values that look like options or do not parse, other words)
    gives None: the caller's argparse parser then reads the line, so that it
    stays the one reference for meanings, messages and exit codes. Returns
    (the command or None, {field: value} for the options given).
    """
    found: dict[str, object] = {}
    command: str | None = None
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word in flags:
            found[flags[word]] = True
            continue
        name, eq, value = word.partition("=")
        if name in values:
            if not eq:
                if i == len(argv):
                    return None
                value = argv[i]
                i += 1
            if value.startswith("-"):
                return None  # argparse has its own rules for values that look like options
            field = values[name]
            if field in floats:
                try:
                    found[field] = float(value)  # what argparse's type=float calls
                except ValueError:
                    return None
            else:
                found[field] = value
            continue
        if word in commands and command is None:
            command = word
            continue
        return None
    return command, found
