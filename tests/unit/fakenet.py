"""A netvm's kernel at the gateway seam, for unit tests of the read side.

``FakeNet().gateways()`` answers the calls ``observe.py``, ``survey.py``
and the handlers make (rtnl, nft, sysctl, conntrack, hooks, status,
namespaces) from plain dictionaries, and applies their writes to the same
dictionaries, so that a whole event (read, describe, observe, diff, apply)
and its second run can be checked without root. It models what the code
reads, not the kernel's every rule: a test that needs a behaviour of the
real kernel belongs to the namespace tier.
"""

from __future__ import annotations

import ipaddress
from typing import Any, NamedTuple, cast

from qubesnet.constants import FLOW_TABLE, FLOWTABLE, QUBES_TABLE, SET_ALLOWED
from qubesnet.errors import ApplyError
from qubesnet.validate import IPAddress
from vif_route_qubes.gateways import Gateways

ANTISPOOF_SETS = ("allowed", "downstream")
ANTISPOOF_CHAINS = ("prerouting", "antispoof")


class FakeLink(NamedTuple):
    ifindex: int
    name: str
    up: bool
    group: int


class FakeRoute(NamedTuple):
    oif: int | None
    metric: int


class FakeNet:
    def __init__(self, *, ipv6: bool = True, layout: bool = True, flowtables: bool = False) -> None:
        self.links: dict[int, FakeLink] = {}
        self.sysctls: dict[str, str] = {"net/ipv4/conf/default/proxy_arp": "0"}
        if ipv6:
            self.sysctls |= {"net/ipv6": "", "net/ipv6/conf/default/proxy_ndp": "0",
                             "net/ipv6/conf/default/disable_ipv6": "0"}
        self.routes: set[tuple[IPAddress, int, int]] = set()  # (dst, metric, oif)
        self.neighbours: dict[tuple[int, IPAddress], str] = {}
        self.addresses: set[tuple[int, IPAddress, int]] = set()
        self.tables: set[tuple[str, str]] = set()  # (family, name)
        self.sets: set[tuple[str, str]] = set()  # (family, name) in table qubes
        self.chains: set[tuple[str, str, str]] = set()  # (family, table, name)
        self.elements: set[tuple[str, str, Any]] = set()  # (family, set, value): (ifname, addr) or addr
        self.flowdevs: set[str] = set()
        self.flowtables = flowtables
        self.conntrack: set[IPAddress] = set()  # addresses with a connection
        self.purge_started: list[frozenset[IPAddress]] = []  # conntrack.start_purge calls
        self.hooks: list[list[str]] = []
        self.reported: list[str] = []
        self.namespaces: dict[str, dict[str, FakeLink]] = {}  # name -> the links inside
        self.ns_tables: dict[str, tuple[dict[str, Any], ...]] = {}  # name -> its netdev table, as listed
        self.writes: list[str] = []
        self.fail: dict[str, Exception] = {}  # gateway method -> the error it raises
        if layout:
            for family in ("ip", "ip6") if ipv6 else ("ip",):
                self.tables.add((family, QUBES_TABLE))
                self.sets |= {(family, s) for s in ANTISPOOF_SETS}
                self.chains |= {(family, QUBES_TABLE, c) for c in ANTISPOOF_CHAINS}

    # --- building a world ---

    def add_link(self, name: str, *, up: bool = False, group: int = 0) -> FakeLink:
        link = FakeLink(max(self.links, default=0) + 1, name, up, group)
        self.links[link.ifindex] = link
        self.sysctls[f"net/ipv4/conf/{name}/proxy_arp"] = "0"
        if "net/ipv6" in self.sysctls:
            self.sysctls |= {f"net/ipv6/conf/{name}/proxy_ndp": "0", f"net/ipv6/conf/{name}/disable_ipv6": "0"}
        return link

    def remove_link(self, name: str) -> None:
        """Xen destroyed the interface: what lived on it goes with it."""
        (link,) = [link for link in self.links.values() if link.name == name]
        del self.links[link.ifindex]
        self.routes = {r for r in self.routes if r[2] != link.ifindex}
        self.neighbours = {k: v for k, v in self.neighbours.items() if k[0] != link.ifindex}
        self.addresses = {a for a in self.addresses if a[0] != link.ifindex}
        self.sysctls = {k: v for k, v in self.sysctls.items() if f"/conf/{name}/" not in k}

    def link(self, name: str) -> FakeLink | None:
        return next((link for link in self.links.values() if link.name == name), None)

    def gateways(self) -> Gateways:
        return Gateways(*(cast(Any, _Side(self, name)) for name in Gateways._fields))

    def _check(self, method: str) -> None:
        if method in self.fail:
            raise self.fail[method]

    # --- rtnl ---

    def rtnl_get_link(self, name: str) -> FakeLink | None:
        return self.link(name)

    def rtnl_list_links(self) -> list[FakeLink]:
        return list(self.links.values())

    def rtnl_set_link(self, index: int, *, name: str | None = None, up: bool | None = None,
                      group: int | None = None) -> bool:
        link = self.links[index]
        if name is not None:
            self.sysctls = {k.replace(f"/conf/{link.name}/", f"/conf/{name}/"): v for k, v in self.sysctls.items()}
        self.links[index] = link._replace(name=link.name if name is None else name, up=link.up if up is None else up,
                                          group=link.group if group is None else group)
        return True

    def rtnl_host_routes_on(self, index: int) -> list[tuple[IPAddress, int]]:
        return [(dst, metric) for dst, metric, oif in self.routes if oif == index]

    def rtnl_host_routes_to(self, dst: IPAddress) -> list[FakeRoute]:
        return [FakeRoute(oif, metric) for d, metric, oif in self.routes if d == dst]

    def rtnl_list_permanent_neighbours(self, index: int) -> list[tuple[IPAddress, str | None]]:
        return [(addr, mac) for (i, addr), mac in self.neighbours.items() if i == index]

    def rtnl_list_addresses(self, index: int) -> list[tuple[IPAddress, int]]:
        return [(addr, n) for i, addr, n in self.addresses if i == index]

    def rtnl_add_route(self, index: int, dst: IPAddress, metric: int) -> bool:
        self.routes.add((dst, metric, index))
        return True

    def rtnl_del_route(self, index: int, dst: IPAddress, metric: int) -> bool:
        self.routes.discard((dst, metric, index))
        return True

    def rtnl_add_neighbour(self, index: int, addr: IPAddress, mac: str) -> bool:
        self.neighbours[(index, addr)] = mac
        return True

    def rtnl_del_neighbour(self, index: int, addr: IPAddress) -> bool:
        return self.neighbours.pop((index, addr), None) is not None

    def rtnl_add_address(self, index: int, addr: IPAddress, prefixlen: int, *, nodad: bool = False) -> bool:
        self.addresses.add((index, addr, prefixlen))
        return True

    def rtnl_del_address(self, index: int, addr: IPAddress, prefixlen: int) -> bool:
        self.addresses.discard((index, addr, prefixlen))
        return True

    def rtnl_close(self) -> None:
        pass

    # --- nft ---

    def nft_query(self, command: dict[str, Any], *, terse: bool = False) -> list[dict[str, Any]] | None:
        ((what, body),) = command["list"].items()
        if what == "chains":
            return [{"chain": {"family": f, "table": t, "name": n}} for f, t, n in sorted(self.chains)]
        if what == "sets":
            return [{"set": {"family": f, "table": QUBES_TABLE, "name": n}} for f, n in sorted(self.sets)]
        if what == "tables":
            return [{"table": {"family": f, "name": n}} for f, n in sorted(self.tables)]
        if what == "flowtable":
            return [{"flowtable": {"name": FLOWTABLE, "dev": sorted(self.flowdevs)}}] if self.flowdevs else []
        if what == "set":
            family, name = body["family"], body["name"]
            if (family, name) not in self.sets:
                return None
            elems = [{"concat": [v[0], str(v[1])]} if name == SET_ALLOWED else str(v)
                     for f, s, v in sorted(self.elements, key=str) if (f, s) == (family, name)]
            return [{"set": {"family": family, "name": name, "elem": elems}}]
        raise AssertionError(command)

    def nft_has_element(self, family: str, table: str, set_name: str, addr: IPAddress,
                        ifname: str | None = None) -> bool:
        return (family, set_name, (ifname, addr) if ifname else addr) in self.elements

    def nft_accepts(self, commands: list[Any]) -> tuple[bool, str]:
        return self.flowtables, "" if self.flowtables else "Operation not supported"

    def nft_run(self, commands: list[Any], what: str) -> None:
        for command in commands:
            ((verb, obj),) = command.items()
            ((kind, body),) = obj.items()
            family = body["family"]
            if kind == "element":
                for elem in body["elem"]:
                    value = (elem["concat"][0], ipaddress.ip_address(elem["concat"][1])) if isinstance(elem, dict) \
                        else ipaddress.ip_address(elem)
                    key = (family, body["name"], value)
                    (self.elements.add if verb == "add" else self.elements.discard)(key)
            elif kind == "table":
                (self.tables.add if verb == "add" else self.tables.discard)((family, body["name"]))
            elif kind == "set":
                (self.sets.add if verb == "add" else self.sets.discard)((family, body["name"]))
            elif kind == "chain":
                (self.chains.add if verb == "add" else self.chains.discard)((family, body["table"], body["name"]))
            elif kind == "flowtable":
                self.tables.add((family, FLOW_TABLE))
                for dev in body.get("dev") or []:
                    (self.flowdevs.add if verb == "add" else self.flowdevs.discard)(dev)
            # rules are not modelled

    # --- sysctl, conntrack, hooks, status, namespaces ---

    def sysctl_read(self, key: str) -> str | None:
        return self.sysctls.get(key)

    def sysctl_exists(self, key: str) -> bool:
        return key in self.sysctls

    def sysctl_write(self, key: str, value: str) -> None:
        if key not in self.sysctls:
            raise ApplyError(f"cannot set sysctl {key}={value}: No such file or directory")
        self.sysctls[key] = value

    def conntrack_purge(self, addrs: tuple[IPAddress, ...]) -> int:
        gone = self.conntrack & set(addrs)
        self.conntrack -= gone
        return len(gone)

    def conntrack_start_purge(self, addrs: tuple[IPAddress, ...]) -> None:
        # The real gateway's background purge: the fake purges at the step.
        self.purge_started.append(frozenset(addrs))

    def conntrack_settle(self) -> None:
        pass

    def conntrack_close(self) -> None:
        pass

    def hooks_run(self, argv: list[str]) -> None:
        self.hooks.append(argv)

    def status_connected(self) -> None:
        self.reported.append("connected")

    def namespaces_exists(self, ns: str) -> bool:
        return ns in self.namespaces

    def namespaces_links_inside(self, ns: str, names: tuple[str, ...]) -> dict[str, bool]:
        return {name: name in self.namespaces[ns] for name in names}

    def namespaces_table_inside(self, ns: str) -> tuple[dict[str, Any], ...] | None:
        return self.ns_tables.get(ns)

    def namespaces_create(self, ns: str) -> None:
        self.namespaces[ns] = {}

    def namespaces_move_in(self, rtnl: object, index: int, ns: str, name: str | None) -> None:
        link = self.links.pop(index)
        self.namespaces[ns][name or link.name] = link._replace(name=name or link.name)

    def namespaces_create_veth(self, rtnl: object, ifname: str, peer: str, peer_mac: str, ns: str) -> None:
        self.add_link(ifname)
        self.namespaces[ns][peer] = FakeLink(0, peer, True, 0)

    def namespaces_configure(self, ns: str, ifname: str, peer: str, mapping: object, client_mac: str,
                             rules: tuple[dict[str, Any], ...]) -> None:
        # listed as nft lists it: the added chains and rules
        self.ns_tables[ns] = tuple(body for c in rules for verb, body in c.items() if verb == "add")

    def namespaces_remove(self, ns: str, ifname: str, peer: str, restore_name: str) -> None:
        inside = self.namespaces.pop(ns, {})
        self.ns_tables.pop(ns, None)
        veth = self.link(ifname)
        if veth is not None:
            self.remove_link(ifname)
        if ifname in inside:
            self.add_link(restore_name)


class _Side:
    """One gateway of a FakeNet: ``gw.rtnl.get_link`` is ``FakeNet.rtnl_get_link``;
    every write is also logged in ``FakeNet.writes``."""

    READS = ("get_link", "list_links", "host_routes_on", "host_routes_to", "list_permanent_neighbours",
             "list_addresses", "query", "has_element", "accepts", "read", "exists", "close", "links_inside",
             "table_inside", "settle")

    def __init__(self, net: FakeNet, name: str) -> None:
        self._net = net
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        method = getattr(self._net, f"{self._name}_{attr}", None)
        if method is None:
            raise AttributeError(f"{self._name}.{attr} is not modelled")

        def call(*args: Any, **kwargs: Any) -> Any:
            self._net._check(f"{self._name}.{attr}")
            if attr not in self.READS:
                self._net.writes.append(f"{self._name}.{attr}")
            return method(*args, **kwargs)

        return call
