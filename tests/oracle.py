"""An independent view of a namespace's network state, for comparisons.

Built only from `ip -j` and `nft -j` output, never from the code under test.
What the kernel adds or removes by itself when a link changes state (IPv6
link-local addresses, their routes, multicast routes) is left out, so that
"the state before" and "the state after" compare what the hotplug controls.
"""

from __future__ import annotations

import json
from typing import Any

from qubes_netsim.netns import Netns

VOLATILE_KEYS = {"handle", "expires", "used", "updated", "confirmed", "probes", "pref", "cacheinfo"}


def _strip(value: Any) -> Any:
    """Drop handles and zero counters: what differs between equal rulesets."""
    if isinstance(value, dict):
        if set(value) == {"packets", "bytes"}:
            return "counter"
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _ipv6_link_local(text: str | None) -> bool:
    return bool(text) and (str(text).startswith("fe80") or str(text).startswith("ff00"))


def ruleset(ns: Netns) -> list[Any]:
    return [_strip(item) for item in ns.nft_json("list", "ruleset")]


def links(ns: Netns) -> dict[str, Any]:
    out = {}
    for link in ns.ip_json("link", "show"):
        out[link["ifname"]] = {
            "up": "UP" in link.get("flags", []),
            "group": link.get("group"),
            "address": link.get("address"),
        }
    return out


def addresses(ns: Netns) -> dict[str, list[str]]:
    out = {}
    for link in ns.ip_json("addr", "show"):
        out[link["ifname"]] = sorted(
            f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if not _ipv6_link_local(a.get("local"))
        )
    return out


def routes(ns: Netns) -> list[str]:
    found = []
    for family in ("-4", "-6"):
        for route in ns.ip_json(family, "route", "show", "table", "all"):
            if _ipv6_link_local(route.get("dst")) or route.get("type") == "multicast":
                continue
            found.append(json.dumps(_strip(route), sort_keys=True))
    return sorted(found)


def neighbours(ns: Netns) -> list[str]:
    return sorted(
        f"{n['dst']} {n.get('dev')} {n.get('lladdr')}" for n in ns.ip_json("neigh", "show", "nud", "permanent")
    )


def sysctls(ns: Netns, ifname: str) -> dict[str, str | None]:
    ipv4 = ("proxy_arp", "accept_redirects", "send_redirects", "accept_source_route")
    keys = [f"net/ipv4/conf/{ifname}/{k}" for k in ipv4]
    keys += [f"net/ipv6/conf/{ifname}/{k}" for k in ("proxy_ndp", "accept_ra", "accept_dad", "accept_redirects")]
    return {k: ns.sysctl(k) for k in keys}


def snapshot(ns: Netns, ifnames: tuple[str, ...] = ()) -> dict[str, Any]:
    state: dict[str, Any] = {
        "ruleset": ruleset(ns),
        "links": links(ns),
        "addresses": addresses(ns),
        "routes": routes(ns),
        "neighbours": neighbours(ns),
    }
    for ifname in ifnames:
        state[f"sysctl {ifname}"] = sysctls(ns, ifname)
    return state
