"""What ``status`` says of a vif, from the steps ``online`` would take (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from .steps import (
    AddressChange,
    ConfigureNamespace,
    CreateNamespace,
    CreateVeth,
    MoveIntoNamespace,
    NeighbourChange,
    NftChange,
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

# ok: the kernel holds what XenStore and QubesDB describe; drift: it does not;
# orphan: kernel state no XenStore vif claims; failed: the hotplug reported
# an error; invalid: XenStore or QubesDB hold values that cannot be used;
# pending: XenStore has the vif, but its hotplug has not reported yet.
Verdict = Literal["ok", "drift", "orphan", "failed", "invalid", "pending"]
VERDICTS: tuple[Verdict, ...] = ("ok", "drift", "orphan", "failed", "invalid", "pending")
HEALTHY: frozenset[str] = frozenset({"ok", "pending"})
# What reconcile does with a vif: converge it as online would, or remove an orphan as offline would.
Action = Literal["converge", "remove"]


def verdict_of(hotplug_status: str | None, drift: tuple[str, ...]) -> Verdict:
    """A readable XenStore vif's verdict: its hotplug's report first, then the kernel's drift."""
    if hotplug_status == "error":
        return "failed"
    if hotplug_status != "connected":
        return "pending"
    return "drift" if drift else "ok"


def reconcile_action(verdict: Verdict, hotplug_status: str | None, readable: bool, *,
                     gateways_changed: bool) -> Action | None:
    """What ``reconcile`` does with one vif of the survey: orphans go; a
    connected vif whose inputs could be read converges when it drifted, or
    whenever the netvm's gateways changed (what the old ones made must go,
    whatever the kernel holds); nothing else is touched."""
    if verdict == "orphan":
        return "remove"
    if readable and (verdict == "drift" or (gateways_changed and hotplug_status == "connected")):
        return "converge"
    return None


def _nft(step: NftChange) -> list[str]:
    found = []
    for command in step.commands:
        ((verb, obj),) = command.items()
        if verb != "add":
            continue
        ((kind, body),) = obj.items()
        if kind == "element":
            for elem in body["elem"]:
                addr = elem["concat"][1] if isinstance(elem, dict) else elem
                found.append(f"missing {body['name']} {addr}")
        elif kind in ("table", "set", "chain"):
            where = [body["family"], body.get("table"), body.get("name")]
            found.append(" ".join(["missing", kind, *(w for w in where if w)]))
        elif kind == "flowtable":
            found.append("not in the flowtable")
    return found


def _one(step: Step) -> list[str]:
    if isinstance(step, Rename):
        return [f"named {step.old}, not {step.new}"]
    if isinstance(step, SetSysctl):
        return [f"sysctl {step.key.rsplit('/', 1)[-1]} is {step.previous}, not {step.value}"]
    if isinstance(step, NftChange):
        return _nft(step)
    if isinstance(step, SetLink):
        state = "down" if not step.was_up else f"in group {step.was_group}"
        return [f"link {state}"]
    if isinstance(step, RouteChange):
        return [f"no route to {step.dst}"]
    if isinstance(step, NeighbourChange):
        return [f"no neighbour entry for {step.addr}"]
    if isinstance(step, AddressChange):
        return [f"no gateway address {step.addr}"]
    if isinstance(step, (CreateNamespace, MoveIntoNamespace, CreateVeth, RemoveNamespace)):
        return [f"namespace: {step.show()}"]
    if isinstance(step, ConfigureNamespace):
        return [f"namespace {step.ns} not configured"]
    if isinstance(step, (PurgeConntrack, RunHooks, ReportConnected)):
        return []  # what every online does, not a difference
    return [step.show()]


def drift_of(steps: Iterable[Step]) -> tuple[str, ...]:
    """What differs, one short phrase per object, from the steps that would converge it."""
    return tuple(dict.fromkeys(phrase for step in steps for phrase in _one(step)))
