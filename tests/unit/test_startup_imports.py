"""The start-up diet of the entry points, checked by what they import.

Speed is measured by `make bench`, not here; these tests pin down the import
discipline that the figures rely on, so that a stray module-level import of
something heavy fails loudly instead of slowly.
"""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from qubes_netsim.topology import SimNetvm

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
setup_dnat_to_ns.cli.read_args([])  # the dispatcher's call form
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
                  "vif_route_qubes.nsgateway", "vif_route_qubes.nssteps", "vif_route_qubes.nshandlers",
                  "qubesnet.netns", "jeepney"):
        assert heavy not in loaded, f"{heavy} is imported on the hot path"


@pytest.mark.subprocess
def test_setup_dnat_to_ns_hot_path() -> None:
    loaded = modules(DNAT)
    for heavy in ("typing", "asyncio", "dataclasses", "subprocess", "shutil", "jeepney", "dbus", "pyroute2",
                  "logging", "argparse"):
        assert heavy not in loaded, f"{heavy} is imported by qubes-setup-dnat-to-ns before it needs it"


# --- the import graph of a real online and offline ------------------------------
#
# Every module an ``online`` or ``offline`` loads must be on this list;
# anything else fails, so that a later change cannot quietly add
# milliseconds to every VM start (python3 -X importtime shows the cost of a
# newcomer). The floor (``import nftables; nftables.Nftables()`` in an
# interpreter started as the installed wrapper starts it, -I -S) is allowed
# by definition. Standard-library modules are listed as roots: a root and
# whatever it imports in this Python version are allowed, so the list holds
# across Python versions without allowing anything new.

STDLIB_ROOTS = (
    "socket", "select", "selectors", "signal", "fcntl", "errno", "zlib", "array", "math",  # stores, locks
    "ipaddress", "typing", "contextlib", "collections.abc", "__future__",
    "threading",  # logging imports it
    "importlib.machinery",  # qubesnet.netlink._pyroute2's stand-in package
    "logging",  # pyroute2.netlink imports it in any case; never logging.handlers (see qubesnet.logsetup)
)
PYROUTE2 = {"pyroute2", "pyroute2.common", "pyroute2.netlink", "pyroute2.netlink.exceptions",
            "pyroute2.netlink.nfnetlink"}
QUBESNET = {f"qubesnet{m}" for m in (
    "", ".cliutil", ".constants", ".errors", ".layout", ".leave", ".locks", ".log", ".logsetup", ".syslog", ".nft",
    ".nftjson", ".qubesdb", ".records", ".sysctl", ".validate", ".wire", ".xenstore", ".netlink", ".netlink._pyroute2",
    ".netlink.ctnl", ".netlink.messages", ".netlink.nftset", ".netlink.nlsock", ".netlink.rtnl")}
VIF_CORE = {f"vif_route_qubes{m}" for m in (
    "", ".apply", ".argv", ".cli", ".describe", ".diff", ".event", ".gateways", ".hooks", ".inputs", ".kinds",
    ".mapped_names", ".nftplan", ".observe", ".orchestrate", ".state", ".status", ".steps", ".handlers")}
CODECS = {"encodings.ascii"}  # store values are decoded as ASCII (qubesnet.validate.decode_text)
ALLOWED = PYROUTE2 | QUBESNET | VIF_CORE | CODECS
# Named here so that a failure says why they matter.
NEVER = ("argparse", "logging.handlers", "subprocess", "dataclasses", "asyncio", "jeepney", "setup_dnat_to_ns",
         "vif_route_qubes.admin", "vif_route_qubes.survey", "vif_route_qubes.verdicts", "vif_route_qubes.mapped",
         "vif_route_qubes.nsgateway", "vif_route_qubes.nssteps", "vif_route_qubes.nshandlers",  # mapped vifs only
         "pyroute2.netlink.rtnl", "pyroute2.iproute")


def imported(code: str, env: dict[str, str] | None = None, netns: str | None = None) -> list[str]:
    """Every module ``code`` imports in a fresh interpreter started as the
    installed wrapper starts it (-I -S, the package directories on sys.path)."""
    import re

    paths = [p for p in sys.path if p]
    argv = [sys.executable, "-I", "-S", "-X", "importtime", "-c", f"import sys\nsys.path[:] = {paths!r}\n{code}"]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return re.findall(r"^import time:\s+\d+ \|\s+\d+ \| +(\S+)$", result.stderr, re.M)


def allowed_stdlib() -> set[str]:
    return set(imported("import nftables\nnftables.Nftables()")) | set(imported(f"import {', '.join(STDLIB_ROOTS)}"))


@pytest.mark.netns
@pytest.mark.subprocess
@pytest.mark.parametrize("command", ["online", "offline"])
def test_online_and_offline_load_only_the_listed_modules(sim: SimNetvm, command: str) -> None:
    sim.add_bulk_vifs([20])
    env = sim.env(vif="vif20.0", XENBUS_PATH="backend/vif/20/0")
    run = f"sys.argv = ['vif-route-qubes', '--hooks-dir', {sim.hooks_dir!r}, %r]\n" \
          "from vif_route_qubes.cli import run\nrun()"
    if command == "offline":
        imported(run % "online", env, sim.netvm.name)
    loaded = imported(run % command, env, sim.netvm.name)
    assert sim.xenstore.read("backend/vif/20/0/hotplug-status") == b"connected"
    for name in NEVER:
        assert name not in loaded, f"{command} imports {name}"
    unexpected = sorted(set(loaded) - allowed_stdlib() - ALLOWED)
    assert not unexpected, (f"{command} imports modules not on the list: {', '.join(unexpected)}; "
                            "see the cost with python3 -X importtime, and import them where needed")
