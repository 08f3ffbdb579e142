"""make bench: whole-process figures of the entry points against references and the floor.

Every figure is the wall time of a whole process (interpreter start-up and
exit included), run in the simulated netvm; ours, the reference and the
floor alternate within the same invocation, and the table shows medians and
the ratios ours/floor and ours/reference. The floor is the least a Python
entry point using libnftables can cost: ``import nftables;
nftables.Nftables()`` through the same wrapper as ours (same interpreter,
same flags, same sys.path). Absolute times vary with the machine and its
load; the ratios are what the targets are set on. References: bench/reference.sh (the vif work done one
command per step, as the shell originals do), bench/reference-dnat.py (the
replaced Python qubes-setup-dnat-to-ns's shape: dbus-python, two nft
processes) and bench/reference-dnat.sh (the leanest possible: a shell
script forking nft twice). Peak memory is GNU time's maximum resident set
size. A benchmark, not a test: it prints, it asserts nothing.

Bursts: N onlines started together (N = 30 and 100): the wall time until all
have exited and reported ``connected``, and the slowest single process.

Usage: python bench/run.py --ours-python PY --reference-bin DIR [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import NamedTuple

from qubes_netsim.topology import SimNetvm
from qubesnet import netns as kernel_ns

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = ("198.51.100.1", "198.51.100.53")


class Sample(NamedTuple):
    seconds: float
    status: int
    cpu: float  # user + system time of the process and of the children it waited for


class Burst(NamedTuple):
    wall: float
    slowest: float
    cpu: float  # of all the processes together


def spawn(argv: list[str], env: dict[str, str]) -> Sample:
    """Run ``argv`` to completion in this thread's namespace; its wall time."""
    started = time.perf_counter()
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        pid = os.posix_spawn(argv[0], argv, env, file_actions=[
            (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)])
    finally:
        os.close(devnull)
    _, status, usage = os.wait4(pid, 0)
    return Sample(time.perf_counter() - started, os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime)


def peak_memory_kb(argv: list[str], env: dict[str, str]) -> int:
    """Maximum resident set size of one run as GNU time reports it (for a
    script, that of its largest process)."""
    with tempfile.NamedTemporaryFile("r") as out:
        spawn(["/usr/bin/time", "-f", "%M", "-o", out.name, *argv], env)
        return int(out.read().split()[-1])


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


class Bench:
    def __init__(self, ours_python: str, reference_bin: str, runs: int) -> None:
        self.runs = runs
        self.tmp = tempfile.mkdtemp(prefix="qnbench-")
        self.vif_route = self._wrapper(ours_python, "vif-route-qubes", "vif_route_qubes.cli")
        self.dnat = self._wrapper(ours_python, "qubes-setup-dnat-to-ns", "setup_dnat_to_ns.cli")
        self.floor = self._wrapper(ours_python, "floor", None, "import nftables\nnftables.Nftables()\n")
        self.bare = self._wrapper(ours_python, "bare", None, "")
        self.path = f"{reference_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        self.sim = SimNetvm()
        self.rows: list[tuple[str, ...]] = []
        self.cpu_rows: list[tuple[str, ...]] = []
        self.memory: dict[str, int] = {}

    def _wrapper(self, python: str, name: str, module: str | None, body: str = "") -> str:
        """The installed entry point's shape (bin/): ``#!python -IS``, the
        package directories appended by hand, run(); without a module, ``body``
        instead (the floor, the bare wrapper)."""
        venv = os.path.dirname(os.path.dirname(python))
        site = os.path.join(venv, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages")
        path = os.path.join(self.tmp, name)
        with open(path, "w") as handle:
            handle.write(f"#!{python} -IS\nimport sys\nsys.path += [{site!r}, '/usr/lib/python3/dist-packages']\n")
            handle.write(f"from {module} import run\nrun()\n" if module else body)
        os.chmod(path, 0o755)
        return path

    # --- set-up ---------------------------------------------------------------

    def env(self, domid: int | None = None) -> dict[str, str]:
        extra = {} if domid is None else {"vif": f"vif{domid}.0", "XENBUS_PATH": f"backend/vif/{domid}/0"}
        env = self.sim.env(None, **extra)
        env["PATH"] = self.path
        return env

    def vif_argv(self, program: str, command: str) -> list[str]:
        if program == self.vif_route:
            return [program, *self.sim.vif_route_argv(command)[1:]]  # the wrapper, the simulation's arguments
        return [program, command]

    def all_vifs(self, domids: list[int], command: str, program: str, width: int) -> Burst:
        """``command`` for every vif, ``width`` processes at a time: the wall
        time of it all and the slowest single process."""
        pending = list(domids)
        lock = threading.Lock()
        failures: list[int] = []
        slowest = [0.0]
        cpu = [0.0]

        def worker() -> None:
            with kernel_ns.entered(self.sim.netvm.name):
                while True:
                    with lock:
                        if not pending:
                            return
                        domid = pending.pop()
                    sample = spawn(self.vif_argv(program, command), self.env(domid))
                    with lock:
                        slowest[0] = max(slowest[0], sample.seconds)
                        cpu[0] += sample.cpu
                        if sample.status != 0:
                            failures.append(domid)

        started = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(min(width, len(domids)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise RuntimeError(f"{command} failed for {len(failures)} vifs, e.g. vif{failures[0]}.0")
        return Burst(time.perf_counter() - started, slowest[0], cpu[0])

    # --- figures --------------------------------------------------------------

    def row(self, name: str, ours_ms: float, floor_ms: float | None, ref_ms: float | None, target: str,
            met: bool | None, cpu: tuple[float, float | None, float | None] | None = None) -> None:
        """A figure (wall medians); ``cpu``: the same figure in CPU time
        (ours, floor, reference), for the second table."""
        def ms(value: float | None) -> str:
            return f"{value:8.1f} ms" if value else ""

        def ratio(mine: float, value: float | None) -> str:
            return f"{mine / value:.2f}" if value else "-"

        verdict = "" if met is None else ("yes" if met else "NO")
        self.rows.append((name, ms(ours_ms), ms(floor_ms), ratio(ours_ms, floor_ms), ms(ref_ms), ratio(ours_ms, ref_ms),
                          target, verdict))
        if cpu is not None:
            mine, floor, ref = cpu
            self.cpu_rows.append((name, ms(mine), ms(floor), ratio(mine, floor), ms(ref), ratio(mine, ref)))

    def rotation(self, i: int, programs: list[str]) -> list[str]:
        """The order of run ``i``: each program goes first in turn."""
        k = i % len(programs)
        return programs[k:] + programs[:k]

    def baseline(self) -> None:
        """The floor against the bare wrapper (the interpreter started with
        the wrapper's flags and path, nothing imported): what libnftables'
        binding and context cost on their own."""
        env = self.env()
        times: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        for i in range(self.runs):
            for program in self.rotation(i, [self.floor, self.bare]):
                sample = spawn([program], env)
                times.setdefault(program, []).append(sample.seconds)
                cpu.setdefault(program, []).append(sample.cpu)
        floor, bare = median_ms(times[self.floor]), median_ms(times[self.bare])
        cfloor, cbare = median_ms(cpu[self.floor]), median_ms(cpu[self.bare])
        self.row("floor (libnftables binding + context)", floor, floor, None, "(the floor itself)", None,
                 (cfloor, cfloor, None))
        self.row("  bare wrapper (interpreter only)", bare, floor, None, "(for information)", None,
                 (cbare, cfloor, None))
        for name, program in (("floor", self.floor), ("bare wrapper", self.bare)):
            self.memory[name] = peak_memory_kb([program], env)

    def vif_cycles(self, label: str, domid: int) -> tuple[float, float, float, float]:
        """online then offline of one vif, ours, the reference and the floor
        in turn; returns ours' online and offline medians, wall then CPU."""
        env = self.env(domid)
        reference = os.path.join(HERE, "reference.sh")
        times: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        for i in range(self.runs):
            for program in self.rotation(i, [self.vif_route, reference, self.floor]):
                for command in ("online", "offline"):
                    argv = [self.floor] if program == self.floor else self.vif_argv(program, command)
                    sample = spawn(argv, env)
                    if sample.status != 0:
                        raise RuntimeError(f"{program} {command} vif{domid}.0 exited {sample.status}")
                    times.setdefault((program, command), []).append(sample.seconds)
                    cpu.setdefault((program, command), []).append(sample.cpu)
        for program, name in ((self.vif_route, "vif-route-qubes"), (reference, "bench/reference.sh")):
            for command in ("online", "offline"):
                kb = peak_memory_kb(self.vif_argv(program, command), env)
                self.memory[name] = max(self.memory.get(name, 0), kb)
        floor = median_ms(times[self.floor, "online"] + times[self.floor, "offline"])
        on, off = median_ms(times[self.vif_route, "online"]), median_ms(times[self.vif_route, "offline"])
        ref_on, ref_off = median_ms(times[reference, "online"]), median_ms(times[reference, "offline"])
        cfloor = median_ms(cpu[self.floor, "online"] + cpu[self.floor, "offline"])
        for command, mine, ref in (("online ", on, ref_on), ("offline", off, ref_off)):
            c = command.strip()
            self.row(f"{command} ({label})", mine, floor, ref, "<= 1.5 x floor", mine <= 1.5 * floor,
                     (median_ms(cpu[self.vif_route, c]), cfloor, median_ms(cpu[reference, c])))
        return on, off, median_ms(cpu[self.vif_route, "online"]), median_ms(cpu[self.vif_route, "offline"])

    def dnat_runs(self) -> None:
        env = self.env()
        programs = {
            "ours": self.sim.dnat_argv(),
            "reference-dnat.py": ["/usr/bin/python3", os.path.join(HERE, "reference-dnat.py"), self.sim.resolv_conf],
            "reference-dnat.sh": [os.path.join(HERE, "reference-dnat.sh"), self.sim.resolv_conf],
            "floor": [self.floor],
        }
        programs["ours"][0] = self.dnat
        times: dict[tuple[str, bool], list[float]] = {}
        cpu: dict[tuple[str, bool], list[float]] = {}
        flips = 0
        for i in range(self.runs):
            for name in self.rotation(i, list(programs)):
                for changed in (True, False):
                    if changed and name != "floor":  # another server than the one in the chain now
                        flips += 1
                        self.sim.write_resolv_conf(f"nameserver {SERVERS[flips % 2]}\n")
                    sample = spawn(programs[name], env)
                    expected = 0 if changed or name == "floor" else 100
                    if sample.status != expected:
                        raise RuntimeError(f"{name} exited {sample.status} (chain {'changed' if changed else 'same'})")
                    times.setdefault((name, changed), []).append(sample.seconds)
                    cpu.setdefault((name, changed), []).append(sample.cpu)
        for name, argv in programs.items():
            if name != "floor":
                self.memory[name if name != "ours" else "qubes-setup-dnat-to-ns"] = peak_memory_kb(argv, env)
        floor = median_ms(times["floor", True] + times["floor", False])
        for changed, label in ((True, "chain changed"), (False, "unchanged (exit 100)")):
            ours = median_ms(times["ours", changed])
            py, sh = median_ms(times["reference-dnat.py", changed]), median_ms(times["reference-dnat.sh", changed])
            cfloor = median_ms(cpu["floor", True] + cpu["floor", False])
            mine = median_ms(cpu["ours", changed])
            self.row(f"dnat-to-ns, {label}", ours, floor, py, "<= 1.3 x floor", ours <= 1.3 * floor,
                     (mine, cfloor, median_ms(cpu["reference-dnat.py", changed])))
            self.row("  same, vs reference-dnat.sh", ours, floor, sh, "(for information)", None,
                     (mine, cfloor, median_ms(cpu["reference-dnat.sh", changed])))

    def bursts(self, lone_online_ms: float, counts: tuple[int, ...] = (30, 100), rounds: int = 3) -> None:
        """``count`` onlines started together, ours and the reference in
        turn: the wall time until all have exited and reported connected,
        and the slowest single event."""
        domids = list(range(5000, 5000 + max(counts)))
        self.sim.add_bulk_vifs(domids, prefix="10.136")
        reference = os.path.join(HERE, "reference.sh")
        for count in counts:
            some = domids[:count]
            walls: dict[str, list[float]] = {}
            slowest: dict[str, list[float]] = {}
            cpu: dict[str, list[float]] = {}
            for r in range(rounds):
                for program in self.rotation(r, [self.vif_route, reference]):
                    burst = self.all_vifs(some, "online", program, width=count)
                    statuses = {self.sim.xenstore.read(f"backend/vif/{d}/0/hotplug-status") for d in some}
                    if statuses != {b"connected"}:
                        raise RuntimeError(f"{program}: not every vif reported connected: {statuses}")
                    walls.setdefault(program, []).append(burst.wall)
                    slowest.setdefault(program, []).append(burst.slowest)
                    cpu.setdefault(program, []).append(burst.cpu)
                    self.all_vifs(some, "offline", self.vif_route, width=8)
                    for d in some:
                        self.sim.xenstore.rm(f"backend/vif/{d}/0/hotplug-status")
            ours, ref = median_ms(walls[self.vif_route]), median_ms(walls[reference])
            worst, ref_worst = median_ms(slowest[self.vif_route]), median_ms(slowest[reference])
            wall_target = count == 30
            self.row(f"{count} onlines at once (wall)", ours, None, ref,
                     "<= 0.8 x ref" if wall_target else "(for information)", ours <= 0.8 * ref if wall_target else None,
                     (median_ms(cpu[self.vif_route]) / count, None, median_ms(cpu[reference]) / count))
            self.row(f"  slowest of the {count} (vs lone online)", worst, None, ref_worst,
                     f"<= 3 x lone ({3 * lone_online_ms:.0f} ms)" if wall_target else "(for information)",
                     worst <= 3 * lone_online_ms if wall_target else None)

    # --- the whole run ----------------------------------------------------------

    def main(self) -> int:
        print(f"== make bench: {self.runs} alternating runs per figure, medians ==", flush=True)
        self.sim.create()
        try:
            background = list(range(100, 350))
            self.sim.add_bulk_vifs([50, 20] + background, prefix="10.137")
            with kernel_ns.entered(self.sim.netvm.name):
                self.baseline()
                self.all_vifs([50], "online", self.vif_route, width=1)
                one_on, one_off, one_on_cpu, one_off_cpu = self.vif_cycles("1 other vif online", 20)
            print("... 250 more vifs going online", flush=True)
            self.all_vifs(background, "online", self.vif_route, width=8)
            with kernel_ns.entered(self.sim.netvm.name):
                many_on, many_off, many_on_cpu, many_off_cpu = self.vif_cycles("251 other vifs online", 20)
                self.row("online  with 251 vs 1 other vifs", many_on, None, one_on, "<= 1.10 x",
                         many_on <= 1.10 * one_on, (many_on_cpu, None, one_on_cpu))
                self.row("offline with 251 vs 1 other vifs", many_off, None, one_off, "<= 1.10 x",
                         many_off <= 1.10 * one_off, (many_off_cpu, None, one_off_cpu))
                self.dnat_runs()
            print("... bursts: 30, then 100 concurrent onlines", flush=True)
            self.bursts(one_on)
        finally:
            self.sim.destroy()
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.print_table()
        return 0

    def print_table(self) -> None:
        header = ("figure", "ours", "floor", "x floor", "reference", "x ref", "target", "met")
        widths = [max(len(r[i]) for r in [header, *self.rows]) for i in range(len(header))]
        line = "  ".join(f"{{:<{w}}}" for w in widths)
        print()
        print(line.format(*header))
        print(line.format(*("-" * w for w in widths)))
        for row in self.rows:
            print(line.format(*row))
        print()
        print("CPU time, medians (user + system of the process and the children it waited for; bursts: per")
        print("event). Less sensitive than wall time to other load on the machine; the hand-off child of")
        print("qubesnet/leave.py, which closes the netfilter socket after our exit, is not counted:")
        cpu_header = ("figure", "ours", "floor", "x floor", "reference", "x ref")
        widths = [max(len(r[i]) for r in [cpu_header, *self.cpu_rows]) for i in range(len(cpu_header))]
        line = "  ".join(f"{{:<{w}}}" for w in widths)
        print(line.format(*cpu_header))
        print(line.format(*("-" * w for w in widths)))
        for row in self.cpu_rows:
            print(line.format(*row))
        print()
        print("peak memory (GNU time, maximum resident set size):")
        for name, kb in sorted(self.memory.items()):
            ours = name in ("vif-route-qubes", "qubes-setup-dnat-to-ns")
            note = f"   target <= 20 MiB: {'yes' if kb <= 20 * 1024 else 'NO'}" if ours else ""
            print(f"  {name:<24} {kb / 1024:6.1f} MiB{note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours-python", default=sys.executable)
    parser.add_argument("--reference-bin", required=True, help="directory holding qubesdb-read for the references")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    return Bench(args.ours_python, args.reference_bin, args.runs).main()


if __name__ == "__main__":
    sys.exit(main())
