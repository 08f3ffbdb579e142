"""Network hooks: administrator scripts run on every vif event.

Every executable regular file in ``/rw/config/network-hooks.d/`` runs, in
name order, as ``HOOK COMMAND VIF VIF_TYPE [ADDR]``. A hook is the
administrator's code, not ours: its failure (or hang, cut off after a bound)
is logged and never fails the hotplug.
"""

from __future__ import annotations

import logging
import os
import stat

log = logging.getLogger(__name__)


class Hooks:
    def __init__(self, directory: str, timeout: float) -> None:
        self.directory = directory
        self.timeout = timeout

    def executables(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("cannot list network hooks in %s: %s", self.directory, exc.strerror)
            return []
        hooks = []
        for name in names:
            path = os.path.join(self.directory, name)
            try:
                mode = os.stat(path).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode) and os.access(path, os.X_OK):
                hooks.append(path)
        return hooks

    def run(self, argv_tail: list[str]) -> None:
        for hook in self.executables():
            argv = [hook, *argv_tail]
            log.debug("running network hook %s", " ".join(argv))
            try:
                returncode, stderr = self._run_one(argv)
            except OSError as exc:  # not executable after all, bad interpreter...
                log.warning("network hook %s could not run: %s", hook, exc.strerror)
                continue
            if returncode is None:
                log.warning("network hook %s did not finish within %g s; killed", hook, self.timeout)
            elif returncode != 0:
                tail = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
                log.warning("network hook %s failed with status %d %s", hook, returncode, tail[0])

    def _run_one(self, argv: list[str]) -> tuple[int | None, bytes]:
        """Run one hook in its own process group; None as status on time-out.

        On time-out the whole group is killed: a hook that left children
        behind holding its stderr open cannot hang the hotplug.
        """
        import signal
        import subprocess  # only when there are hooks to run

        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd="/",
            start_new_session=True,
        )
        try:
            _, stderr = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return None, b""
        return proc.returncode, stderr
