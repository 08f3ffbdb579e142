"""vif-route-qubes with a fault injected before its K-th step.

Run inside the netvm namespace like the real entry point:
    python fault_runner.py K [vif-route-qubes arguments...]
The kernel, netlink and libnftables are real; only the step loop is wrapped,
so that the test can make any step fail and check the rollback.
"""

import sys

from qubesnet.errors import ApplyError
from vif_route_qubes import apply, cli


def main() -> int:
    fail_at = int(sys.argv[1])
    original = apply.Applier._apply
    done = [0]

    def faulty(self: apply.Applier, step: object) -> None:
        if done[0] == fail_at:
            raise ApplyError(f"injected fault before step {fail_at} ({type(step).__name__})")
        done[0] += 1
        original(self, step)

    apply.Applier._apply = faulty  # type: ignore[method-assign]
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
