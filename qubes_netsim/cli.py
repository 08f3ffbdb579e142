"""qubes-netsim: the simulated environment (namespaces + protocol doubles).

  qubes-netsim demo                     the main job, end to end, with a report
  qubes-netsim xenstored --socket PATH  a XenStore double in the foreground
  qubes-netsim qubesdb --socket PATH    a QubesDB double in the foreground
  qubes-netsim load-layout [--ipv6 on|off]
                                        the netvm's base nftables layout, here
  qubes-netsim cleanup                  remove namespaces left by a killed run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

RULESETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rulesets")
# The files a Qubes netvm loads at boot, in order, by IPv6 setting
# (rulesets/README.md). Loaded with the nft program, never through qubesnet:
# the code under test must not build the base it is tested against.
BASE_RULESETS = {
    "on": ("qubes-antispoof.nft", "qubes-ipv4.nft", "qubes-ipv6.nft"),
    "off": ("qubes-antispoof.nft", "qubes-ipv4.nft", "qubes-ipv6-disabled.nft"),
}


def ruleset_files(ipv6: str) -> list[str]:
    return [os.path.join(RULESETS_DIR, name) for name in BASE_RULESETS[ipv6]]


def _load_layout(ipv6: str) -> int:
    for path in ruleset_files(ipv6):
        result = subprocess.run(["nft", "-f", path], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            print(f"qubes-netsim: nft -f {path} failed: {result.stderr.strip()}", file=sys.stderr)
            return 1
    return 0


def _cleanup(tag: str) -> int:
    from .netns import Netns, namespaces

    removed = 0
    for name in sorted(namespaces()):
        if name.startswith(tag + "-"):
            Netns(name).delete()
            removed += 1
    print(f"removed {removed} namespaces named {tag}-*")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qubes-netsim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the main job in the simulated environment")
    xs = sub.add_parser("xenstored", help="serve a XenStore double")
    xs.add_argument("--socket", required=True)
    xs.add_argument("--domid", type=int, default=0)
    qdb = sub.add_parser("qubesdb", help="serve a QubesDB double")
    qdb.add_argument("--socket", required=True)
    qdb.add_argument("--set", action="append", default=[], metavar="PATH=VALUE")
    layout = sub.add_parser("load-layout", help="load the base nftables layout in this namespace")
    layout.add_argument("--ipv6", choices=sorted(BASE_RULESETS), default="on",
                        help="on: qubes-ipv6.nft; off: qubes-ipv6-disabled.nft (default: on)")
    clean = sub.add_parser("cleanup", help="delete leftover simulation namespaces")
    clean.add_argument("--tag", default="qnsim")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run_demo

        return run_demo()
    if args.command == "xenstored":
        from .xenstored import XenStoreDouble

        XenStoreDouble(args.socket, domid=args.domid).serve_forever()
        return 0
    if args.command == "qubesdb":
        from .qubesdbd import QubesDBDouble

        double = QubesDBDouble(args.socket)
        for item in args.set:
            path, _, value = item.partition("=")
            double.write(path, value)
        double.serve_forever()
        return 0
    if args.command == "load-layout":
        return _load_layout(args.ipv6)
    if args.command == "cleanup":
        return _cleanup(args.tag)
    return 2


if __name__ == "__main__":
    sys.exit(main())
