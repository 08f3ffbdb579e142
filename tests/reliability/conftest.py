"""The reliability tier: bad inputs, faults, load and soak, with a ledger.

Every test here records what it tried in the session's ledger; the table is
printed at the end of the run (and by `make reliability`). The tier runs in
two sizes: CI runs a fast subset of every category; QUBES_RELIABILITY=full
(set by `make reliability`) runs the full counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

FULL = os.environ.get("QUBES_RELIABILITY") == "full"


def size(fast: int, full: int) -> int:
    """How many of something this run tries."""
    return full if FULL else fast


@dataclass
class Tally:
    tried: int = 0
    good: dict[str, int] = field(default_factory=dict)  # column -> count
    failures: list[str] = field(default_factory=list)


class Ledger:
    """Counts per category; columns are category-specific (see COLUMNS)."""

    COLUMNS: ClassVar[dict[str, tuple[str, ...]]] = {
        "bad inputs": ("tried", "rejected cleanly", "state unchanged"),
        "faults": ("injected", "survived"),
        "load": ("events", "lost"),
        "soak": ("cycles", "leaks"),
        "security": ("checks", "violations"),
    }

    def __init__(self) -> None:
        self.tallies: dict[str, Tally] = {name: Tally() for name in self.COLUMNS}
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        """A figure worth quoting, printed under the table."""
        self.notes.append(text)

    def record(self, category: str, what: str, count: int = 1, **columns: int) -> None:
        tally = self.tallies[category]
        tally.tried += count
        for column, value in columns.items():
            tally.good[column] = tally.good.get(column, 0) + value
        if any(column in ("lost", "leaks", "violations") and value for column, value in columns.items()):
            tally.failures.append(what)

    def table(self) -> list[str]:
        lines = [f"reliability ({'full' if FULL else 'fast subset'} run)"]
        for name, columns in self.COLUMNS.items():
            tally = self.tallies[name]
            cells = [f"{columns[0]} {tally.tried}"] + [f"{c} {tally.good.get(c, 0)}" for c in columns[1:]]
            lines.append(f"  {name:<12} " + " / ".join(cells))
        return lines + [f"  - {note}" for note in self.notes]


LEDGER = Ledger()


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return LEDGER


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if any(t.tried for t in LEDGER.tallies.values()):
        terminalreporter.write_sep("=", "reliability ledger")
        for line in LEDGER.table():
            terminalreporter.write_line(line)
