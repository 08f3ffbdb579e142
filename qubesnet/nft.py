"""The nftables gateway: one libnftables context, JSON in and out.

``run`` sends a list of commands as one transaction (the kernel applies all
of it or none); ``query`` runs one read-only command and returns the JSON
objects it lists, None when the object is absent, and raises when listing
failed for any other reason (never "nothing there" for "could not look");
``accepts`` asks the kernel whether it would take a transaction, without
committing it (``nft --check``). With ``dry_run`` set, ``run`` only logs
what it would have sent (at debug level).
"""

from __future__ import annotations

import errno
import json
import os

from .errors import ApplyError
from .log import DEBUG, get_logger
from .nftjson import Json, transaction

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ipaddress import IPv4Address, IPv6Address
    from typing import Any

    from .netlink.nftset import SetLookup

    IPAddress = IPv4Address | IPv6Address

log = get_logger(__name__)

_shared: dict[int, Any] = {}  # network namespace inode -> libnftables context
# libnftables reports the kernel's errno only as its strerror text.
ABSENT = os.strerror(errno.ENOENT)
# The ruleset changed while the kernel answered (another event committed):
# the kernel asks to ask again.
AGAIN = os.strerror(errno.EINTR)
ATTEMPTS = 20


def _one_line(error: object) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _new_context() -> Any:
    import nftables  # the distribution's binding of libnftables

    ctx = nftables.Nftables()
    ctx.set_json_output(True)
    ctx.set_handle_output(False)
    return ctx


class Nft:
    def __init__(self, dry_run: bool = False, *, context: Any = None) -> None:
        self._ctx = context if context is not None else _new_context()
        self.dry_run = dry_run
        self._lookup: SetLookup | None = None  # made on first use, in this namespace

    @classmethod
    def shared(cls, dry_run: bool = False) -> Nft:
        """A gateway on the process's one context for its current network
        namespace. A libnftables context allocates megabytes for its ruleset
        cache; creating one per event in a long-lived process makes the C
        heap creep (freed, but fragmented), while a reused one stays flat.
        Not for short-lived namespaces: the context's socket would keep a
        deleted namespace alive."""
        key = os.stat("/proc/thread-self/ns/net").st_ino
        context = _shared.get(key)
        if context is None:
            context = _shared[key] = _new_context()
        return cls(dry_run, context=context)

    def run(self, commands: list[Json], what: str) -> None:
        """Apply ``commands`` atomically, or raise ApplyError (nothing applied)."""
        if not commands:
            return
        if log.isEnabledFor(DEBUG):
            log.debug("nftables transaction (%s): %s", what, json.dumps(transaction(commands)))
        if self.dry_run:
            return
        rc, _output, error = self._ctx.json_cmd(transaction(commands))
        if rc == 0:
            from .leave import note_commit

            note_commit()
        if rc != 0:
            message = _one_line(error)
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
            for _ in range(ATTEMPTS):
                rc, output, error = self._ctx.json_cmd(transaction([command]))
                if rc == 0 or AGAIN not in str(error):
                    break
        finally:
            if terse:
                self._ctx.set_terse_output(False)
        if rc != 0:
            message = _one_line(error)
            if ABSENT in message:
                return None
            raise ApplyError(f"nftables cannot list {json.dumps(command)[:120]}: {message or f'error {rc}'}")
        if not output:
            return []
        return [item for item in output.get("nftables", []) if "metainfo" not in item]

    def has_element(self, family: str, table: str, set_name: str, addr: IPAddress, ifname: str | None = None) -> bool:
        """Whether the set holds ``addr`` (``ifname . addr`` with an interface name).

        One lookup of that key in the kernel, whatever the set's size (see
        qubesnet.netlink.nftset: libnftables' own lookup lists the whole set
        when the element is missing).
        """
        from .netlink.nftset import SetLookup, element_key
        from .netlink.nlsock import NetlinkError

        if self._lookup is None:
            self._lookup = SetLookup()
        try:
            return self._lookup.has(family, table, set_name, element_key(addr.packed, ifname))
        except NetlinkError as exc:
            raise ApplyError(f"cannot read set {set_name}: {exc.strerror}") from exc

    def accepts(self, commands: list[Json]) -> tuple[bool, str]:
        """Whether the kernel would apply ``commands`` (checked, then aborted), and why not.

        Used as a probe: a delete of an element is accepted exactly when the
        element is there; a flowtable exactly when the kernel supports them.
        """
        self._ctx.set_dry_run(True)
        try:
            rc, _output, error = self._ctx.json_cmd(transaction(commands))
        finally:
            self._ctx.set_dry_run(False)
        return rc == 0, _one_line(error)
