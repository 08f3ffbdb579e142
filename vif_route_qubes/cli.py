"""vif-route-qubes: the hotplug entry point for a client VM's vif in a netvm.

Called by libxl (``xl devd``) or udev as ``vif-route-qubes COMMAND`` with
``vif`` and ``XENBUS_PATH`` in the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from enum import IntEnum

from qubesnet.constants import HOOK_TIMEOUT, NETWORK_HOOKS_DIR
from qubesnet.errors import QubesNetError
from qubesnet.logsetup import setup_logging
from qubesnet.validate import parse_xenbus_path

log = logging.getLogger("vif-route-qubes")

DESCRIPTION = """\
Configure (online) or tear down (offline) the routed network interface of a
client VM in a Qubes network VM: anti-spoofing set elements, host routes,
neighbour entries, gateway addresses, sysctls, stale conntrack entries and
the administrator's network hooks. "add" and "remove" are accepted and do
nothing (they concern tap devices).

Environment: vif (interface name, vif<domid>.<devid>), XENBUS_PATH (the
backend's XenStore directory), XENSTORED_PATH and QUBESDB_SOCKET (optional
daemon sockets).
"""

EPILOG = """\
exit status:
  0  success (online: hotplug-status=connected written to XenStore)
  1  failure: a one-line reason is logged and, when XENBUS_PATH is usable,
     written to hotplug-error with hotplug-status=error; a failed online
     leaves the interface down with nothing of this event applied
  2  bad command line
"""


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="vif-route-qubes",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", metavar="COMMAND", help="online, offline, add or remove")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step (debug level)")
    parser.add_argument(
        "-n", "--dry-run", action="store_true", help="print the plan (nftables transaction, netlink operations) and change nothing"
    )
    parser.add_argument(
        "--hooks-dir", default=NETWORK_HOOKS_DIR, metavar="DIR", help=f"network hooks directory (default {NETWORK_HOOKS_DIR})"
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS", help="how long to wait for XenStore and QubesDB (default 5)"
    )
    return parser.parse_args(argv)


def _printable(value: str) -> str:
    """A value for a log line: as is when harmless, else quoted and cut."""
    if value.isprintable() and len(value) <= 64 and " " not in value:
        return value
    return repr(value[:64])


def _report_failure(xs: object, xenbus_path: str | None, message: str, dry_run: bool) -> None:
    """hotplug-error first, then hotplug-status: libxl reads the former on the latter."""
    if xs is None or xenbus_path is None or dry_run:
        return
    from qubesnet.xenstore import XenStore

    assert isinstance(xs, XenStore)
    try:
        xs.write(f"{xenbus_path}/hotplug-error", message[:1024])
        xs.write(f"{xenbus_path}/hotplug-status", "error")
    except QubesNetError as exc:
        log.error("cannot report the failure to XenStore: %s", exc)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("vif-route-qubes", args.verbose, hotplug_log=True)
    command = args.command
    started = time.monotonic()
    environ = os.environ
    vif = _printable(environ.get("vif", ""))

    if command in ("add", "remove"):
        log.debug("%s %s: nothing to do for a vif", command, vif)
        return ExitCode.OK

    xenbus_path: str | None = None
    xs = None
    try:
        xenbus_path = parse_xenbus_path("XENBUS_PATH", environ.get("XENBUS_PATH", ""))
    except QubesNetError:
        xenbus_path = None
    try:
        from qubesnet.xenstore import XenStore, default_address

        if xenbus_path is not None:
            xs = XenStore.open(default_address(environ), args.timeout)
        if command not in ("online", "offline"):
            from qubesnet.errors import ConfigError

            raise ConfigError("COMMAND", f"unknown command {_printable(command)}: expected online, offline, add or remove")
        outcome = _run(command, environ, xs, args)
    except QubesNetError as exc:
        message = str(exc)
        log.error("%s %s failed: %s", _printable(command), vif, message)
        _report_failure(xs, xenbus_path, message, args.dry_run)
        return ExitCode.FAILURE
    finally:
        if xs is not None:
            xs.close()
    elapsed = (time.monotonic() - started) * 1000
    log.info("%s %s: %s (%.0f ms)", command, vif, outcome, elapsed)
    return ExitCode.OK


def _run(command: str, environ: os._Environ[str], xs: object, args: argparse.Namespace) -> str:
    from qubesnet.netlink.ctnl import Conntrack
    from qubesnet.netlink.rtnl import Rtnl
    from qubesnet.nft import Nft
    from qubesnet.qubesdb import QubesDB
    from qubesnet.qubesdb import default_address as qubesdb_address
    from qubesnet.sysctl import Sysctl
    from qubesnet.xenstore import XenStore

    from .apply import Gateways
    from .event import Options, run_event
    from .hooks import Hooks
    from .inputs import parse_env

    env = parse_env(environ)
    if xs is None:
        raise AssertionError("XenStore connection missing for a valid XENBUS_PATH")
    assert isinstance(xs, XenStore)
    dry = args.dry_run

    def report(line: str) -> None:
        if dry:
            print(line)
        else:
            log.debug("%s", line)

    def open_qubesdb() -> QubesDB:
        return QubesDB.open(qubesdb_address(environ), args.timeout)

    gw = Gateways(
        rtnl=Rtnl(dry_run=dry),
        nft=Nft(dry_run=dry),
        sysctl=Sysctl(dry_run=dry),
        conntrack=Conntrack(dry_run=dry),
        hooks=Hooks(args.hooks_dir, HOOK_TIMEOUT, dry_run=dry),
    )
    try:
        plan = run_event(command, env, xs, open_qubesdb, gw, Options(dry_run=dry, timeout=args.timeout), report)
    finally:
        gw.close()
    addresses = ", ".join(map(str, plan.addresses)) or "no addresses"
    if command == "online" and not dry:
        xs.rm(f"{env.xenbus_path}/hotplug-error")
        xs.write(f"{env.xenbus_path}/hotplug-status", "connected")
        return f"connected ({addresses})"
    return f"{'planned' if dry else 'done'} ({addresses})"


if __name__ == "__main__":
    sys.exit(main())
