"""Guard for the reliance on pyroute2 internals (see qubesnet/netlink/_pyroute2.py).

If pyroute2 changes the layout of its message modules, these tests fail
before the hotplug does. They run in a fresh interpreter, so that what the
test process imported does not hide what the entry point would import.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK_LIGHT_IMPORT = """
import sys
import qubesnet.netlink.rtnl, qubesnet.netlink.ctnl
heavy = sorted(m for m in sys.modules if m.startswith(("asyncio", "pyroute2.iproute", "pyroute2.ndb", "pyroute2.ipdb")))
assert not heavy, heavy
from pyroute2.netlink.rtnl.rtmsg import rtmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.nfnetlink import nfgen_msg
for cls in (rtmsg, ndmsg, ifaddrmsg, ifinfmsg):
    cls().encode()
print("light ok")
"""

CHECK_TRANSPARENT = """
import qubesnet.netlink.rtnl
from pyroute2 import IPRoute  # the stand-in package loads the real __init__ on demand
import pyroute2
print("transparent", pyroute2.__version__, IPRoute.__name__)
"""


@pytest.mark.subprocess
def test_message_modules_import_without_the_package_init() -> None:
    result = subprocess.run([sys.executable, "-c", CHECK_LIGHT_IMPORT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "light ok" in result.stdout


@pytest.mark.subprocess
def test_full_pyroute2_is_still_importable_afterwards() -> None:
    result = subprocess.run([sys.executable, "-c", CHECK_TRANSPARENT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "transparent 0.9.7 IPRoute" in result.stdout


def test_pinned_version_matches_setup_cfg() -> None:
    from importlib.metadata import version

    assert version("pyroute2") == "0.9.7", "update qubesnet/netlink and this pin together"


def test_messages_encode_what_the_kernel_expects() -> None:
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    from qubesnet.netlink import rtnl  # noqa: F401

    msg = rtmsg()
    msg["family"] = 2
    msg["dst_len"] = 32
    msg["attrs"] = [("RTA_DST", "10.137.0.12"), ("RTA_OIF", 7), ("RTA_PRIORITY", 32740)]
    msg["header"]["type"] = 24
    msg.encode()
    data = bytes(msg.data)
    assert data[16] == 2 and data[17] == 32  # rtm_family, rtm_dst_len
    assert bytes([10, 137, 0, 12]) in data
