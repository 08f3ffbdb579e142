"""The nftables gateway: one libnftables context, JSON in and out.

``run`` sends a list of commands as one transaction (the kernel applies all
of it or none); ``query`` runs one read-only command and returns the JSON
objects it lists. With ``dry_run`` set, ``run`` only records what it would
have sent.
"""

from __future__ import annotations

import json
import logging
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from .errors import ApplyError
from .nftjson import Json, transaction

log = logging.getLogger(__name__)


class Nft:
    def __init__(self, dry_run: bool = False) -> None:
        import nftables  # the distribution's binding of libnftables

        self._ctx = nftables.Nftables()
        self._ctx.set_json_output(True)
        self._ctx.set_handle_output(False)
        self.dry_run = dry_run
        self.sent: list[list[Json]] = []

    def run(self, commands: list[Json], what: str) -> None:
        """Apply ``commands`` atomically, or raise ApplyError (nothing applied)."""
        if not commands:
            return
        self.sent.append(commands)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("nftables transaction (%s): %s", what, json.dumps(transaction(commands)))
        if self.dry_run:
            return
        rc, _output, error = self._ctx.json_cmd(transaction(commands))
        if rc == 0:
            from .leave import note_commit

            note_commit()
        if rc != 0:
            message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
            raise ApplyError(
                f"nftables refused the {what} transaction: {message or f'error {rc}'}",
                detail=json.dumps(transaction(commands)),
            )

    def query(self, command: Json, *, terse: bool = False) -> list[dict[str, Any]] | None:
        """Objects listed by a read-only command; None if the object is absent.

        ``terse`` leaves set elements out, which also spares libnftables from
        fetching them: the cost of such a listing no longer grows with the
        number of client VMs.
        """
        if terse:
            self._ctx.set_terse_output(True)
        try:
            rc, output, _error = self._ctx.json_cmd(transaction([command]))
        finally:
            if terse:
                self._ctx.set_terse_output(False)
        if rc != 0:
            return None
        if not output:
            return []
        return [item for item in output.get("nftables", []) if "metainfo" not in item]
