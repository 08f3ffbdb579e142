"""What ``status`` says of a vif, and what ``reconcile`` does with it (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from .kinds import drift
from .nssteps import ConfigureNamespace
from .state import Observed, VifState

if TYPE_CHECKING:
    from .steps import Step

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


def _namespace(step: Step) -> list[str]:
    if isinstance(step, ConfigureNamespace):
        return [f"namespace {step.ns} not configured"]
    return [f"namespace: {step.show()}"]


def drift_of(state: VifState, obs: Observed, namespace: Iterable[Step] = ()) -> tuple[str, ...]:
    """What differs, one short phrase per object: the namespace's steps, a
    name that is not the described one, then each missing object in the
    words of its kind (kinds.py), in rank order."""
    phrases = [phrase for step in namespace for phrase in _namespace(step)]
    if obs.link is not None and obs.link.name != state.ifname:
        phrases.append(f"named {obs.link.name}, not {state.ifname}")
    phrases += drift(state, obs)
    return tuple(dict.fromkeys(phrases))
