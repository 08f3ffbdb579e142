"""A netvm for unit tests of whole events: the XenStore and QubesDB doubles
(real sockets, real wire protocols) and a FakeNet at the gateway seam."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

from qubes_netsim.qubesdbd import QubesDBDouble
from qubes_netsim.xenstored import XenStoreDouble
from qubesnet.qubesdb import QubesDB
from qubesnet.xenstore import XenStore
from tests.unit.fakenet import FakeNet
from vif_route_qubes.event import Options, run_event
from vif_route_qubes.gateways import Gateways
from vif_route_qubes.inputs import parse_env
from vif_route_qubes.steps import Plan

HOME = "/local/domain/1"
GATEWAY, GATEWAY6 = "10.137.0.1", "fd09:24ef:4179::a89:1"


def mac_of(domid: int) -> str:
    return f"00:16:3e:5e:6c:{domid:02x}"


class World:
    def __init__(self, tmp: str, stack: ExitStack) -> None:
        self.tmp = tmp
        self.xsd = stack.enter_context(XenStoreDouble(os.path.join(tmp, "xs.sock"), domid=1))
        self.qdbd = stack.enter_context(QubesDBDouble(os.path.join(tmp, "q.sock")))
        self.xs = stack.enter_context(XenStore.open(self.xsd.path, 2))
        self.qdbd.write("/qubes-netvm-gateway", GATEWAY)
        self.qdbd.write("/qubes-netvm-gateway6", GATEWAY6)
        self.net = FakeNet()
        self.lock_file = os.path.join(tmp, "locks", "vif.lock")
        self.reported: list[str] = []

    def backend(self, domid: int, ip: str | None, **keys: str) -> str:
        path = f"backend/vif/{domid}/0"
        values = {"mac": mac_of(domid), "type": "vif", **keys}
        if ip is not None:
            values["ip"] = ip
        for key, value in values.items():
            self.xsd.write(f"{HOME}/{path}/{key}", value)
        return path

    def open_qubesdb(self) -> QubesDB:
        return QubesDB.open(self.qdbd.path, 2)

    def gateways(self, conntrack: Any = None) -> Gateways:
        if conntrack is not None:
            conntrack.close()  # the real one run_event made: the fake stands in
        return self.net.gateways()

    def run(self, command: str, domid: int, *, dry_run: bool = False) -> Plan:
        env = parse_env({"vif": f"vif{domid}.0", "XENBUS_PATH": f"backend/vif/{domid}/0"})
        opts = Options(dry_run=dry_run, timeout=2, lock_file=self.lock_file)
        return run_event(command, env, self.xs, self.open_qubesdb, self.gateways, opts, self.reported.append)


def world(tmp: str) -> Iterator[World]:
    with ExitStack() as stack:
        yield World(tmp, stack)
