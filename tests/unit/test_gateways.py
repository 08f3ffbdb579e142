"""--dry-run fails closed: the recording gateways let through only known reads.

Every public method of every real gateway class is either a known read
(READS: it reaches the real gateway) or a known write (WRITES: recorded,
never made); anything else raises, so a write method added to a gateway
later fails here (unlisted) and, under --dry-run, can never run for real.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from qubesnet.netlink.ctnl import Conntrack
from qubesnet.netlink.rtnl import Rtnl
from qubesnet.nft import Nft
from qubesnet.sysctl import Sysctl
from vif_route_qubes.gateways import READS, WRITES, DryRunError, Gateways, Recorder, recording
from vif_route_qubes.hooks import Hooks
from vif_route_qubes.nsgateway import Namespaces
from vif_route_qubes.status import HotplugStatus

CLASSES: dict[str, type] = {"rtnl": Rtnl, "nft": Nft, "sysctl": Sysctl, "conntrack": Conntrack, "hooks": Hooks,
                            "status": HotplugStatus, "namespaces": Namespaces}


def public_methods(cls: type) -> set[str]:
    """The instance methods a caller may use (constructors such as Nft.shared are not gateway calls)."""
    return {name for name, value in vars(cls).items()
            if not name.startswith("_") and inspect.isfunction(value)}


def test_the_tables_name_every_gateway() -> None:
    assert set(READS) == set(WRITES) == set(Gateways._fields) == set(CLASSES)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_method_of_a_gateway_is_a_known_read_or_a_known_write(name: str) -> None:
    methods = public_methods(CLASSES[name])
    reads, writes = READS[name], set(WRITES[name])
    assert not reads & writes, f"{name}: both read and write: {reads & writes}"
    assert methods <= reads | writes, f"{name}: classify {sorted(methods - reads - writes)} in gateways.py"
    assert reads | writes <= methods, f"{name}: listed but no such method: {sorted(reads | writes - methods)}"


class Real:
    """A gateway whose every call is noted: one read, one write, one method nobody classified."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def read(self, key: str) -> str:
        self.calls.append(f"read {key}")
        return "1"

    def write(self, key: str, value: str) -> None:
        self.calls.append(f"write {key}")

    def write_more(self, key: str) -> None:  # a write added later, not in WRITES
        self.calls.append(f"write_more {key}")


def test_reads_reach_the_real_gateway_writes_are_recorded_anything_else_raises() -> None:
    real, log = Real(), list[str]()
    sysctl: Any = Recorder("sysctl", real, log.append)
    assert sysctl.read("net/ipv4/ip_forward") == "1"
    assert sysctl.write("net/ipv4/ip_forward", "0") is None
    with pytest.raises(DryRunError, match=r"sysctl\.write_more is not known to be a read"):
        sysctl.write_more("net/ipv4/ip_forward")
    assert real.calls == ["read net/ipv4/ip_forward"]
    assert log == ["sysctl.write('net/ipv4/ip_forward', '0')"]


def test_recording_wraps_every_gateway() -> None:
    reals: dict[str, Any] = {name: Real() for name in Gateways._fields}
    gw: Any = recording(Gateways(**reals), lambda _: None)
    for name in Gateways._fields:
        with pytest.raises(DryRunError):
            getattr(gw, name).write_more("x")
    assert all(real.calls == [] for real in reals.values())
