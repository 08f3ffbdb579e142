"""The names and the address range of mapped-address vifs (see mapped.py).

Kept apart and small: every event asks whether a vif is, might become or
was mapped, while the machinery itself loads only for the vifs that are.
"""

from __future__ import annotations

from ipaddress import IPv4Network

from qubesnet.constants import HIDDEN_NETWORK

# Qubes gives disposable VMs with hidden addresses their real address in
# this range: for these, a missing mapping is worth waiting for.
HIDDEN_RANGE = IPv4Network(HIDDEN_NETWORK)


def namespace_name(ifname: str) -> str:
    return f"{ifname}-nat"


def peer_name(ifname: str) -> str:
    """The namespace end of the veth pair (inside the namespace: no clash)."""
    name = f"{ifname}-p"
    return name if len(name) < 16 else "to-netvm"

