"""The pure planner: a vif's description and the kernel's state in, ordered steps out.

``online`` makes what is described and missing (desired - actual);
``offline`` removes what is described and present (actual & ours), so
teardown cannot drift from set-up. Decisions that depend on other vifs are
taken here, from the facts observed: an address another interface still
routes stays in ``downstream``.

Each kind of object (kinds.py) says how to add and remove one of its
objects and where it ranks; online is the missing objects in rank order,
removal the present ones in reverse. The ranks are the security argument
of the whole script:

1. rename (explicit, first) and sysctls while the link is still down;
2. stale conntrack entries of the client's addresses purged;
3. anti-spoofing set elements committed (one nftables transaction, which
   also creates any missing anti-spoofing object and the flowtable membership);
4. only then the link up, in interface group 2 (whose traffic must pass the
   antispoof chain), followed by routes, neighbours and gateway addresses.
   IPv4 routes need the link up, and the kernel flushes neighbour entries
   of a link that goes down, so these come after it.

Offline takes the link down first (traffic stops before anything goes),
then removes in reverse rank (gateway addresses, neighbours, routes, the
one transaction of set elements and flowtable membership, sysctls), runs
the hooks, renames back, removes a namespace, and purges last.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qubesnet.errors import ApplyError, ConfigError

from .kinds import NftCommands, additions, kept_in_downstream, removals
from .mapped_names import namespace_name, peer_name
from .state import NamespaceFacts, Observed, VifState
from .steps import NftChange, Plan, PurgeConntrack, Rename, ReportConnected, RunHooks, SetLink

if TYPE_CHECKING:
    from .kinds import Change
    from .nssteps import RemoveNamespace
    from .steps import Step

FLOWTABLE_UNSUPPORTED = "flowtable acceleration skipped: this kernel has no flowtable support"


def _hooks(command: str, state: VifState) -> list[Step]:
    base = (command, state.ifname, state.vif_type)
    return [RunHooks((*base, str(a))) for a in state.hook_addresses] or [RunHooks(base)]


def plan_namespace(state: VifState, facts: NamespaceFacts) -> list[Step]:
    """Converge a mapped vif's namespace, or its absence (no mapping any more)."""
    spec = state.namespace
    if spec is None:
        return [_remove_namespace(state)] if facts.exists else []
    from .nssteps import ConfigureNamespace, CreateNamespace, CreateVeth, MoveIntoNamespace, RemoveNamespace

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
    from .nssteps import RemoveNamespace  # mapped vifs are rare: loaded for them only

    return RemoveNamespace(namespace_name(state.ifname), state.ifname, peer_name(state.ifname), state.vif)


def _steps(changes: list[Change], what: str) -> list[Step]:
    """Changes as steps: the nftables commands of the event gathered into its
    one transaction, where the first of them stood (their kinds are adjacent
    in rank)."""
    steps: list[Step] = []
    nft = [c for c in changes if isinstance(c, NftCommands)]
    commands = tuple(command for c in nft for command in c.commands)
    undo = tuple(command for c in nft for command in c.undo)
    for change in changes:
        if not isinstance(change, NftCommands):
            steps.append(change)
        elif change is nft[0] and commands:
            steps.append(NftChange(what, commands, undo))
    return steps


def plan_online(state: VifState, obs: Observed, xenbus_path: str) -> Plan:
    """Make what is described and missing, kind by kind in rank order
    (kinds.py), after the rename and before the hooks and the report."""
    link = obs.link
    if link is None:
        raise ApplyError(f"interface {state.vif} does not exist; is the VM's backend still there?")
    notes = list(state.notes)
    steps: list[Step] = []
    if link.name != state.ifname:
        steps.append(Rename(link.ifindex, link.name, state.ifname))
    # The undo of the one transaction takes back this vif's elements and
    # membership, never the shared objects it created (kinds.Layout).
    steps += _steps(additions(state, obs, link), f"online {state.ifname}")
    if state.flowtable and not obs.flow.supported:
        notes.append(FLOWTABLE_UNSUPPORTED)
    steps += _hooks("online", state)
    steps.append(ReportConnected(xenbus_path))
    return Plan("online", state.ifname, link.ifindex, state.client_addresses, tuple(steps), tuple(notes))


def with_stale(plan: Plan, stale: VifState, obs: Observed) -> Plan:
    """An online plan that also removes ``stale``'s objects (what the
    previous inputs described and the current ones no longer do), before
    the report: a failure undoes them with the rest."""
    steps = list(plan.steps)
    steps[-1:-1] = plan_removal(stale, obs)
    return plan._replace(steps=tuple(steps))


def is_unconfigured(state: VifState, obs: Observed) -> bool:
    """Nothing of the vif was configured: down, outside the vif group, none of its set elements."""
    return obs.link is not None and not obs.link.up and obs.link.group != state.group and not obs.elements


def for_reconcile(plan: Plan, state: VifState, obs: Observed) -> Plan:
    """What ``reconcile`` runs of an online plan. libxl already saw the vif
    connected, so no report; a running client keeps its connections and
    the hooks ran at its online, so those two only for a vif of which
    nothing was configured at all (one whose online never ran through)."""
    skip: tuple[type, ...] = (ReportConnected,)
    if not is_unconfigured(state, obs):
        skip += (RunHooks, PurgeConntrack)
    return plan._replace(steps=tuple(s for s in plan.steps if not isinstance(s, skip)))


def plan_removal(state: VifState, obs: Observed) -> list[Step]:
    """Remove what ``state`` names and the kernel holds, kind by kind in
    reverse rank order (kinds.py): gateway addresses, neighbours, routes,
    the flowtable membership and set elements (in one transaction; but the
    downstream ones another interface needs), sysctls (back to what a new
    interface gets). Without the interface, only the set elements remain."""
    ifname = obs.link.name if obs.link is not None else state.ifname
    return _steps(removals(state, obs), f"remove {ifname}")


def plan_orphan_downstream(state: VifState, obs: Observed) -> Plan:
    """Remove an orphan's downstream elements (``state`` restricted to them),
    but those another interface routes."""
    return Plan("remove", state.ifname, None, state.client_addresses, tuple(plan_removal(state, obs)))


def plan_offline(state: VifState, obs: Observed, namespace: NamespaceFacts) -> Plan:
    """Remove what the description names and the kernel holds; nothing else."""
    link = obs.link
    ifname = link.name if link is not None else state.ifname
    steps: list[Step] = []
    # Stop traffic first.
    if link is not None and (link.up or link.group != 0):
        steps.append(SetLink(link.ifindex, link.name, False, 0, link.up, link.group))
    # Our table: the membership is ours whenever it is there, whatever the service says now.
    steps += plan_removal(state._replace(flowtable=True), obs)
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
