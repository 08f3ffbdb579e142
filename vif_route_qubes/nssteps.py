"""The steps of a mapped vif's private namespace (vif_route_qubes.mapped).

Apart from the other steps (steps.py) because few vifs are mapped: the
planner imports this module only for a plan that holds a namespace, and the
handlers of these steps (nshandlers.py) are loaded at their first use, so
that the ordinary online and offline do not pay for the classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qubesnet.constants import NAT_TABLE, VIF_MAC
from qubesnet.records import Record

if TYPE_CHECKING:
    from qubesnet.nftjson import Json

    from .mapped import MappedAddress
    from .steps import Step


class CreateNamespace(Record):
    ns: str

    def inverse(self) -> Step | None:
        return DeleteNamespace(self.ns)

    def show(self) -> str:
        return f"ip netns add {self.ns}"


class DeleteNamespace(Record):
    """An empty namespace of ours (the undo of its creation)."""

    ns: str

    def inverse(self) -> Step | None:
        return None

    def show(self) -> str:
        return f"ip netns del {self.ns}"


class MoveIntoNamespace(Record):
    """The real vif into the namespace, renamed to ``ifname`` on the way.

    By libxl's name (a validated ``vif<domid>.<devid>``, held under the
    interface lock): after a namespace of another mapping was taken down in
    the same plan, the vif is back under a new index.
    """

    ns: str
    old_name: str
    ifname: str

    def inverse(self) -> Step | None:
        return MoveBack(self.ns, self.ifname, self.old_name)

    def show(self) -> str:
        rename = f" name {self.ifname}" if self.ifname != self.old_name else ""
        return f"ip link set {self.old_name} netns {self.ns}{rename}"


class MoveBack(Record):
    ns: str
    ifname: str
    restore_name: str

    def inverse(self) -> Step | None:
        return None

    def show(self) -> str:
        return f"ip -n {self.ns} link set {self.ifname} down netns <netvm> name {self.restore_name}"


class CreateVeth(Record):
    ns: str
    ifname: str  # the netvm end: takes the vif's place
    peer: str
    peer_mac: str  # the client's MAC: the netvm's neighbour entry points at it

    def inverse(self) -> Step | None:
        return DeleteVeth(self.ifname)

    def show(self) -> str:
        return (f"ip link add {self.ifname} address {VIF_MAC} type veth peer name {self.peer} "
                f"address {self.peer_mac} netns {self.ns}")


class DeleteVeth(Record):
    ifname: str

    def inverse(self) -> Step | None:
        return None

    def show(self) -> str:
        return f"ip link del {self.ifname}"


class ConfigureNamespace(Record):
    """Inside the namespace: IPv6 off, addresses, neighbours, links up, the netdev table."""

    ns: str
    ifname: str
    peer: str
    mapping: MappedAddress
    client_mac: str
    rules: tuple[Json, ...]

    def inverse(self) -> Step | None:
        return None  # what it configures lives inside the namespace and goes with it

    def show(self) -> str:
        m = self.mapping
        return (f"ip netns exec {self.ns}: IPv6 off; {m.visible_gateway}/32 on {self.ifname} (arp_ignore 1), "
                f"{m.real}/32 on {self.peer}; neighbours {m.visible} -> {self.client_mac}, {m.gateway} -> {VIF_MAC}; "
                f"links up; netdev table {NAT_TABLE} ({len(self.rules)} commands)")


class RemoveNamespace(Record):
    """Tear down: veth gone, the real vif back in the netvm as ``restore_name``, namespace gone."""

    ns: str
    ifname: str
    peer: str
    restore_name: str

    def inverse(self) -> Step | None:
        return None

    def show(self) -> str:
        return (f"ip -n {self.ns} link del {self.peer}; ip -n {self.ns} link set {self.ifname} netns <netvm> "
                f"name {self.restore_name}; ip netns del {self.ns}")


NamespaceStep = (
    CreateNamespace | DeleteNamespace | MoveIntoNamespace | MoveBack | CreateVeth | DeleteVeth | ConfigureNamespace
    | RemoveNamespace
)
