"""One vif event from start to end: read, lock, observe, plan, apply."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from ipaddress import ip_address

from qubesnet.constants import LOCK_FILE, QUBES_TABLE, SET_ALLOWED
from qubesnet.errors import ApplyError, ConfigError, StoreError
from qubesnet.locks import KeyLocks
from qubesnet.nft import Nft
from qubesnet.qubesdb import QubesDB
from qubesnet.validate import AddressList, parse_address_list
from qubesnet.xenstore import XenStore

from .apply import Applier, Gateways, query_facts
from .apply_mapped import query_ns_facts
from .inputs import VifEnv, VifInputs, read_gateways, read_inputs
from .mapped import Mapping, RemoveNamespace, namespace_name, peer_name, plan_mapped, read_mapping
from .plan import Plan, plan_offline, plan_online

log = logging.getLogger(__name__)

LOCK_TIMEOUT = 30.0


@dataclasses.dataclass
class Options:
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
    gw: Gateways,
    opts: Options,
    report: Callable[[str], None],
) -> Plan:
    if command == "online":
        with open_qubesdb() as qdb:
            inp = read_inputs(env, xs, qdb, online=True)
            mapping = None
            if inp.addresses.ipv4 is not None:
                mapping = read_mapping(qdb, inp.addresses.ipv4, inp.gateway, opts.mapped_wait)
    else:
        inp = read_inputs(env, xs, None, online=False)

    locks = KeyLocks(opts.lock_file)
    locks.acquire(lock_keys(inp), LOCK_TIMEOUT)
    try:
        applier = Applier(gw, inp, report)
        if command == "online":
            return _online(applier, gw, inp, mapping)
        return _offline(applier, gw, inp, open_qubesdb)
    finally:
        locks.release()


def _online(applier: Applier, gw: Gateways, inp: VifInputs, mapping: Mapping | None) -> Plan:
    try:
        # The namespace of a mapped vif first (or its removal when the
        # mapping went away); then the netvm end, like any vif.
        steps = plan_mapped(inp.ifname, inp.vif.name, mapping, inp.mac, query_ns_facts(gw, inp))
        applier.apply_steps(steps)
        if mapping is not None and steps and isinstance(steps[0], RemoveNamespace):
            # A namespace for another mapping was taken down: build anew.
            applier.apply_steps(plan_mapped(inp.ifname, inp.vif.name, mapping, inp.mac, query_ns_facts(gw, inp)))
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


def _offline(applier: Applier, gw: Gateways, inp: VifInputs, open_qubesdb: Callable[[], QubesDB]) -> Plan:
    errors: list[str] = []
    if query_ns_facts(gw, inp).ns_exists:
        ns = namespace_name(inp.ifname)
        errors += applier.apply_best_effort([RemoveNamespace(ns, inp.ifname, peer_name(inp.ifname), inp.vif.name)])
    facts = query_facts(gw, inp)
    inp = _complete_offline_inputs(inp, facts.link_name, gw.nft, open_qubesdb)
    plan = plan_offline(inp, facts)
    applier.inp = inp
    errors += applier.apply_offline(plan)
    if errors:
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        raise ApplyError(errors[0] + more)
    return plan


def _complete_offline_inputs(
    inp: VifInputs, link_name: str | None, nft: Nft, open_qubesdb: Callable[[], QubesDB]
) -> VifInputs:
    """What offline needs beyond XenStore, found best-effort."""
    if inp.ip_missing:
        inp = dataclasses.replace(inp, addresses=query_allowed_addresses(nft, inp.ifname))
    if link_name is not None:
        # The interface survived (a manual rerun): its gateway addresses must
        # go too, and only QubesDB knows them.
        try:
            with open_qubesdb() as qdb:
                gateway, gateway6 = read_gateways(qdb)
        except (StoreError, ConfigError) as exc:
            log.warning("gateway addresses left on %s: %s", link_name, exc)
        else:
            inp = dataclasses.replace(inp, gateway=gateway, gateway6=gateway6)
    return inp
