"""vif-route-qubes: the hotplug entry point for a client VM's vif in a netvm.

Called by libxl (``xl devd``) or udev as ``vif-route-qubes COMMAND`` with
``vif`` and ``XENBUS_PATH`` in the environment.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from enum import IntEnum
from typing import TYPE_CHECKING

from qubesnet.constants import HOOK_TIMEOUT, NETWORK_HOOKS_DIR
from qubesnet.errors import ConfigError, QubesNetError
from qubesnet.logsetup import setup_logging

from .argv import Args, parse_hotplug_argv
from .status import HotplugStatus

if TYPE_CHECKING:
    import argparse

    from qubesnet.netlink.ctnl import Conntrack
    from qubesnet.xenstore import XenStore

    from .gateways import Gateways
    from .inputs import VifEnv

log = logging.getLogger("vif-route-qubes")

DESCRIPTION = """\
Configure (online) or tear down (offline) the routed network interface of a
client VM in a Qubes network VM: anti-spoofing set elements, host routes,
neighbour entries, gateway addresses, sysctls, stale conntrack entries and
the administrator's network hooks. "add" and "remove" are accepted and do
nothing (they concern tap devices).

For administrators: "status" shows every vif XenStore knows and every
vif-like interface, set element or -nat namespace the kernel holds, with a
verdict each (ok, drift, orphan, failed, invalid, pending), then the virtual
DNS mapping; it only reads. "reconcile" converges every connected vif that
drifted exactly as online would and removes orphans as offline would.
"watch" stays running and reconciles when QubesDB's gateways of this netvm
change.

Environment: vif (interface name, vif<domid>.<devid>), XENBUS_PATH (the
backend's XenStore directory), XENSTORED_PATH and QUBESDB_SOCKET (optional
daemon sockets).
"""

EPILOG = """\
exit status:
  0  success (online: hotplug-status=connected written to XenStore;
     status: every vif ok or pending; reconcile: all converged)
  1  failure: a one-line reason is logged and, when XENBUS_PATH is usable,
     written to hotplug-error with hotplug-status=error; a failed online
     leaves the interface down with nothing of this event applied
     (status: something drifted, is orphaned, failed or invalid;
     reconcile: something could not be converged, named on stdout)
  2  bad command line
"""

ADMIN_COMMANDS = ("status", "reconcile", "watch")


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Every call form, with help and usage errors (exit 2); the hotplug
    form alone is read without argparse (argv.py)."""
    import argparse

    from qubesnet.cliutil import help_formatter

    parser = argparse.ArgumentParser(
        prog="vif-route-qubes",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=help_formatter,
    )
    parser.add_argument("command", metavar="COMMAND",
                        help="online, offline, add or remove (hotplug); status, reconcile or watch")
    parser.add_argument("targets", metavar="VIF", nargs="*", help="status: only these vifs (default: all)")
    parser.add_argument("--json", action="store_true", help="status: the documented JSON schema instead of a table")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step (debug level)")
    parser.add_argument(
        "-n", "--dry-run", action="store_true",
        help="print the plan (nftables transaction, netlink operations) and change nothing",
    )
    parser.add_argument(
        "--hooks-dir", default=NETWORK_HOOKS_DIR, metavar="DIR",
        help=f"network hooks directory (default {NETWORK_HOOKS_DIR})",
    )
    parser.add_argument(
        "--mapped-wait", type=float, default=5.0, metavar="SECONDS",
        help="how long online waits for the /mapped-ip entries of a client in 10.138.0.0/16 (default 5)",
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS",
        help="how long to wait for XenStore and QubesDB (default 5)",
    )
    return parser.parse_intermixed_args(argv)


def _printable(value: str) -> str:
    """A value for a log line: as is when harmless, else quoted and cut."""
    if value.isprintable() and len(value) <= 64 and " " not in value:
        return value
    return repr(value[:64])


def read_args(argv: list[str] | None) -> Args:
    words = sys.argv[1:] if argv is None else argv
    fast = parse_hotplug_argv(words, NETWORK_HOOKS_DIR)
    if fast is not None:
        return fast
    ns = parse_args(words)
    return Args(ns.command, tuple(ns.targets), ns.json, ns.verbose, ns.dry_run, ns.hooks_dir, ns.mapped_wait,
                ns.timeout)


def main(argv: list[str] | None = None) -> int:
    args = read_args(argv)
    if args.command in ADMIN_COMMANDS:
        setup_logging("vif-route-qubes", args.verbose)
        return _admin(args)
    if args.targets or args.json:
        print("vif-route-qubes: VIF arguments and --json are for status", file=sys.stderr)
        return ExitCode.USAGE
    setup_logging("vif-route-qubes", args.verbose, hotplug_log=True)
    started = time.monotonic()
    environ = os.environ
    command, vif = _printable(args.command), _printable(environ.get("vif", ""))
    label = f"{command} {vif}" if vif else command
    if args.command in ("add", "remove"):
        log.debug("%s: nothing to do for a vif", label)
        return ExitCode.OK

    from qubesnet.xenstore import XenStore, default_address

    from .inputs import parse_env

    xs: XenStore | None = None
    try:
        if args.command not in ("online", "offline"):
            raise ConfigError("COMMAND", f"unknown command {command}: expected online, offline, add or remove "
                              "(or status, reconcile, watch)")
        env = parse_env(environ)
        xs = XenStore.open(default_address(environ), args.timeout)
        if environ.get("UDEV_CALL") == "1" and xs.read("libxl/disable_udev") is not None:
            # Called by udev while libxl runs the hotplug scripts itself.
            log.debug("%s: libxl handles hotplug (libxl/disable_udev); nothing to do", label)
            return ExitCode.OK
        outcome = _run(args, env, xs, HotplugStatus(xs, env.xenbus_path))
    except QubesNetError as exc:
        log.error("%s failed: %s", label, exc)
        _report_failure(environ, xs, str(exc), args)
        return ExitCode.FAILURE
    finally:
        if xs is not None:
            xs.close()
    log.info("%s: %s (%.0f ms)", label, outcome, (time.monotonic() - started) * 1000)
    return ExitCode.OK


def _admin(args: Args) -> int:
    from qubesnet.qubesdb import QubesDB
    from qubesnet.qubesdb import default_address as qubesdb_address
    from qubesnet.xenstore import XenStore, default_address

    from .admin import Context, run_reconcile, run_status, run_watch

    if args.targets and args.command != "status":
        print("vif-route-qubes: VIF arguments are for status", file=sys.stderr)
        return ExitCode.USAGE
    try:
        with XenStore.open(default_address(os.environ), args.timeout) as xs:
            ctx = Context(xs, lambda: QubesDB.open(qubesdb_address(os.environ), args.timeout),
                          lambda: _admin_gateways(args, xs))
            if args.command == "status":
                return run_status(ctx, sys.stdout, targets=tuple(args.targets), as_json_output=args.json,
                                  timeout=args.timeout)
            if args.command == "reconcile":
                return run_reconcile(ctx, sys.stdout)
            return run_watch(ctx, sys.stdout)
    except QubesNetError as exc:
        log.error("%s failed: %s", args.command, exc)
        return ExitCode.FAILURE
    except KeyboardInterrupt:
        return ExitCode.OK


def _gateways(args: Args, conntrack: Conntrack, status: HotplugStatus) -> Gateways:
    """The real gateways of this namespace (imported here: after an event has
    started its conntrack purge, and only by the commands that touch the kernel)."""
    from qubesnet.netlink.rtnl import Rtnl
    from qubesnet.nft import Nft
    from qubesnet.sysctl import Sysctl

    from .gateways import Gateways, namespaces_gateway
    from .hooks import Hooks

    return Gateways(rtnl=Rtnl(), nft=Nft.shared(), sysctl=Sysctl(), conntrack=conntrack,
                    hooks=Hooks(args.hooks_dir, HOOK_TIMEOUT), status=status, namespaces=namespaces_gateway())


def _admin_gateways(args: Args, xs: XenStore) -> Gateways:
    from qubesnet.netlink.ctnl import Conntrack

    from .gateways import recording

    # reconcile never reports hotplug-status: a status gateway for no vif
    gw = _gateways(args, Conntrack(), HotplugStatus(xs, ""))
    if args.dry_run:
        gw = recording(gw, lambda line: log.debug("dry run, not done: %s", line))
    return gw


def _report_failure(environ: Mapping[str, str], xs: XenStore | None, message: str, args: Args) -> None:
    """Tell libxl through XenStore, whenever XENBUS_PATH and XenStore are usable."""
    from qubesnet.xenstore import XenStore, default_address

    from .inputs import parse_xenbus_env

    if args.dry_run:
        return  # a dry run writes nothing, not even its failure
    try:
        xenbus_path = parse_xenbus_env(environ)
        if xs is None or not xs.usable:
            with XenStore.open(default_address(environ), args.timeout) as fresh:
                HotplugStatus(fresh, xenbus_path).error(message)
        else:
            HotplugStatus(xs, xenbus_path).error(message)
    except QubesNetError as exc:
        log.debug("failure not reported to XenStore: %s", exc)


def _run(args: Args, env: VifEnv, xs: XenStore, status: HotplugStatus) -> str:
    from qubesnet.leave import keep_until_exit
    from qubesnet.qubesdb import QubesDB
    from qubesnet.qubesdb import default_address as qubesdb_address

    from .event import Options, run_event

    dry = args.dry_run

    def report(line: str) -> None:
        if dry:
            print(line)
        else:
            log.debug("%s", line)

    def open_qubesdb() -> QubesDB:
        return QubesDB.open(qubesdb_address(os.environ), args.timeout)

    def make_gateways(conntrack: Conntrack) -> Gateways:
        gw = _gateways(args, conntrack, status)
        keep_until_exit(gw)  # sockets stay open until the process ends (see qubesnet.leave)
        return gw

    opts = Options(dry_run=dry, timeout=args.timeout, mapped_wait=args.mapped_wait)
    plan = run_event(args.command, env, xs, open_qubesdb, make_gateways, opts, report)
    addresses = ", ".join(map(str, plan.addresses)) or "no addresses"
    if dry:
        return f"planned ({addresses})"
    return f"{'connected' if args.command == 'online' else 'removed'} ({addresses})"


def run() -> None:
    """The installed entry point: main(), then exit without teardown."""
    from qubesnet.leave import exit_now

    exit_now(main())


if __name__ == "__main__":
    run()
