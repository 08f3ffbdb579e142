"""qubes-setup-dnat-to-ns: DNAT the virtual DNS addresses to the uplink's servers.

Run by the NetworkManager dispatcher when the uplink or its DNS changes, by
the watch service, or by hand.
"""

from __future__ import annotations

import sys

from qubesnet.errors import QubesNetError
from qubesnet.log import get_logger, setup_direct_logging

from .args import Args, parse_plain
from .exitcodes import ExitCode

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

log = get_logger("qubes-setup-dnat-to-ns")

DESCRIPTION = """\
Maintain the nftables chains "dnat-dns" of tables "ip qubes" and, when
QubesDB has IPv6 virtual DNS addresses, "ip6 qubes", so that DNS queries (UDP
and TCP port 53) sent by client VMs to the virtual DNS addresses (QubesDB
/qubes-netvm-primary-dns, /qubes-netvm-secondary-dns, and the IPv6
/qubes-netvm-primary-dns6, /qubes-netvm-secondary-dns6) are translated to the
real servers of this VM's uplink, of the same family, paired in order:
systemd-resolved's (over D-Bus; only its global entries when it has any)
when it has any, else the nameserver lines of resolv.conf. Loopback, stub,
link-local and multicast servers are skipped. Queries to the virtual
addresses of a family without a usable server are redirected to this VM and
refused at once (chain "dnat-dns-refuse": ICMP port unreachable for UDP, TCP
reset), never left untranslated, so that resolvers move on to the other
family without waiting, also when the uplink is down.
Both families are replaced in one atomic transaction; after a change,
qubes-firewall is asked to reload when its service is enabled.
"""

EPILOG = """\
exit status:
    0  the chains were changed (the dispatcher then restarts the updates proxy)
  100  both families' chains already were the ones computed: nothing changed
    1  error (one line on stderr and in syslog); the old chains are kept
    2  bad command line
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Every call form, with help and usage errors (exit 2); the usual ones
    are read without argparse (args.py)."""
    import argparse

    from qubesnet.cliutil import help_formatter

    parser = argparse.ArgumentParser(
        prog="qubes-setup-dnat-to-ns", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=help_formatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-n", "--dry-run", action="store_true",
                      help="print the chains that would be installed; change nothing")
    mode.add_argument("--status", action="store_true",
                      help="show, per family, each virtual address, its server and where that came from")
    mode.add_argument("--watch", action="store_true",
                      help="stay running: re-apply when resolv.conf or systemd-resolved change")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (debug level)")
    parser.add_argument("--resolv-conf", default="/etc/resolv.conf", metavar="PATH", help="default: /etc/resolv.conf")
    parser.add_argument("--qubes-service-dir", default="/run/qubes-service", metavar="DIR",
                        help="where service flag files live (default /run/qubes-service)")
    parser.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS",
                        help="bound for QubesDB and D-Bus answers (default 2)")
    return parser.parse_args(argv)


def read_args(argv: list[str] | None) -> Args:
    words = sys.argv[1:] if argv is None else argv
    plain = parse_plain(words)
    if plain is not None:
        return plain
    ns = parse_args(words)
    return Args(ns.dry_run, ns.status, ns.watch, ns.verbose, ns.resolv_conf, ns.qubes_service_dir, ns.timeout)


def main(argv: list[str] | None = None) -> int:
    args = read_args(argv)
    setup_direct_logging("qubes-setup-dnat-to-ns", args.verbose)
    try:
        if args.watch:
            from .watch import watch

            return watch(args)
        from .run import run_once, show_status

        if args.status:
            return show_status(args)
        return run_once(args)
    except QubesNetError as exc:
        log.error("%s", exc)
        return ExitCode.ERROR
    except KeyboardInterrupt:
        return ExitCode.ERROR


def run() -> None:
    """The installed entry point: main(), then exit without teardown."""
    from qubesnet.leave import exit_now

    exit_now(main())


if __name__ == "__main__":
    run()
