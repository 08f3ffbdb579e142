"""Fixtures for the namespace tier: a fresh simulated netvm per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qubes_netsim.topology import SimNetvm


@pytest.fixture
def sim() -> Iterator[SimNetvm]:
    """Upstream + netvm namespaces, base layout loaded, doubles running."""
    netvm = SimNetvm().create()
    try:
        yield netvm
    finally:
        netvm.destroy()


@pytest.fixture
def bare_sim() -> Iterator[SimNetvm]:
    """The same, but with an empty nftables ruleset in the netvm."""
    netvm = SimNetvm(load_layout=False).create()
    try:
        yield netvm
    finally:
        netvm.destroy()
