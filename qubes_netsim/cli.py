"""qubes-netsim: the simulated environment (namespaces + protocol doubles).

  qubes-netsim demo                     the main job, end to end, with a report
  qubes-netsim xenstored --socket PATH  a XenStore double in the foreground
  qubes-netsim qubesdb --socket PATH    a QubesDB double in the foreground
  qubes-netsim load-layout              the netvm's base nftables layout, here
  qubes-netsim cleanup                  remove namespaces left by a killed run
"""

from __future__ import annotations

import argparse
import sys


def _load_layout() -> int:
    from qubesnet.layout import build_missing_layout
    from qubesnet.nft import Nft

    nft = Nft()
    commands = build_missing_layout("ip", ()) + build_missing_layout("ip6", ())
    nft.run(commands, "base layout")
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
    sub.add_parser("load-layout", help="load the base nftables layout in this namespace")
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
        return _load_layout()
    if args.command == "cleanup":
        return _cleanup(args.tag)
    return 2


if __name__ == "__main__":
    sys.exit(main())
