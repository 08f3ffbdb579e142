"""Hostile and broken inputs against the real entry points, in the simulated netvm.

Every case feeds one bad value (environment, command line, XenStore, QubesDB,
resolv.conf or systemd-resolved) to an otherwise valid set-up and checks:

1. the exit status: 1, or for the upstream DNS sources the documented safe
   behaviour (the bad part ignored, exit 100 because the chain is already
   the one a previous good run installed);
2. stderr: exactly one line, naming the offending key (relaxed to "every line
   carries the program's prefix" for the safe-behaviour cases);
3. when XENBUS_PATH is usable, XenStore holds hotplug-status=error and a
   one-line hotplug-error naming the key, and nothing else in XenStore
   changed; when it is not usable, nothing at all was written;
4. the kernel state (tests/oracle.py: ruleset, links, addresses, routes,
   permanent neighbours, the vif's sysctls) is identical before and after,
   and no namespace named after the vif (``<vif>-nat``) appeared.

Each case is recorded in the ledger before it is asserted, so failures count.
The baseline inputs themselves are valid: test_baseline_* shows a dry run of
them succeeds, so every rejection below is due to the one bad part.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator, Mapping
from ipaddress import IPv4Address
from typing import Any, NamedTuple

import pytest

from qubes_netsim.dbus import FakeResolved, PrivateBus
from qubes_netsim.netns import namespaces
from qubes_netsim.topology import GATEWAY, UPSTREAM, Client, SimNetvm
from tests import oracle
from tests.reliability.conftest import Ledger

CATEGORY = "bad inputs"
MAPPED_REAL = "10.138.7.9"  # in 10.138.0.0/16: online looks for a mapping
MAPPED_VISIBLE = "10.137.0.113"
OTHER_VIF = "<other-vif>"  # placeholder: the other client's vif name, known only at run time
VIF_LINE = re.compile(r"vif-route-qubes: (?P<label>.*?) failed: (?P<message>.*)")


# --- the simulated netvm, shared by the module --------------------------------


class World(NamedTuple):
    sim: SimNetvm
    plain: Client  # 10.137.0.12 + fd09:24ef:4179::a89:12
    mapped: Client  # real address 10.138.7.9, no /mapped-ip entries by default


@pytest.fixture(scope="module")
def world(shared_sim: SimNetvm) -> World:
    # Random domids: <vif>-nat namespaces are host-wide, concurrent runs must not meet.
    first, second = random.sample(range(300, 32000), 2)
    plain = shared_sim.add_client(first, "10.137.0.12", "fd09:24ef:4179::a89:12")
    mapped = shared_sim.add_mapped_client(second, MAPPED_REAL, MAPPED_VISIBLE, GATEWAY, write_mapping=False)
    return World(shared_sim, plain, mapped)


def vif_namespaces(prefixes: set[str]) -> set[str]:
    return {name for name in namespaces() if any(p and name.startswith(p) for p in prefixes)}


def write_file(path: str, data: bytes) -> None:
    """Replace a file as resolvers do (a new file renamed over the old), bytes as given."""
    with open(path + ".new", "wb") as handle:
        handle.write(data)
    os.replace(path + ".new", path)


def restore_qubesdb(sim: SimNetvm, saved: dict[str, bytes]) -> None:
    for key in [k for k in list(sim.qubesdb.entries) if k not in saved]:
        sim.qubesdb.rm(key)
    for key, value in saved.items():
        if sim.qubesdb.read(key) != value:
            sim.qubesdb.write(key, value)


def apply_qubesdb(sim: SimNetvm, changes: Mapping[str, str | bytes | None]) -> None:
    for key, value in changes.items():
        if value is None:
            sim.qubesdb.rm(key)
        else:
            sim.qubesdb.write(key, value)


# --- vif-route-qubes ---------------------------------------------------------


class VifCase(NamedTuple):
    id: str
    key: str  # the key the message must start with; "{xb}" = the backend path
    command: str = "online"
    env: Mapping[str, str | None] = {}  # None: the variable is missing
    xs: Mapping[str, str | bytes | None] = {}  # backend keys; None: the key is removed
    qdb: Mapping[str, str | bytes | None] = {}  # QubesDB keys; None: the key is removed
    mapped: bool = False  # run against the client whose real address is 10.138.7.9
    xenbus_ok: bool = True  # XENBUS_PATH usable: the failure must be reported there


def ip(case_id: str, value: str | bytes) -> VifCase:
    return VifCase(f"ip={case_id}", "{xb}/ip", xs={"ip": value})


def mac(case_id: str, value: str | None) -> VifCase:
    return VifCase(f"mac={case_id}", "{xb}/mac", xs={"mac": value})


def vifname(case_id: str, value: str) -> VifCase:
    return VifCase(f"vifname={case_id}", "{xb}/vifname", xs={"vifname": value})


def env_vif(case_id: str, value: str | None) -> VifCase:
    return VifCase(f"env-vif={case_id}", "vif", env={"vif": value})


def env_xenbus(case_id: str, value: str | None) -> VifCase:
    return VifCase(f"env-XENBUS_PATH={case_id}", "XENBUS_PATH", env={"XENBUS_PATH": value}, xenbus_ok=False)


def qdb(case_id: str, key: str, value: str | bytes | None) -> VifCase:
    return VifCase(f"qubesdb{key}={case_id}", key, qdb={key: value})


def mapped(case_id: str, visible: str, visible_gateway: str, bad_key: str) -> VifCase:
    base = f"/mapped-ip/{MAPPED_REAL}"
    return VifCase(f"mapped-{bad_key}={case_id}", f"{base}/{bad_key}",
                   qdb={f"{base}/visible-ip": visible, f"{base}/visible-gateway": visible_gateway}, mapped=True)


HUNDREDS = " ".join(f"10.137.{i // 200}.{i % 200 + 1}" for i in range(300))  # 300 addresses, < 4096 bytes

COMMAND_CASES = [
    VifCase("command=start", "COMMAND", command="start"),
    VifCase("command=empty", "COMMAND", command=""),
    VifCase("command=online;ls", "COMMAND", command="online;ls"),
    VifCase("command=ONLINE", "COMMAND", command="ONLINE"),
    VifCase("command=online-trailing-space", "COMMAND", command="online "),
]

ENV_CASES = [
    env_vif("missing", None),
    env_vif("empty", ""),
    env_vif("eth0", "eth0"),
    env_vif("leading-zero-domid", "vif01.0"),
    env_vif("leading-zero-devid", "vif1.00"),
    env_vif("domid-32753", "vif32753.0"),
    env_vif("over-15-chars", "vif1234567.1234"),
    env_vif("shell-semicolon", "vif1.0;reboot"),
    env_vif("shell-substitution", "vif1.0$(id)"),
    env_vif("nftables-quote-brace", 'vif1.0"}'),
    env_vif("newline", "vif1.0\nx"),
    env_vif("no-devid", "vif12"),
    env_vif("trailing-space", "vif12.0 "),
    env_vif("uppercase", "VIF12.0"),
    env_xenbus("missing", None),
    env_xenbus("empty", ""),
    env_xenbus("dotdot", "../x"),
    env_xenbus("double-slash", "backend//vif/12/0"),
    env_xenbus("trailing-newline", "backend/vif/12/0\n"),
    env_xenbus("semicolon", "backend/vif/12/0;x"),
]

XENSTORE_CASES = [
    ip("garbage", "garbage"),
    ip("nftables-syntax", "10.137.0.12 }; flush ruleset"),
    ip("loopback", "127.0.0.1"),
    ip("loopback6", "10.137.0.12 ::1"),
    ip("multicast", "224.0.0.1"),
    ip("multicast6", "10.137.0.12 ff02::1"),
    ip("broadcast", "255.255.255.255"),
    ip("reserved", "240.0.0.1"),
    ip("unspecified4", "0.0.0.0"),
    ip("unspecified6", "::"),
    ip("ipv4-mapped6", "::ffff:10.137.0.12"),
    ip("link-local4", "169.254.1.1"),
    ip("link-local6", "10.137.0.12 fe80::1"),
    ip("network", "10.137.0.0/24"),
    ip("hundreds-of-addresses", HUNDREDS),
    ip("4KiB-value", "1" * 4096),
    ip("over-the-protocol-limit", "10.137.0.12 " * 342),  # only a double can send it
    ip("non-utf8", b"10.137.0.12 \xff\xfe\x80"),
    ip("leading-zeros", "010.137.0.12"),
    ip("zone", "fe80::1%eth0"),
    ip("newline-between", "10.137.0.12\nfd09:24ef:4179::a89:12"),
    ip("tab-between", "10.137.0.12\tfd09:24ef:4179::a89:12"),
    ip("bad-third-address", "10.137.0.12 fd09:24ef:4179::a89:12 1.2.3"),
    mac("uppercase", "00:16:3E:5E:6C:0C"),
    mac("short", "00:16:3e:5e:6c"),
    mac("multicast", "01:00:5e:00:00:01"),
    mac("garbage", "not-a-mac"),
    mac("all-zeros", "00:00:00:00:00:00"),
    mac("missing-with-addresses", None),
    mac("trailing-newline", "00:16:3e:5e:6c:0c\n"),
    mac("dashes", "00-16-3e-5e-6c-0c"),
    vifname("shell", "eth0; reboot"),
    vifname("slash", "a/b"),
    vifname("over-15-chars", "abcdefghijklmnop"),
    vifname("option-like", "-x"),
    vifname("other-vms-vif", OTHER_VIF),
    vifname("dotdot", ".."),
    vifname("space", "my vif"),
    VifCase("type=shell", "{xb}/type", xs={"type": "vif;rm"}),
]

QUBESDB_CASES = [
    qdb("garbage", "/qubes-netvm-gateway", "garbage"),
    qdb("network", "/qubes-netvm-gateway", "10.137.0.0/24"),
    qdb("ipv6", "/qubes-netvm-gateway", "fd09:24ef:4179::a89:1"),
    qdb("loopback", "/qubes-netvm-gateway", "127.0.0.1"),
    qdb("missing-for-ipv4-client", "/qubes-netvm-gateway", None),
    qdb("trailing-newline", "/qubes-netvm-gateway", "10.137.0.1\n"),
    qdb("non-ascii", "/qubes-netvm-gateway", b"10.137.0.1\xc2\xa0"),
    qdb("garbage", "/qubes-netvm-gateway6", "zz::1"),
    qdb("ipv4", "/qubes-netvm-gateway6", "10.137.0.1"),
    qdb("multicast", "/qubes-netvm-gateway6", "ff02::1"),
    qdb("yes", "/qubes-service/harden-network-interfaces", "yes"),
    qdb("2", "/qubes-service/network-flowtable", "2"),
    mapped("garbage", "garbage", GATEWAY, "visible-ip"),
    mapped("network", f"{MAPPED_VISIBLE}/24", GATEWAY, "visible-ip"),
    mapped("loopback", "127.0.0.1", GATEWAY, "visible-ip"),
    mapped("multicast", MAPPED_VISIBLE, "224.0.0.1", "visible-gateway"),
    mapped("nftables-syntax", MAPPED_VISIBLE, "10.137.0.1 }; flush ruleset", "visible-gateway"),
]

# offline validates what it reads too: bad input is refused before anything is torn down.
OFFLINE_CASES = [
    case._replace(id=f"offline {case.id}", command="offline")
    for case in (
        env_vif("eth0", "eth0"),
        env_vif("newline", "vif1.0\nx"),
        env_xenbus("dotdot", "../x"),
        ip("nftables-syntax", "10.137.0.12 }; flush ruleset"),
        ip("link-local6", "10.137.0.12 fe80::1"),
        mac("uppercase", "00:16:3E:5E:6C:0C"),
        vifname("slash", "a/b"),
    )
]

VIF_CASES = COMMAND_CASES + ENV_CASES + XENSTORE_CASES + QUBESDB_CASES + OFFLINE_CASES


def vif_case_env(sim: SimNetvm, client: Client, case: VifCase) -> dict[str, str]:
    env = sim.env(client)
    for name, value in case.env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def check_vif_message(stderr: str, key: str) -> str | None:
    """The one line's message (after "<command> <vif> failed: "), if it is one line naming ``key``."""
    if not stderr.endswith("\n") or stderr.count("\n") != 1:
        return None
    match = VIF_LINE.fullmatch(stderr[:-1])
    if match is None or not match["message"].startswith(f"{key}: "):
        return None
    return match["message"]


def xenstore_changes(before: dict[str, bytes], after: dict[str, bytes]) -> dict[str, bytes | None]:
    keys = set(before) | set(after)
    return {k: after.get(k) for k in keys if before.get(k) != after.get(k)}


@pytest.mark.parametrize("case", VIF_CASES, ids=[c.id for c in VIF_CASES])
def test_vif_route_qubes_rejects(world: World, ledger: Ledger, case: VifCase) -> None:
    sim = world.sim
    client, other = (world.mapped, world.plain) if case.mapped else (world.plain, world.mapped)
    xb = client.xenbus_path
    key = case.key.format(xb=xb)
    saved_qdb = dict(sim.qubesdb.entries)
    try:
        for name, value in case.xs.items():
            if value is None:
                sim.xenstore.rm(f"{xb}/{name}")
            else:
                value = value.replace(OTHER_VIF, other.vif) if isinstance(value, str) else value
                sim.xenstore.write(f"{xb}/{name}", value)
        apply_qubesdb(sim, case.qdb)
        env = vif_case_env(sim, client, case)
        prefixes = {client.vif, env.get("vif", ""), str(case.xs.get("vifname") or "").replace(OTHER_VIF, other.vif)}
        state_before = oracle.snapshot(sim.netvm, (client.vif,))
        ns_before = vif_namespaces(prefixes)
        store_before = sim.xenstore.dump("/")

        args = ("--mapped-wait", "0") if case.mapped else ()
        result = sim.vif_route(case.command, client, *args, env=env)

        state_after = oracle.snapshot(sim.netvm, (client.vif,))
        ns_after = vif_namespaces(prefixes)
        changes = xenstore_changes(store_before, sim.xenstore.dump("/"))
        base = f"{sim.xenstore.home()}/{xb}"
        message = check_vif_message(result.stderr, key)
        if case.xenbus_ok:
            error = changes.get(f"{base}/hotplug-error")
            error_text = error.decode(errors="replace") if error is not None else ""
            reported = (
                set(changes) == {f"{base}/hotplug-error", f"{base}/hotplug-status"}
                and changes[f"{base}/hotplug-status"] == b"error"
                and "\n" not in error_text
                and error_text.startswith(f"{key}: ")
                and message is not None
                and error_text == message[:1024]
            )
        else:
            reported = changes == {}  # nowhere to report to: nothing written at all
        ok = result.returncode == 1 and message is not None and reported
        unchanged = state_after == state_before and ns_after == ns_before
        ledger.record(CATEGORY, f"vif-route-qubes {case.id}",
                      **{"rejected cleanly": int(ok), "state unchanged": int(unchanged)})

        assert result.returncode == 1, result.stderr
        assert message is not None, f"expected one line naming {key!r}: {result.stderr!r}"
        if case.xenbus_ok:
            assert changes.get(f"{base}/hotplug-status") == b"error", changes
            assert set(changes) == {f"{base}/hotplug-error", f"{base}/hotplug-status"}, changes
            assert error_text.startswith(f"{key}: ") and "\n" not in error_text, error_text
            assert error_text == message[:1024]
        else:
            assert changes == {}, f"XenStore written without a usable XENBUS_PATH: {changes}"
        assert state_after == state_before
        assert ns_after == ns_before, f"namespaces appeared: {ns_after - ns_before}"
    finally:
        sim.xenstore.rm(xb)  # the whole backend directory, hotplug-status/-error and vifname included
        sim.write_backend(client)
        restore_qubesdb(sim, saved_qdb)


def test_baseline_vif_inputs_are_valid(world: World) -> None:
    """The unmodified inputs pass: each rejection above is due to its one bad part."""
    sim = world.sim
    for client in (world.plain, world.mapped):
        result = sim.vif_route("online", client, "--dry-run", "--mapped-wait", "0")
        assert result.returncode == 0, result.stderr
        assert sim.hotplug_status(client) is None  # a dry run reports nothing


# --- qubes-setup-dnat-to-ns --------------------------------------------------


class DnatCase(NamedTuple):
    id: str
    exit: int  # 1: an error; 100: the bad part ignored, the chain already the right one
    key: str = ""  # exit 1: the key the one line must name
    mention: str = ""  # exit 100: what stderr must say about the ignored part ("" for nothing)
    qdb: Mapping[str, str | bytes | None] = {}
    resolv_conf: bytes | None = None  # None: the good one ("nameserver 198.51.100.1")
    resolved_mode: str | None = None  # a fake systemd-resolved on a private bus, in this mode
    resolved_entries: tuple[tuple[int, str], ...] = ()
    resolved_value: Any = None  # raw a(iiay) value, for malformed entries
    args: tuple[str, ...] = ()


PRIMARY, SECONDARY = "/qubes-netvm-primary-dns", "/qubes-netvm-secondary-dns"
GOOD_LINE = f"nameserver {UPSTREAM}\n".encode()
OTHER_SERVER = "203.0.113.9"  # what the fake resolved offers: used only if its reply is wrongly trusted

# Bad virtual DNS addresses in QubesDB are an error: exit 1, the old chain kept.
DNAT_ERROR_CASES = [
    DnatCase("primary-dns=garbage", 1, PRIMARY, qdb={PRIMARY: "garbage"}),
    DnatCase("secondary-dns=nftables-syntax", 1, SECONDARY, qdb={SECONDARY: "10.139.1.2 }; flush ruleset"}),
    DnatCase("primary-dns=ipv6", 1, PRIMARY, qdb={PRIMARY: "fd09:24ef:4179::a8b:1"}),
    DnatCase("primary-dns=loopback", 1, PRIMARY, qdb={PRIMARY: "127.0.0.1"}),
    DnatCase("secondary-dns=multicast", 1, SECONDARY, qdb={SECONDARY: "224.0.0.251"}),
    DnatCase("primary-dns=newline", 1, PRIMARY, qdb={PRIMARY: "10.139.1.1\n10.139.1.3"}),
    DnatCase("secondary-dns=network", 1, SECONDARY, qdb={SECONDARY: "10.139.1.0/24"}),
    DnatCase("primary-dns=non-ascii", 1, PRIMARY, qdb={PRIMARY: b"10.139.1.1\xff"}),
]

# Documented safe behaviour for the upstream sources: a bad entry is skipped
# with a log line, the valid server kept; the chain already points at it, so
# the run changes nothing and exits 100. systemd-resolved that answers
# wrongly, fails or has only unusable servers is fallen back from to
# resolv.conf (the contract: an unusable resolved is not an error).
DNAT_SAFE_CASES = [
    DnatCase("resolv.conf=bad-nameserver-value", 100, mention="line 2: not an address",
             resolv_conf=GOOD_LINE + b"nameserver 1.2.3.4.5\n"),
    DnatCase("resolv.conf=binary-bytes", 100, mention="line 3: not an address",
             resolv_conf=GOOD_LINE + b"\x00\xff\xfe\x80 binary\nnameserver \xff\xfe\x00\x01\n"),
    DnatCase("resolv.conf=100KB-file", 100, mention="larger than",
             resolv_conf=GOOD_LINE + b"".join(b"# filler %06d " % i + b"x" * 50 + b"\n" for i in range(1600))),
    DnatCase("resolv.conf=nftables-syntax", 100, mention="line 1: not an address: '};'",
             resolv_conf=b"nameserver }; flush ruleset\n" + GOOD_LINE),
    DnatCase("resolv.conf=nameserver-without-address", 100, mention="nameserver without an address",
             resolv_conf=b"nameserver\n" + GOOD_LINE),
    DnatCase("resolv.conf=unusable-servers", 100, mention="skipping 224.0.0.251",
             resolv_conf=b"nameserver 127.0.0.53\nnameserver ::1\nnameserver 224.0.0.251\nnameserver 0.0.0.0\n"
             + GOOD_LINE),
    DnatCase("resolv.conf=thousands-of-bad-lines", 100, mention="not an address",
             resolv_conf=GOOD_LINE + b"nameserver bogus\n" * 3000),
    DnatCase("resolved=wrong-type", 100, resolved_mode="wrong-type", resolved_entries=((0, OTHER_SERVER),)),
    DnatCase("resolved=error", 100, resolved_mode="error", resolved_entries=((0, OTHER_SERVER),)),
    DnatCase("resolved=silent", 100, resolved_mode="silent", resolved_entries=((0, OTHER_SERVER),),
             args=("--timeout", "0.3")),
    DnatCase("resolved=loopback-entries", 100, mention="skipping 127.0.0.53", resolved_mode="normal",
             resolved_entries=((0, "127.0.0.53"), (3, "127.0.0.1"), (2, "::1"))),
    DnatCase("resolved=malformed-entries", 100, mention="malformed DNS entry", resolved_mode="normal",
             resolved_value=[(0, 2, b"\xc6\x33"), (-1, 2, IPv4Address(OTHER_SERVER).packed),
                             (0, 7, IPv4Address(OTHER_SERVER).packed)]),
]

DNAT_CASES = DNAT_ERROR_CASES + DNAT_SAFE_CASES


@pytest.fixture
def good_dnat(world: World) -> Iterator[SimNetvm]:
    """The chain installed by a good run (198.51.100.1); everything restored afterwards."""
    sim = world.sim
    saved_qdb, bus_address = dict(sim.qubesdb.entries), sim.bus_address
    write_file(sim.resolv_conf, GOOD_LINE)
    first = sim.dnat()
    assert first.returncode in (0, 100), first.stderr
    try:
        yield sim
    finally:
        sim.bus_address = bus_address
        restore_qubesdb(sim, saved_qdb)
        write_file(sim.resolv_conf, GOOD_LINE)


def run_dnat_case(sim: SimNetvm, case: DnatCase) -> Any:
    if case.resolved_mode is None:
        return sim.dnat(*case.args)
    bus = PrivateBus().start()
    fake = None
    try:
        sim.bus_address = bus.address
        fake = FakeResolved(bus, case.resolved_entries).start()
        fake.mode = case.resolved_mode
        if case.resolved_value is not None:
            fake.value = case.resolved_value
        return sim.dnat(*case.args)
    finally:
        if fake is not None:
            fake.stop()
        bus.stop()


@pytest.mark.parametrize("case", DNAT_CASES, ids=[c.id for c in DNAT_CASES])
def test_setup_dnat_to_ns_rejects(good_dnat: SimNetvm, ledger: Ledger, case: DnatCase) -> None:
    sim = good_dnat
    apply_qubesdb(sim, case.qdb)
    if case.resolv_conf is not None:
        write_file(sim.resolv_conf, case.resolv_conf)
    # The chain with handles: a reload renumbers them.
    state_before, chain_before = oracle.snapshot(sim.netvm), sim.dnat_chain(handles=True)
    assert f"dnat to {UPSTREAM}" in chain_before

    result = run_dnat_case(sim, case)

    state_after, chain_after = oracle.snapshot(sim.netvm), sim.dnat_chain(handles=True)
    lines = result.stderr.splitlines()
    if case.exit == 1:
        # Exactly one line, naming the key right after the program's prefix.
        message_ok = (result.stderr.count("\n") == 1 and result.stderr.endswith("\n")
                      and lines[0].startswith(f"qubes-setup-dnat-to-ns: {case.key}: "))
    else:
        # Relaxed: every line is the program's, and the ignored part is mentioned.
        message_ok = (all(line.startswith("qubes-setup-dnat-to-ns: ") for line in lines)
                      and case.mention in result.stderr)
    ok = result.returncode == case.exit and message_ok
    unchanged = state_after == state_before and chain_after == chain_before
    ledger.record(CATEGORY, f"qubes-setup-dnat-to-ns {case.id}",
                  **{"rejected cleanly": int(ok), "state unchanged": int(unchanged)})

    assert result.returncode == case.exit, result.stderr
    if case.exit == 1:
        assert len(lines) == 1 and result.stderr.endswith("\n"), result.stderr
        assert lines[0].startswith(f"qubes-setup-dnat-to-ns: {case.key}: "), lines[0]
    else:
        assert all(line.startswith("qubes-setup-dnat-to-ns: ") for line in lines), result.stderr
        assert case.mention in result.stderr, result.stderr
    assert chain_after == chain_before, "the dnat-dns chain was replaced"
    assert state_after == state_before


def test_baseline_dnat_is_unchanged_when_rerun(good_dnat: SimNetvm) -> None:
    """The good resolv.conf alone gives exit 100 silently: the exit 100 above is not by chance."""
    result = good_dnat.dnat()
    assert result.returncode == 100, result.stderr
    assert result.stderr == ""
