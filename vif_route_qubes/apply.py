"""The thin applier: run a plan's steps through the handler registry, undo on failure.

Every applied step's inverse (computed purely, from what the planner
observed) goes on the compensation log; a failure unwinds the log in
reverse, after taking the link down so that the vif carries nothing
meanwhile. ``offline`` runs best effort: every step is tried and the
errors are reported together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from qubesnet.errors import ApplyError, QubesNetError
from qubesnet.netlink.nlsock import NetlinkError

from .gateways import Gateways
from .handlers import Handler

if TYPE_CHECKING:
    from .steps import Step

log = logging.getLogger(__name__)


class Applier:
    def __init__(self, gw: Gateways, handlers: Mapping[type, Handler], report: Callable[[str], None]) -> None:
        self.gw = gw
        self.handlers = handlers
        self.report = report
        self.undo: list[Step] = []
        self.fail_closed: int | None = None  # the link taken down first on rollback

    def apply_one(self, step: Step) -> None:
        """One step of a plan (the place tests inject faults at)."""
        self._handle(step)

    def _handle(self, step: Step) -> None:
        """Run a step's handler, its kernel errors turned into one-line ApplyErrors."""
        try:
            self.handlers[type(step)](self.gw, step)
        except NetlinkError as exc:
            raise ApplyError(f"{step.show()}: {exc.strerror}") from exc
        except OSError as exc:
            raise ApplyError(f"{step.show()}: {exc.strerror or exc}") from exc

    def apply(self, steps: Iterable[Step]) -> None:
        """Apply in order, logging each inverse; stop at the first failure."""
        for step in steps:
            self.report(step.show())
            self.apply_one(step)
            inverse = step.inverse()
            if inverse is not None:
                self.undo.append(inverse)

    def apply_best_effort(self, steps: Iterable[Step]) -> list[str]:
        """Try every step; return the errors (empty when all went well)."""
        errors = []
        for step in steps:
            self.report(step.show())
            try:
                self.apply_one(step)
            except QubesNetError as exc:
                errors.append(str(exc))
                log.error("%s", exc)
        return errors

    def rollback(self) -> None:
        # Fail closed first: whatever happens below, the vif carries no traffic.
        if self.fail_closed is not None:
            try:
                self.gw.rtnl.set_link(self.fail_closed, up=False)
            except NetlinkError:
                pass  # the interface is gone: it carries nothing either
        while self.undo:
            step = self.undo.pop()
            try:
                self._handle(step)
                self.report(f"undo: {step.show()}")
            except QubesNetError as exc:
                log.error("could not undo: %s", exc)
