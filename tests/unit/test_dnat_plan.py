"""qubes-setup-dnat-to-ns, pure parts: sources, usability, pairing, the chain."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from setup_dnat_to_ns.chain import (
    HOOK,
    REFUSE_HOOK,
    build_refusals,
    build_removal,
    build_replace,
    build_rules,
    is_current,
    plan_mapping,
    render,
)
from setup_dnat_to_ns.upstreams import (
    Upstream,
    parse_resolv_conf,
    parse_resolved_dns,
    usable,
)

V1, V2 = IPv4Address("10.139.1.1"), IPv4Address("10.139.1.2")
W1, W2 = IPv6Address("fd09:24ef:4179::a8b:1"), IPv6Address("fd09:24ef:4179::a8b:2")


def up(text: str, origin: str = "test") -> Upstream:
    return Upstream(ip_address(text), origin)


def test_resolv_conf_nameservers_in_order_with_notes() -> None:
    text = ("# comment\nsearch example\nnameserver 192.0.2.1\nnameserver\nnameserver nope\n"
            "nameserver fe80::1%eth0\noptions edns0\nnameserver 192.0.2.2 extra\n")
    servers, notes = parse_resolv_conf(text, "rc")
    assert [s.addr for s in servers] == [IPv4Address("192.0.2.1"), IPv6Address("fe80::1"), IPv4Address("192.0.2.2")]
    assert servers[0].origin == "rc line 3"
    assert notes == ["rc line 4: nameserver without an address", "rc line 5: not an address: 'nope'"]


def test_resolv_conf_caps_the_number_of_servers() -> None:
    servers, notes = parse_resolv_conf("".join(f"nameserver 192.0.2.{i}\n" for i in range(1, 30)))
    assert len(servers) == 16 and len(notes) == 13


def test_resolved_global_entries_alone_when_there_are_any() -> None:
    value = [(3, 2, bytes([192, 0, 2, 3])), (0, 2, bytes([192, 0, 2, 1])), (2, 10, bytes(15) + b"\x01"),
             (0, 10, bytes([0x20, 0x01, 0x0d, 0xb8]) + bytes(11) + b"\x05"), (0, 2, bytes([192, 0, 2, 2]))]
    servers, notes = parse_resolved_dns(value)
    # Both families: the per-link IPv4 and IPv6 entries are left out.
    assert [str(s.addr) for s in servers] == ["192.0.2.1", "2001:db8::5", "192.0.2.2"]
    assert {s.origin for s in servers} == {"systemd-resolved, global"}
    assert notes == ["systemd-resolved: 2 per-link server(s) ignored: global servers take precedence"]


def test_resolved_per_link_entries_in_order_without_global_ones() -> None:
    value = [(3, 2, bytes([192, 0, 2, 3])), (2, 10, bytes(15) + b"\x01"), (2, 2, bytes([192, 0, 2, 2]))]
    servers, notes = parse_resolved_dns(value)
    assert [str(s.addr) for s in servers] == ["192.0.2.3", "::1", "192.0.2.2"]
    assert servers[0].origin == "systemd-resolved, link 3" and notes == []


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        [(0, 2, b"\x01\x02")],  # short address
        [(0, 7, b"\x01\x02\x03\x04")],  # unknown family
        [(-1, 2, b"\x01\x02\x03\x04")],  # bad ifindex
        [("x", 2)],  # wrong shape
    ],
)
def test_resolved_garbage_is_ignored_with_a_note(value: object) -> None:
    servers, notes = parse_resolved_dns(value)
    assert servers == [] and notes


@pytest.mark.parametrize(
    ("addr", "reason"),
    [("127.0.0.53", "loopback"), ("0.0.0.0", "unspecified"), ("224.0.0.251", "multicast"),
     ("169.254.1.1", "link-local"), ("255.255.255.255", "reserved"), ("0.1.2.3", "this network")],
)
def test_unusable_upstreams_are_skipped(addr: str, reason: str) -> None:
    kept, notes = usable([up(addr), up("192.0.2.1"), up("2001:db8::1")])
    assert [str(k.addr) for k in kept] == ["192.0.2.1"]
    assert len(notes) == 1 and reason in notes[0] and addr in notes[0]


@pytest.mark.parametrize(
    ("addr", "reason"),
    [("::1", "loopback"), ("::", "unspecified"), ("ff02::fb", "multicast"), ("fe80::1", "link-local"),
     ("::ffff:192.0.2.1", "IPv4-mapped")],
)
def test_unusable_ipv6_upstreams_are_skipped(addr: str, reason: str) -> None:
    kept, notes = usable([up(addr), up("2001:db8::53"), up("192.0.2.1")], 6)
    assert [str(k.addr) for k in kept] == ["2001:db8::53"]
    assert len(notes) == 1 and reason in notes[0] and str(ip_address(addr)) in notes[0]


def test_duplicates_are_dropped() -> None:
    kept, _ = usable([up("192.0.2.1", "a"), up("192.0.2.1", "b"), up("10.139.1.1")])
    assert [(str(k.addr), k.origin) for k in kept] == [("192.0.2.1", "a"), ("10.139.1.1", "test")]


def test_pairing_cycles_and_covers_every_virtual_address() -> None:
    a, b = up("192.0.2.1"), up("192.0.2.2")
    assert [m.upstream for m in plan_mapping([V1, V2], [a])] == [a, a]
    assert [m.upstream for m in plan_mapping([V1, V2], [a, b])] == [a, b]
    assert [m.upstream for m in plan_mapping([V1], [a, b])] == [a]
    assert [m.upstream for m in plan_mapping([V1, V2], [])] == [None, None]
    assert plan_mapping([], [a]) == []


def test_rules_and_atomic_replacement() -> None:
    rules = build_rules(plan_mapping([V1, V2], [up("192.0.2.1")]))
    assert len(rules) == 4
    assert rules[0] == [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "10.139.1.1"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 53}},
        {"dnat": {"addr": "192.0.2.1"}},
    ]
    commands = build_replace(rules)
    ops = [(next(iter(c)), next(iter(c[next(iter(c))]))) for c in commands]
    # One transaction: the table, then per chain add (no-op if present), delete, add, its rules.
    assert ops[:4] == [("add", "table"), ("add", "chain"), ("delete", "chain"), ("add", "chain")]
    assert ops[4:8] == [("add", "rule")] * 4
    assert ops[8:] == [("add", "chain"), ("delete", "chain"), ("add", "chain")]  # an empty refusal chain
    assert commands[8]["add"]["chain"]["name"] == "dnat-dns-refuse"


def test_refusal_without_upstream() -> None:
    mapping = plan_mapping([V1, V2], [])
    # Redirected to the netvm itself (whatever its routes), refused there.
    assert [r[-1] for r in build_rules(mapping)] == [{"redirect": None}] * 4
    refusals = build_refusals(mapping)
    assert refusals[0][0] == {"match": {"op": "==", "left": {"ct": {"key": "daddr", "dir": "original"}},
                                        "right": "10.139.1.1"}}
    assert [r[-1] for r in refusals] == [{"reject": {"type": "icmp", "expr": "port-unreachable"}},
                                         {"reject": {"type": "tcp reset"}}] * 2
    assert [r[1]["match"]["left"]["payload"]["protocol"] for r in refusals] == ["udp", "tcp"] * 2
    assert [r[0]["match"]["right"] for r in refusals] == ["10.139.1.1"] * 2 + ["10.139.1.2"] * 2


def test_ipv6_mapping_rules_and_refusals() -> None:
    mapping = plan_mapping([W1, W2], [up("2001:db8:100::1"), up("2001:db8:100::53")])
    rules = build_rules(mapping, "ip6")
    assert rules[0][0] == {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                                     "right": "fd09:24ef:4179::a8b:1"}}
    assert [r[-1] for r in rules] == [{"dnat": {"addr": "2001:db8:100::1"}}] * 2 + \
        [{"dnat": {"addr": "2001:db8:100::53"}}] * 2
    assert build_refusals(mapping, "ip6") == []
    refused = build_refusals(plan_mapping([W1], []), "ip6")
    assert refused[0][-1] == {"reject": {"type": "icmpv6", "expr": "port-unreachable"}}
    commands = build_replace(rules, refused, "ip6")
    assert {c[next(iter(c))][next(iter(c[next(iter(c))]))]["family"] for c in commands} == {"ip6"}


def test_removal_of_a_family_no_longer_served() -> None:
    commands = build_removal("ip6")
    assert [(next(iter(c)), c[next(iter(c))]["chain"]["name"]) for c in commands] == [
        ("add", "dnat-dns"), ("delete", "dnat-dns"), ("add", "dnat-dns-refuse"), ("delete", "dnat-dns-refuse")]


def test_is_current_compares_hook_and_rules() -> None:
    rules = build_rules(plan_mapping([V1], [up("192.0.2.1")]))
    listing = [{"chain": {"family": "ip", "table": "qubes", "name": "dnat-dns", **HOOK}}]
    listing += [{"rule": {"family": "ip", "table": "qubes", "chain": "dnat-dns", "expr": r}} for r in rules]
    assert is_current(listing, rules)
    assert not is_current(listing[:-1], rules)
    assert not is_current(None, rules)
    other_prio = [{"chain": {**listing[0]["chain"], "prio": 0}}] + listing[1:]
    assert not is_current(other_prio, rules)


def test_is_current_knows_the_refusal_chain_hook() -> None:
    refusals = build_refusals(plan_mapping([V1], []))
    listing = [{"chain": {"family": "ip", "table": "qubes", "name": "dnat-dns-refuse", **REFUSE_HOOK}}]
    listing += [{"rule": {"expr": r}} for r in refusals]
    assert is_current(listing, refusals, "dnat-dns-refuse")
    assert not is_current(listing, refusals, "dnat-dns")


def test_render_matches_nft_syntax() -> None:
    text = render(plan_mapping([V1, V2], [up("192.0.2.1")]))
    assert "type nat hook prerouting priority dstnat; policy accept;" in text
    assert "ip daddr 10.139.1.2 tcp dport 53 dnat to 192.0.2.1" in text
    refused = render(plan_mapping([V1], []))
    assert "type filter hook input priority filter - 1; policy accept;" in refused
    assert "ip daddr 10.139.1.1 udp dport 53 redirect\n" in refused
    assert "ct original ip daddr 10.139.1.1 udp dport 53 reject\n" in refused
    assert "ct original ip daddr 10.139.1.1 tcp dport 53 reject with tcp reset" in refused
    assert "ip6 daddr fd09:24ef:4179::a8b:2 udp dport 53 dnat to 2001:db8::1" in render(
        plan_mapping([W1, W2], [up("2001:db8::1")]), "ip6")


def test_notes_are_capped() -> None:
    from setup_dnat_to_ns.derive import NOTES_MAX, capped

    _, notes = parse_resolv_conf("nameserver bogus\n" * 3000, "resolv.conf")
    shown = capped(notes)
    assert len(notes) == 3000
    assert len(shown) == NOTES_MAX + 1 and shown[-1] == f"{3000 - NOTES_MAX} more lines skipped likewise"
    assert capped(notes[:3]) == notes[:3]
