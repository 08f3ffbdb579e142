"""Command-line helpers shared by the entry points."""

from __future__ import annotations

import argparse
import os


def help_formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's raw-description formatter with the width given up front.

    argparse asks shutil for the terminal size whenever it builds a
    formatter, which it does on every add_argument: importing shutil for
    that costs milliseconds on every run, for help text nobody reads then.
    """
    try:
        width = int(os.environ.get("COLUMNS", "")) - 2
    except ValueError:
        width = 78
    return argparse.RawDescriptionHelpFormatter(prog, width=max(width, 40))
