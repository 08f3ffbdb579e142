"""vif-route-qubes with a fault injected before its K-th step.

Run inside the netvm namespace like the real entry point:
    python fault_runner.py [--crash | --delete-link] K [vif-route-qubes arguments...]
The kernel, netlink and libnftables are real; only the step loop is wrapped,
so that a test can make any step fail and check the rollback; with --crash,
the process dies there without any clean-up (as SIGKILL would); with
--delete-link, the interface disappears just before the step (as when Xen
destroys a vif in the middle of a hotplug).

Tests build its command line with fault_argv(); importing this module for
that loads none of the code under test (main() does, in the netvm).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qubes_netsim.topology import SimNetvm


def fault_argv(sim: SimNetvm, step: int, *args: str, mode: str | None = None) -> list[str]:
    """This runner's command line: vif-route-qubes ``args`` (with the
    simulation's hooks directory, as SimNetvm.vif_route_argv), a fault
    before step ``step``; ``mode`` "crash" or "delete-link" (default: fail)."""
    return [sys.executable, os.path.abspath(__file__), *([f"--{mode}"] if mode else []), str(step),
            *sim.vif_route_argv(*args)[1:]]


def main() -> int:
    from qubesnet.errors import ApplyError
    from vif_route_qubes import apply, cli

    args = sys.argv[1:]
    mode = "fail"
    if args[0] in ("--crash", "--delete-link"):
        mode, args = args[0][2:], args[1:]
    fail_at = int(args[0])
    original = apply.Applier._apply
    done = [0]

    def faulty(self: apply.Applier, step: Any) -> None:  # whatever step type _apply takes
        if done[0] == fail_at:
            if mode == "crash":
                os._exit(137)
            if mode == "delete-link":
                subprocess.run(["ip", "link", "delete", self.inp.ifname], check=False, capture_output=True)
            else:
                raise ApplyError(f"injected fault before step {fail_at} ({type(step).__name__})")
        done[0] += 1
        original(self, step)

    apply.Applier._apply = faulty  # type: ignore[method-assign]
    return cli.main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
