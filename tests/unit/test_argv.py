"""The argparse-free reading of the usual call forms (vif_route_qubes/argv.py,
setup_dnat_to_ns/args.py, both on qubesnet.cliutil.read_plain_argv).

Its one promise: whatever it reads, argparse would have read the same way;
anything else it leaves to argparse. The reference is cli.parse_args itself.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qubesnet.constants import NETWORK_HOOKS_DIR
from setup_dnat_to_ns.args import Args as DnatArgs
from setup_dnat_to_ns.args import parse_plain
from setup_dnat_to_ns.cli import parse_args as dnat_parse_args
from vif_route_qubes.argv import Args, parse_hotplug_argv
from vif_route_qubes.cli import parse_args


def by_argparse(argv: list[str]) -> Args:
    ns = parse_args(argv)
    return Args(ns.command, tuple(ns.targets), ns.json, ns.verbose, ns.dry_run, ns.hooks_dir, ns.mapped_wait,
                ns.timeout)


@pytest.mark.parametrize("argv", [
    ["online"], ["offline"], ["add"], ["remove"],
    ["--hooks-dir", "/tmp/hooks", "online"], ["online", "--hooks-dir=/x"], ["-v", "-n", "offline"],
    ["--verbose", "--dry-run", "--timeout", "2.5", "--mapped-wait", "0", "online"],
    ["--timeout", "1", "--timeout", "3", "online"], ["--hooks-dir", "online", "offline"], ["--hooks-dir=", "online"],
])
def test_the_hotplug_forms_are_read_as_argparse_reads_them(argv: list[str]) -> None:
    fast = parse_hotplug_argv(argv, NETWORK_HOOKS_DIR)
    assert fast is not None
    assert fast == by_argparse(argv)


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["-h", "online"], ["status"], ["reconcile"], ["watch"], ["restart"], ["online", "vif12.0"],
    ["online", "offline"], ["--json", "online"], ["-vn", "online"], ["--verb", "online"], ["--hooks", "/x", "online"],
    ["--timeout", "soon", "online"], ["--timeout", "-1", "online"], ["--timeout"], ["online", "--timeout"],
    ["--", "online"], ["--hooks-dir", "-x", "online"],
])
def test_everything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert parse_hotplug_argv(argv, NETWORK_HOOKS_DIR) is None


WORDS = st.sampled_from(["online", "offline", "add", "remove", "status", "vif1.0", "-v", "-n", "--verbose",
                         "--dry-run", "--hooks-dir", "--hooks-dir=/d", "--timeout", "--timeout=2", "--mapped-wait",
                         "1.5", "nan", "x", "-", "--", "-h", "--json", "/hooks", ""])


@given(st.lists(WORDS, max_size=7))
def test_whatever_it_reads_argparse_reads_the_same(argv: list[str]) -> None:
    fast = parse_hotplug_argv(argv, NETWORK_HOOKS_DIR)
    if fast is None:
        return
    got = by_argparse(argv)
    assert fast._replace(mapped_wait=0.0, timeout=0.0) == got._replace(mapped_wait=0.0, timeout=0.0)
    assert repr((fast.mapped_wait, fast.timeout)) == repr((got.mapped_wait, got.timeout))  # nan == nan


# --- qubes-setup-dnat-to-ns (setup_dnat_to_ns/args.py) -------------------------

def dnat_by_argparse(argv: list[str]) -> DnatArgs:
    ns = dnat_parse_args(argv)
    return DnatArgs(ns.dry_run, ns.status, ns.watch, ns.verbose, ns.resolv_conf, ns.qubes_service_dir, ns.timeout)


@pytest.mark.parametrize("argv", [
    [], ["-v"], ["--status"], ["--watch", "--timeout", "3"], ["-n", "-n"], ["--resolv-conf", "/tmp/r", "--dry-run"],
    ["--resolv-conf=/r", "--qubes-service-dir", "/s", "--verbose"],
])
def test_the_dnat_forms_are_read_as_argparse_reads_them(argv: list[str]) -> None:
    plain = parse_plain(argv)
    assert plain is not None
    assert plain == dnat_by_argparse(argv)


@pytest.mark.parametrize("argv", [
    ["--help"], ["-n", "--status"], ["--watch", "--dry-run"], ["extra"], ["--resolv", "/r"], ["-vn"],
    ["--timeout", "x"], ["--resolv-conf", "-"], ["--resolv-conf"],
])
def test_everything_else_of_the_dnat_tool_is_left_to_argparse(argv: list[str]) -> None:
    assert parse_plain(argv) is None


DNAT_WORDS = st.sampled_from(["-v", "-n", "--dry-run", "--status", "--watch", "--resolv-conf", "--resolv-conf=/r",
                              "--qubes-service-dir", "--timeout", "--timeout=1", "2", "/x", "-", "--", "-h", ""])


@given(st.lists(DNAT_WORDS, max_size=6))
def test_whatever_the_dnat_reader_reads_argparse_reads_the_same(argv: list[str]) -> None:
    plain = parse_plain(argv)
    if plain is not None:
        assert plain == dnat_by_argparse(argv)
