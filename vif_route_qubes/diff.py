"""The pure planner: a vif's description and the kernel's state in, ordered steps out.

``online`` makes what is described and missing (desired - actual);
``offline`` removes what is described and present (actual & ours), so
teardown cannot drift from set-up. Decisions that depend on other vifs are
taken here, from the facts observed: an address another interface still
routes stays in ``downstream``.

The order of the online steps is the security argument of the whole script:

1. rename and sysctls while the link is still down;
2. stale conntrack entries of the client's addresses purged;
3. anti-spoofing set elements committed (one nftables transaction, which
   also creates any missing anti-spoofing object and the flowtable membership);
4. only then the link up, in interface group 2 (whose traffic must pass the
   antispoof chain), followed by routes, neighbours and gateway addresses.
   IPv4 routes need the link up, and the kernel flushes neighbour entries
   of a link that goes down, so these come after it.
"""

from __future__ import annotations

from qubesnet.constants import SET_DOWNSTREAM
from qubesnet.errors import ApplyError, ConfigError
from qubesnet.layout import build_antispoof
from qubesnet.nftjson import Json

from .mapped_names import namespace_name, peer_name
from .nftplan import build_elements, build_flowtable
from .state import Element, NamespaceFacts, Observed, VifState
from .steps import (
    AddressChange,
    ConfigureNamespace,
    CreateNamespace,
    CreateVeth,
    MoveIntoNamespace,
    NeighbourChange,
    NftChange,
    Plan,
    PurgeConntrack,
    RemoveNamespace,
    Rename,
    ReportConnected,
    RouteChange,
    RunHooks,
    SetLink,
    SetSysctl,
    Step,
)

FLOWTABLE_UNSUPPORTED = "flowtable acceleration skipped: this kernel has no flowtable support"


def _hooks(command: str, state: VifState) -> list[Step]:
    base = (command, state.ifname, state.vif_type)
    return [RunHooks((*base, str(a))) for a in state.hook_addresses] or [RunHooks(base)]


def plan_namespace(state: VifState, facts: NamespaceFacts) -> list[Step]:
    """Converge a mapped vif's namespace, or its absence (no mapping any more)."""
    spec = state.namespace
    if spec is None:
        return [_remove_namespace(state)] if facts.exists else []
    ours = facts.exists and facts.peer_inside  # the netvm's device of that name is our veth
    if ours and facts.real_inside and facts.table_matches:
        return []  # already in place: a rerun changes nothing here
    steps: list[Step] = []
    exists, real_inside, ours_now = facts.exists, facts.real_inside, ours
    rebuilt = facts.exists and facts.table_present and not facts.table_matches
    if rebuilt:
        # Another mapping than the wanted one: take it down and build anew.
        steps.append(RemoveNamespace(spec.name, spec.ifname, spec.peer, spec.vif))
        exists = real_inside = ours_now = False
    if not exists:
        steps.append(CreateNamespace(spec.name))
    if not real_inside:
        # Our veth exists only once the vif was moved in: with it there, a
        # device of the vif's name in the netvm is the veth's end, not the vif.
        # (renamed, a device under libxl's name is the vif itself, wherever the veth is)
        if (facts.netvm_link is None or (ours_now and facts.netvm_link.name == spec.ifname)) and not rebuilt:
            raise ConfigError("vif", f"interface {state.vif} does not exist; is the VM's backend still there?")
        steps.append(MoveIntoNamespace(spec.name, state.vif, spec.ifname))
    if not ours_now:
        steps.append(CreateVeth(spec.name, spec.ifname, spec.peer, spec.client_mac))
    steps.append(ConfigureNamespace(spec.name, spec.ifname, spec.peer, spec.mapping, spec.client_mac, spec.rules))
    return steps


def _remove_namespace(state: VifState) -> RemoveNamespace:
    return RemoveNamespace(namespace_name(state.ifname), state.ifname, peer_name(state.ifname), state.vif)


def plan_online(state: VifState, obs: Observed, xenbus_path: str) -> Plan:
    link = obs.link
    if link is None:
        raise ApplyError(f"interface {state.vif} does not exist; is the VM's backend still there?")
    ifindex, ifname = link.ifindex, state.ifname
    notes = list(state.notes)
    steps: list[Step] = []

    if link.name != ifname:
        steps.append(Rename(ifindex, link.name, ifname))
    for sysctl in state.sysctls:
        current = obs.sysctls.get(sysctl.key)
        if current is None:
            raise ApplyError(f"sysctl {sysctl.key} does not exist; is the interface gone?")
        if current != sysctl.value:
            steps.append(SetSysctl(sysctl.key, sysctl.value, current))
    if state.purge:
        steps.append(PurgeConntrack(state.purge))

    # One transaction: the missing anti-spoofing objects, the missing
    # elements, the flowtable membership. Its undo takes back this vif's
    # elements and membership, never the shared objects it created: the
    # moment they exist another vif's event may rely on them (its elements
    # live in these sets, its traffic passes these chains), and they are the
    # netvm's base layout anyway.
    create: list[Json] = []
    remove: list[Json] = []
    for family, objs in obs.base.items():
        create += build_antispoof(family, table=objs.table, sets=objs.sets, chains=objs.chains)
    missing = [e for e in state.elements if e not in obs.elements]
    create += build_elements(missing, present=True)
    remove = build_elements(missing, present=False)
    if state.flowtable and not obs.flow.supported:
        notes.append(FLOWTABLE_UNSUPPORTED)
    elif state.flowtable and not obs.flow.member:
        create += build_flowtable(ifname, table=obs.flow.table, present=True)
        remove += build_flowtable(ifname, table=True, present=False)
    if create:
        steps.append(NftChange(f"online {ifname}", tuple(create), tuple(remove)))

    if not (link.up and link.group == state.group):
        steps.append(SetLink(ifindex, ifname, True, state.group, link.up, link.group))
    steps += [RouteChange(True, ifindex, ifname, r.dst, r.metric) for r in state.routes if r not in obs.routes]
    found = {n.addr: n.mac for n in obs.neighbours}
    steps += [NeighbourChange(True, ifindex, ifname, n.addr, n.mac, found.get(n.addr)) for n in state.neighbours
              if n not in obs.neighbours and n.mac is not None]
    steps += [AddressChange(True, ifindex, ifname, a.addr, a.prefixlen) for a in state.addresses
              if a not in obs.addresses]
    steps += _hooks("online", state)
    steps.append(ReportConnected(xenbus_path))
    return Plan("online", ifname, ifindex, state.client_addresses, tuple(steps), tuple(notes))


def kept_in_downstream(state: VifState, obs: Observed) -> frozenset[Element]:
    """Downstream elements offline must keep: another interface routes the
    address (a new VM reusing it before the old one's offline ran), whose
    packets from the uplink claiming it must still be dropped."""
    return frozenset(e for e in state.elements if e.kind == SET_DOWNSTREAM and e.addr in obs.routed_elsewhere)


def plan_removal(state: VifState, obs: Observed, *, flowtable: bool = False) -> list[Step]:
    """Remove what ``state`` names and the kernel holds: routes, elements (but
    the downstream ones another interface needs), with ``flowtable`` the
    flowtable membership (ours whenever it is there: our table), neighbours,
    addresses, and sysctls (back to what a new interface gets)."""
    link = obs.link
    ifname = link.name if link is not None else state.ifname
    steps: list[Step] = []
    if link is not None:
        steps += [RouteChange(False, link.ifindex, link.name, r.dst, r.metric) for r in state.routes
                  if r in obs.routes]
    keep = kept_in_downstream(state, obs)
    gone = [e for e in state.elements if e in obs.elements and e not in keep]
    commands = build_elements(gone, present=False)
    if link is not None and obs.flow.member and flowtable:
        commands += build_flowtable(ifname, table=True, present=False)
    if commands:
        steps.append(NftChange(f"remove {ifname}", tuple(commands), ()))
    if link is not None:
        present = {n.addr for n in obs.neighbours}
        steps += [NeighbourChange(False, link.ifindex, link.name, n.addr, n.mac or "") for n in state.neighbours
                  if n.addr in present]
        steps += [AddressChange(False, link.ifindex, link.name, a.addr, a.prefixlen) for a in state.addresses
                  if a in obs.addresses]
        for sysctl in state.sysctls:
            # Ours when it still has the value we set; back to what a new interface gets.
            current, default = obs.sysctls.get(sysctl.key), obs.defaults.get(sysctl.key)
            if current == sysctl.value and default is not None and default != current:
                key = sysctl.key.replace(f"/conf/{state.ifname}/", f"/conf/{link.name}/", 1)
                steps.append(SetSysctl(key, default, current))
    return steps


def plan_offline(state: VifState, obs: Observed, namespace: NamespaceFacts) -> Plan:
    """Remove what the description names and the kernel holds; nothing else."""
    link = obs.link
    ifname = link.name if link is not None else state.ifname
    steps: list[Step] = []
    # Stop traffic first.
    if link is not None and (link.up or link.group != 0):
        steps.append(SetLink(link.ifindex, link.name, False, 0, link.up, link.group))
    steps += plan_removal(state, obs, flowtable=True)
    keep = kept_in_downstream(state, obs)
    steps += _hooks("offline", state)
    if link is not None and not namespace.exists and link.name == state.ifname != state.vif:
        steps.append(Rename(link.ifindex, link.name, state.vif))
    if namespace.exists:
        steps.append(_remove_namespace(state))
    if state.purge:
        steps.append(PurgeConntrack(state.purge))
    addresses = state.client_addresses or tuple(e.addr for e in state.elements)
    return Plan("offline", ifname, link.ifindex if link else None, addresses, tuple(steps),
                tuple(f"{e.addr} stays in the downstream set: another interface routes it"
                      for e in state.elements if e in keep))
