"""One vif event from start to end: read, lock, observe, plan, apply."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from ipaddress import ip_address
from typing import TYPE_CHECKING, NamedTuple

from qubesnet.constants import LOCK_FILE, QDB_MAPPED_PREFIX, QUBES_TABLE, SET_ALLOWED
from qubesnet.errors import ApplyError
from qubesnet.locks import KeyLocks
from qubesnet.nft import Nft
from qubesnet.qubesdb import QubesDB
from qubesnet.validate import AddressList, parse_address_list
from qubesnet.xenstore import XenStore

from .inputs import VifEnv, VifInputs, read_inputs
from .mapped_names import HIDDEN_RANGE, namespace_exists, namespace_name, peer_name

if TYPE_CHECKING:
    from qubesnet.netlink.ctnl import Conntrack

    from .apply import Applier, Gateways
    from .mapped import Mapping
    from .plan import Plan

# Mapped addresses are rare: their modules (mapped, apply_mapped) load only
# when a vif has a mapping, might get one (HIDDEN_RANGE), or left a
# namespace behind.
log = logging.getLogger(__name__)

LOCK_TIMEOUT = 30.0


class Options(NamedTuple):
    dry_run: bool
    timeout: float
    mapped_wait: float = 5.0
    lock_file: str = LOCK_FILE


def lock_keys(inp: VifInputs) -> list[str]:
    keys = [f"if:{inp.vif.name}", f"if:{inp.ifname}"]
    keys += [f"addr:{addr}" for addr in inp.addresses.used]
    return keys


def query_allowed_addresses(nft: Nft, ifname: str) -> AddressList:
    """Addresses in ``allowed`` paired with ``ifname``: offline's fallback when
    XenStore no longer has the ``ip`` key (this lists the whole set)."""
    found: list[str] = []
    for family in ("ip", "ip6"):
        listing = nft.query({"list": {"set": {"family": family, "table": QUBES_TABLE, "name": SET_ALLOWED}}})
        for item in listing or []:
            for elem in item.get("set", {}).get("elem", []):
                pair = elem.get("concat") if isinstance(elem, dict) else None
                if isinstance(pair, list) and len(pair) == 2 and pair[0] == ifname:
                    found.append(str(ip_address(pair[1])))
    return parse_address_list("allowed set", " ".join(found))


def run_event(
    command: str,
    env: VifEnv,
    xs: XenStore,
    open_qubesdb: Callable[[], QubesDB],
    make_gateways: Callable[[Conntrack], Gateways],
    opts: Options,
    report: Callable[[str], None],
) -> Plan:
    if command == "online":
        with open_qubesdb() as qdb:
            inp = read_inputs(env, xs, qdb, online=True)
            mapping = None
            real = inp.addresses.ipv4
            if real is not None and (real in HIDDEN_RANGE or qdb.read(f"{QDB_MAPPED_PREFIX}{real}/visible-ip") is not None):
                from .mapped import read_mapping

                mapping = read_mapping(qdb, real, inp.gateway, opts.mapped_wait)
    else:
        inp = read_inputs(env, xs, None, online=False)

    # The inputs are valid: the conntrack purge starts now, in the
    # background, so that the kernel's walk of its connection table overlaps
    # the imports and preparations below (the purge step waits for it). It
    # is idempotent and every online purges, so starting before the locks
    # (or, for offline, before the link goes down) loses nothing.
    from qubesnet.netlink.ctnl import Conntrack, PurgeInBackground

    conntrack = Conntrack(dry_run=opts.dry_run)
    early_purge = None
    if not opts.dry_run:
        ipv6 = os.path.exists("/proc/sys/net/ipv6")
        addrs = tuple(a for a in inp.addresses.used if a.version == 4 or ipv6)
        if addrs:
            early_purge = PurgeInBackground(conntrack, addrs)

    from .apply import Applier

    gw = make_gateways(conntrack)
    locks = KeyLocks(opts.lock_file)
    locks.acquire(lock_keys(inp), LOCK_TIMEOUT)
    try:
        applier = Applier(gw, inp, report)
        applier.early_purge = early_purge
        if command == "online":
            return _online(applier, gw, inp, mapping)
        return _offline(applier, gw, inp)
    finally:
        locks.release()


def _converge_namespace(applier: Applier, gw: Gateways, inp: VifInputs, mapping: Mapping | None) -> None:
    """The namespace of a mapped vif, or its removal when the mapping went away."""
    from .apply_mapped import query_ns_facts
    from .mapped import RemoveNamespace, plan_mapped

    steps = plan_mapped(inp.ifname, inp.vif.name, mapping, inp.mac, query_ns_facts(gw, inp))
    applier.apply_steps(steps)
    if mapping is not None and steps and isinstance(steps[0], RemoveNamespace):
        # A namespace for another mapping was taken down: build anew.
        applier.apply_steps(plan_mapped(inp.ifname, inp.vif.name, mapping, inp.mac, query_ns_facts(gw, inp)))


def _online(applier: Applier, gw: Gateways, inp: VifInputs, mapping: Mapping | None) -> Plan:
    from .apply import query_facts
    from .plan import plan_online

    try:
        # The namespace of a mapped vif first; then the netvm end, like any vif.
        if mapping is not None or namespace_exists(inp.ifname):
            _converge_namespace(applier, gw, inp, mapping)
        if mapping is not None:
            log.info("%s is mapped: the client sees %s behind %s", mapping.real, mapping.visible, mapping.visible_gateway)
        plan = plan_online(inp, query_facts(gw, inp, mapped=mapping is not None))
        for note in plan.notes:
            log.warning("%s", note)
        applier.apply_online(plan)
    except BaseException:
        applier.rollback()
        raise
    return plan


def _offline(applier: Applier, gw: Gateways, inp: VifInputs) -> Plan:
    from .apply import query_facts
    from .plan import plan_offline

    errors: list[str] = []
    if namespace_exists(inp.ifname):
        from .mapped import RemoveNamespace

        step = RemoveNamespace(namespace_name(inp.ifname), inp.ifname, peer_name(inp.ifname), inp.vif.name)
        errors += applier.apply_best_effort([step])
    facts = query_facts(gw, inp, addresses=True)
    if inp.ip_missing:
        inp = inp._replace(addresses=query_allowed_addresses(gw.nft, inp.ifname))
    plan = plan_offline(inp, facts)
    applier.inp = inp
    errors += applier.apply_offline(plan)
    if errors:
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        raise ApplyError(errors[0] + more)
    return plan
