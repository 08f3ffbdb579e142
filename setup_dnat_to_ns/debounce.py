"""When the watch re-derives the chain: a pure state machine over time.

Events come in bursts (a resolver rewrites resolv.conf, then resolved
announces its new servers; a directory is removed and recreated). The
machine coalesces them: the chain is re-derived once things have been quiet
for ``quiet`` seconds, and at the latest ``max_delay`` seconds after the
first event of a burst, so a steady stream of events cannot postpone it for
ever. A failed pass is retried after ``retry`` seconds unless an event comes
first. Time is passed in (monotonic seconds): nothing here reads a clock.
"""

from __future__ import annotations

from typing import NamedTuple


class Debounce(NamedTuple):
    """Immutable: every method returns the next state."""

    quiet: float = 0.15
    max_delay: float = 0.6
    retry: float = 5.0
    first: float | None = None  # first event of the pending burst
    last: float | None = None  # latest event of the pending burst
    retry_at: float | None = None  # a failed pass to repeat, with no event pending

    def event(self, now: float) -> Debounce:
        """Something changed (or may have: an overflow, a lost watch)."""
        first = self.first if self.first is not None else now
        return self._replace(first=first, last=now, retry_at=None)

    def due_at(self) -> float | None:
        """When the next pass is due; None when nothing is pending."""
        if self.first is not None and self.last is not None:
            return min(self.last + self.quiet, self.first + self.max_delay)
        return self.retry_at

    def timeout(self, now: float) -> float | None:
        """Seconds to wait for further events before ``due`` (None: for ever)."""
        due = self.due_at()
        return None if due is None else max(0.0, due - now)

    def due(self, now: float) -> bool:
        due = self.due_at()
        return due is not None and now >= due

    def done(self, now: float, ok: bool) -> Debounce:
        """A pass ran at ``now``: nothing pending, or a retry if it failed."""
        return self._replace(first=None, last=None, retry_at=None if ok else now + self.retry)
