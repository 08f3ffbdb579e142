"""Shared test configuration.

Tests under tests/integration and tests/reliability build networks in
namespaces (the fixtures below) and need root, iproute2 and nftables. Where those are missing they are skipped with the
reason, unless QUBES_REQUIRE_NETNS=1 (set by .ci/run): then the run fails,
so that CI can never pass without the namespace tier having run.
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(f"{os.sep}{tier}{os.sep}" in str(item.path) for tier in ("integration", "reliability")):
            item.add_marker(pytest.mark.netns)
    for marker, check in (("netns", netns_unavailable), ("xenstore_utils", xenstore_utils_unavailable)):
        marked = [item for item in items if item.get_closest_marker(marker)]
        reason = check() if marked else None
        if reason is None:
            continue
        if REQUIRE_NETNS:
            raise pytest.UsageError(f"QUBES_REQUIRE_NETNS=1 (CI) but {reason}")
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=reason))  # netns tier cannot run here


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
