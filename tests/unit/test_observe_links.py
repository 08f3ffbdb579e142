"""observe.find_link: which device under a renamed vif's name is trusted as the vif.

A ``vifname`` may name any interface (the uplink, say): a device under the
new name is the vif only in the vif group, or, once a mapped vif's
namespace is in place (``our_veth``), our veth's end still in the default
group where it was born. Never a device in another group (the uplinks').
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from qubesnet.constants import VIF_GROUP
from qubesnet.validate import parse_address_list, parse_vif_name
from tests.unit.test_properties import Kernel, World
from vif_route_qubes.inputs import VifInputs
from vif_route_qubes.observe import find_link

INP = VifInputs(vif=parse_vif_name("vif", "vif12.0"), xenbus_path="backend/vif/12/0", ifname="wlan0",
                addresses=parse_address_list("ip", "10.137.0.12"), ip_missing=False, mac="00:16:3e:00:00:12",
                vif_type="vif", gateway=IPv4Address("10.137.0.1"), gateway6=None, harden=False, flowtable=False)


@pytest.mark.parametrize(("group", "trusted", "as_our_veth"), [
    (VIF_GROUP, True, True),  # renamed by an earlier run
    (0, False, True),  # our veth's end before online put it in the vif group; otherwise anyone's device
    (1, False, False),  # an uplink: never
    (7, False, False),
])
def test_a_device_under_the_new_name(group: int, trusted: bool, as_our_veth: bool) -> None:
    k = Kernel()
    k.links[5] = ("wlan0", True, group)
    gw = World(INP, k, 5, False, False, False).gw
    assert (find_link(gw, INP) is not None) == trusted
    assert (find_link(gw, INP, our_veth=True) is not None) == as_our_veth


def test_the_name_libxl_gave_is_always_the_vif() -> None:
    k = Kernel()
    k.links[5] = ("vif12.0", False, 0)
    k.links[6] = ("wlan0", True, 1)
    found = find_link(World(INP, k, 5, False, False, False).gw, INP, our_veth=True)
    assert found is not None and found.ifindex == 5
