"""observe.py never reads "could not look" as "nothing there": a failed netlink read is an
ApplyError of one line naming what could not be read (fault injection over the model's gateways)."""

from __future__ import annotations

import errno
from ipaddress import IPv4Address, ip_address
from typing import Any, cast

import pytest

from qubesnet.constants import SET_DOWNSTREAM
from qubesnet.errors import ApplyError
from qubesnet.layout import build_antispoof
from qubesnet.netlink.nlsock import NetlinkError
from tests.unit.test_observe_links import INP
from tests.unit.test_properties import Kernel, ModelRtnl, World, element_object
from vif_route_qubes.observe import read_environment, read_observed, read_set_elements
from vif_route_qubes.state import Element


class FailingRtnl(ModelRtnl):
    def __init__(self, k: Kernel, failing: str) -> None:
        super().__init__(k)
        self.failing = failing

    def __getattribute__(self, name: str) -> Any:
        if name == object.__getattribute__(self, "failing"):
            def fail(*args: object) -> None:
                raise NetlinkError(errno.EBUSY, f"{name} {args}")
            return fail
        return object.__getattribute__(self, name)


def world_failing(failing: str) -> World:
    k = Kernel()
    k.links[5] = ("vif12.0", True, 2)
    world = World(INP._replace(ifname="vif12.0"), k, 5, False, False, False)
    world.gw = world.gw._replace(rtnl=cast(Any, FailingRtnl(k, failing)))
    return world


@pytest.mark.parametrize("failing", ["host_routes_on", "host_routes_to", "list_permanent_neighbours",
                                     "list_addresses"])
def test_a_failed_read_of_the_vifs_objects_is_an_error(failing: str) -> None:
    world = world_failing(failing)
    env = world.environment()
    state = world.describe()
    with pytest.raises(ApplyError, match=r"^cannot read the routes, neighbours or addresses of vif12\.0: ") as caught:
        read_observed(world.gw, state, env.link, env, others=True)
    assert "\n" not in str(caught.value)


def test_a_failed_read_of_the_link_is_an_error() -> None:
    world = world_failing("get_link")
    with pytest.raises(ApplyError, match=r"^cannot read interface vif12\.0: "):
        read_environment(world.gw, world.inp)


def test_downstream_elements_are_listed_without_an_interface() -> None:
    k = Kernel()
    k.nft_run(build_antispoof("ip", table=False, sets=(), chains=()))
    k.nft.add(element_object(Element(SET_DOWNSTREAM, IPv4Address("10.137.0.12"))))
    gw = World(INP, k, 5, False, False, False).gw
    assert read_set_elements(gw, "ip", SET_DOWNSTREAM) == [(None, ip_address("10.137.0.12"))]
    assert read_set_elements(gw, "ip6", SET_DOWNSTREAM) == []  # no such set: nothing listed
