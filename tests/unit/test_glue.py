"""The glue: udev rules, the dispatcher script, the install layout."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess

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
    for rule, action in zip(rules, ("online", "offline")):
        keys = {(k, op): v for k, op, v in rule}
        assert keys[("SUBSYSTEM", "==")] == "xen-backend"
        assert keys[("KERNEL", "==")] == "vif-*"
        assert keys[("ACTION", "==")] == action
        assert keys[("RUN", "+=")] == f"/etc/xen/scripts/vif-route-qubes {action}"
        assert keys[("ENV{UDEV_CALL}", "=")] == "1"
        for key, op, _ in rule:
            base = key.split("{")[0]
            assert base in (MATCH_KEYS if op in ("==", "!=") else ASSIGN_KEYS), key


@pytest.mark.subprocess
def test_udevadm_verify_where_available() -> None:
    udevadm = shutil.which("udevadm")
    help_text = subprocess.run([udevadm, "--help"], capture_output=True, text=True).stdout if udevadm else ""
    if "verify" not in help_text:
        # systemd < 253 has no `udevadm verify`: the parser test above covers it.
        assert parse_rules(open(RULES).read())
        return
    result = subprocess.run([udevadm, "verify", RULES], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.subprocess
def test_dispatcher_exits_at_once_for_other_actions(tmp_path: object) -> None:
    marker = os.path.join(str(tmp_path), "ran")
    tool = os.path.join(str(tmp_path), "tool")
    with open(tool, "w") as handle:
        handle.write(f"#!/bin/sh\ntouch {marker}\nexit 100\n")
    os.chmod(tool, stat.S_IRWXU)
    script = os.path.join(REPO, "dispatcher", "qubes-nmhook")
    env = dict(os.environ, QUBES_SETUP_DNAT_TO_NS=tool)
    for action in ("connectivity-change", "pre-up", "hostname", ""):
        assert subprocess.run([script, "eth0", action], env=env, timeout=5).returncode == 0
        assert not os.path.exists(marker)
    assert subprocess.run([script, "eth0", "dns-change"], env=env, timeout=10).returncode == 0
    assert os.path.exists(marker)


EXPECTED = {
    "usr/lib/qubes-netvm-hotplug/vif-route-qubes": 0o755,
    "usr/lib/qubes-netvm-hotplug/qubes-setup-dnat-to-ns": 0o755,
    "usr/lib/qubes-netvm-hotplug/qubes-nmhook": 0o755,
    "etc/xen/scripts/vif-route-qubes": 0o755,
    "usr/lib/qubes/qubes-setup-dnat-to-ns": 0o755,
    "etc/NetworkManager/dispatcher.d/qubes-nmhook": 0o755,
    "usr/lib/udev/rules.d/90-qubes-vif-route.rules": 0o644,
    "usr/lib/systemd/system/qubes-setup-dnat-to-ns-watch.service": 0o644,
    "usr/lib/python3/dist-packages/vif_route_qubes/cli.py": 0o644,
    "usr/lib/python3/dist-packages/setup_dnat_to_ns/cli.py": 0o644,
    "usr/lib/python3/dist-packages/qubesnet/netlink/rtnl.py": 0o644,
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
    assert subprocess.run(make + ["install"], capture_output=True, timeout=60).returncode == 0
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
    assert not os.path.exists(os.path.join(dest, "usr/lib/python3/dist-packages/qubes_netsim")), "no simulator"
    with open(os.path.join(dest, "etc/xen/scripts/vif-route-qubes")) as handle:
        script = handle.read()
    assert script.startswith("#!/usr/bin/python3 -IS\n")
    assert 'sys.path.append("/usr/lib/python3/dist-packages")' in script

    # The installed entry points run with the system interpreter.
    site = os.path.join(dest, "usr/lib/python3/dist-packages")
    for script in ("etc/xen/scripts/vif-route-qubes", "usr/lib/qubes/qubes-setup-dnat-to-ns"):
        result = subprocess.run(["/usr/bin/python3", os.path.join(dest, script), "--help"],
                                env=dict(os.environ, PYTHONPATH=site), capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and "exit status" in result.stdout, result.stderr

    assert subprocess.run(make + ["uninstall"], capture_output=True, timeout=60).returncode == 0
    leftovers = [os.path.join(r, f) for r, dirs, files in os.walk(dest) for f in files + dirs
                 if not os.path.isdir(os.path.join(r, f)) or os.path.islink(os.path.join(r, f))]
    assert leftovers == []
