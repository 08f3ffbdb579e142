"""Guard for the reliance on pyroute2's module layout (see qubesnet/netlink/_pyroute2.py).

The light import finds pyroute2's submodules without running its package
``__init__``; our message declarations (messages.py, ctnl.py) then build on
pyroute2's generic ``nlmsg``/``nla`` machinery and name attribute types
("uint32", "ipaddr", ...) that pyroute2 resolves on its ``nla`` class. What
that needs from pyroute2, on every version in the range setup.cfg allows,
is checked here: no version string, only the layout itself. The encodings
are compared byte for byte in test_netlink_messages.py.

The checks run in a fresh interpreter, so that what the test process
imported does not hide what an entry point would import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

LAYOUT_PROBE = r"""
import json, sys
import qubesnet.netlink.rtnl, qubesnet.netlink.ctnl
from qubesnet.netlink import _pyroute2, ctnl, messages

facts = {}
package = sys.modules["pyroute2"]
facts["stand_in"] = isinstance(package, _pyroute2._LazyPackage)
facts["init_ran"] = bool(getattr(type(package), "_full_loaded", True))
# pyroute2.config: on 0.7 its import asks platform.uname(), which runs
# `uname -p` in a child process; nlsocket imports it.
facts["heavy"] = sorted(m for m in sys.modules if m.startswith(
    ("asyncio", "subprocess", "pyroute2.iproute", "pyroute2.ndb", "pyroute2.ipdb", "pyroute2.netlink.rtnl",
     "pyroute2.config", "pyroute2.netlink.nlsocket")))

import pyroute2.netlink as netlink
from pyroute2.netlink.nfnetlink import nfgen_msg
facts["netlink_names"] = {name: hasattr(netlink, name) for name in ("nlmsg", "nla", "NLA_F_NESTED")}
facts["NLA_F_NESTED"] = netlink.NLA_F_NESTED
facts["nlmsg_header"] = [list(f) for f in netlink.nlmsg.header]
facts["nfgen_fields"] = [list(f) for f in nfgen_msg.fields]
facts["bases"] = {cls.__name__: [b.__module__ + "." + b.__name__ for b in cls.__mro__[1:3]]
                  for cls in (messages.rtmsg, messages.ndmsg, messages.ifaddrmsg, messages.ifinfmsg, ctnl.ct_msg)}

def kinds(cls):
    for _, _, kind in cls.nla_map:
        nested = cls.__dict__.get(kind)
        if isinstance(nested, type):
            yield from kinds(nested)
        else:
            yield kind

used = sorted({k for cls in (messages.rtmsg, messages.ndmsg, messages.ifaddrmsg, messages.ifinfmsg, ctnl.ct_msg)
               for k in kinds(cls)})
facts["nla_kinds"] = {kind: isinstance(getattr(netlink.nla, kind, None), type) for kind in used}

# Used on demand only (rtnl.create_veth, the mapped-address path): the full
# ifinfmsg with IFLA_LINKINFO and its veth plugin.
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg as full
msg = full()
msg["attrs"] = [("IFLA_IFNAME", "vif9.0"), ("IFLA_LINKINFO", {"attrs": [
    ("IFLA_INFO_KIND", "veth"),
    ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": [("IFLA_IFNAME", "peer-9")]})]})]})]
msg.encode()
facts["veth"] = b"veth\0" in bytes(msg.data) and b"peer-9\0" in bytes(msg.data)
print(json.dumps(facts))
"""

CHECK_TRANSPARENT = """
import qubesnet.netlink.rtnl
from pyroute2 import IPRoute  # the stand-in package loads the real __init__ on demand
import pyroute2
print("transparent", IPRoute.__name__, callable(IPRoute))
"""


@pytest.fixture(scope="module")
def layout() -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-c", LAYOUT_PROBE], check=False, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    facts: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return facts


@pytest.mark.subprocess
def test_light_import_skips_the_package_init_and_the_rtnl_package(layout: dict[str, Any]) -> None:
    assert layout["stand_in"], "pyroute2 in sys.modules is not the stand-in package"
    assert not layout["init_ran"], "pyroute2's package __init__ ran"
    assert layout["heavy"] == []


@pytest.mark.subprocess
def test_the_generic_machinery_is_where_the_declarations_expect_it(layout: dict[str, Any]) -> None:
    assert layout["netlink_names"] == {"nlmsg": True, "nla": True, "NLA_F_NESTED": True}
    assert layout["NLA_F_NESTED"] == 0x8000  # linux/netlink.h
    # struct nlmsghdr (linux/netlink.h) and struct nfgenmsg (linux/netfilter/nfnetlink.h)
    assert [fmt for _, fmt in layout["nlmsg_header"]] == ["I", "H", "H", "I", "I"]
    assert layout["nfgen_fields"] == [["nfgen_family", "B"], ["version", "B"], ["res_id", "!H"]]
    for name, bases in layout["bases"].items():
        assert bases[0].startswith("pyroute2.netlink"), (name, bases)


@pytest.mark.subprocess
def test_every_attribute_type_we_name_exists(layout: dict[str, Any]) -> None:
    missing = [kind for kind, present in layout["nla_kinds"].items() if not present]
    assert layout["nla_kinds"] and missing == []


@pytest.mark.subprocess
def test_full_ifinfmsg_still_builds_a_veth_pair(layout: dict[str, Any]) -> None:
    assert layout["veth"]


@pytest.mark.subprocess
def test_full_pyroute2_is_still_importable_afterwards() -> None:
    result = subprocess.run([sys.executable, "-c", CHECK_TRANSPARENT], check=False, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "transparent IPRoute True" in result.stdout
