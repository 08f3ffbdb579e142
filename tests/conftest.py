"""Shared test configuration.

Tests under tests/integration and tests/reliability build networks in
namespaces (the fixtures below) and need root, iproute2 and nftables; the
NetworkManager tests need Debian's network-manager too. Where those are
missing the tests are not collected, and the run ends saying how many and
why ("NOT RUN HERE"), unless QUBES_REQUIRE_NETNS=1 (make test, .ci/run):
then the run fails, so that CI can never pass without them having run.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

REQUIRE_NETNS = os.environ.get("QUBES_REQUIRE_NETNS") == "1"


@functools.cache
def netns_unavailable() -> str | None:
    """Why network-namespace tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    for tool in ("ip", "nft", "nsenter", "ping", "conntrack"):
        if shutil.which(tool) is None:
            return f"network namespace tests need {tool}"
    name = f"qnprobe-{uuid.uuid4().hex[:8]}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    try:
        import nftables  # noqa: F401
    except ImportError:
        return "network namespace tests need the libnftables binding (python3-nftables)"
    return None


def xenstore_utils_unavailable() -> str | None:
    missing = [t for t in ("xenstore-read", "xenstore-write", "xenstore-ls", "xenstore-list") if not shutil.which(t)]
    return f"xenstore-utils tests need {', '.join(missing)} (Debian: xenstore-utils)" if missing else None


def networkmanager_unavailable() -> str | None:
    from qubes_netsim import nm

    return netns_unavailable() or nm.unavailable()


NOT_RUN: list[str] = []  # what was left out here and why, said at the end of the run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests this machine cannot run are not collected (and said so at the end);
    with QUBES_REQUIRE_NETNS=1 (make test, CI) that fails the run instead."""
    for item in items:
        if any(f"{os.sep}{tier}{os.sep}" in str(item.path) for tier in ("integration", "reliability")):
            item.add_marker(pytest.mark.netns)
    checks = (("netns", netns_unavailable), ("xenstore_utils", xenstore_utils_unavailable),
              ("networkmanager", networkmanager_unavailable))
    for marker, check in checks:
        marked = [item for item in items if item.get_closest_marker(marker)]
        reason = check() if marked else None
        if reason is None:
            continue
        if REQUIRE_NETNS:
            raise pytest.UsageError(f"QUBES_REQUIRE_NETNS=1 (CI) but {reason}")
        config.hook.pytest_deselected(items=marked)
        items[:] = [item for item in items if item not in marked]
        NOT_RUN.append(f"{len(marked)} tests not run: {reason}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in NOT_RUN:
        terminalreporter.write_line(f"NOT RUN HERE: {line}", yellow=True)


# --- the simulated netvm, for the namespace tiers ---------------------------


def _sim(**options: Any) -> Iterator[object]:
    from qubes_netsim.topology import SimNetvm

    netvm = SimNetvm(**options).create()
    try:
        yield netvm
    finally:
        netvm.destroy()


@pytest.fixture
def sim() -> Iterator[object]:
    """Upstream + netvm namespaces, base layout loaded, doubles running."""
    yield from _sim()


@pytest.fixture
def bare_sim() -> Iterator[object]:
    """The same, but with an empty nftables ruleset in the netvm."""
    yield from _sim(load_layout=False)


@pytest.fixture
def ipv6_disabled_sim() -> Iterator[object]:
    """A netvm with IPv6 off, as Qubes sets one up: the base ruleset of
    qubes-ipv6-disabled.nft (no ``ip6 qubes`` filter chains), no IPv6 on
    the uplink, no /qubes-netvm-gateway6 in QubesDB."""
    yield from _sim(base_ruleset="ipv6-disabled", ipv6=False)


@pytest.fixture
def fresh_netns() -> Iterator[object]:
    """An empty, uniquely named network namespace, deleted afterwards."""
    from qubes_netsim.netns import Netns, unique_prefix

    ns = Netns(f"{unique_prefix('qnfresh')}-ns").create()
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[object]:
    """One simulated netvm for a whole module of cases (each case resets
    what it touched, or looks only at what it did)."""
    yield from _sim()
