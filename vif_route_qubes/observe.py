"""The only code of a vif event that reads the kernel: what is there, object by object.

It looks at exactly the objects a :class:`~.state.VifState` names (and the
few facts the description itself needs), so the cost of an event does not
grow with the number of VMs, and nothing it does not describe (an address
an administrator's hook put on the vif, say) ever reads as ours. A failed
read raises: "could not look" never reads as "nothing there".
"""

from __future__ import annotations

from ipaddress import ip_address

from qubesnet.constants import (
    FAMILIES,
    FLOW_FAMILY,
    FLOW_TABLE,
    FLOWTABLE,
    QUBES_TABLE,
    SET_ALLOWED,
    VIF_GROUP,
)
from qubesnet.errors import ApplyError
from qubesnet.netlink.nlsock import NetlinkError
from qubesnet.validate import AddressList, IPAddress, parse_address_list

from .describe import ipv6_conf
from .gateways import Gateways
from .inputs import VifInputs
from .nftplan import build_flowtable_probe
from .state import (
    Address,
    BaseObjects,
    Element,
    Environment,
    FlowFacts,
    Link,
    NamespaceFacts,
    NamespaceSpec,
    Neighbour,
    Observed,
    Route,
    VifState,
)


def _netlink(what: str, error: NetlinkError) -> ApplyError:
    return ApplyError(f"cannot read {what}: {error.strerror}")


def find_link(gw: Gateways, inp: VifInputs, *, our_veth: bool = False) -> Link | None:
    """The vif's interface: under libxl's name, or renamed by an earlier run.

    A renamed one is trusted only in the vif group, so that a ``vifname``
    naming the uplink (or any other interface) can never make us reconfigure
    or take down that one. ``our_veth``: a mapped vif's namespace is in
    place, so the device under the new name is our veth's netvm end (made
    by us, or refused as existing), which joins the vif group only later:
    then one in the default group (0, where a new veth is born) is trusted
    too, never one in another group (the uplinks' is 1).
    """
    try:
        link = gw.rtnl.get_link(inp.vif.name)
        if link is None and inp.ifname != inp.vif.name:
            link = gw.rtnl.get_link(inp.ifname)
            if link is not None and link.group != VIF_GROUP and not (our_veth and link.group == 0):
                link = None
    except NetlinkError as exc:
        raise _netlink(f"interface {inp.vif.name}", exc) from exc
    return Link(*link) if link is not None else None


def read_environment(gw: Gateways, inp: VifInputs) -> Environment:
    link = find_link(gw, inp)
    ipv6_on_vif = link is not None and gw.sysctl.read(ipv6_conf(link.name, "disable_ipv6")) == "0"
    return Environment(link=link, ipv6_kernel=gw.sysctl.exists("net/ipv6"), ipv6_on_vif=ipv6_on_vif)


def read_namespace(gw: Gateways, spec: NamespaceSpec | None, name: str, ifname: str, peer: str,
                   inp: VifInputs) -> NamespaceFacts:
    """The vif's namespace (if any), compared with ``spec`` (None: no namespace wanted)."""
    if not gw.namespaces.exists(name):
        return NamespaceFacts(False, False, False, False, False, find_link(gw, inp) if spec is not None else None)
    netvm_link = find_link(gw, inp)
    inside = gw.namespaces.links_inside(name, (ifname, peer))
    listing = gw.namespaces.table_inside(name)
    matches = False
    if spec is not None and listing is not None:
        from .mapped import table_matches  # mapped vifs are rare: loaded for them only

        matches = table_matches(listing, list(spec.rules))
    return NamespaceFacts(True, inside[ifname], inside[peer], listing is not None, matches, netvm_link)


def _key_at(key: str, ifname: str, where: str) -> str:
    return key.replace(f"/conf/{ifname}/", f"/conf/{where}/", 1)


def _read_base(gw: Gateways, families: tuple[str, ...], flowtable: bool) -> tuple[dict[str, BaseObjects], bool]:
    """The anti-spoofing objects present per family, and whether our flow table exists.

    Listings of chains and sets only (terse: no set elements, no rules), so
    that their cost does not grow with the number of client VMs.
    """
    chains: dict[str, set[str]] = {family: set() for family in families}
    sets: dict[str, set[str]] = {family: set() for family in families}
    flow_table = False
    for item in gw.nft.query({"list": {"chains": {}}}, terse=True) or []:
        chain = item.get("chain", {})
        if chain.get("table") == QUBES_TABLE and chain.get("family") in chains:
            chains[chain["family"]].add(chain.get("name"))
        elif chain.get("table") == FLOW_TABLE and chain.get("family") == FLOW_FAMILY:
            flow_table = True
    for item in gw.nft.query({"list": {"sets": {}}}, terse=True) or []:
        set_ = item.get("set", {})
        if set_.get("table") == QUBES_TABLE and set_.get("family") in sets:
            sets[set_["family"]].add(set_.get("name"))
    tables = {family for family in families if chains[family] or sets[family]}
    if len(tables) < len(families) or (flowtable and not flow_table):
        # Only then does it matter whether a table exists without chains or sets.
        for item in gw.nft.query({"list": {"tables": {}}}) or []:
            table = item.get("table", {})
            if table.get("name") == QUBES_TABLE and table.get("family") in chains:
                tables.add(table["family"])
            elif table.get("name") == FLOW_TABLE and table.get("family") == FLOW_FAMILY:
                flow_table = True
    base = {f: BaseObjects(f in tables, frozenset(sets[f]), frozenset(chains[f])) for f in families}
    return base, flow_table


def _present_elements(gw: Gateways, elements: tuple[Element, ...], base: dict[str, BaseObjects]) -> frozenset[Element]:
    """Which elements are in their sets: one lookup each (a set that does not
    exist holds nothing; a lookup that fails raises)."""
    present = set()
    for element in elements:
        family = "ip" if element.addr.version == 4 else "ip6"
        if element.kind not in base.get(family, _NONE).sets:
            continue
        if gw.nft.has_element(family, QUBES_TABLE, element.kind, element.addr, element.ifname):
            present.add(element)
    return frozenset(present)


_NONE = BaseObjects(False, frozenset(), frozenset())


def read_observed(gw: Gateways, state: VifState, link: Link | None, env: Environment, *,
                  others: bool = False) -> Observed:
    """The kernel's state of every object ``state`` names, on ``link``.

    ``others``: also which client addresses another interface routes (what
    offline needs to keep ``downstream``); this lists the routing table.
    """
    families = FAMILIES if env.ipv6_kernel else FAMILIES[:1]
    base, flow_table = _read_base(gw, families, state.flowtable)
    elements = _present_elements(gw, state.elements, base)

    sysctls: dict[str, str | None] = {}
    defaults: dict[str, str | None] = {}
    for sysctl in state.sysctls:
        defaults[sysctl.key] = gw.sysctl.read(_key_at(sysctl.key, state.ifname, "default"))
        sysctls[sysctl.key] = gw.sysctl.read(_key_at(sysctl.key, state.ifname, link.name)) if link else None

    routes: set[Route] = set()
    elsewhere: set[IPAddress] = set()
    wanted_routes = set(state.routes)
    try:
        if link is not None and wanted_routes:
            routes = {Route(dst, metric) for dst, metric in gw.rtnl.host_routes_on(link.ifindex)} & wanted_routes
        if others:
            # One dump of the table per address: only offline needs it.
            for addr in state.client_addresses:
                if any(link is None or found.oif != link.ifindex for found in gw.rtnl.host_routes_to(addr)):
                    elsewhere.add(addr)
        neighbours: set[Neighbour] = set()
        addresses: set[Address] = set()
        if link is not None:
            wanted = {n.addr for n in state.neighbours}
            neighbours = {Neighbour(a, mac) for a, mac in gw.rtnl.list_permanent_neighbours(link.ifindex)
                          if a in wanted}
            on_link = {Address(a, n) for a, n in gw.rtnl.list_addresses(link.ifindex)}
            addresses = on_link & set(state.addresses)
    except NetlinkError as exc:
        raise _netlink(f"the routes, neighbours or addresses of {state.ifname}", exc) from exc

    member = False
    if flow_table and link is not None:
        listing = gw.nft.query({"list": {"flowtable": {"family": FLOW_FAMILY, "table": FLOW_TABLE, "name": FLOWTABLE}}})
        for item in listing or []:
            devices = item.get("flowtable", {}).get("dev") or []
            if isinstance(devices, str):  # libnftables lists one device as a string, not a list
                devices = [devices]
            member = member or link.name in devices or state.ifname in devices
    supported = flow_table
    if state.flowtable and not flow_table:
        supported = gw.nft.accepts(build_flowtable_probe())[0]

    return Observed(
        link=link,
        sysctls=sysctls,
        defaults=defaults,
        elements=elements,
        routes=frozenset(routes),
        neighbours=frozenset(neighbours),
        addresses=frozenset(addresses),
        routed_elsewhere=frozenset(elsewhere),
        base=base,
        flow=FlowFacts(supported=supported, table=flow_table, member=member),
    )


def read_set_elements(gw: Gateways, family: str, name: str) -> list[tuple[str | None, IPAddress]]:
    """Every element of one of our sets, as (interface or None, address): a
    listing of the whole set, for the rare paths that need it."""
    listing = gw.nft.query({"list": {"set": {"family": family, "table": QUBES_TABLE, "name": name}}})
    found: list[tuple[str | None, IPAddress]] = []
    for elem in (e for item in listing or [] for e in item.get("set", {}).get("elem", [])):
        pair = elem.get("concat") if isinstance(elem, dict) else None
        if isinstance(pair, list) and len(pair) == 2:
            found.append((str(pair[0]), ip_address(pair[1])))
        elif isinstance(elem, str):
            found.append((None, ip_address(elem)))
    return found


def read_allowed_addresses(gw: Gateways, ifname: str) -> AddressList:
    """Addresses paired with ``ifname`` in ``allowed``: offline's source when
    XenStore no longer has the ``ip`` key (this lists the whole set)."""
    found = [str(addr) for family in FAMILIES for name, addr in read_set_elements(gw, family, SET_ALLOWED)
             if name == ifname]
    return parse_address_list("allowed set", " ".join(found))
