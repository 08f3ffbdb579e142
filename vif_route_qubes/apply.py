"""The thin layer that touches the system: query facts, apply a plan, undo.

``online`` keeps a compensation log: every step that changed something
records how to take it back, and a failure unwinds the log in reverse,
leaving the link down. ``offline`` is best effort: every step is tried and
the errors are reported together.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from qubesnet import nftjson as j
from qubesnet.constants import FLOW_TABLE, QUBES_TABLE
from qubesnet.errors import ApplyError, QubesNetError
from qubesnet.netlink.ctnl import Conntrack
from qubesnet.netlink.nlsock import NetlinkError
from qubesnet.netlink.rtnl import Rtnl
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
    RunHooks,
    SetSysctl,
    Step,
    ipv6_conf,
)

log = logging.getLogger(__name__)


@dataclass
class Gateways:
    """Every side effect goes through one of these (each has a dry_run flag)."""

    rtnl: Rtnl
    nft: Nft
    sysctl: Sysctl
    conntrack: Conntrack
    hooks: Hooks

    def close(self) -> None:
        self.rtnl.close()
        self.conntrack.close()


def query_facts(gw: Gateways, inp: VifInputs) -> Facts:
    """Read-only look at the kernel: the interface, IPv6, the nftables layout."""
    link_name = None
    for name in dict.fromkeys((inp.ifname, inp.vif.name)):
        if gw.rtnl.get_link(name) is not None:
            link_name = name
            break
    ipv6_kernel = gw.sysctl.exists("net/ipv6")
    ipv6_on_vif = bool(link_name) and gw.sysctl.read(ipv6_conf(link_name or "", "disable_ipv6")) == "0"
    tables = {
        item["table"]["family"]
        for item in gw.nft.query({"list": {"tables": {}}}) or []
        if item.get("table", {}).get("name") == QUBES_TABLE
    }
    chains: dict[str, set[str]] = {}
    for item in gw.nft.query({"list": {"chains": {}}}) or []:
        chain = item.get("chain", {})
        if chain.get("table") == QUBES_TABLE:
            chains.setdefault(chain.get("family"), set()).add(chain.get("name"))
    flow_table_exists = False
    if inp.flowtable or link_name:
        flow_table_exists = gw.nft.query({"list": {"table": {"family": "inet", "name": FLOW_TABLE}}}) is not None
    return Facts(
        link_name=link_name,
        ipv6_kernel=ipv6_kernel,
        ipv6_on_vif=ipv6_on_vif,
        chains={family: frozenset(names) for family, names in chains.items()},
        qubes_tables=frozenset(tables),
        flow_table_exists=flow_table_exists,
    )


class Applier:
    def __init__(self, gw: Gateways, inp: VifInputs, plan: Plan, report: Callable[[str], None]) -> None:
        self.gw = gw
        self.inp = inp
        self.plan = plan
        self.report = report
        self.undo: list[tuple[str, Callable[[], object]]] = []

    # --- helpers ---

    def index(self) -> int:
        try:
            return socket.if_nametoindex(self.plan.ifname)
        except OSError:
            raise ApplyError(f"interface {self.plan.ifname} does not exist (any more)") from None

    def _netlink(self, what: str, action: Callable[[], object]) -> object:
        try:
            return action()
        except NetlinkError as exc:
            raise ApplyError(f"{what} on {self.plan.ifname} failed: {exc.strerror}") from exc

    # --- running ---

    def apply_online(self) -> None:
        """Apply every step; on failure, undo what was done and re-raise."""
        try:
            for step in self.plan.steps:
                self._apply(step)
        except BaseException:
            self.rollback()
            raise

    def apply_offline(self) -> list[str]:
        """Try every step; return the errors (empty when all went well)."""
        errors = []
        for step in self.plan.steps:
            try:
                self._apply(step)
            except QubesNetError as exc:
                errors.append(str(exc))
                log.error("%s", exc)
        return errors

    def rollback(self) -> None:
        # Fail closed first: whatever happens below, the vif carries no traffic.
        try:
            if not self.gw.rtnl.dry_run:
                index = socket.if_nametoindex(self.plan.ifname)
                self.gw.rtnl.set_link(index, up=False)
        except OSError:
            pass
        for what, undo in reversed(self.undo):
            try:
                undo()
                self.report(f"undo: {what}")
            except (QubesNetError, OSError) as exc:
                log.error("could not undo %s: %s", what, exc)
        self.undo.clear()

    def _apply(self, step: Step) -> None:
        handler = getattr(self, "_" + type(step).__name__)
        handler(step)

    # --- one method per step type ---

    def _Rename(self, step: Rename) -> None:
        self.report(f"ip link set {step.old} name {step.new}")
        index = socket.if_nametoindex(step.old)
        self._netlink("rename", lambda: self.gw.rtnl.set_link(index, name=step.new))
        self.undo.append((f"rename {step.new} back to {step.old}", lambda: self.gw.rtnl.set_link(index, name=step.old)))

    def _SetSysctl(self, step: SetSysctl) -> None:
        old = self.gw.sysctl.read(step.key)
        if old is None:
            raise ApplyError(f"sysctl {step.key} does not exist; does {self.plan.ifname} exist?")
        self.report(f"sysctl {step.key}={step.value}")
        if old != step.value:
            self.gw.sysctl.write(step.key, step.value)
            self.undo.append((f"sysctl {step.key}={old}", lambda: self.gw.sysctl.write(step.key, old)))

    def _PurgeConntrack(self, step: PurgeConntrack) -> None:
        self.report(f"conntrack -D -s/-d {step.addr}")
        try:
            count = self.gw.conntrack.purge(step.addr)
        except NetlinkError as exc:
            raise ApplyError(f"cannot purge conntrack entries of {step.addr}: {exc.strerror}") from exc
        if count:
            log.info("purged %d stale conntrack entries of %s", count, step.addr)

    def _AntispoofElements(self, step: AntispoofElements) -> None:
        ifname = self.plan.ifname
        if step.present:
            absent_allowed = [a for a in step.addresses if not self._has(allowed_element(family_of(a), ifname, a))]
            absent_down = [a for a in step.addresses if not self._has(downstream_element(family_of(a), a))]
            commands = list(step.layout) + build_add_elements(ifname, step.addresses)
        else:
            absent_allowed = absent_down = []
            held = {a for a in step.addresses if self._held_elsewhere(a)}
            commands = build_remove_elements(ifname, step.addresses, [a for a in step.addresses if a not in held])
            for addr in held:
                log.info("%s stays in the downstream set: another interface routes it", addr)
        self._run_nft(commands, list(step.flowtable))
        if step.present:
            undo = build_remove_elements(ifname, absent_allowed, absent_down) + list(step.layout_undo)
            if undo:
                self.undo.append(("anti-spoofing set elements", lambda: self.gw.nft.run(undo, "undo")))

    def _run_nft(self, commands: list[j.Json], flowtable: list[j.Json]) -> None:
        self.report(f"nft -j -f - <<< {j.transaction(commands + flowtable)}")
        try:
            self.gw.nft.run(commands + flowtable, f"{self.plan.command} {self.plan.ifname}")
        except ApplyError as exc:
            if not flowtable:
                raise
            # The acceleration is optional: retry without it, so a kernel
            # lacking flowtable support (or a clash in that table) costs the
            # client nothing but the speed-up.
            self.gw.nft.run(commands, f"{self.plan.command} {self.plan.ifname}")
            log.warning("flowtable acceleration skipped: %s", exc)

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
        return found.oif != self._index_if_present()

    def _LinkState(self, step: LinkState) -> None:
        state = "up" if step.up else "down"
        self.report(f"ip link set {self.plan.ifname} group {step.group} {state}")
        index = self.index()
        self._netlink("link set", lambda: self.gw.rtnl.set_link(index, up=step.up, group=step.group))
        if step.up:
            self.undo.append(("link group", lambda: self.gw.rtnl.set_link(index, up=False, group=0)))

    def _HostRoute(self, step: HostRoute) -> None:
        verb = "add" if step.present else "del"
        self.report(f"ip route {verb} {step.dst} dev {self.plan.ifname} metric {step.metric}")
        if not step.present:
            index = self._index_if_present()
            if index is not None:
                self._netlink("route del", lambda: self.gw.rtnl.del_route(index, step.dst, step.metric))
            return
        index = self.index()
        if self._netlink("route add", lambda: self.gw.rtnl.add_route(index, step.dst, step.metric)):
            self.undo.append((f"route {step.dst}", lambda: self.gw.rtnl.del_route(index, step.dst, step.metric)))

    def _Neighbour(self, step: Neighbour) -> None:
        verb = "add" if step.present else "del"
        lladdr = f" lladdr {step.mac}" if step.present else ""
        self.report(f"ip neigh {verb} {step.addr}{lladdr} dev {self.plan.ifname} nud permanent")
        if not step.present:
            index = self._index_if_present()
            if index is not None:
                self._netlink("neighbour del", lambda: self.gw.rtnl.del_neighbour(index, step.addr))
            return
        assert step.mac is not None
        mac = step.mac
        index = self.index()
        if self._netlink("neighbour add", lambda: self.gw.rtnl.add_neighbour(index, step.addr, mac)):
            self.undo.append((f"neighbour {step.addr}", lambda: self.gw.rtnl.del_neighbour(index, step.addr)))

    def _GatewayAddress(self, step: GatewayAddress) -> None:
        verb = "add" if step.present else "del"
        self.report(f"ip addr {verb} {step.addr}/{step.prefixlen} dev {self.plan.ifname}")
        if not step.present:
            index = self._index_if_present()
            if index is not None:
                self._netlink("address del", lambda: self.gw.rtnl.del_address(index, step.addr, step.prefixlen))
            return
        index = self.index()
        # The same gateway address sits on every vif: duplicate address
        # detection would only delay it, so it is skipped.
        nodad = step.addr.version == 6
        if self._netlink("address add", lambda: self.gw.rtnl.add_address(index, step.addr, step.prefixlen, nodad=nodad)):
            self.undo.append((f"address {step.addr}", lambda: self.gw.rtnl.del_address(index, step.addr, step.prefixlen)))

    def _RunHooks(self, step: RunHooks) -> None:
        argv = [step.command, self.plan.ifname, self.inp.vif_type]
        if step.addr is not None:
            argv.append(str(step.addr))
        self.report(f"network hooks: {' '.join(argv)}")
        self.gw.hooks.run(argv)

    def _index_if_present(self) -> int | None:
        try:
            return socket.if_nametoindex(self.plan.ifname)
        except OSError:
            return None


__all__ = ["Applier", "Gateways", "query_facts"]
