"""The start-up diet of the entry points, checked by what they import.

Speed is measured by `make bench`, not here; these tests pin down the import
discipline that the figures rely on, so that a stray module-level import of
something heavy fails loudly instead of slowly.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

VIF = """
import sys
import vif_route_qubes.cli, vif_route_qubes.event, vif_route_qubes.apply, vif_route_qubes.describe
import vif_route_qubes.diff, vif_route_qubes.observe, vif_route_qubes.handlers, vif_route_qubes.gateways
import qubesnet.netlink.rtnl, qubesnet.netlink.ctnl, qubesnet.nft
print(" ".join(sorted(sys.modules)))
"""

DNAT = """
import sys
import setup_dnat_to_ns.cli, setup_dnat_to_ns.run, setup_dnat_to_ns.derive, setup_dnat_to_ns.chain
print(" ".join(sorted(sys.modules)))
"""


def modules(code: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


@pytest.mark.subprocess
def test_vif_route_qubes_hot_path() -> None:
    loaded = modules(VIF)
    for heavy in ("asyncio", "dataclasses", "subprocess", "shutil", "pyroute2.iproute", "pyroute2.config",
                  "pyroute2.netlink.rtnl", "pyroute2.netlink.rtnl.ifinfmsg", "vif_route_qubes.mapped",
                  "vif_route_qubes.nsgateway", "qubesnet.netns", "jeepney"):
        assert heavy not in loaded, f"{heavy} is imported on the hot path"


@pytest.mark.subprocess
def test_setup_dnat_to_ns_hot_path() -> None:
    loaded = modules(DNAT)
    for heavy in ("typing", "asyncio", "dataclasses", "subprocess", "shutil", "jeepney", "dbus", "pyroute2"):
        assert heavy not in loaded, f"{heavy} is imported by qubes-setup-dnat-to-ns before it needs it"
