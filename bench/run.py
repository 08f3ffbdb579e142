"""make bench: whole-process figures of the entry points against references.

Every figure is the wall time of a whole process (interpreter start-up and
exit included), run in the simulated netvm; ours and the reference alternate
within the same invocation, and the table shows medians and the ratio
ours/reference. References: bench/reference.sh (the vif work done one
command per step, as the shell originals do), bench/reference-dnat.py (the
replaced Python qubes-setup-dnat-to-ns's shape: dbus-python, two nft
processes) and bench/reference-dnat.sh (the leanest possible: a shell
script forking nft twice). Peak memory is GNU time's maximum resident set
size. A benchmark, not a test: it prints, it asserts nothing.

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


def spawn(argv: list[str], env: dict[str, str]) -> Sample:
    """Run ``argv`` to completion in this thread's namespace; its wall time."""
    started = time.perf_counter()
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        pid = os.posix_spawn(argv[0], argv, env, file_actions=[
            (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)])
    finally:
        os.close(devnull)
    _, status = os.waitpid(pid, 0)
    return Sample(time.perf_counter() - started, os.waitstatus_to_exitcode(status))


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
        self.path = f"{reference_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        self.sim = SimNetvm()
        self.rows: list[tuple[str, ...]] = []
        self.memory: dict[str, int] = {}

    def _wrapper(self, python: str, name: str, module: str) -> str:
        """The installed entry point's shape (bin/): ``#!python -IS``, the
        package directories appended by hand, run()."""
        venv = os.path.dirname(os.path.dirname(python))
        site = os.path.join(venv, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages")
        path = os.path.join(self.tmp, name)
        with open(path, "w") as handle:
            handle.write(f"#!{python} -IS\nimport sys\nsys.path += [{site!r}, '/usr/lib/python3/dist-packages']\n"
                         f"from {module} import run\nrun()\n")
        os.chmod(path, 0o755)
        return path

    # --- set-up ---------------------------------------------------------------

    def env(self, domid: int | None = None) -> dict[str, str]:
        extra = {} if domid is None else {"vif": f"vif{domid}.0", "XENBUS_PATH": f"backend/vif/{domid}/0"}
        env = self.sim.env(**extra)
        env["PATH"] = self.path
        return env

    def vif_argv(self, program: str, command: str) -> list[str]:
        if program == self.vif_route:
            return [program, *self.sim.vif_route_argv(command)[1:]]  # the wrapper, the simulation's arguments
        return [program, command]

    def all_vifs(self, domids: list[int], command: str, program: str, width: int) -> float:
        """``command`` for every vif, ``width`` processes at a time; the wall time of it all."""
        pending = list(domids)
        lock = threading.Lock()
        failures: list[int] = []

        def worker() -> None:
            with kernel_ns.entered(self.sim.netvm.name):
                while True:
                    with lock:
                        if not pending:
                            return
                        domid = pending.pop()
                    if spawn(self.vif_argv(program, command), self.env(domid)).status != 0:
                        failures.append(domid)

        started = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(min(width, len(domids)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise RuntimeError(f"{command} failed for {len(failures)} vifs, e.g. vif{failures[0]}.0")
        return time.perf_counter() - started

    # --- figures --------------------------------------------------------------

    def row(self, name: str, ours_ms: float, ref_ms: float | None, target: str, met: bool | None) -> None:
        ratio = f"{ours_ms / ref_ms:.2f}" if ref_ms else "-"
        ref_text = f"{ref_ms:8.1f} ms" if ref_ms else ""
        verdict = "" if met is None else ("yes" if met else "NO")
        self.rows.append((name, f"{ours_ms:8.1f} ms", ref_text, ratio, target, verdict))

    def vif_cycles(self, label: str, domid: int) -> tuple[float, float]:
        """online then offline of one vif, ours and the reference alternating."""
        env = self.env(domid)
        reference = os.path.join(HERE, "reference.sh")
        times: dict[tuple[str, str], list[float]] = {}
        for i in range(self.runs):
            for program in ((self.vif_route, reference) if i % 2 == 0 else (reference, self.vif_route)):
                for command in ("online", "offline"):
                    sample = spawn(self.vif_argv(program, command), env)
                    if sample.status != 0:
                        raise RuntimeError(f"{program} {command} vif{domid}.0 exited {sample.status}")
                    times.setdefault((program, command), []).append(sample.seconds)
        for program, name in ((self.vif_route, "vif-route-qubes"), (reference, "bench/reference.sh")):
            for command in ("online", "offline"):
                kb = peak_memory_kb(self.vif_argv(program, command), env)
                self.memory[name] = max(self.memory.get(name, 0), kb)
        on, off = median_ms(times[self.vif_route, "online"]), median_ms(times[self.vif_route, "offline"])
        ref_on, ref_off = median_ms(times[reference, "online"]), median_ms(times[reference, "offline"])
        self.row(f"online  ({label})", on, ref_on, "<= 0.70 x ref", on <= 0.70 * ref_on)
        self.row(f"offline ({label})", off, ref_off, "<= 0.40 x ref", off <= 0.40 * ref_off)
        return on, off

    def dnat_runs(self) -> None:
        env = self.env()
        programs = {
            "ours": self.sim.dnat_argv(),
            "reference-dnat.py": ["/usr/bin/python3", os.path.join(HERE, "reference-dnat.py"), self.sim.resolv_conf],
            "reference-dnat.sh": [os.path.join(HERE, "reference-dnat.sh"), self.sim.resolv_conf],
        }
        programs["ours"][0] = self.dnat
        times: dict[tuple[str, bool], list[float]] = {}
        flips = 0
        names = list(programs)
        for i in range(self.runs):
            for name in names[i % 3:] + names[: i % 3]:
                for changed in (True, False):
                    if changed:  # another server than the one in the chain now
                        flips += 1
                        self.sim.write_resolv_conf(f"nameserver {SERVERS[flips % 2]}\n")
                    sample = spawn(programs[name], env)
                    if sample.status != (0 if changed else 100):
                        raise RuntimeError(f"{name} exited {sample.status} (chain {'changed' if changed else 'same'})")
                    times.setdefault((name, changed), []).append(sample.seconds)
        for name, argv in programs.items():
            self.memory[name if name != "ours" else "qubes-setup-dnat-to-ns"] = peak_memory_kb(argv, env)
        for changed, label in ((True, "chain changed"), (False, "unchanged (exit 100)")):
            ours = median_ms(times["ours", changed])
            py, sh = median_ms(times["reference-dnat.py", changed]), median_ms(times["reference-dnat.sh", changed])
            self.row(f"dnat-to-ns, {label}", ours, py, "<= 40 ms, <= 0.50 x ref", ours <= 40 and ours <= 0.5 * py)
            self.row("  same, vs reference-dnat.sh", ours, sh, "(for information)", None)

    def concurrent(self, count: int = 100, rounds: int = 3) -> None:
        domids = list(range(5000, 5000 + count))
        self.sim.add_bulk_vifs(domids, prefix="10.136")
        reference = os.path.join(HERE, "reference.sh")
        times: dict[str, list[float]] = {}
        for r in range(rounds):
            for program in ((self.vif_route, reference) if r % 2 == 0 else (reference, self.vif_route)):
                elapsed = self.all_vifs(domids, "online", program, width=count)
                statuses = {self.sim.xenstore.read(f"backend/vif/{d}/0/hotplug-status") for d in domids}
                if statuses != {b"connected"}:
                    raise RuntimeError(f"{program}: not every vif reported connected: {statuses}")
                times.setdefault(program, []).append(elapsed)
                self.all_vifs(domids, "offline", self.vif_route, width=8)
                for d in domids:
                    self.sim.xenstore.rm(f"backend/vif/{d}/0/hotplug-status")
        ours, ref = median_ms(times[self.vif_route]), median_ms(times[reference])
        self.row(f"{count} onlines at once (wall)", ours, ref, "<= 0.70 x ref", ours <= 0.7 * ref)

    # --- the whole run ----------------------------------------------------------

    def main(self) -> int:
        print(f"== make bench: {self.runs} alternating runs per figure, medians ==", flush=True)
        self.sim.create()
        try:
            background = list(range(100, 350))
            self.sim.add_bulk_vifs([50, 20] + background, prefix="10.137")
            with kernel_ns.entered(self.sim.netvm.name):
                self.all_vifs([50], "online", self.vif_route, width=1)
                one_on, one_off = self.vif_cycles("1 other vif online", 20)
            print("... 250 more vifs going online", flush=True)
            self.all_vifs(background, "online", self.vif_route, width=8)
            with kernel_ns.entered(self.sim.netvm.name):
                many_on, many_off = self.vif_cycles("251 other vifs online", 20)
                self.row("online  with 251 vs 1 other vifs", many_on, one_on, "<= 1.10 x", many_on <= 1.10 * one_on)
                self.row("offline with 251 vs 1 other vifs", many_off, one_off, "<= 1.10 x", many_off <= 1.10 * one_off)
                self.dnat_runs()
            print("... 100 concurrent onlines", flush=True)
            self.concurrent()
        finally:
            self.sim.destroy()
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.print_table()
        return 0

    def print_table(self) -> None:
        header = ("figure", "ours", "reference", "ratio", "target", "met")
        widths = [max(len(r[i]) for r in [header, *self.rows]) for i in range(6)]
        line = "  ".join(f"{{:<{w}}}" for w in widths)
        print()
        print(line.format(*header))
        print(line.format(*("-" * w for w in widths)))
        for row in self.rows:
            print(line.format(*row))
        print()
        print("peak memory (GNU time, maximum resident set size):")
        for name, kb in sorted(self.memory.items()):
            ours = name in ("vif-route-qubes", "qubes-setup-dnat-to-ns")
            note = f"   target <= 40 MiB: {'yes' if kb <= 40 * 1024 else 'NO'}" if ours else ""
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
