"""The thin layer that touches the system: query facts, apply a plan, undo.

``online`` keeps a compensation log: every step that changed something
records how to take it back, and a failure unwinds the log in reverse,
leaving the link down. ``offline`` is best effort: every step is tried and
the errors are reported together.

Netlink operations address the interface by the index found before
planning, never by name: a rename, or a name that another interface took,
cannot redirect them to the wrong device.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

from qubesnet import nftjson as j
from qubesnet.constants import FAMILIES, FLOW_TABLE, QUBES_TABLE, VIF_GROUP
from qubesnet.errors import ApplyError, QubesNetError
from qubesnet.layout import required_chains
from qubesnet.netlink.ctnl import Conntrack, PurgeInBackground
from qubesnet.netlink.nlsock import NetlinkError
from qubesnet.netlink.rtnl import Link, Rtnl
from qubesnet.nft import Nft
from qubesnet.sysctl import Sysctl

from .hooks import Hooks
from .inputs import VifInputs
from .nftplan import IPAddress, allowed_element, build_add_elements, build_remove_elements, downstream_element, family_of
from .plan import (
    AntispoofElements,
    Facts,
    GatewayAddress,
    HostRoute,
    LinkState,
    Neighbour,
    Plan,
    PurgeConntrack,
    Rename,
    ReportConnected,
    RunHooks,
    SetSysctl,
    Step,
    ipv6_conf,
)
from .status import HotplugStatus

if TYPE_CHECKING:
    from .mapped import MappedStep

log = logging.getLogger(__name__)


class Gateways(NamedTuple):
    """Every side effect goes through one of these (each has a dry_run flag)."""

    rtnl: Rtnl
    nft: Nft
    sysctl: Sysctl
    conntrack: Conntrack
    hooks: Hooks
    status: HotplugStatus

    def close(self) -> None:
        self.rtnl.close()
        self.conntrack.close()


def _find_link(gw: Gateways, inp: VifInputs) -> Link | None:
    link = gw.rtnl.get_link(inp.vif.name)
    if link is None and inp.renamed:
        # Renamed by an earlier run: trust the name only if the interface is
        # in the vif group, so that a vifname naming the uplink (or any other
        # interface) can never make us reconfigure or take down that one.
        link = gw.rtnl.get_link(inp.ifname)
        if link is not None and link.group != VIF_GROUP:
            link = None
    return link


def query_facts(gw: Gateways, inp: VifInputs, *, mapped: bool = False, addresses: bool = False) -> Facts:
    """Read-only look at the kernel: the interface, IPv6, the nftables layout.

    Every query here costs the same whatever the number of VMs: no set
    contents are listed. For a mapped vif the interface is the veth end
    this event created (or checked) under the vif's name.
    """
    link = gw.rtnl.get_link(inp.ifname) if mapped else _find_link(gw, inp)
    ipv6_on_vif = not mapped and link is not None and gw.sysctl.read(ipv6_conf(link.name, "disable_ipv6")) == "0"
    # One listing of the chains (no rules, no set elements) tells what exists
    # of the qubes layout and whether the acceleration table is there.
    chains: dict[str, set[str]] = {}
    flow_table_exists = False
    for item in gw.nft.query({"list": {"chains": {}}}) or []:
        chain = item.get("chain", {})
        if chain.get("table") == QUBES_TABLE:
            chains.setdefault(chain.get("family"), set()).add(chain.get("name"))
        elif chain.get("table") == FLOW_TABLE and chain.get("family") == "inet":
            flow_table_exists = True
    tables = set(chains)
    if any(not required_chains(family) <= chains.get(family, set()) for family in FAMILIES):
        # Only when some layout is missing does it matter (for the undo)
        # whether a table exists without chains.
        tables = {
            item["table"]["family"]
            for item in gw.nft.query({"list": {"tables": {}}}) or []
            if item.get("table", {}).get("name") == QUBES_TABLE
        }
    return Facts(
        link_name=link.name if link else None,
        link_index=link.index if link else None,
        ipv6_kernel=gw.sysctl.exists("net/ipv6"),
        ipv6_on_vif=ipv6_on_vif,
        chains={family: frozenset(names) for family, names in chains.items()},
        qubes_tables=frozenset(tables),
        flow_table_exists=flow_table_exists,
        mapped=mapped,
        link_addresses=tuple(gw.rtnl.list_addresses(link.index)) if addresses and link is not None else (),
    )


class Applier:
    """Runs steps, keeping the compensation log of what they changed."""

    def __init__(self, gw: Gateways, inp: VifInputs, report: Callable[[str], None]) -> None:
        self.gw = gw
        self.inp = inp
        self.report = report
        self.dry_run = gw.rtnl.dry_run
        self.plan: Plan | None = None
        self.undo: list[tuple[str, Callable[[], object]]] = []
        self.early_purge: PurgeInBackground | None = None  # started before planning

    # --- running ---

    def apply_steps(self, steps: Iterable[Step | MappedStep]) -> None:
        """Apply in order; stop at the first failure (the caller rolls back)."""
        for step in steps:
            self._apply(step)

    def _apply(self, step: Step | MappedStep) -> None:
        handler = getattr(self, "_" + type(step).__name__, None)
        if handler is not None:
            handler(step)
            return
        from .apply_mapped import HANDLERS  # a namespace step: rare, loaded on demand

        HANDLERS[type(step)](self, step)

    def apply_online(self, plan: Plan) -> None:
        self.plan = plan
        self.apply_steps(plan.steps)

    def apply_best_effort(self, steps: Iterable[Step | MappedStep]) -> list[str]:
        """Try every step; return the errors (empty when all went well)."""
        errors = []
        for step in steps:
            try:
                self.apply_steps([step])
            except QubesNetError as exc:
                errors.append(str(exc))
                log.error("%s", exc)
        return errors

    def apply_offline(self, plan: Plan) -> list[str]:
        self.plan = plan
        return self.apply_best_effort(plan.steps)

    def rollback(self) -> None:
        # Fail closed first: whatever happens below, the vif carries no traffic.
        if self.plan is not None and self.plan.link_index is not None:
            try:
                self.gw.rtnl.set_link(self.plan.link_index, up=False)
            except NetlinkError:
                pass  # the interface is gone: it carries nothing either
        for what, undo in reversed(self.undo):
            try:
                undo()
                self.report(f"undo: {what}")
            except (QubesNetError, NetlinkError, OSError) as exc:
                log.error("could not undo %s: %s", what, exc)
        self.undo.clear()

    # --- helpers ---

    @property
    def _plan(self) -> Plan:
        assert self.plan is not None, "a foundation step runs within a plan"
        return self.plan

    def _index(self) -> int:
        index = self._plan.link_index
        if index is None:  # planning guarantees an interface for online
            raise ApplyError(f"interface {self._plan.ifname} does not exist")
        return index

    def _netlink(self, what: str, action: Callable[[], object]) -> object:
        try:
            return action()
        except NetlinkError as exc:
            raise ApplyError(f"{what} on {self.inp.ifname} failed: {exc.strerror}") from exc

    def _has(self, element: j.Json) -> bool:
        return bool(self.gw.nft.query({"get": element}))

    def _held_elsewhere(self, addr: IPAddress) -> bool:
        """Whether another interface still has a host route to ``addr``.

        Runs after this vif's own route is gone (plan order), so a host route
        found now belongs to another VM using the same address (a new VM
        reusing it before the old one's offline ran): the address must stay
        in ``downstream`` to keep protecting that VM.
        """
        found = self.gw.rtnl.lookup_route(addr)
        if found is None or found.oif is None or found.dst_len != addr.max_prefixlen:
            return False
        return found.oif != self._plan.link_index

    def _run_nft(self, commands: list[j.Json], flowtable: list[j.Json]) -> None:
        what = f"{self._plan.command} {self._plan.ifname}"
        self.report(f"nft -j -f - <<'EOF'\n{json.dumps(j.transaction(commands + flowtable), indent=1)}\nEOF")
        try:
            self.gw.nft.run(commands + flowtable, what)
        except ApplyError as exc:
            if not flowtable:
                raise
            # The acceleration is optional: retry without it, so that a kernel
            # lacking flowtable support costs the client nothing but speed.
            self.gw.nft.run(commands, what)
            log.warning("flowtable acceleration skipped: %s", exc)

    # --- one method per step type ---

    def _Rename(self, step: Rename) -> None:
        self.report(f"ip link set {step.old} name {step.new}")
        index = self._index()
        self._netlink("rename", lambda: self.gw.rtnl.set_link(index, name=step.new))
        self.undo.append((f"rename {step.new} back to {step.old}", lambda: self.gw.rtnl.set_link(index, name=step.old)))

    def _SetSysctl(self, step: SetSysctl) -> None:
        old = self.gw.sysctl.read(step.key)
        if old is None:
            raise ApplyError(f"sysctl {step.key} does not exist; is the interface gone?")
        self.report(f"sysctl {step.key}={step.value}")
        if old != step.value:
            self.gw.sysctl.write(step.key, step.value)
            self.undo.append((f"sysctl {step.key}={old}", lambda: self.gw.sysctl.write(step.key, old)))

    def _PurgeConntrack(self, step: PurgeConntrack) -> None:
        self.report("".join(f"conntrack -D -s {a}; conntrack -D -d {a}; " for a in step.addrs).strip())
        background, self.early_purge = self.early_purge, None
        try:
            if background is not None and background.addrs == step.addrs:
                count = background.result()
            else:
                count = self.gw.conntrack.purge(step.addrs)
        except NetlinkError as exc:
            raise ApplyError(f"cannot purge stale conntrack entries: {exc.strerror}") from exc
        if count:
            log.info("purged %d stale conntrack entries", count)

    def _AntispoofElements(self, step: AntispoofElements) -> None:
        ifname = self._plan.ifname
        if step.present:
            # What this run really adds, for the undo log (add is idempotent).
            new_allowed = [a for a in step.addresses if not self._has(allowed_element(family_of(a), ifname, a))]
            new_down = [a for a in step.addresses if not self._has(downstream_element(family_of(a), a))]
            self._run_nft(list(step.layout) + build_add_elements(ifname, step.addresses), list(step.flowtable))
            undo = build_remove_elements(ifname, new_allowed, new_down) + list(step.layout_undo)
            if undo:
                self.undo.append(("anti-spoofing set elements", lambda: self.gw.nft.run(undo, "undo")))
            return
        held = {a for a in step.addresses if self._held_elsewhere(a)}
        for addr in held:
            log.info("%s stays in the downstream set: another interface routes it", addr)
        released = [a for a in step.addresses if a not in held]
        self._run_nft(build_remove_elements(ifname, step.addresses, released), list(step.flowtable))

    def _LinkState(self, step: LinkState) -> None:
        state = "up" if step.up else "down"
        self.report(f"ip link set {self._plan.ifname} group {step.group} {state}")
        index = self._index()
        self._netlink("link set", lambda: self.gw.rtnl.set_link(index, up=step.up, group=step.group))
        if step.up:
            self.undo.append(("link group", lambda: self.gw.rtnl.set_link(index, up=False, group=0)))

    def _HostRoute(self, step: HostRoute) -> None:
        verb = "add" if step.present else "del"
        self.report(f"ip route {verb} {step.dst} dev {self._plan.ifname} metric {step.metric}")
        index = self._index()
        if not step.present:
            self._netlink("route del", lambda: self.gw.rtnl.del_route(index, step.dst, step.metric))
        elif self._netlink("route add", lambda: self.gw.rtnl.add_route(index, step.dst, step.metric)):
            self.undo.append((f"route {step.dst}", lambda: self.gw.rtnl.del_route(index, step.dst, step.metric)))

    def _Neighbour(self, step: Neighbour) -> None:
        verb = "add" if step.present else "del"
        lladdr = f" lladdr {step.mac}" if step.present else ""
        self.report(f"ip neigh {verb} {step.addr}{lladdr} dev {self._plan.ifname} nud permanent")
        index = self._index()
        if not step.present:
            self._netlink("neighbour del", lambda: self.gw.rtnl.del_neighbour(index, step.addr))
            return
        mac = step.mac
        assert mac is not None, "online plans carry the client's MAC"
        if self._netlink("neighbour add", lambda: self.gw.rtnl.add_neighbour(index, step.addr, mac)):
            self.undo.append((f"neighbour {step.addr}", lambda: self.gw.rtnl.del_neighbour(index, step.addr)))

    def _GatewayAddress(self, step: GatewayAddress) -> None:
        verb = "add" if step.present else "del"
        self.report(f"ip addr {verb} {step.addr}/{step.prefixlen} dev {self._plan.ifname}")
        index = self._index()
        if not step.present:
            self._netlink("address del", lambda: self.gw.rtnl.del_address(index, step.addr, step.prefixlen))
            return
        # The same gateway address sits on every vif: duplicate address
        # detection would only delay it, so it is skipped.
        nodad = step.addr.version == 6
        add = lambda: self.gw.rtnl.add_address(index, step.addr, step.prefixlen, nodad=nodad)  # noqa: E731
        if self._netlink("address add", add):
            self.undo.append((f"address {step.addr}", lambda: self.gw.rtnl.del_address(index, step.addr, step.prefixlen)))

    def _RunHooks(self, step: RunHooks) -> None:
        argv = [step.command, self._plan.ifname, self.inp.vif_type]
        if step.addr is not None:
            argv.append(str(step.addr))
        self.report(f"network hooks: {' '.join(argv)}")
        self.gw.hooks.run(argv)

    def _ReportConnected(self, step: ReportConnected) -> None:
        self.report(f"xenstore-write {self.gw.status.base}/hotplug-status connected")
        self.gw.status.connected()

