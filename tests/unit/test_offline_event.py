"""The whole offline event (vif_route_qubes.event.run_event) over the modelled kernel.

The address-reuse case: VM 12 is going away and VM 13 already has its
address (dom0 gave it out again), often before libxl runs offline for 12,
whose interface Xen may already have removed. Offline 12 must take 12's
``allowed`` pair out and keep the address in ``downstream``: that element
is what drops forgeries of 13's address arriving from anywhere but a vif.

run_event runs with --dry-run over the model's gateways (reads answered by
the model, writes recorded): no real kernel is touched, and the plan it
returns is then applied to the model by the model's own strict rules.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, cast

import pytest

from qubesnet.constants import QUBES_TABLE, SET_ALLOWED, SET_DOWNSTREAM, VIF_GROUP
from qubesnet.layout import build_antispoof
from qubesnet.validate import parse_address_list, parse_vif_name
from tests.unit.test_properties import Kernel, World, element_object, model_gateways
from vif_route_qubes.event import Options, run_event
from vif_route_qubes.inputs import VifEnv, VifInputs
from vif_route_qubes.state import Element
from vif_route_qubes.steps import NftChange

ADDR = IPv4Address("10.137.0.12")
GATEWAY = IPv4Address("10.137.0.1")


class FakeXenStore:
    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys

    def read(self, key: str) -> bytes | None:
        value = self.keys.get(key)
        return None if value is None else value.encode()


class FakeQubesDB(FakeXenStore):
    """The same key reads, as a context manager (what run_event opens)."""

    def __enter__(self) -> FakeQubesDB:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def inputs(domid: int, addr: IPv4Address) -> VifInputs:
    name = f"vif{domid}.0"
    return VifInputs(vif=parse_vif_name("vif", name), xenbus_path=f"backend/vif/{domid}/0", ifname=name,
                     addresses=parse_address_list("ip", str(addr)), ip_missing=False,
                     mac=f"00:16:3e:00:00:{domid:02x}", vif_type="vif", gateway=GATEWAY, gateway6=None,
                     harden=False, flowtable=False)


def online(k: Kernel, inp: VifInputs, index: int) -> None:
    k.links[index] = (inp.ifname, False, 0)
    k.sysctls |= {"net/ipv4/conf/default/proxy_arp": "0", f"net/ipv4/conf/{inp.ifname}/proxy_arp": "0"}
    world = World(inp, k, index, False, False, False)
    state, plan = world.online()
    k.run(plan, state)


def offline_12(k: Kernel, tmp_path: Path, *, ip_key: bool = True) -> Any:
    """``ip_key``: False when XenStore lost it (the addresses are then read from ``allowed``)."""
    keys = {"backend/vif/12/0/ip": str(ADDR), "backend/vif/12/0/mac": "00:16:3e:00:00:0c"}
    if not ip_key:
        del keys["backend/vif/12/0/ip"]
    xs = FakeXenStore(keys)
    qdb = FakeQubesDB({"/qubes-netvm-gateway": str(GATEWAY)})
    env = VifEnv(parse_vif_name("vif", "vif12.0"), "backend/vif/12/0")
    opts = Options(dry_run=True, timeout=1.0, lock_file=str(tmp_path / "locks"))
    open_qubesdb: Any = lambda: qdb  # noqa: E731
    return run_event("offline", env, cast(Any, xs), open_qubesdb, lambda _conntrack: model_gateways(k), opts,
                     lambda _: None)


@pytest.mark.parametrize("ip_key", [True, False], ids=["ip key", "no ip key"])
@pytest.mark.parametrize("vanished", [True, False], ids=["vif12.0 deleted", "vif12.0 still there"])
def test_offline_of_the_old_vm_keeps_the_address_in_downstream_for_the_new_one(tmp_path: Path, vanished: bool,
                                                                               ip_key: bool) -> None:
    k = Kernel()
    k.nft_run(build_antispoof("ip", table=False, sets=(), chains=()))
    online(k, inputs(12, ADDR), 5)
    online(k, inputs(14, IPv4Address("10.137.0.14")), 7)  # a VM that has nothing to do with it
    if vanished:
        k.vanish(5)
    # dom0 gave the address to VM 13; its online ran (as a new vif, it waited for no lock of 12's)
    online(k, inputs(13, ADDR), 6)
    assert element_object(Element(SET_ALLOWED, ADDR, "vif12.0")) in k.nft

    plan = offline_12(k, tmp_path, ip_key=ip_key)
    for step in plan.steps:
        k.apply(step)

    assert element_object(Element(SET_DOWNSTREAM, ADDR)) in k.nft  # kept: vif13.0 routes it
    assert element_object(Element(SET_ALLOWED, ADDR, "vif12.0")) not in k.nft
    # 13 still works: its pair, its route, its link
    assert element_object(Element(SET_ALLOWED, ADDR, "vif13.0")) in k.nft
    assert (ADDR, 32752 - 13, 6) in k.routes and k.links[6] == ("vif13.0", True, VIF_GROUP)
    assert any(str(ADDR) in note and "downstream" in note for note in plan.notes), plan.notes
    deleted = [c["delete"]["element"] for s in plan.steps if isinstance(s, NftChange) for c in s.commands
               if "delete" in c]
    assert {"family": "ip", "table": QUBES_TABLE, "name": SET_DOWNSTREAM, "elem": [str(ADDR)]} not in deleted


def test_offline_without_another_vm_removes_the_address_from_downstream(tmp_path: Path) -> None:
    """The counterpart: nobody else routes the address, so nothing of it stays."""
    k = Kernel()
    k.nft_run(build_antispoof("ip", table=False, sets=(), chains=()))
    online(k, inputs(12, ADDR), 5)
    k.vanish(5)
    for step in offline_12(k, tmp_path).steps:
        k.apply(step)
    assert not {o for o in k.nft if o[0] == "elem"}
