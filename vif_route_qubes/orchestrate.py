"""The one orchestration of a vif: describe, observe and diff it, for any caller.

    kernel --observe.read_environment--> Environment
    (VifInputs, Environment) --describe--> VifState                  (pure)
    kernel --observe.read_namespace--> NamespaceFacts    (a mapped vif, or one that was)
    (VifState, NamespaceFacts) --diff.plan_namespace--> steps        (pure)
    kernel --observe.read_observed(VifState)--> Observed
    (VifState, Observed) --diff--> Plan                              (pure)

The hotplug, ``status`` and ``reconcile`` all run this; they differ only in
what they do with the result: the hotplug and ``reconcile`` apply it (the
latter after :func:`~.diff.for_reconcile`), ``status`` words it
(:func:`~.verdicts.drift_of`). The namespace steps come first and change
which interface the rest is observed on, so the caller says what to do with
them (``on_namespace``: apply them, or nothing for a read-only survey) before
the rest is observed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from qubesnet.records import Record

from .describe import describe, restricted_to_downstream, subtract
from .diff import plan_namespace, plan_offline, plan_online, plan_orphan_downstream, with_stale
from .gateways import Gateways
from .inputs import VifInputs
from .mapped_names import namespace_name, peer_name
from .observe import find_link, read_environment, read_namespace, read_observed
from .state import Observed, VifState
from .steps import Plan

if TYPE_CHECKING:
    from .steps import Step

# online: converge to the description; offline: remove what it names;
# downstream: only the downstream elements of an orphan's addresses.
Direction = Literal["online", "offline", "downstream"]


class Reading(Record):
    """One vif described, observed and diffed."""

    state: VifState
    observed: Observed
    namespace: tuple[Step, ...]  # online: the namespace's steps, handed to on_namespace before observing
    plan: Plan


def _ignore(steps: Sequence[Step]) -> None:
    pass


def read_plan(gw: Gateways, inp: VifInputs, direction: Direction, *,
              on_namespace: Callable[[Sequence[Step]], None] = _ignore,
              previous: VifInputs | None = None) -> Reading:
    """The plan that takes the kernel from what it holds of ``inp``'s vif to ``direction``.

    ``previous``: the inputs the vif was set up with, when they changed (a
    gateway came or went): an online plan also removes what only those
    described.
    """
    env = read_environment(gw, inp)
    state = describe(inp, env)
    ns = namespace_name(inp.ifname)
    if direction == "offline":
        facts = read_namespace(gw, None, ns, inp.ifname, peer_name(inp.ifname), inp)
        obs = read_observed(gw, state, env.link, env, others=True)
        return Reading(state, obs, (), plan_offline(state, obs, facts))
    if direction == "downstream":
        state = restricted_to_downstream(state)
        obs = read_observed(gw, state, None, env, others=True)
        return Reading(state, obs, (), plan_orphan_downstream(state, obs))
    namespace: tuple[Step, ...] = ()
    if state.namespace is not None or gw.namespaces.exists(ns):
        facts = read_namespace(gw, state.namespace, ns, inp.ifname, peer_name(inp.ifname), inp)
        namespace = tuple(plan_namespace(state, facts))
        on_namespace(namespace)
        # The netvm end of the vif is now the veth (or the real vif, back).
        env = env._replace(link=find_link(gw, inp, our_veth=state.namespace is not None))
    obs = read_observed(gw, state, env.link, env)
    plan = plan_online(state, obs, inp.xenbus_path)
    if previous is not None:
        stale = subtract(describe(previous, env), state)
        plan = with_stale(plan, stale, read_observed(gw, stale, env.link, env))
    return Reading(state, obs, namespace, plan)
