"""The kinds of object a vif consists of, each behind one small interface (pure).

A kind names its objects in a :class:`~.state.VifState` (``described``),
looks each up in what :mod:`.observe` read (``missing`` for online,
``present`` for removal: "ours and there"), gives the steps that add and
remove one, its rank, and the phrase ``status`` shows for a missing one.
``diff.py`` is then one loop in each direction: online makes the missing
objects in rank order, removal takes the present ones away in reverse.

What is not an object stays explicit in ``diff.py``: the rename, the
hooks, the report to libxl, and the link's removal, which offline does
first (traffic stops before anything else goes). The conntrack purge is a
kind with nothing to observe: online always purges, at its rank, before
the anti-spoofing transaction; offline purges last.

Kinds whose changes are nftables commands (``NFT``) are gathered into the
event's one transaction, with its undo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from qubesnet.constants import SET_DOWNSTREAM
from qubesnet.errors import ApplyError
from qubesnet.layout import build_antispoof
from qubesnet.nftjson import Json
from qubesnet.records import Record
from qubesnet.validate import IPAddress

from .nftplan import build_elements, build_flowtable
from .state import Address, Element, Link, Neighbour, Observed, Route, Sysctl, VifState
from .steps import AddressChange, NeighbourChange, PurgeConntrack, RouteChange, SetLink, SetSysctl

if TYPE_CHECKING:
    from typing import TypeAlias

    from .steps import Step

T = TypeVar("T")


class NftCommands(Record):
    """Part of the event's one nftables transaction, and what takes it back."""

    commands: tuple[Json, ...]
    undo: tuple[Json, ...] = ()


if TYPE_CHECKING:
    Change: TypeAlias = Step | NftCommands  # a namespace step is never one: their classes load only for mapped vifs


class Kind(Generic[T]):
    """One kind of object. Subclasses override what differs; ``link`` is the
    interface the steps address (online: always there; removal: None once
    the interface is gone, and kinds that live on it have nothing left)."""

    name = ""
    rank = 0
    on_link = True  # lives on the interface (goes with it)

    def described(self, state: VifState, obs: Observed) -> tuple[T, ...]:
        raise NotImplementedError

    def missing(self, obj: T, state: VifState, obs: Observed) -> bool:
        raise NotImplementedError

    def present(self, obj: T, state: VifState, obs: Observed) -> bool:
        return not self.missing(obj, state, obs)

    def add(self, obj: T, link: Link, state: VifState, obs: Observed) -> list[Change]:
        raise NotImplementedError

    def remove(self, obj: T, link: Link | None, state: VifState, obs: Observed) -> list[Change]:
        return []

    def drift(self, obj: T, obs: Observed) -> list[str]:
        raise NotImplementedError


class Sysctls(Kind[Sysctl]):
    name, rank = "sysctl", 10

    def described(self, state: VifState, obs: Observed) -> tuple[Sysctl, ...]:
        return state.sysctls

    def missing(self, obj: Sysctl, state: VifState, obs: Observed) -> bool:
        return obs.sysctls.get(obj.key) != obj.value

    def present(self, obj: Sysctl, state: VifState, obs: Observed) -> bool:
        # Ours when it still has the value we set, and a new interface gets another.
        current, default = obs.sysctls.get(obj.key), obs.defaults.get(obj.key)
        return current == obj.value and default is not None and default != current

    def add(self, obj: Sysctl, link: Link, state: VifState, obs: Observed) -> list[Change]:
        current = obs.sysctls.get(obj.key)
        if current is None:
            raise ApplyError(f"sysctl {obj.key} does not exist; is the interface gone?")
        return [SetSysctl(obj.key, obj.value, current)]

    def remove(self, obj: Sysctl, link: Link | None, state: VifState, obs: Observed) -> list[Change]:
        assert link is not None
        current, default = obs.sysctls.get(obj.key), obs.defaults.get(obj.key)
        assert current is not None and default is not None
        key = obj.key.replace(f"/conf/{state.ifname}/", f"/conf/{link.name}/", 1)
        return [SetSysctl(key, default, current)]  # back to what a new interface gets

    def drift(self, obj: Sysctl, obs: Observed) -> list[str]:
        return [f"sysctl {obj.key.rsplit('/', 1)[-1]} is {obs.sysctls.get(obj.key)}, not {obj.value}"]


class Purge(Kind[tuple[IPAddress, ...]]):
    """Stale connections of the client's addresses: nothing to observe, so
    online always purges; offline purges last, after the removal loop."""

    name, rank, on_link = "conntrack", 15, False

    def described(self, state: VifState, obs: Observed) -> tuple[tuple[IPAddress, ...], ...]:
        return (state.purge,) if state.purge else ()

    def missing(self, obj: tuple[IPAddress, ...], state: VifState, obs: Observed) -> bool:
        return True

    def present(self, obj: tuple[IPAddress, ...], state: VifState, obs: Observed) -> bool:
        return False

    def add(self, obj: tuple[IPAddress, ...], link: Link, state: VifState, obs: Observed) -> list[Change]:
        return [PurgeConntrack(obj)]

    def drift(self, obj: tuple[IPAddress, ...], obs: Observed) -> list[str]:
        return []  # what every online does, not a difference


class Layout(Kind[str]):
    """The anti-spoofing table, sets and chains of a family: shared by every
    vif and part of the netvm's base layout, so created when missing and
    never removed by a vif (not even by the undo of the event that created
    them: another vif's event may rely on them the moment they exist)."""

    name, rank, on_link = "anti-spoofing layout", 19, False

    def described(self, state: VifState, obs: Observed) -> tuple[str, ...]:
        return tuple(obs.base)

    def _commands(self, family: str, obs: Observed) -> list[Json]:
        objs = obs.base[family]
        return build_antispoof(family, table=objs.table, sets=objs.sets, chains=objs.chains)

    def missing(self, obj: str, state: VifState, obs: Observed) -> bool:
        return bool(self._commands(obj, obs))

    def present(self, obj: str, state: VifState, obs: Observed) -> bool:
        return False

    def add(self, obj: str, link: Link, state: VifState, obs: Observed) -> list[Change]:
        return [NftCommands(tuple(self._commands(obj, obs)))]

    def drift(self, obj: str, obs: Observed) -> list[str]:
        found = []
        for command in self._commands(obj, obs):
            ((kind, body),) = command["add"].items()
            if kind in ("table", "set", "chain"):
                where = [body["family"], body.get("table"), body.get("name")]
                found.append(" ".join(["missing", kind, *(w for w in where if w)]))
        return found


def kept_in_downstream(state: VifState, obs: Observed) -> frozenset[Element]:
    """Downstream elements a removal must keep: another interface routes the
    address (a new VM reusing it before the old one's offline ran), whose
    packets from the uplink claiming it must still be dropped."""
    return frozenset(e for e in state.elements if e.kind == SET_DOWNSTREAM and e.addr in obs.routed_elsewhere)


class Elements(Kind[Element]):
    name, rank, on_link = "set element", 20, False

    def described(self, state: VifState, obs: Observed) -> tuple[Element, ...]:
        return state.elements

    def missing(self, obj: Element, state: VifState, obs: Observed) -> bool:
        return obj not in obs.elements

    def present(self, obj: Element, state: VifState, obs: Observed) -> bool:
        return obj in obs.elements and obj not in kept_in_downstream(state, obs)

    def add(self, obj: Element, link: Link, state: VifState, obs: Observed) -> list[Change]:
        return [NftCommands(tuple(build_elements([obj], present=True)), tuple(build_elements([obj], present=False)))]

    def remove(self, obj: Element, link: Link | None, state: VifState, obs: Observed) -> list[Change]:
        return [NftCommands(tuple(build_elements([obj], present=False)))]

    def drift(self, obj: Element, obs: Observed) -> list[str]:
        return [f"missing {obj.kind} {obj.addr}"]


class Flowtable(Kind[str]):
    """The interface in the acceleration flowtable (our table: the
    membership is ours whenever it is there). A kernel without flowtables
    has nothing to add (diff notes it)."""

    name, rank = "flowtable membership", 21

    def described(self, state: VifState, obs: Observed) -> tuple[str, ...]:
        return (state.ifname,) if state.flowtable else ()

    def missing(self, obj: str, state: VifState, obs: Observed) -> bool:
        return obs.flow.supported and not obs.flow.member

    def present(self, obj: str, state: VifState, obs: Observed) -> bool:
        return obs.flow.member

    def add(self, obj: str, link: Link, state: VifState, obs: Observed) -> list[Change]:
        return [NftCommands(tuple(build_flowtable(obj, table=obs.flow.table, present=True)),
                            tuple(build_flowtable(obj, table=True, present=False)))]

    def remove(self, obj: str, link: Link | None, state: VifState, obs: Observed) -> list[Change]:
        assert link is not None
        return [NftCommands(tuple(build_flowtable(link.name, table=True, present=False)))]

    def drift(self, obj: str, obs: Observed) -> list[str]:
        return ["not in the flowtable"]


class LinkUp(Kind[int]):
    """The interface up in the vif group: only after the anti-spoofing
    transaction (its traffic must pass the antispoof chain), before routes,
    neighbours and addresses (IPv4 routes need the link up; the kernel
    flushes the neighbour entries of a link that goes down). Its removal
    is offline's first step, not part of the loop."""

    name, rank = "link", 30

    def described(self, state: VifState, obs: Observed) -> tuple[int, ...]:
        return (state.group,)

    def missing(self, obj: int, state: VifState, obs: Observed) -> bool:
        return obs.link is None or not (obs.link.up and obs.link.group == obj)

    def present(self, obj: int, state: VifState, obs: Observed) -> bool:
        return False

    def add(self, obj: int, link: Link, state: VifState, obs: Observed) -> list[Change]:
        return [SetLink(link.ifindex, state.ifname, True, obj, link.up, link.group)]

    def drift(self, obj: int, obs: Observed) -> list[str]:
        link = obs.link
        return ["link down" if link is None or not link.up else f"link in group {link.group}"]


class Routes(Kind[Route]):
    name, rank = "route", 40

    def described(self, state: VifState, obs: Observed) -> tuple[Route, ...]:
        return state.routes

    def missing(self, obj: Route, state: VifState, obs: Observed) -> bool:
        return obj not in obs.routes

    def add(self, obj: Route, link: Link, state: VifState, obs: Observed) -> list[Change]:
        return [RouteChange(True, link.ifindex, state.ifname, obj.dst, obj.metric)]

    def remove(self, obj: Route, link: Link | None, state: VifState, obs: Observed) -> list[Change]:
        assert link is not None
        return [RouteChange(False, link.ifindex, link.name, obj.dst, obj.metric)]

    def drift(self, obj: Route, obs: Observed) -> list[str]:
        return [f"no route to {obj.dst}"]


class Neighbours(Kind[Neighbour]):
    """Permanent entries for the client's addresses. Without a known MAC
    (offline without the mac key) any entry for the address is ours."""

    name, rank = "neighbour", 50

    def described(self, state: VifState, obs: Observed) -> tuple[Neighbour, ...]:
        return state.neighbours

    def missing(self, obj: Neighbour, state: VifState, obs: Observed) -> bool:
        return obj not in obs.neighbours and obj.mac is not None

    def present(self, obj: Neighbour, state: VifState, obs: Observed) -> bool:
        return obj.addr in {n.addr for n in obs.neighbours}

    def add(self, obj: Neighbour, link: Link, state: VifState, obs: Observed) -> list[Change]:
        assert obj.mac is not None
        found = {n.addr: n.mac for n in obs.neighbours}
        return [NeighbourChange(True, link.ifindex, state.ifname, obj.addr, obj.mac, found.get(obj.addr))]

    def remove(self, obj: Neighbour, link: Link | None, state: VifState, obs: Observed) -> list[Change]:
        assert link is not None
        return [NeighbourChange(False, link.ifindex, link.name, obj.addr, obj.mac or "")]

    def drift(self, obj: Neighbour, obs: Observed) -> list[str]:
        return [f"no neighbour entry for {obj.addr}"]


class Addresses(Kind[Address]):
    name, rank = "gateway address", 60

    def described(self, state: VifState, obs: Observed) -> tuple[Address, ...]:
        return state.addresses

    def missing(self, obj: Address, state: VifState, obs: Observed) -> bool:
        return obj not in obs.addresses

    def add(self, obj: Address, link: Link, state: VifState, obs: Observed) -> list[Change]:
        return [AddressChange(True, link.ifindex, state.ifname, obj.addr, obj.prefixlen)]

    def remove(self, obj: Address, link: Link | None, state: VifState, obs: Observed) -> list[Change]:
        assert link is not None
        return [AddressChange(False, link.ifindex, link.name, obj.addr, obj.prefixlen)]

    def drift(self, obj: Address, obs: Observed) -> list[str]:
        return [f"no gateway address {obj.addr}"]


# In rank order: online's order, reversed for removal.
KINDS: tuple[Kind[Any], ...] = tuple(sorted(
    (Sysctls(), Purge(), Layout(), Elements(), Flowtable(), LinkUp(), Routes(), Neighbours(), Addresses()),
    key=lambda kind: kind.rank))


def additions(state: VifState, obs: Observed, link: Link) -> list[Change]:
    """Every missing object's changes, in rank order."""
    return [change for kind in KINDS for obj in kind.described(state, obs) if kind.missing(obj, state, obs)
            for change in kind.add(obj, link, state, obs)]


def removals(state: VifState, obs: Observed) -> list[Change]:
    """Every present object's removal, in reverse rank order; without the
    interface, what lived on it went with it."""
    link = obs.link
    return [change for kind in reversed(KINDS) if link is not None or not kind.on_link
            for obj in kind.described(state, obs) if kind.present(obj, state, obs)
            for change in kind.remove(obj, link, state, obs)]


def drift(state: VifState, obs: Observed) -> list[str]:
    """What differs, in words: each missing object's phrase, in rank order."""
    return [phrase for kind in KINDS for obj in kind.described(state, obs) if kind.missing(obj, state, obs)
            for phrase in kind.drift(obj, obs)]
