"""vif-route-qubes with a fault injected before its K-th step.

Run inside the netvm namespace like the real entry point:
    python fault_runner.py [--crash] K [vif-route-qubes arguments...]
The kernel, netlink and libnftables are real; only the step loop is wrapped,
so that the test can make any step fail and check the rollback, or, with
--crash, make the process die there without any clean-up (as SIGKILL would).
"""

import os
import sys

from qubesnet.errors import ApplyError
from vif_route_qubes import apply, cli


def main() -> int:
    args = sys.argv[1:]
    crash = args[0] == "--crash"
    if crash:
        args = args[1:]
    fail_at = int(args[0])
    original = apply.Applier._apply
    done = [0]

    def faulty(self: apply.Applier, step: object) -> None:
        if done[0] == fail_at:
            if crash:
                os._exit(137)
            raise ApplyError(f"injected fault before step {fail_at} ({type(step).__name__})")
        done[0] += 1
        original(self, step)

    apply.Applier._apply = faulty  # type: ignore[method-assign]
    return cli.main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
