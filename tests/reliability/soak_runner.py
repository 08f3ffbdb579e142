"""Many online/offline events in ONE process, through the library: a daemon's
view of the code, where a socket, a libnftables context, a thread or memory
kept from one event to the next would pile up. Gateways are built as the
entry point builds them (the libnftables context shared per namespace,
everything else fresh per event and closed after it).

Run inside the netvm namespace, with the environment of a vif event:
    python soak_runner.py CYCLES HOOKS_DIR
Prints one JSON line: open descriptors and resident memory after the warm-up
and at the end.
"""

import gc
import json
import os
import sys
import threading

from qubesnet.netlink.rtnl import Rtnl
from qubesnet.nft import Nft
from qubesnet.qubesdb import QubesDB
from qubesnet.qubesdb import default_address as qubesdb_address
from qubesnet.sysctl import Sysctl
from qubesnet.xenstore import XenStore, default_address
from vif_route_qubes.event import Options, run_event
from vif_route_qubes.gateways import Gateways, namespaces_gateway
from vif_route_qubes.hooks import Hooks
from vif_route_qubes.inputs import parse_env
from vif_route_qubes.status import HotplugStatus

# The allocators settle over the first hundreds of cycles (a 3000-cycle run:
# +0.9 MB over the first 250, +0.7 MB over the next 2750, then flat), so the
# reference point is taken a tenth of the way in.
WARM_UP_SHARE, WARM_UP_MIN = 10, 10


def resources() -> dict[str, int]:
    gc.collect()
    with open("/proc/self/status") as handle:
        rss = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
    return {"fds": len(os.listdir("/proc/self/fd")), "rss_kb": rss, "threads": threading.active_count()}


def one_event(command: str, hooks_dir: str) -> None:
    env = parse_env(os.environ)
    with XenStore.open(default_address(os.environ), 5) as xs:
        gateways: list[Gateways] = []

        def make_gateways(conntrack: object) -> Gateways:
            gw = Gateways(rtnl=Rtnl(), nft=Nft.shared(), sysctl=Sysctl(), conntrack=conntrack,  # type: ignore[arg-type]
                          hooks=Hooks(hooks_dir, 5), status=HotplugStatus(xs, env.xenbus_path),
                          namespaces=namespaces_gateway())
            gateways.append(gw)
            return gw

        def open_qubesdb() -> QubesDB:
            return QubesDB.open(qubesdb_address(os.environ), 5)

        run_event(command, env, xs, open_qubesdb, make_gateways, Options(dry_run=False, timeout=5), lambda _: None)
        for gw in gateways:
            gw.close()


def main() -> int:
    cycles, hooks_dir = int(sys.argv[1]), sys.argv[2]
    marks = {}
    for n in range(cycles):
        one_event("online", hooks_dir)
        one_event("offline", hooks_dir)
        if n + 1 == max(WARM_UP_MIN, cycles // WARM_UP_SHARE):
            marks["warm"] = resources()
    marks["end"] = resources()
    print(json.dumps(marks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
