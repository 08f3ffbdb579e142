"""Every side effect of a vif event goes through one of these gateways.

They are passed in (never module globals), so that the applier can be run
against recording ones: ``--dry-run`` is :func:`recording`, which reads
through to the real gateways (the plan is computed from the real kernel)
and records every write instead of making it. No handler checks a flag.

The recording gateways fail closed: only the methods listed in ``READS``
reach the real gateway; the writes listed in ``WRITES`` are recorded; any
other attribute raises, so a write method added to a gateway later can
never run for real under ``--dry-run``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from qubesnet.constants import NETNS_DIR
from qubesnet.records import Record

if TYPE_CHECKING:
    from qubesnet.netlink.ctnl import Conntrack
    from qubesnet.netlink.rtnl import Rtnl
    from qubesnet.nft import Nft
    from qubesnet.sysctl import Sysctl

    from .hooks import Hooks
    from .nsgateway import Namespaces
    from .status import HotplugStatus


class Gateways(Record):
    rtnl: Rtnl
    nft: Nft
    sysctl: Sysctl
    conntrack: Conntrack
    hooks: Hooks
    status: HotplugStatus
    namespaces: Namespaces

    def close(self) -> None:
        self.rtnl.close()
        self.conntrack.close()


# The methods of each gateway known to only read (or to release what the
# gateway holds): these, and only these, reach the real gateway under
# --dry-run. A method in neither table raises DryRunError.
READS: dict[str, frozenset[str]] = {
    "rtnl": frozenset({"get_link", "list_links", "list_addresses", "host_routes_to", "host_routes_on",
                       "lookup_route", "list_permanent_neighbours", "close"}),
    "nft": frozenset({"query", "has_element", "accepts"}),
    "sysctl": frozenset({"exists", "read"}),
    "conntrack": frozenset({"close", "settle"}),
    "hooks": frozenset({"executables"}),
    "status": frozenset(),
    "namespaces": frozenset({"exists", "links_inside", "table_inside"}),
}

# The writes of each gateway and what a recorded one answers ("done").
WRITES: dict[str, dict[str, object]] = {
    "rtnl": {name: True for name in ("set_link", "create_veth", "delete_link", "add_address", "del_address",
                                      "add_route", "del_route", "add_neighbour", "del_neighbour")},
    "nft": {"run": None},
    "sysctl": {"write": None},
    "conntrack": {"purge": 0, "start_purge": None},
    "hooks": {"run": None},
    "status": {"connected": None, "error": None},
    "namespaces": {name: None for name in ("create", "delete", "move_in", "move_back", "create_veth",
                                           "delete_link_named", "configure", "remove")},
}


class DryRunError(AssertionError):
    """A dry run reached a gateway method that is neither a known read nor a known write (a bug)."""


class Recorder:
    """Known reads go to ``real``; known writes are recorded in ``log`` and
    answer as done; anything else raises :class:`DryRunError`."""

    def __init__(self, name: str, real: object, log: Callable[[str], None]) -> None:
        self._name = name
        self._real = real
        self._reads = READS[name]
        self._writes = WRITES[name]
        self._log = log

    def __getattr__(self, attr: str) -> Any:
        if attr in self._writes:
            result = self._writes[attr]

            def record(*args: object, **kwargs: object) -> object:
                shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
                self._log(f"{self._name}.{attr}({', '.join(shown)})")
                return result

            return record
        if attr in self._reads:
            return getattr(self._real, attr)
        raise DryRunError(f"dry run: {self._name}.{attr} is not known to be a read; "
                          f"list it in READS or WRITES of vif_route_qubes/gateways.py")


def recording(real: Gateways, log: Callable[[str], None]) -> Gateways:
    """The dry-run gateways: the same reads as ``real``, no writes."""
    return Gateways(*(cast(Any, Recorder(name, getattr(real, name), log)) for name in Gateways._fields))


class LazyNamespaces:
    """The namespace gateway, loaded on first real use: every event asks
    whether a vif has a namespace, few vifs ever do."""

    def __init__(self) -> None:
        self._impl: Namespaces | None = None

    def exists(self, ns: str) -> bool:
        return os.path.exists(os.path.join(NETNS_DIR, ns))

    def __getattr__(self, attr: str) -> Any:
        if self._impl is None:
            from .nsgateway import Namespaces

            self._impl = Namespaces()
        return getattr(self._impl, attr)


def namespaces_gateway() -> Namespaces:
    return cast("Namespaces", LazyNamespaces())
