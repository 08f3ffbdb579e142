"""The glue: udev rules, the dispatcher script, the install layout."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(REPO, "udev", "90-qubes-vif-route.rules")
# key[{attr}] op "value": the udev rule syntax (udev(7))
PAIR = re.compile(r'\s*([A-Z_]+)(\{[A-Za-z0-9_]+\})?\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*(,|$)')
MATCH_KEYS = {"SUBSYSTEM", "KERNEL", "ACTION", "ENV"}
ASSIGN_KEYS = {"RUN", "ENV"}


def parse_rules(text: str) -> list[list[tuple[str, str, str]]]:
    rules = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pairs, pos = [], 0
        while pos < len(line):
            match = PAIR.match(line, pos)
            assert match, f"unparsable udev rule at column {pos}: {line!r}"
            key, attr, op, value, _ = match.groups()
            pairs.append((key + (attr or ""), op, value))
            pos = match.end()
        rules.append(pairs)
    return rules


def test_udev_rules_parse_and_say_what_the_contract_says() -> None:
    with open(RULES) as handle:
        rules = parse_rules(handle.read())
    assert len(rules) == 2
    for rule, action in zip(rules, ("online", "offline"), strict=True):
        keys = {(k, op): v for k, op, v in rule}
        assert keys[("SUBSYSTEM", "==")] == "xen-backend"
        assert keys[("KERNEL", "==")] == "vif-*"
        assert keys[("ACTION", "==")] == action
        assert keys[("RUN", "+=")] == f"/etc/xen/scripts/vif-route-qubes {action}"
        assert keys[("ENV{UDEV_CALL}", "=")] == "1"
        for key, op, _ in rule:
            base = key.split("{")[0]
            assert base in (MATCH_KEYS if op in ("==", "!=") else ASSIGN_KEYS), key


def udev_complaints(rules_text: str) -> list[str]:
    """What udev's own rule parser says about a rules file.

    ``udevadm verify`` exists from systemd 253 on; Debian 12 has 252. There,
    ``udevadm test`` reads every rules file and logs each line it cannot
    parse as ``FILE:LINE message``. It only reads the system directories, so
    the file is put in /run/udev/rules.d on a private /run in a private
    mount namespace (root). The device is lo: only the parsing matters here.
    """
    udevadm = shutil.which("udevadm")
    assert udevadm, "udevadm missing (Debian: udev): the rules would never be checked"
    name = "90-qubes-vif-route.rules"
    help_text = subprocess.run([udevadm, "--help"], capture_output=True, text=True, check=True).stdout
    if re.search(r"^\s+verify\s", help_text, re.M):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, name)
            with open(path, "w") as handle:
                handle.write(rules_text)
            result = subprocess.run([udevadm, "verify", path], capture_output=True, text=True, timeout=30)
            return [] if result.returncode == 0 else (result.stdout + result.stderr).splitlines()
    script = (
        # A private /run: udevadm test also writes the device's database
        # under /run/udev, which must not touch the host's.
        "set -e; mount -t tmpfs qubes-test /run; mkdir -p /run/udev/rules.d;"
        f' cat > /run/udev/rules.d/{name}; udevadm test --action=add /sys/class/net/lo 2>&1'
    )
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            input=rules_text, capture_output=True, text=True, timeout=60)
    assert f"Reading rules file: /run/udev/rules.d/{name}" in result.stdout, result.stdout + result.stderr
    complaint = re.compile(rf"/run/udev/rules\.d/{re.escape(name)}:\d+ ")
    return [line for line in result.stdout.splitlines() if complaint.match(line)]


@pytest.mark.subprocess
@pytest.mark.netns  # needs root for the private mount namespace
def test_udev_itself_accepts_the_rules() -> None:
    with open(RULES) as handle:
        text = handle.read()
    assert udev_complaints(text) == []
    # The check can fail: udev's parser does reject a misspelt key.
    assert udev_complaints(text.replace('KERNEL=="vif-*"', 'KERNL=="vif-*"', 1)) != []


HOOK = os.path.join(REPO, "dispatcher", "qubes-nmhook")
# NetworkManager-dispatcher(8): the actions after which DNS cannot have changed.
CANNOT_CHANGE_DNS = ("pre-up", "pre-down", "vpn-pre-up", "vpn-pre-down", "hostname", "connectivity-change")
# Every other documented action, `reapply` (the one NetworkManager 1.42 sends
# after `nmcli device reapply`), and names from releases yet to come.
MAY_CHANGE_DNS = ("up", "down", "vpn-up", "vpn-down", "dhcp4-change", "dhcp6-change", "reapply", "dns-change",
                  "some-future-action", "")


def _fake_tools(tmp: str, exit_status: int, body: str = "") -> tuple[str, dict[str, str]]:
    """A stand-in for qubes-setup-dnat-to-ns that records its runs, and a
    systemctl first in PATH that records its arguments. Returns (log, env)."""
    log = os.path.join(tmp, "log")
    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir, exist_ok=True)
    tool = os.path.join(tmp, "tool")
    with open(tool, "w") as handle:
        handle.write(f"#!/bin/sh\necho tool >> {log}\n{body}exit {exit_status}\n")
    with open(os.path.join(bindir, "systemctl"), "w") as handle:
        handle.write(f'#!/bin/sh\necho "systemctl $*" >> {log}\n')
    for path in (tool, os.path.join(bindir, "systemctl")):
        os.chmod(path, stat.S_IRWXU)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "QUBES_SETUP_DNAT_TO_NS": tool}
    return log, env


def _read(path: str) -> str:
    return open(path).read() if os.path.exists(path) else ""


@pytest.mark.subprocess
@pytest.mark.parametrize("action", CANNOT_CHANGE_DNS)
def test_dispatcher_skips_actions_that_cannot_change_dns(tmp_path: object, action: str) -> None:
    log, env = _fake_tools(str(tmp_path), 0)
    assert subprocess.run([HOOK, "eth0", action], check=False, env=env, timeout=5).returncode == 0
    assert _read(log) == ""


@pytest.mark.subprocess
@pytest.mark.parametrize("action", MAY_CHANGE_DNS)
def test_dispatcher_runs_the_tool_on_every_other_action(tmp_path: object, action: str) -> None:
    log, env = _fake_tools(str(tmp_path), 0)
    assert subprocess.run([HOOK, "eth0", action], check=False, env=env, timeout=10).returncode == 0
    assert _read(log) == "tool\nsystemctl --no-block try-restart qubes-updates-proxy.service\n"


@pytest.mark.subprocess
@pytest.mark.parametrize("status", [100, 1, 2, 124])
def test_dispatcher_restarts_the_proxy_only_on_a_change(tmp_path: object, status: int) -> None:
    log, env = _fake_tools(str(tmp_path), status)
    assert subprocess.run([HOOK, "eth0", "reapply"], check=False, env=env, timeout=10).returncode == 0
    assert _read(log) == "tool\n"


@pytest.mark.subprocess
def test_dispatcher_is_bounded_in_time(tmp_path: object) -> None:
    log, env = _fake_tools(str(tmp_path), 0, body="exec sleep 600\n")
    started = time.monotonic()
    result = subprocess.run([HOOK, "eth0", "up"], check=False, env=env | {"QUBES_NMHOOK_TIMEOUT": "1"}, timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 0
    assert 0.9 < elapsed < 5, elapsed
    assert "systemctl" not in _read(log), "a tool killed by the time limit is no change"


@pytest.mark.subprocess
def test_dispatcher_works_without_path(tmp_path: object) -> None:
    """NetworkManager's environment has no PATH: `timeout` must still be found."""
    log, env = _fake_tools(str(tmp_path), 100)
    result = subprocess.run([HOOK, "eth0", "up"], env={"QUBES_SETUP_DNAT_TO_NS": env["QUBES_SETUP_DNAT_TO_NS"]},
                            check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stderr == ""
    assert _read(log) == "tool\n"


EXPECTED = {
    "usr/lib/qubes-netvm-hotplug/vif-route-qubes": 0o755,
    "usr/lib/qubes-netvm-hotplug/qubes-setup-dnat-to-ns": 0o755,
    "usr/lib/qubes-netvm-hotplug/qubes-nmhook": 0o755,
    "etc/xen/scripts/vif-route-qubes": 0o755,
    "usr/lib/qubes/qubes-setup-dnat-to-ns": 0o755,
    "etc/NetworkManager/dispatcher.d/qubes-nmhook": 0o755,
    "usr/lib/udev/rules.d/90-qubes-vif-route.rules": 0o644,
    "usr/lib/systemd/system/qubes-setup-dnat-to-ns-watch.service": 0o644,
    "usr/lib/systemd/system/qubes-vif-reconcile.service": 0o644,
    "usr/lib/systemd/system/qubes-vif-watch.service": 0o644,
    "usr/lib/systemd/system/qubes-antispoof.service.d/50-qubes-vif-reconcile.conf": 0o644,
    "usr/lib/systemd/system/qubes-iptables.service.d/50-qubes-vif-reconcile.conf": 0o644,
    "usr/lib/systemd/system/nftables.service.d/50-qubes-vif-reconcile.conf": 0o644,
    "usr/share/qubes-netvm-hotplug/vif_route_qubes/cli.py": 0o644,
    "usr/share/qubes-netvm-hotplug/setup_dnat_to_ns/cli.py": 0o644,
    "usr/share/qubes-netvm-hotplug/qubesnet/netlink/rtnl.py": 0o644,
    "usr/share/man/man8/vif-route-qubes.8": 0o644,
    "usr/share/man/man8/qubes-setup-dnat-to-ns.8": 0o644,
}


QUBES_PATHS = (
    "etc/xen/scripts/vif-route-qubes",
    "usr/lib/qubes/qubes-setup-dnat-to-ns",
    "etc/NetworkManager/dispatcher.d/qubes-nmhook",
)


@pytest.mark.subprocess
def test_make_install_and_uninstall(tmp_path: object) -> None:
    dest = os.path.join(str(tmp_path), "root")
    make = ["make", "-C", REPO, f"DESTDIR={dest}", "PREFIX=/usr"]
    assert subprocess.run(make + ["install"], check=False, capture_output=True, timeout=60).returncode == 0
    for path, mode in EXPECTED.items():
        full = os.path.join(dest, path)
        assert os.path.isfile(full), path
        assert stat.S_IMODE(os.stat(full).st_mode) == mode, path
        # NetworkManager refuses dispatcher scripts writable by group or others.
        assert not os.stat(full).st_mode & (stat.S_IWGRP | stat.S_IWOTH), path
    # The paths Qubes uses are relative symlinks into the package's directory
    # (so that they resolve inside DESTDIR too, and are no conffiles).
    for path in QUBES_PATHS:
        full = os.path.join(dest, path)
        assert os.path.islink(full) and not os.path.isabs(os.readlink(full)), path
        assert os.path.realpath(full) == os.path.join(dest, "usr/lib/qubes-netvm-hotplug", os.path.basename(path))
    assert not os.path.exists(os.path.join(dest, "usr/share/qubes-netvm-hotplug/qubes_netsim")), "no simulator"
    assert not os.path.exists(os.path.join(dest, "usr/lib/python3")), "no module of ours in site-packages"
    with open(os.path.join(dest, "etc/xen/scripts/vif-route-qubes")) as handle:
        script = handle.read()
    assert script.startswith("#!/usr/bin/python3 -IS\n")
    # The modules in the package's private directory, then the distribution's libraries.
    assert 'sys.path += ["/usr/share/qubes-netvm-hotplug", *"/usr/lib/python3/dist-packages".split()]' in script

    # The installed entry points run with the system interpreter.
    site = os.path.join(dest, "usr/share/qubes-netvm-hotplug")
    for script in ("etc/xen/scripts/vif-route-qubes", "usr/lib/qubes/qubes-setup-dnat-to-ns"):
        result = subprocess.run(["/usr/bin/python3", os.path.join(dest, script), "--help"],
                                env=dict(os.environ, PYTHONPATH=site), check=False, capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 0 and "exit status" in result.stdout, result.stderr

    assert subprocess.run(make + ["uninstall"], check=False, capture_output=True, timeout=60).returncode == 0
    leftovers = [os.path.join(r, f) for r, dirs, files in os.walk(dest) for f in files + dirs
                 if not os.path.isdir(os.path.join(r, f)) or os.path.islink(os.path.join(r, f))]
    assert leftovers == []
