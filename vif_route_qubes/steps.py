"""The changes a plan is made of, each knowing its own inverse.

A step is a value: what to change, and what the object was before, as the
planner observed it. ``inverse()`` is therefore pure: the undo log of an
event is the inverses of the steps it applied, in reverse order, with no
query of the kernel. ``show()`` is the change as an administrator would type
it (iproute2, sysctl, nft), for ``--dry-run`` and debug logs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from qubesnet import nftjson as j
from qubesnet.records import Record
from qubesnet.validate import IPAddress

if TYPE_CHECKING:
    from typing import TypeAlias

    from qubesnet.nftjson import Json

    from .nssteps import NamespaceStep


class Rename(Record):
    ifindex: int
    old: str
    new: str

    def inverse(self) -> Step | None:
        return Rename(self.ifindex, self.new, self.old)

    def show(self) -> str:
        return f"ip link set {self.old} name {self.new}"


class SetLink(Record):
    ifindex: int
    ifname: str
    up: bool
    group: int
    was_up: bool
    was_group: int

    def inverse(self) -> Step | None:
        return SetLink(self.ifindex, self.ifname, self.was_up, self.was_group, self.up, self.group)

    def show(self) -> str:
        return f"ip link set {self.ifname} group {self.group} {'up' if self.up else 'down'}"


class SetSysctl(Record):
    key: str
    value: str
    previous: str

    def inverse(self) -> Step | None:
        return SetSysctl(self.key, self.previous, self.value)

    def show(self) -> str:
        return f"sysctl {self.key}={self.value}"


class PurgeConntrack(Record):
    addrs: tuple[IPAddress, ...]

    def inverse(self) -> Step | None:
        return None  # forgotten connections stay forgotten: harmless

    def show(self) -> str:
        return "; ".join(f"conntrack -D -s {a}; conntrack -D -d {a}" for a in self.addrs)


class NftChange(Record):
    """One nftables transaction; ``undo`` takes back exactly what it adds."""

    what: str
    commands: tuple[Json, ...]
    undo: tuple[Json, ...]

    def inverse(self) -> Step | None:
        return NftChange(f"undo {self.what}", self.undo, self.commands) if self.undo else None

    def show(self) -> str:
        return f"nft -j -f - <<'EOF'\n{json.dumps(j.transaction(list(self.commands)), indent=1)}\nEOF"


class RouteChange(Record):
    present: bool
    ifindex: int
    ifname: str
    dst: IPAddress
    metric: int

    def inverse(self) -> Step | None:
        return self._replace(present=not self.present)

    def show(self) -> str:
        return f"ip route {'add' if self.present else 'del'} {self.dst} dev {self.ifname} metric {self.metric}"


class NeighbourChange(Record):
    present: bool
    ifindex: int
    ifname: str
    addr: IPAddress
    mac: str
    previous: str | None = None  # the MAC of an entry this one replaces

    def inverse(self) -> Step | None:
        if self.present and self.previous is not None:
            return self._replace(mac=self.previous, previous=self.mac)
        return self._replace(present=not self.present, previous=None)

    def show(self) -> str:
        if self.present:
            return f"ip neigh replace {self.addr} lladdr {self.mac} dev {self.ifname} nud permanent"
        return f"ip neigh del {self.addr} dev {self.ifname}"


class AddressChange(Record):
    present: bool
    ifindex: int
    ifname: str
    addr: IPAddress
    prefixlen: int

    def inverse(self) -> Step | None:
        return self._replace(present=not self.present)

    def show(self) -> str:
        nodad = " nodad" if self.present and self.addr.version == 6 else ""
        return f"ip addr {'add' if self.present else 'del'} {self.addr}/{self.prefixlen} dev {self.ifname}{nodad}"


class RunHooks(Record):
    """The administrator's network hooks: ``HOOK COMMAND IFNAME TYPE [ADDR]``."""

    argv: tuple[str, ...]

    def inverse(self) -> Step | None:
        return None

    def show(self) -> str:
        return f"network hooks: {' '.join(self.argv)}"


class ReportConnected(Record):
    """hotplug-status=connected: last, so that a failure to report undoes all."""

    xenbus_path: str

    def inverse(self) -> Step | None:
        return None

    def show(self) -> str:
        return f"xenstore-write {self.xenbus_path}/hotplug-status connected"


CoreStep = (
    Rename | SetLink | SetSysctl | PurgeConntrack | NftChange | RouteChange | NeighbourChange | AddressChange
    | RunHooks | ReportConnected
)
if TYPE_CHECKING:
    Step: TypeAlias = CoreStep | NamespaceStep  # the namespace steps are in nssteps.py, imported only where used


class Plan(Record):
    command: str
    ifname: str  # the interface's name once the plan has run
    link_index: int | None  # the interface, for failing closed (None: gone, or not yet there)
    addresses: tuple[IPAddress, ...]  # the client addresses concerned
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = ()
