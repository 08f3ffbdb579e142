"""One vif event from start to end: read, lock, observe, describe, diff, apply.

    XenStore, QubesDB --read_inputs--> VifInputs
    kernel --observe.read_environment--> Environment
    (VifInputs, Environment) --describe--> VifState          (pure)
    kernel --observe.read_observed(VifState)--> Observed
    (VifState, Observed) --diff.plan_online/plan_offline--> Plan   (pure)
    Plan --Applier(handlers, gateways)--> kernel, XenStore

This module decides nothing about the vif itself: it sequences the others
and holds the locks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from qubesnet.constants import LOCK_FILE, LOCK_TIMEOUT
from qubesnet.errors import ApplyError, StoreError
from qubesnet.locks import KeyLocks
from qubesnet.qubesdb import QubesDB
from qubesnet.validate import AddressList
from qubesnet.xenstore import XenStore

from .inputs import VifEnv, VifInputs, read_inputs
from .mapped_names import namespace_name, peer_name

if TYPE_CHECKING:
    from qubesnet.netlink.ctnl import Conntrack

    from .apply import Applier
    from .gateways import Gateways
    from .steps import Plan

log = logging.getLogger(__name__)


class Options(NamedTuple):
    dry_run: bool
    timeout: float
    mapped_wait: float = 5.0
    lock_file: str = LOCK_FILE


def lock_keys(inp: VifInputs) -> list[str]:
    """What the event shares with others: its interface names and its client addresses."""
    keys = [f"if:{inp.vif.name}", f"if:{inp.ifname}"]
    keys += [f"addr:{addr}" for addr in inp.addresses.used]
    return keys


class EarlyPurge:
    """The conntrack gateway, with a purge started before the locks.

    The kernel's walk of its connection table overlaps the imports and
    observations; the plan's purge step then takes its result. It is
    idempotent and every online purges, so starting early loses nothing.
    """

    def __init__(self, conntrack: Conntrack, addrs: tuple[object, ...]) -> None:
        from qubesnet.netlink.ctnl import PurgeInBackground

        self._conntrack = conntrack
        self._early = PurgeInBackground(conntrack, addrs) if addrs else None  # type: ignore[arg-type]

    def purge(self, addrs: tuple[object, ...]) -> int:
        early, self._early = self._early, None
        count = early.result() if early is not None and early.addrs == addrs else self._conntrack.purge(addrs)  # type: ignore[arg-type]
        if count:
            log.info("purged %d stale conntrack entries", count)
        return count

    def close(self) -> None:
        self._conntrack.close()


def _read(command: str, env: VifEnv, xs: XenStore, open_qubesdb: Callable[[], QubesDB], opts: Options) -> VifInputs:
    if command == "online":
        with open_qubesdb() as qdb:
            return read_inputs(env, xs, qdb, online=True, mapped_wait=opts.mapped_wait)
    # offline: QubesDB tells which gateways, sysctls and mapping online made;
    # without it, those go with the interface.
    try:
        with open_qubesdb() as qdb:
            return read_inputs(env, xs, qdb, online=False)
    except StoreError as exc:
        log.warning("QubesDB unreachable (%s): removing what does not depend on it", exc)
        return read_inputs(env, xs, None, online=False)


def run_event(
    command: str,
    env: VifEnv,
    xs: XenStore,
    open_qubesdb: Callable[[], QubesDB],
    make_gateways: Callable[[Conntrack], Gateways],
    opts: Options,
    report: Callable[[str], None],
) -> Plan:
    inp = _read(command, env, xs, open_qubesdb, opts)

    from qubesnet.netlink.ctnl import Conntrack

    conntrack = Conntrack()
    ipv6 = os.path.exists("/proc/sys/net/ipv6")
    early = tuple(a for a in inp.addresses.used if a.version == 4 or ipv6) if not opts.dry_run else ()
    gw = make_gateways(EarlyPurge(conntrack, early))  # type: ignore[arg-type]
    if opts.dry_run:
        from .gateways import recording

        gw = recording(gw, lambda line: log.debug("dry run, not done: %s", line))

    from .apply import Applier
    from .handlers import HANDLERS

    applier = Applier(gw, HANDLERS, report)
    locks = KeyLocks(opts.lock_file)
    if inp.ip_missing and command == "offline":
        inp = _lock_listed_addresses(gw, inp, locks)
    else:
        locks.acquire(lock_keys(inp), LOCK_TIMEOUT)
    try:
        if command == "online":
            return _online(applier, gw, inp)
        return _offline(applier, gw, inp)
    finally:
        locks.release()


def _lock_listed_addresses(gw: Gateways, inp: VifInputs, locks: KeyLocks) -> VifInputs:
    """XenStore lost the ``ip`` key: the addresses are those paired with the
    vif in ``allowed``. Read, lock them, read again: a set that changed
    meanwhile is locked anew, so that offline never decides on an address
    another event is working on."""
    from .observe import read_allowed_addresses

    listed = read_allowed_addresses(gw, inp.ifname)
    for _ in range(5):
        locks.acquire(lock_keys(inp._replace(addresses=listed)), LOCK_TIMEOUT)
        again = read_allowed_addresses(gw, inp.ifname)
        if again == listed:
            return inp._replace(addresses=listed)
        locks.release()
        listed = AddressList(again.ipv4, again.ipv6, again.ignored)
    raise ApplyError(f"the addresses of {inp.ifname} in the allowed set keep changing; retry offline")


def _online(applier: Applier, gw: Gateways, inp: VifInputs, *, reconcile: bool = False,
            previous: VifInputs | None = None) -> Plan:
    """Converge the vif to its description; on any failure, undo and fail closed.

    ``reconcile``: the vif is already connected as far as libxl knows, so
    no hotplug-status is written, and the hooks run and stale connections
    are purged only if nothing of the vif was configured at all (a running
    client keeps its connections). ``previous``: the inputs the vif was set
    up with, when they changed (a gateway came or went): what only those
    described goes too.
    """
    from .describe import describe, subtract
    from .diff import plan_namespace, plan_online, plan_removal
    from .observe import find_link, read_environment, read_namespace, read_observed
    from .steps import PurgeConntrack, ReportConnected, RunHooks

    try:
        env = read_environment(gw, inp)
        state = describe(inp, env)
        ns = namespace_name(inp.ifname)
        if state.namespace is not None or gw.namespaces.exists(ns):
            facts = read_namespace(gw, state.namespace, ns, inp.ifname, peer_name(inp.ifname), inp)
            applier.apply(plan_namespace(state, facts))
            # The netvm end of the vif is now the veth (or the real vif, back).
            env = env._replace(link=find_link(gw, inp, our_veth=state.namespace is not None))
        if inp.mapping is not None:
            m = inp.mapping
            log.info("%s is mapped: the client sees %s behind %s", m.real, m.visible, m.visible_gateway)
        obs = read_observed(gw, state, env.link, env)
        plan = plan_online(state, obs, inp.xenbus_path)
        steps = list(plan.steps)
        if previous is not None:
            stale = subtract(describe(previous, env), state)
            steps[-1:-1] = plan_removal(stale, read_observed(gw, stale, env.link, env))
        if reconcile:
            fresh = obs.link is not None and not obs.link.up and obs.link.group != state.group and not obs.elements
            skip = (ReportConnected,) if fresh else (ReportConnected, RunHooks, PurgeConntrack)
            steps = [s for s in steps if not isinstance(s, skip)]
        plan = plan._replace(steps=tuple(steps))
        for note in plan.notes:
            log.warning("%s", note)
        applier.fail_closed = plan.link_index
        applier.apply(plan.steps)
    except BaseException:
        applier.rollback()
        raise
    return plan


def _offline(applier: Applier, gw: Gateways, inp: VifInputs) -> Plan:
    from .describe import describe
    from .diff import plan_offline
    from .observe import read_environment, read_namespace, read_observed

    env = read_environment(gw, inp)
    state = describe(inp, env)
    ns = read_namespace(gw, None, namespace_name(inp.ifname), inp.ifname, peer_name(inp.ifname), inp)
    plan = plan_offline(state, read_observed(gw, state, env.link, env, others=True), ns)
    for note in plan.notes:
        log.info("%s", note)
    errors = applier.apply_best_effort(plan.steps)
    if errors:
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        raise ApplyError(errors[0] + more)
    return plan


def _remove_downstream(applier: Applier, gw: Gateways, inp: VifInputs) -> None:
    """Downstream elements no interface may send from (an orphan's remains),
    unless another interface routes the address."""
    from qubesnet.constants import SET_DOWNSTREAM

    from .describe import describe
    from .diff import plan_removal
    from .observe import read_environment, read_observed
    from .state import Element

    env = read_environment(gw, inp)
    state = describe(inp, env)
    state = state._replace(elements=tuple(Element(SET_DOWNSTREAM, a) for a in inp.addresses.used), routes=(),
                           neighbours=(), addresses=(), sysctls=())
    errors = applier.apply_best_effort(plan_removal(state, read_observed(gw, state, None, env, others=True)))
    if errors:
        raise ApplyError(errors[0])
