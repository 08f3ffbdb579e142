"""``status``, ``reconcile`` and ``watch``: the whole netvm, for administrators and triggers.

``status`` shows, per vif, what the kernel holds against what XenStore and
QubesDB say it should (read-only, no locks). ``reconcile`` converges every
connected vif that drifted exactly as ``online`` would (same plan, same
locks, same atomicity; hooks and the conntrack purge only for a vif that
was not configured at all) and removes orphans as ``offline`` would.
``watch`` runs ``reconcile`` when the netvm's gateways change in QubesDB.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from qubesnet.constants import LOCK_FILE, LOCK_TIMEOUT, QDB_GATEWAY, QDB_GATEWAY6, QDB_OWN_IP6
from qubesnet.errors import QubesNetError, StoreError
from qubesnet.locks import KeyLocks
from qubesnet.qubesdb import QubesDB
from qubesnet.validate import VIF_RE, VifName, parse_address_list, parse_vif_name
from qubesnet.xenstore import XenStore

from .inputs import VifInputs, read_gateways, read_netvm
from .verdicts import HEALTHY, reconcile_action

if TYPE_CHECKING:
    from .gateways import Gateways
    from .orchestrate import Reading
    from .steps import Plan
    from .survey import VifReport

log = logging.getLogger("vif-route-qubes")

SCHEMA = 1
COLUMNS = ("NAME", "DOMID", "ADDRESSES", "MAC", "HOTPLUG", "MAPPED", "VERDICT")


class Context:
    """XenStore, QubesDB and the gateways, made on first use: an idle watch
    holds no netlink socket and no libnftables context."""

    def __init__(self, xs: XenStore, open_qubesdb: Callable[[], QubesDB], make_gateways: Callable[[], Gateways],
                 lock_file: str = LOCK_FILE) -> None:
        self.xs = xs
        self.open_qubesdb = open_qubesdb
        self._make_gateways = make_gateways
        self._gw: Gateways | None = None
        self.lock_file = lock_file

    @property
    def gw(self) -> Gateways:
        if self._gw is None:
            self._gw = self._make_gateways()
        return self._gw


@contextmanager
def _qubesdb(ctx: Context) -> Iterator[QubesDB | None]:
    try:
        qdb = ctx.open_qubesdb()
    except StoreError as exc:
        log.warning("QubesDB unreachable (%s): gateways and mappings unknown", exc)
        yield None
        return
    with qdb:
        yield qdb


def survey(ctx: Context, targets: tuple[str, ...] = ()) -> list[VifReport]:
    """Every vif's report: XenStore's, then the kernel's orphans."""
    from .survey import backend_vifs, inspect_vif, orphans, read_inventory

    with _qubesdb(ctx) as qdb:
        reports = [inspect_vif(ctx.gw, ctx.xs, qdb, name, path) for name, path in backend_vifs(ctx.xs)]
    reports += orphans(read_inventory(ctx.gw), reports)
    if targets:
        wanted = set(targets)
        reports = [r for r in reports if r.name in wanted or f"vif{r.domid}.{r.devid}" in wanted]
    return reports


# --- status -------------------------------------------------------------------


def as_json(reports: list[VifReport], dns: dict[str, Any] | None) -> dict[str, Any]:
    """The documented ``status --json`` schema (README, "status --json")."""
    return {
        "schema": SCHEMA,
        "ok": all(r.verdict in HEALTHY for r in reports),
        "vifs": [
            {
                "name": r.name, "domid": r.domid, "devid": r.devid, "xenbus_path": r.xenbus_path,
                "addresses": list(r.addresses), "mac": r.mac, "hotplug_status": r.hotplug_status,
                "mapped": r.mapped, "verdict": r.verdict, "detail": list(r.detail),
            }
            for r in reports
        ],
        "dns": dns,
    }


def render(reports: list[VifReport]) -> list[str]:
    rows = [COLUMNS] + [
        (r.name, "-" if r.domid is None else str(r.domid), " ".join(r.addresses) or "-", r.mac or "-",
         r.hotplug_status or "-", "yes" if r.mapped else "no",
         r.verdict + (f": {'; '.join(r.detail)}" if r.detail and r.verdict != "ok" else ""))
        for r in reports
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
            for row in rows]


def dns_status(timeout: float) -> dict[str, Any]:
    """What ``qubes-setup-dnat-to-ns --status`` shows, as data."""
    try:
        from setup_dnat_to_ns.run import status_data

        return status_data(timeout)
    except (QubesNetError, OSError) as exc:
        return {"error": str(exc)}


def run_status(ctx: Context, out: TextIO, *, targets: tuple[str, ...], as_json_output: bool, timeout: float) -> int:
    reports = survey(ctx, targets)
    dns = dns_status(timeout) if not targets else None
    healthy = all(r.verdict in HEALTHY for r in reports)
    if as_json_output:
        json.dump(as_json(reports, dns), out, indent=1)
        out.write("\n")
    else:
        for line in render(reports) if reports else ["no vifs"]:
            out.write(line + "\n")
        if dns is not None:
            out.write("\nvirtual DNS:\n")
            for line in dns.get("lines", [dns.get("error", "")]):
                out.write(f"  {line}\n")
    return 0 if healthy else 1


# --- reconcile ----------------------------------------------------------------


class Previous(NamedTuple):
    """The netvm's QubesDB values a watch saw before they changed."""

    gateway: Any
    gateway6: Any
    netvm_ipv6: bool


def _orphan_inputs(report: VifReport) -> VifInputs:
    match = VIF_RE.fullmatch(report.name)
    vif = parse_vif_name("interface", report.name) if match else VifName(report.name, 0, 0)
    addresses = parse_address_list("allowed set", " ".join(report.addresses))
    return VifInputs(vif=vif, xenbus_path="", ifname=report.name, addresses=addresses, ip_missing=False,
                     mac=None, vif_type="vif", gateway=None, gateway6=None, harden=False, flowtable=False)


@contextmanager
def _locked(ctx: Context, inp: VifInputs) -> Iterator[None]:
    from .event import lock_keys

    locks = KeyLocks(ctx.lock_file)
    locks.acquire(lock_keys(inp), LOCK_TIMEOUT)
    try:
        yield
    finally:
        locks.release()


def _for_reconcile(reading: Reading) -> Plan:
    from .diff import for_reconcile

    return for_reconcile(reading.plan, reading.state, reading.observed)


def _converge(ctx: Context, report: VifReport, say: Callable[[str], None], previous: Previous | None) -> None:
    from .apply import Applier
    from .event import converge
    from .handlers import HANDLERS
    from .inputs import read_inputs

    assert report.inputs is not None and report.xenbus_path is not None
    with _locked(ctx, report.inputs):
        # Read again under the locks: a hotplug event may have run meanwhile.
        if ctx.xs.read(f"{report.xenbus_path}/hotplug-status") != b"connected":
            return
        with ctx.open_qubesdb() as qdb:
            inp = read_inputs(_env(report), ctx.xs, qdb, online=True)
        before = None
        if previous is not None:
            before = inp._replace(gateway=previous.gateway, gateway6=previous.gateway6,
                                  netvm_ipv6=previous.netvm_ipv6)
        applier = Applier(ctx.gw, HANDLERS, say)
        converge(applier, ctx.gw, inp, choose=_for_reconcile, previous=before)


def _env(report: VifReport) -> Any:
    from .inputs import VifEnv

    assert report.inputs is not None
    return VifEnv(report.inputs.vif, report.inputs.xenbus_path)


def _remove_orphan(ctx: Context, report: VifReport, say: Callable[[str], None]) -> None:
    from .apply import Applier
    from .event import remove
    from .handlers import HANDLERS

    inp = _orphan_inputs(report)
    with _locked(ctx, inp):
        if report.domid is not None and ctx.xs.directory(f"backend/vif/{report.domid}/{report.devid}") is not None:
            return  # claimed meanwhile: a hotplug event owns it now
        applier = Applier(ctx.gw, HANDLERS, say)
        if report.name == "-":
            remove(applier, ctx.gw, inp, "downstream")
            return
        with _qubesdb(ctx) as qdb:
            if qdb is not None:
                inp = read_netvm(inp, qdb, online=False)
        remove(applier, ctx.gw, inp)


def run_reconcile(ctx: Context, out: TextIO, *, previous: Previous | None = None) -> int:
    """Converge what drifted, remove orphans; exit 1 naming what could not be converged."""
    reports = survey(ctx)
    failed: list[str] = []
    changed = 0
    for report in reports:
        action = reconcile_action(report.verdict, report.hotplug_status, report.inputs is not None,
                                  gateways_changed=previous is not None)
        if action is None:
            continue
        lines: list[str] = []
        try:
            if action == "remove":
                _remove_orphan(ctx, report, lines.append)
            else:
                _converge(ctx, report, lines.append, previous)
        except QubesNetError as exc:
            failed.append(f"{report.name}: {exc}")
            out.write(f"{report.name}: could not converge: {exc}\n")
            continue
        if lines:
            changed += 1
            what = "removed orphan" if action == "remove" else "converged"
            out.write(f"{report.name}: {what}\n")
            for line in lines:
                out.write(f"  {line}\n")
    out.write(f"reconcile: {changed} changed, {len(failed)} failed\n")
    return 1 if failed else 0


# --- watch --------------------------------------------------------------------

WATCHED = (QDB_GATEWAY, QDB_GATEWAY6, QDB_OWN_IP6)
QUIET = 0.1


def _netvm_values(qdb: QubesDB) -> Previous:
    gateway, gateway6 = read_gateways(qdb)
    return Previous(gateway, gateway6, gateway6 is not None or qdb.read(QDB_OWN_IP6) is not None)


def run_watch(ctx: Context, out: TextIO, *, retry: float = 5.0) -> int:
    """Reconcile whenever QubesDB's gateways of this netvm change; forever."""
    previous: Previous | None = None
    while True:
        try:
            with ctx.open_qubesdb() as qdb:
                for path in WATCHED:
                    qdb.watch(path)
                current = _netvm_values(qdb)
                if previous is not None and current != previous:
                    run_reconcile(ctx, out, previous=previous)
                previous = current
                log.info("watching QubesDB %s", " ".join(WATCHED))
                while True:
                    if qdb.wait_event(3600.0) is None:
                        continue
                    deadline = time.monotonic() + QUIET
                    while qdb.wait_event(max(0.0, deadline - time.monotonic())) is not None:
                        pass  # a burst of changes: one reconcile
                    current = _netvm_values(qdb)
                    if current != previous:
                        log.info("netvm gateways changed: reconciling every vif")
                        run_reconcile(ctx, out, previous=previous)
                        out.flush()
                        previous = current
        except QubesNetError as exc:
            log.warning("QubesDB watch interrupted (%s); again in %g s", exc, retry)
            time.sleep(retry)
