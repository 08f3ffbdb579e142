"""Ask systemd to (re)start units without waiting for them."""

from __future__ import annotations

from qubesnet.log import get_logger

log = get_logger(__name__)


def request(action: str, unit: str) -> None:
    """``systemctl --no-block ACTION UNIT``; a failure is logged, not raised."""
    import shutil
    import subprocess  # only after a change: not on the path that changes nothing

    systemctl = shutil.which("systemctl")
    if systemctl is None:
        log.warning("cannot %s %s: systemctl not found", action, unit)
        return
    try:
        result = subprocess.run(
            [systemctl, "--no-block", action, unit],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("cannot %s %s: %s", action, unit, exc)
        return
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        log.warning("systemctl %s %s failed: %s", action, unit, message[0])
