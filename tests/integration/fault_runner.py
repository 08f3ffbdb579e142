"""vif-route-qubes with a fault injected before its K-th step.

Run inside the netvm namespace like the real entry point:
    python fault_runner.py [--crash | --delete-link] K [vif-route-qubes arguments...]
    python fault_runner.py --pause STEP_TYPE [vif-route-qubes arguments...]
The kernel, netlink and libnftables are real; only the step loop is wrapped,
so that a test can make any step fail and check the rollback; with --crash,
the process dies there without any clean-up (as SIGKILL would); with
--delete-link, the interface disappears just before the step (as when Xen
destroys a vif in the middle of a hotplug); with --pause, the event stops
before its first step of that type (e.g. SetLink), creates the file named by
$QUBES_FAULT_PAUSED and goes on once $QUBES_FAULT_RESUME exists (at most
30 s), so that a test can interleave another event exactly there.

Tests build its command line with fault_argv(); importing this module for
that loads none of the code under test (main() does, in the netvm).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qubes_netsim.topology import Client, SimNetvm


def fault_argv(sim: SimNetvm, step: int | str, *args: str, mode: str | None = None) -> list[str]:
    """This runner's command line: vif-route-qubes ``args`` (with the
    simulation's hooks directory, as SimNetvm.vif_route_argv), a fault
    before step ``step``; ``mode`` "crash" or "delete-link" (default: fail)."""
    return [sys.executable, os.path.abspath(__file__), *([f"--{mode}"] if mode else []), str(step),
            *sim.vif_route_argv(*args)[1:]]


@contextmanager
def paused_online(sim: SimNetvm, client: Client, step_type: str = "SetLink") -> Iterator[subprocess.Popen[str]]:
    """An online of ``client`` stopped just before its first ``step_type`` step,
    holding its locks, for the body of the with-statement; it goes on at the
    end, and must then succeed."""
    paused, resume = (os.path.join(sim.workdir, name) for name in ("paused", "resume"))
    for path in (paused, resume):
        if os.path.exists(path):
            os.unlink(path)
    env = sim.env(client, QUBES_FAULT_PAUSED=paused, QUBES_FAULT_RESUME=resume)
    online = sim.netvm.popen(fault_argv(sim, step_type, "online", mode="pause"), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(paused):
            assert online.poll() is None, online.communicate()
            assert time.monotonic() < deadline, f"the online never reached its {step_type} step"
            time.sleep(0.01)
        yield online
    finally:
        with open(resume, "w"):
            pass
        try:
            online.wait(timeout=30)
        finally:
            if online.poll() is None:
                online.kill()
    assert online.returncode == 0, online.communicate()[1]


def main() -> int:
    from qubesnet.errors import ApplyError
    from vif_route_qubes import apply, cli, steps

    args = sys.argv[1:]
    mode = "fail"
    if args[0] in ("--crash", "--delete-link", "--pause"):
        mode, args = args[0][2:], args[1:]
    pause_before = args[0] if mode == "pause" else None
    fail_at = -1 if mode == "pause" else int(args[0])
    original = apply.Applier.apply_one
    done = [0]

    def faulty(self: apply.Applier, step: steps.Step) -> None:
        if type(step).__name__ == pause_before:
            _pause()
        if done[0] == fail_at:
            if mode == "crash":
                os._exit(137)
            if mode == "delete-link":
                # the interface under whichever name it has now (renamed or not)
                for name in {os.environ["vif"], getattr(step, "ifname", os.environ["vif"])}:
                    subprocess.run(["ip", "link", "delete", name], check=False, capture_output=True)
            else:
                raise ApplyError(f"injected fault before step {fail_at} ({type(step).__name__})")
        done[0] += 1
        original(self, step)

    apply.Applier.apply_one = faulty  # type: ignore[method-assign]
    return cli.main(args[1:])


def _pause() -> None:
    with open(os.environ["QUBES_FAULT_PAUSED"], "w"):
        pass
    deadline = time.monotonic() + 30
    while not os.path.exists(os.environ["QUBES_FAULT_RESUME"]) and time.monotonic() < deadline:
        time.sleep(0.01)


if __name__ == "__main__":
    sys.exit(main())
