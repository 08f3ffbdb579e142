"""One vif event from start to end: read, lock, plan, apply.

    XenStore, QubesDB --read_inputs--> VifInputs
    locks: the vif's names and client addresses
    kernel --orchestrate.read_plan--> Plan    (describe, observe, diff)
    Plan --Applier(handlers, gateways)--> kernel, XenStore

This module decides nothing about the vif itself: it reads, holds the
locks, and applies; ``converge`` (online, with rollback) and ``remove``
(offline, best effort) serve ``reconcile`` too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from qubesnet.constants import LOCK_FILE, LOCK_TIMEOUT
from qubesnet.errors import ApplyError, StoreError
from qubesnet.locks import KeyLocks
from qubesnet.qubesdb import QubesDB
from qubesnet.records import Record
from qubesnet.validate import AddressList
from qubesnet.xenstore import XenStore

from .inputs import VifEnv, VifInputs, read_inputs

if TYPE_CHECKING:
    from qubesnet.netlink.ctnl import Conntrack

    from .apply import Applier
    from .gateways import Gateways
    from .orchestrate import Direction, Reading
    from .steps import Plan

log = logging.getLogger(__name__)


class Options(Record):
    dry_run: bool
    timeout: float
    mapped_wait: float = 5.0
    lock_file: str = LOCK_FILE


def lock_keys(inp: VifInputs) -> list[str]:
    """What the event shares with others: its interface names and its client addresses."""
    keys = [f"if:{inp.vif.name}", f"if:{inp.ifname}"]
    keys += [f"addr:{addr}" for addr in inp.addresses.used]
    return keys


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

    # The purge is a step of the plan, run under the locks: a connection
    # made for an address while the event waited for its lock goes too.
    # Online starts it early, once the locks are held (see below).
    gw = make_gateways(Conntrack())
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
        return remove(applier, gw, inp)
    finally:
        locks.release()


def _online(applier: Applier, gw: Gateways, inp: VifInputs) -> Plan:
    """:func:`converge`, the conntrack purge started first: under the locks,
    the kernel's walk of its table overlaps the reading and planning, and
    the plan's purge step waits for it (a dry run records it, no more)."""
    gw.conntrack.start_purge(inp.addresses.used)
    try:
        return converge(applier, gw, inp)
    finally:
        gw.conntrack.settle()  # a purge never outlives the locks


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


def converge(applier: Applier, gw: Gateways, inp: VifInputs, *,
             choose: Callable[[Reading], Plan] | None = None, previous: VifInputs | None = None) -> Plan:
    """Converge the vif to its description; on any failure, undo and fail closed.

    ``choose``: what to run of the reading (default: its whole online plan;
    ``reconcile`` passes :func:`~.diff.for_reconcile`). ``previous``: the
    inputs the vif was set up with, when they changed.
    """
    from .orchestrate import read_plan

    try:
        reading = read_plan(gw, inp, "online", on_namespace=applier.apply, previous=previous)
        if inp.mapping is not None:
            m = inp.mapping
            log.info("%s is mapped: the client sees %s behind %s", m.real, m.visible, m.visible_gateway)
        plan = reading.plan if choose is None else choose(reading)
        for note in plan.notes:
            log.warning("%s", note)
        applier.fail_closed = plan.link_index
        applier.apply(plan.steps)
    except BaseException:
        applier.rollback()
        raise
    return plan


def remove(applier: Applier, gw: Gateways, inp: VifInputs, direction: Direction = "offline") -> Plan:
    """Remove what the description names and the kernel holds, best effort:
    every step is tried, the errors are reported together."""
    from .orchestrate import read_plan

    plan = read_plan(gw, inp, direction).plan
    for note in plan.notes:
        log.info("%s", note)
    errors = applier.apply_best_effort(plan.steps)
    if errors:
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        raise ApplyError(errors[0] + more)
    return plan
