"""Tests written because a mutant of the DNS path in ``make mutation`` or
``make mutation-sample`` survived (docs/testing.md).

Each names the mutant it kills.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from qubes_netsim.dbus import dns_value
from qubes_netsim.qubesdbd import QubesDBDouble
from qubesnet.errors import ApplyError
from setup_dnat_to_ns.chain import build_refusals, build_replace, family_of, plan_mapping
from setup_dnat_to_ns.derive import RESOLV_CONF_LIMIT, capped, read_resolv_conf, read_upstreams
from setup_dnat_to_ns.exitcodes import ExitCode
from setup_dnat_to_ns.run import run_once
from setup_dnat_to_ns.upstreams import AF_INET, Upstream, parse_resolv_conf, parse_resolved_dns

V1, V2 = IPv4Address("10.139.1.1"), IPv4Address("10.139.1.2")
W1, W2 = IPv6Address("fd09:24ef:4179::a8b:1"), IPv6Address("fd09:24ef:4179::a8b:2")


class ChainsKernel:
    """An nftables stand-in for the DNS chains: it executes the add/delete
    commands it is sent (chains with or without their hook, rules in order)
    and lists a chain as ``nft -j -t list chain`` does. What it holds comes
    only from what the code under test sent it. (Unlike the kernel, a
    refused transaction is not rolled back: the tests do not need it.)"""

    def __init__(self) -> None:
        self.chains: dict[tuple[str, str], tuple[dict[str, Any], list[list[Any]]]] = {}
        self.transactions: list[list[dict[str, Any]]] = []

    def run(self, commands: list[dict[str, Any]], what: str) -> None:
        self.transactions.append(commands)
        for command in commands:
            (verb, obj), = command.items()
            (kind, spec), = obj.items()
            if kind == "table":
                continue
            key = (spec["family"], spec["chain"] if kind == "rule" else spec["name"])
            if verb == "delete":
                self.chains.pop(key, None)
            elif kind == "chain":
                # As the kernel: an add without a hook creates a regular chain
                # or leaves an existing one as it is; an add that would change
                # an existing chain's hook is refused (EOPNOTSUPP).
                hook = {k: spec[k] for k in ("type", "hook", "prio", "policy") if k in spec}
                existing = self.chains.get(key)
                if existing is None:
                    self.chains[key] = (hook, [])
                elif hook and hook != existing[0]:
                    raise ApplyError("nftables refused the transaction: Operation not supported")
            else:
                self.chains[key][1].append(spec["expr"])

    def query(self, command: dict[str, Any], *, terse: bool = False) -> list[dict[str, Any]] | None:
        spec = command["list"]["chain"]
        found = self.chains.get((spec["family"], spec["name"]))
        if found is None:
            return None
        hook, rules = found
        return [{"chain": dict(hook, family=spec["family"], name=spec["name"])}] + \
            [{"rule": {"expr": expr}} for expr in rules]


@pytest.fixture
def dnat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mocker: MockerFixture) -> Iterator[argparse.Namespace]:
    """run_once's arguments, QubesDB (a double on a socket) with the IPv4
    virtual addresses, resolv.conf with one server, no systemd-resolved."""
    (tmp_path / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    (tmp_path / "services").mkdir()
    mocker.patch("setup_dnat_to_ns.resolved.query_dns", return_value=(None, "no system bus"))
    with QubesDBDouble(os.path.join(str(tmp_path), "qdb.sock")) as qdb:
        qdb.write("/qubes-netvm-primary-dns", "10.139.1.1")
        qdb.write("/qubes-netvm-secondary-dns", "10.139.1.2")
        monkeypatch.setenv("QUBESDB_SOCKET", qdb.path)
        yield argparse.Namespace(dry_run=False, verbose=False, resolv_conf=str(tmp_path / "resolv.conf"),
                                 qubes_service_dir=str(tmp_path / "services"), timeout=2.0)


def test_a_chain_whose_priority_was_edited_is_replaced(dnat: argparse.Namespace) -> None:
    """The add that precedes the delete names no hook: the kernel refuses
    an add that would change an existing chain's priority, which left a
    hand-edited chain in place for good (tests/integration/test_dnat_dns.py
    checks the same against the kernel)."""
    kernel = ChainsKernel()
    assert run_once(dnat, kernel) == ExitCode.APPLIED  # type: ignore[arg-type]
    hook, rules = kernel.chains["ip", "dnat-dns"]
    kernel.chains["ip", "dnat-dns"] = (dict(hook, prio=hook["prio"] + 1), rules)
    assert run_once(dnat, kernel) == ExitCode.APPLIED  # type: ignore[arg-type]
    assert kernel.chains["ip", "dnat-dns"] == (hook, rules)
    assert run_once(dnat, kernel) == ExitCode.UNCHANGED  # type: ignore[arg-type]


def test_a_second_run_changes_nothing_and_says_so(dnat: argparse.Namespace, mocker: MockerFixture) -> None:
    """Kills dns-never-unchanged: exit 100 (the dispatcher then leaves the
    updates proxy alone) and no transaction when the chains are current."""
    request = mocker.patch("setup_dnat_to_ns.systemd.request")
    kernel = ChainsKernel()
    assert run_once(dnat, kernel) == ExitCode.APPLIED  # type: ignore[arg-type]
    assert len(kernel.transactions) == 1
    assert run_once(dnat, kernel) == ExitCode.UNCHANGED  # type: ignore[arg-type]
    assert len(kernel.transactions) == 1
    request.assert_not_called()


def test_the_firewall_is_reloaded_after_a_change_only(dnat: argparse.Namespace, mocker: MockerFixture) -> None:
    """Kills dns-firewall-never-reloaded: with the qubes-firewall service
    flag, a change asks systemd to reload it; no change, no reload."""
    Path(dnat.qubes_service_dir, "qubes-firewall").touch()
    request = mocker.patch("setup_dnat_to_ns.systemd.request")
    kernel = ChainsKernel()
    assert run_once(dnat, kernel) == ExitCode.APPLIED  # type: ignore[arg-type]
    request.assert_called_once_with("try-reload-or-restart", "qubes-firewall.service")
    assert run_once(dnat, kernel) == ExitCode.UNCHANGED  # type: ignore[arg-type]
    request.assert_called_once()


def test_a_changed_upstream_replaces_the_chain(dnat: argparse.Namespace, mocker: MockerFixture) -> None:
    """The kernel stand-in ends with exactly the new mapping's rules (the
    old chain deleted in the same transaction, never appended to)."""
    mocker.patch("setup_dnat_to_ns.systemd.request")
    kernel = ChainsKernel()
    run_once(dnat, kernel)  # type: ignore[arg-type]
    Path(dnat.resolv_conf).write_text("nameserver 192.0.2.7\n")
    assert run_once(dnat, kernel) == ExitCode.APPLIED  # type: ignore[arg-type]
    rules = kernel.chains[("ip", "dnat-dns")][1]
    assert len(rules) == 4
    assert all(expr[-1] == {"dnat": {"addr": "192.0.2.7"}} for expr in rules)


# --- survivors of make mutation-sample (cosmic-ray) -------------------------------


def _up(text: str) -> Upstream:
    return Upstream(ip_address(text), "test")


def test_family_of_a_mapping() -> None:
    """Kills VERSION_FAMILY's 6 +- 1 and family_of's index and condition
    mutants: a one-entry IPv6 mapping is ip6, an empty one the default."""
    assert family_of(plan_mapping([W1], [_up("2001:db8::1")])) == "ip6"
    assert family_of(plan_mapping([V1], [_up("192.0.2.1")])) == "ip"
    assert family_of([]) == "ip" and family_of([], "ip6") == "ip6"


def test_the_chains_hooks_are_the_contracts() -> None:
    """Kills the priority constants' +- 1: dnat-dns at dstnat (-100),
    dnat-dns-refuse at filter - 1, both accepting by default, written
    out here rather than taken from the module under test."""
    chains = [c["add"]["chain"] for c in build_replace([], [], "ip") if "hook" in c.get("add", {}).get("chain", {})]
    hooks = {(c["name"], c["type"], c["hook"], c["prio"], c["policy"]) for c in chains}
    assert hooks == {("dnat-dns", "nat", "prerouting", -100, "accept"),
                     ("dnat-dns-refuse", "filter", "input", -1, "accept")}


def test_refusals_match_port_53_only() -> None:
    """Kills the refusal rules' port 53 +- 1."""
    rules = build_refusals(plan_mapping([V1], []), "ip")
    assert len(rules) == 2
    for rule in rules:
        ports = [e["match"]["right"] for e in rule if "match" in e and e["match"]["left"].get("payload", {})
                 .get("field") == "dport"]
        assert ports == [53]


def test_resolv_conf_of_exactly_the_limit_is_read_whole(tmp_path: Path) -> None:
    """Kills RESOLV_CONF_LIMIT's constants +- 1, read(limit + 1) - 1 and
    ``>`` as ``>=``: the limit is 64 KiB, inclusive; one byte more is cut
    with a note, and the server on the last whole line is still found."""
    assert RESOLV_CONF_LIMIT == 64 * 1024
    line = b"nameserver 192.0.2.1\n"
    body = line + b"#" * (65536 - len(line) - 1) + b"\n"
    path = tmp_path / "resolv.conf"
    path.write_bytes(body)
    servers, notes = read_resolv_conf(str(path))
    assert [str(s.addr) for s in servers] == ["192.0.2.1"] and notes == []
    path.write_bytes(body + b"x")
    servers, notes = read_resolv_conf(str(path))
    assert [str(s.addr) for s in servers] == ["192.0.2.1"]
    assert notes == [f"{path} is larger than 65536 bytes; reading its beginning only"]


def test_notes_are_capped_at_ten() -> None:
    """Kills NOTES_MAX +- 1 and ``<=`` as ``<``."""
    ten = [f"n{i}" for i in range(10)]
    assert capped(ten) == ten
    assert capped([*ten, "n10"]) == [*ten, "1 more lines skipped likewise"]


def test_resolved_with_usable_ipv6_servers_only_is_used(mocker: MockerFixture, tmp_path: Path) -> None:
    """Kills the (4, 6) +- 1 of read_upstreams: resolved's IPv6-only list is
    used (no fall back to resolv.conf's IPv4 server)."""
    (tmp_path / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    mocker.patch("setup_dnat_to_ns.resolved.query_dns",
                 return_value=(dns_value([(0, "2001:db8::53")]), ""))
    servers, _ = read_upstreams(str(tmp_path / "resolv.conf"), 1.0)
    assert [str(s.addr) for s in servers] == ["2001:db8::53"]
    mocker.patch("setup_dnat_to_ns.resolved.query_dns",
                 return_value=(dns_value([(0, "192.0.2.53")]), ""))
    servers, _ = read_upstreams(str(tmp_path / "resolv.conf"), 1.0)
    assert [str(s.addr) for s in servers] == ["192.0.2.53"]


def test_a_long_bad_address_is_cut_in_its_note() -> None:
    """Kills ``value[:64]`` +- 1 (a hostile line must not become a long log line)."""
    _, notes = parse_resolv_conf("nameserver " + "x" * 100 + "\n", "f")
    assert notes == [f"f line 1: not an address: {'x' * 64!r}"]


def test_resolved_entries_beyond_the_bound_are_not_looked_at() -> None:
    """Kills ``MAX_SERVERS * 4`` +- 1: of resolved's entries only the first 64
    are examined (16 servers, four times over for garbage)."""
    bad = (0, AF_INET, [1, 2, 3])
    good = (0, AF_INET, [192, 0, 2, 1])
    servers, _ = parse_resolved_dns([bad] * 63 + [good])
    assert [str(s.addr) for s in servers] == ["192.0.2.1"]
    servers, _ = parse_resolved_dns([bad] * 64 + [good])
    assert servers == []


def test_resolved_ipv4_family_with_16_bytes_is_malformed() -> None:
    """Kills ``family == AF_INET6 and len(packed) == 16`` with ``or``."""
    servers, notes = parse_resolved_dns([(0, AF_INET, list(range(1, 17)))])
    assert servers == []
    assert notes == ["systemd-resolved: ignored a malformed DNS entry (family 2 with 16 address bytes)"]
