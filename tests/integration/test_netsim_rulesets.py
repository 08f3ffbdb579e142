"""The simulated netvm's base rulesets (qubes_netsim/rulesets/*.nft).

They are hand-written to the contract, so that the code under test is
compared against a base it did not build. These cases check that the files
load into a fresh namespace with the nft program, hold what the contract
says, and that the IPv6-disabled base has no filter chain in ``ip6 qubes``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from qubes_netsim.cli import BASE_RULESETS, RULESETS_DIR, ruleset_files
from qubes_netsim.netns import Netns
from qubes_netsim.topology import UPSTREAM, SimNetvm
from tests import oracle

ANTISPOOF = {"sets": {"downstream", "allowed"}, "chains": {"prerouting", "antispoof"}}
FILTER = {"custom-input", "custom-forward", "input", "forward", "postrouting"}


@pytest.fixture
def fresh_ns(fresh_netns: Netns) -> Netns:
    return fresh_netns


def objects(ns: Netns, family: str, table: str, kind: str) -> set[str]:
    """Names of the sets or chains of one table (the oracle: nft -j)."""
    items = ns.nft_json("list", "table", family, table)
    return {item[kind]["name"] for item in items if kind in item}


def load_layout(ns: Netns, ipv6: str) -> subprocess.CompletedProcess[str]:
    return ns.run([sys.executable, "-m", "qubes_netsim", "load-layout", "--ipv6", ipv6], check=False)


def test_no_file_flushes_anything() -> None:
    names = sorted(n for n in os.listdir(RULESETS_DIR) if n.endswith(".nft"))
    assert names == ["qubes-antispoof.nft", "qubes-ipv4.nft", "qubes-ipv6-disabled.nft", "qubes-ipv6.nft"]
    for name in names:
        with open(os.path.join(RULESETS_DIR, name)) as handle:
            code = [line.split("#")[0] for line in handle]
        assert not [line for line in code if "flush" in line], name


@pytest.mark.parametrize("ipv6", sorted(BASE_RULESETS))
def test_every_file_passes_nft_check(fresh_ns: Netns, ipv6: str) -> None:
    for path in ruleset_files(ipv6):
        result = fresh_ns.run(["nft", "-c", "-f", path], check=False)
        assert result.returncode == 0, f"{path}: {result.stderr}"


def test_ipv6_on_holds_the_antispoof_and_filter_chains_of_both_families(fresh_ns: Netns) -> None:
    assert load_layout(fresh_ns, "on").returncode == 0
    for family in ("ip", "ip6"):
        assert objects(fresh_ns, family, "qubes", "set") == ANTISPOOF["sets"]
        extra = {"_icmpv6"} if family == "ip6" else set()
        assert objects(fresh_ns, family, "qubes", "chain") == ANTISPOOF["chains"] | FILTER | extra
    tables = {(t["table"]["family"], t["table"]["name"]) for t in fresh_ns.nft_json("list", "tables")}
    assert tables == {("ip", "qubes"), ("ip6", "qubes")}


def test_ipv6_off_has_no_ip6_filter_chains(fresh_ns: Netns) -> None:
    assert load_layout(fresh_ns, "off").returncode == 0
    assert objects(fresh_ns, "ip", "qubes", "chain") == ANTISPOOF["chains"] | FILTER
    assert objects(fresh_ns, "ip6", "qubes", "set") == ANTISPOOF["sets"]
    assert objects(fresh_ns, "ip6", "qubes", "chain") == ANTISPOOF["chains"]
    forward = fresh_ns.nft_json("list", "chain", "ip6", "qubes-ipv6-disabled", "forward")
    assert [c["chain"]["policy"] for c in forward if "chain" in c] == ["drop"]


def test_loading_twice_adds_no_rule(fresh_ns: Netns) -> None:
    """As nft -f of a unit reloaded: the files add, they never duplicate sets."""
    assert load_layout(fresh_ns, "on").returncode == 0
    sets = fresh_ns.nft_json("list", "sets")
    assert load_layout(fresh_ns, "on").returncode == 0
    assert fresh_ns.nft_json("list", "sets") == sets


def test_a_failing_file_fails_the_command(fresh_ns: Netns) -> None:
    """The loader reports nft's refusal instead of leaving a half base."""
    fresh_ns.run(["nft", "add", "table", "ip", "qubes"])
    # A chain of the same name with another hook: nft refuses to change it.
    fresh_ns.run(["nft", "add", "chain", "ip", "qubes", "input", "{ type filter hook output priority 0; }"])
    result = load_layout(fresh_ns, "on")
    assert result.returncode == 1
    assert "qubes-ipv4.nft failed" in result.stderr


def test_an_ipv6_disabled_netvm_still_serves_ipv4_clients(ipv6_disabled_sim: SimNetvm) -> None:
    sim = ipv6_disabled_sim
    client = sim.add_client(12, "10.137.0.12")
    assert sim.vif_route("online", client).returncode == 0
    assert client.ping(UPSTREAM)
    assert sim.set_elements("ip", "allowed") == {("vif12.0", "10.137.0.12")}


def test_online_creates_no_ip6_filter_chains_when_ipv6_is_off(ipv6_disabled_sim: SimNetvm) -> None:
    """The filter chains belong to the firewall service: with IPv6 off the
    base has none in ip6 qubes, and a hotplug event must not add them; offline
    leaves the ruleset exactly as it found it."""
    sim = ipv6_disabled_sim
    client = sim.add_client(12, "10.137.0.12")
    before = oracle.ruleset(sim.netvm)
    assert sim.vif_route("online", client).returncode == 0
    assert objects(sim.netvm, "ip6", "qubes", "chain") == ANTISPOOF["chains"]
    assert sim.vif_route("offline", client).returncode == 0
    assert oracle.ruleset(sim.netvm) == before
