"""The whole netvm at a glance: every vif XenStore knows, every vif-like thing the kernel holds.

For ``status`` and ``reconcile``. Each vif XenStore knows is read and
described as ``online`` would, observed as ``online`` would, and diffed:
what the plan would change is its drift. What the kernel holds that no
XenStore vif claims (an interface in the vif group, set elements, a
``-nat`` namespace) is an orphan. Everything here only reads: no locks,
no writes, so that it can never delay a hotplug event.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from qubesnet.constants import FAMILIES, NETNS_DIR, SET_ALLOWED, SET_DOWNSTREAM, VIF_GROUP
from qubesnet.errors import QubesNetError
from qubesnet.qubesdb import QubesDB
from qubesnet.validate import VIF_RE, IPAddress, decode_text, parse_vif_name
from qubesnet.xenstore import XenStore

from .gateways import Gateways
from .inputs import VifEnv, VifInputs, read_inputs
from .mapped_names import namespace_name
from .observe import read_set_elements
from .verdicts import Verdict, drift_of, verdict_of

BACKEND = "backend/vif"
NUMBER_RE = re.compile(r"0|[1-9][0-9]{0,4}")
NAT_SUFFIX = "-nat"


class VifReport(NamedTuple):
    name: str  # the interface's name (vifname, or libxl's)
    domid: int | None
    devid: int | None
    xenbus_path: str | None
    addresses: tuple[str, ...]
    mac: str | None
    hotplug_status: str | None
    mapped: bool
    verdict: Verdict
    detail: tuple[str, ...]  # what drifted, what is orphaned, the error
    inputs: VifInputs | None = None  # for reconcile (not shown)


def _text(xs: XenStore, key: str) -> str | None:
    raw = xs.read(key)
    return None if raw is None else decode_text(key, raw)[:1024]


def backend_vifs(xs: XenStore) -> list[tuple[str, str]]:
    """(vif name, XenStore path) of every vif backend of this netvm."""
    found = []
    for domid in xs.directory(BACKEND) or []:
        for devid in xs.directory(f"{BACKEND}/{domid}") or []:
            found.append((f"vif{domid}.{devid}", f"{BACKEND}/{domid}/{devid}"))
    return found


def inspect_vif(gw: Gateways, xs: XenStore, qdb: QubesDB | None, name: str, path: str) -> VifReport:
    """One XenStore vif: read as online would, compared with the kernel."""
    from .orchestrate import read_plan

    status = error = None
    domid = devid = None
    try:
        status, error = _text(xs, f"{path}/hotplug-status"), _text(xs, f"{path}/hotplug-error")
        parts = path.split("/")
        if not (NUMBER_RE.fullmatch(parts[2]) and NUMBER_RE.fullmatch(parts[3])):
            raise QubesNetError(f"{path}: not a vif backend (domid and devid must be numbers)")
        vif = parse_vif_name(path, name)
        domid, devid = vif.domid, vif.devid
        inp = read_inputs(VifEnv(vif, path), xs, qdb, online=True)
    except QubesNetError as exc:
        return VifReport(name, domid, devid, path, (), None, status, False, "invalid", (str(exc),))

    addresses = tuple(str(a) for a in inp.addresses.used)
    base = VifReport(inp.ifname, domid, devid, path, addresses, inp.mac, status, inp.mapping is not None, "ok", (),
                     inp)
    if status != "connected":
        verdict = verdict_of(status, ())
        if verdict == "failed":
            return base._replace(verdict=verdict, detail=(error or "hotplug-status is error",))
        return base._replace(verdict=verdict, detail=(f"hotplug-status is {status or 'not set'}",))
    try:
        reading = read_plan(gw, inp, "online")  # the namespace's steps listed, not run
    except QubesNetError as exc:
        return base._replace(verdict="drift", detail=(str(exc),))
    drift = drift_of(reading.state, reading.observed, reading.namespace)
    return base._replace(verdict=verdict_of(status, drift), detail=drift)


class Inventory(NamedTuple):
    """What the kernel holds of vifs, whoever they belong to."""

    links: dict[str, tuple[bool, int]]  # vif-like interface -> (up, group)
    neighbours: dict[str, set[IPAddress]]  # vif-like interface -> permanent neighbour entries
    addresses: dict[str, set[IPAddress]]  # vif-like interface -> host addresses (/32, /128) on it
    proxy_arp: set[str]  # vif-like interfaces with proxy ARP on
    allowed: dict[str, set[IPAddress]]  # interface name -> addresses in ``allowed``
    downstream: set[IPAddress]
    namespaces: set[str]  # ``-nat`` namespaces


def read_inventory(gw: Gateways) -> Inventory:
    vif_like = [link for link in gw.rtnl.list_links() if VIF_RE.fullmatch(link.name) or link.group == VIF_GROUP]
    links = {link.name: (link.up, link.group) for link in vif_like}
    neighbours = {link.name: {a for a, _ in gw.rtnl.list_permanent_neighbours(link.ifindex)} for link in vif_like}
    addresses = {link.name: {a for a, n in gw.rtnl.list_addresses(link.ifindex)
                             if n == a.max_prefixlen and not a.is_link_local} for link in vif_like}
    proxy_arp = {link.name for link in vif_like if gw.sysctl.read(f"net/ipv4/conf/{link.name}/proxy_arp") == "1"}
    allowed: dict[str, set[IPAddress]] = {}
    downstream: set[IPAddress] = set()
    for family in FAMILIES:
        for name, addr in read_set_elements(gw, family, SET_ALLOWED):
            if name is not None:
                allowed.setdefault(name, set()).add(addr)
        downstream |= {addr for _, addr in read_set_elements(gw, family, SET_DOWNSTREAM)}
    names = os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []
    namespaces = {n for n in names if n.endswith(NAT_SUFFIX)}
    return Inventory(links, neighbours, addresses, proxy_arp, allowed, downstream, namespaces)


def orphans(inventory: Inventory, reports: list[VifReport]) -> list[VifReport]:
    """Kernel state that no XenStore vif claims (pure)."""
    claimed = {r.name for r in reports}
    claimed |= {f"vif{r.domid}.{r.devid}" for r in reports if r.domid is not None}
    names = {n for n, (up, group) in inventory.links.items()
             if up or group == VIF_GROUP or inventory.neighbours[n] or inventory.addresses[n]
             or n in inventory.proxy_arp}
    names |= set(inventory.allowed)
    # A -nat namespace counts when this netvm still has the interface it
    # stands for (the veth's end): the directory of named namespaces is the
    # host's, and another network stack's (a simulation's) must never look ours.
    names |= {n[: -len(NAT_SUFFIX)] for n in inventory.namespaces if n[: -len(NAT_SUFFIX)] in inventory.links}
    found = []
    for name in sorted(names - claimed):
        detail = []
        if name in inventory.links:
            up, group = inventory.links[name]
            detail.append(f"interface {'up' if up else 'down'} in group {group}")
            detail += [f"neighbour {a}" for a in sorted(inventory.neighbours[name], key=str)]
            detail += [f"address {a}" for a in sorted(inventory.addresses[name], key=str)]
            detail += ["proxy ARP"] if name in inventory.proxy_arp else []
        for addr in sorted(inventory.allowed.get(name, ()), key=str):
            detail.append(f"allowed {addr}")
        if namespace_name(name) in inventory.namespaces and name in inventory.links:
            detail.append(f"namespace {namespace_name(name)}")
        match = VIF_RE.fullmatch(name)
        domid, devid = (int(match[1]), int(match[2])) if match else (None, None)
        clients = inventory.allowed.get(name, set()) | inventory.neighbours.get(name, set())
        addrs = tuple(sorted(str(a) for a in clients))
        mapped = namespace_name(name) in inventory.namespaces and name in inventory.links
        found.append(VifReport(name, domid, devid, None, addrs, None, None, mapped, "orphan", tuple(detail)))
    owned = {a for addrs in inventory.allowed.values() for a in addrs}
    for addr in sorted(inventory.downstream - owned, key=str):
        found.append(VifReport("-", None, None, None, (str(addr),), None, None, False, "orphan",
                               (f"downstream {addr} with no interface allowed to send it",)))
    return found
