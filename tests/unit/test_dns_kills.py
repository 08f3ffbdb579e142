"""Tests written because a mutant of the DNS path in ``make mutation`` or
``make mutation-sample`` survived (docs/testing.md).

Each names the mutant it kills.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from qubes_netsim.qubesdbd import QubesDBDouble
from setup_dnat_to_ns.exitcodes import ExitCode
from setup_dnat_to_ns.run import run_once


class ChainsKernel:
    """An nftables stand-in for the DNS chains: it executes the add/delete
    commands it is sent (chains with their hook, rules in order) and lists
    a chain as ``nft -j -t list chain`` does. What it holds comes only from
    what the code under test sent it."""

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
                hook = {k: spec[k] for k in ("type", "hook", "prio", "policy")}
                self.chains.setdefault(key, (hook, []))
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
