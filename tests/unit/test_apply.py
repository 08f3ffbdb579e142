"""vif_route_qubes.apply: the thin applier, run against recording gateways.

The recording gateways are the ones ``--dry-run`` uses: every write is
recorded instead of made. Reads would go to the real gateways; the plans
here need none, so the "real" ones are bare objects that fail on any use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from qubesnet.errors import ApplyError
from tests.unit.test_describe import ENV, inputs
from tests.unit.test_diff import configured, fresh
from vif_route_qubes.apply import Applier
from vif_route_qubes.describe import describe
from vif_route_qubes.diff import plan_offline, plan_online
from vif_route_qubes.gateways import Gateways, recording
from vif_route_qubes.handlers import HANDLERS
from vif_route_qubes.state import NamespaceFacts
from vif_route_qubes.steps import NftChange, RouteChange, SetLink

if TYPE_CHECKING:
    from vif_route_qubes.steps import Step

NO_NS = NamespaceFacts(False, False, False, False, False, None)


def recorder() -> tuple[Gateways, list[str]]:
    calls: list[str] = []
    bare: Any = object()
    return recording(Gateways(*(bare for _ in Gateways._fields)), calls.append), calls


def online_plan() -> tuple[Step, ...]:
    state = describe(inputs(), ENV)
    return plan_online(state, fresh(state), "backend/vif/12/0").steps


def names(calls: list[str]) -> list[str]:
    return [c.split("(")[0] for c in calls]


def test_every_step_reaches_its_gateway_in_order() -> None:
    gw, calls = recorder()
    Applier(gw, HANDLERS, lambda _: None).apply(online_plan())
    assert names(calls) == [
        "sysctl.write", "sysctl.write", "conntrack.purge", "nft.run", "rtnl.set_link",
        "rtnl.add_route", "rtnl.add_route", "rtnl.add_neighbour", "rtnl.add_neighbour",
        "rtnl.add_address", "rtnl.add_address", "hooks.run", "hooks.run", "status.connected",
    ]
    assert calls[4] == "rtnl.set_link(7, up=True, group=2)"
    assert calls[5] == "rtnl.add_route(7, IPv4Address('10.137.0.12'), 32740)"
    assert "nodad=True" in calls[10] and "nodad=False" in calls[9]


def failing_at(kind: type, calls: list[str]) -> dict[type, Any]:
    handlers: dict[type, Any] = dict(HANDLERS)

    def fail(gw: Gateways, step: Any) -> None:
        calls.append(f"FAIL {kind.__name__}")
        raise ApplyError(f"injected at {kind.__name__}")

    handlers[kind] = fail
    return handlers


def test_a_failure_takes_the_link_down_first_then_undoes_in_reverse() -> None:
    gw, calls = recorder()
    applier = Applier(gw, failing_at(RouteChange, calls), lambda _: None)
    applier.fail_closed = 7
    with pytest.raises(ApplyError, match="injected"):
        applier.apply(online_plan())
    applier.rollback()
    done = calls.index("FAIL RouteChange")
    undo = calls[done + 1:]
    assert undo[0] == "rtnl.set_link(7, up=False)"  # fail closed before anything else
    # the inverses of what was done, last first: link, elements, sysctls (the purge has none)
    assert names(undo[1:]) == ["rtnl.set_link", "nft.run", "sysctl.write", "sysctl.write"]
    assert undo[1] == "rtnl.set_link(7, up=False, group=0)"
    assert "'delete'" in undo[2] and "undo online vif12.0" in undo[2]
    assert undo[3].endswith("'0')") and "proxy_ndp" in undo[3]  # the last one set is the first restored
    assert applier.undo == []


def test_the_undo_goes_on_past_a_failing_inverse() -> None:
    gw, calls = recorder()
    handlers = failing_at(RouteChange, calls)
    real_nft = handlers[NftChange]

    def nft_fails_on_undo(g: Gateways, step: NftChange) -> object:
        if step.what.startswith("undo"):
            raise ApplyError("nft gone")
        return real_nft(g, step)

    handlers[NftChange] = nft_fails_on_undo
    applier = Applier(gw, handlers, lambda _: None)
    with pytest.raises(ApplyError):
        applier.apply(online_plan())
    applier.rollback()
    assert names(calls)[-2:] == ["sysctl.write", "sysctl.write"]  # restored after the failed nft undo


def test_a_failure_before_anything_changed_undoes_nothing() -> None:
    gw, calls = recorder()
    applier = Applier(gw, failing_at(type(online_plan()[0]), calls), lambda _: None)
    with pytest.raises(ApplyError):
        applier.apply(online_plan())
    applier.rollback()
    assert calls == ["FAIL SetSysctl"]


def test_offline_tries_every_step_and_reports_all_errors() -> None:
    gw, calls = recorder()
    state = describe(inputs(), ENV)
    steps = plan_offline(state, configured(state), NO_NS).steps
    errors = Applier(gw, failing_at(SetLink, calls), lambda _: None).apply_best_effort(steps)
    assert errors == ["injected at SetLink"]
    assert "rtnl.del_route" in names(calls) and "nft.run" in names(calls) and names(calls)[-1] == "conntrack.purge"


def test_kernel_errors_become_one_line_apply_errors() -> None:
    from qubesnet.netlink.nlsock import NetlinkError

    gw, _ = recorder()
    handlers: dict[type, Any] = dict(HANDLERS)

    def refuse(g: Gateways, step: Any) -> None:
        raise NetlinkError(17, "add route")

    handlers[RouteChange] = refuse
    with pytest.raises(ApplyError, match=r"^ip route add 10.137.0.12 dev vif12.0 metric 32740: .*File exists"):
        Applier(gw, handlers, lambda _: None).apply(online_plan())


def test_reports_each_step_as_an_administrator_would_type_it() -> None:
    gw, _ = recorder()
    lines: list[str] = []
    Applier(gw, HANDLERS, lines.append).apply(online_plan())
    assert "ip link set vif12.0 group 2 up" in lines
    assert "ip neigh replace 10.137.0.12 lladdr 00:16:3e:5e:6c:0c dev vif12.0 nud permanent" in lines
    assert "ip addr add fd09:24ef:4179::a89:1/128 dev vif12.0 nodad" in lines


def test_every_step_type_has_a_handler() -> None:
    import typing

    from vif_route_qubes import nssteps, steps
    from vif_route_qubes.nshandlers import NAMESPACE_HANDLERS

    kinds = set(typing.get_args(steps.CoreStep)) | set(typing.get_args(nssteps.NamespaceStep))
    assert kinds == set(HANDLERS) | set(NAMESPACE_HANDLERS)
    assert all(HANDLERS[kind] is NAMESPACE_HANDLERS[kind] for kind in NAMESPACE_HANDLERS)  # loaded on demand
