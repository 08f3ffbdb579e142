"""Flowtable membership as observe.py reads it from libnftables' listing.

libnftables lists a flowtable's devices as a list, but a single device as a
plain string (libnftables-json(5): FT_INTERFACE := STRING | [ LIST ]). Read
as a sequence, the string "eth0" "contains" any of its substrings: a vif
renamed "0" or "eth" would read as a member and never be added. Found by the
property tests once they read the model through the real reader.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from qubesnet.constants import FLOW_FAMILY, FLOW_TABLE, FLOWTABLE
from qubesnet.validate import parse_address_list, parse_vif_name
from tests.unit.test_properties import Kernel, World
from vif_route_qubes.inputs import VifInputs
from vif_route_qubes.nftplan import build_flowtable


def world(ifname: str, devices: list[str]) -> World:
    inp = VifInputs(vif=parse_vif_name("vif", "vif12.0"), xenbus_path="backend/vif/12/0", ifname=ifname,
                    addresses=parse_address_list("ip", "10.137.0.12"), ip_missing=False, mac="00:16:3e:00:00:12",
                    vif_type="vif", gateway=IPv4Address("10.137.0.1"), gateway6=None, harden=False, flowtable=True)
    k = Kernel()
    k.links[5] = (ifname, True, 2)
    k.nft_run(build_flowtable(devices[0], table=False, present=True))
    for device in devices[1:]:
        k.nft_run(build_flowtable(device, table=True, present=True))
    return World(inp, k, 5, False, False, True)


@pytest.mark.parametrize("ifname", ["0", "eth", "h0", "eth0x"])
def test_a_name_inside_the_only_device_is_not_a_member(ifname: str) -> None:
    w = world(ifname, ["eth0"])
    assert w.gw.nft.query({"list": {"flowtable": {"family": FLOW_FAMILY, "table": FLOW_TABLE,
                                                  "name": FLOWTABLE}}}) == [
        {"flowtable": {"family": FLOW_FAMILY, "table": FLOW_TABLE, "name": FLOWTABLE, "dev": "eth0"}}]
    state = w.describe()
    assert not w.observe(state).flow.member


@pytest.mark.parametrize("devices", [["eth0x"], ["eth0", "eth0x"]])
def test_the_device_itself_is_a_member_listed_alone_or_with_others(devices: list[str]) -> None:
    w = world("eth0x", devices)
    assert w.observe(w.describe()).flow.member
